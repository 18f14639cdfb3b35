"""Pieces shared by the subcommands' parsers: help formatting and the data-selection flags."""

from __future__ import annotations

import argparse
from typing import Any

from hashkit.registry import DATASETS, METHODS


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to every flag that has a default, and keeps descriptions' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not any(action.default is v for v in (None, False, argparse.SUPPRESS)) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def flag_name(key: str) -> str:
    """Config key → CLI flag (``code_length`` → ``--code-length``)."""
    return "--" + key.replace("_", "-")


def per_method_defaults(key: str) -> str:
    """'dpsh 1e-05; dhn 1e-05; …': the methods whose seed recipe sets ``key`` (others take the default)."""
    parts = []
    for name in METHODS.names():
        value = METHODS.get(name).recipes.get("seed", {}).get(key)
        if value is not None:
            parts.append(f"{name} {value}")
    return "; ".join(parts)


def add_data_arguments(parser: argparse.ArgumentParser, for_evaluate: bool = False, defaults: bool = True) -> None:
    """Flags that choose a dataset and its split. For evaluate all default to the checkpoint's; with
    ``defaults=False`` (train) every flag defaults to None = not given, and hashkit.config fills it in."""
    fill = defaults and not for_evaluate
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="cifar10" if fill else None, help=f"dataset: {', '.join(DATASETS.names())} (default: cifar10)")
    group.add_argument("--root", default=None, help="where the dataset lives (a tar, archive, folder or list-file folder)")
    group.add_argument("--seed", type=int, default=0 if fill else None, help="seed of the split, the initialisation and the batch order (default: 0)")
    group.add_argument("--num-query", type=int, default=None, help="number of queries (default: the dataset protocol's; CIFAR-10 1000)")
    group.add_argument("--num-train", type=int, default=None, help="number of training images (default: the protocol's; CIFAR-10 5000)")
    group.add_argument("--num-database", type=int, default=None, help="subsample the database to N items, class-balanced (default: the whole database)")
    group.add_argument("--download", action="store_true", default=None, help="fetch the dataset if missing (needs internet)")
    group.add_argument("--cache-dir", default=None, help="cache folder for unpacked data and features (default: $HASHKIT_CACHE or ~/.cache/hashkit)")
    seen: set[str] = set()
    for name in DATASETS.names():
        for key, flag in getattr(DATASETS.get(name), "cli_flags", {}).items():
            if key not in seen:
                seen.add(key)
                if flag.type is bool:  # a switch (--unlabelled / --no-unlabelled), not a flag taking a value
                    group.add_argument(flag_name(key), action=argparse.BooleanOptionalAction,
                                       default=flag.default if fill else None, help=f"[{name}] {flag.help}")
                    continue
                group.add_argument(
                    flag_name(key), type=flag.type, default=flag.default if fill else None, help=f"[{name}] {flag.help}"
                )


def namespace_config(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as a config dict (minus argparse bookkeeping)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "verbose", "run")}

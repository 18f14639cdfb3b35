"""``hashkit train``: train a method, evaluate it, write checkpoint.pt and result.json."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from hashkit.commands.common import HelpFormatter, add_data_arguments, flag_name, namespace_config
from hashkit.config import COMMON_FLAGS, GLOBAL_DEFAULTS
from hashkit.registry import METHODS


DESCRIPTION = (
    "Train a deep hashing method, evaluate it, and write OUT/checkpoint.pt and OUT/result.json.\n"
    "Several processes (data-parallel, gloo on CPU / nccl with --gpu): torchrun --nproc-per-node N -m hashkit\n"
    "train …; --batch-size is then the global batch (a multiple of N), split evenly between the processes."
)


RECIPE_SHORT = "training recipe: seed (the method's seed code, the default) or cpu (the measured 2-core CPU preset)"


class MethodHelpAction(argparse.Action):
    """``-h/--help``: the common flags, plus the method's own when ``--method NAME`` came before it."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help="show this help and exit; "
                         "after --method NAME also that method's paper, flags and recipe defaults")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        method = getattr(namespace, "method", None)
        if method is not None:
            method = METHODS.canonical(method)
        display = argparse.ArgumentParser(prog=parser.prog, formatter_class=HelpFormatter, add_help=False)
        populate(display, shown_method=method)
        if method is not None:
            _shorten(display, keep=f"{method} hyper-parameters")
        display.print_help()
        parser.exit()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a hashing method and evaluate it", formatter_class=HelpFormatter, add_help=False,
    )
    populate(parser, shown_method=None, parsing=True)
    return parser


def populate(parser: argparse.ArgumentParser, shown_method: str | None, parsing: bool = False) -> None:
    """Add train's flags. Every method's own flags are parsed; help shows only ``shown_method``'s."""
    parser.description = DESCRIPTION
    if shown_method is None:
        parser.epilog = (
            f"methods: {', '.join(METHODS.names())}\n"
            "A method's paper, own flags and recipe defaults: hashkit train --method NAME --help. All methods with "
            "their family and measured figures: hashkit methods."
        )
    else:
        from hashkit.catalogue import describe

        info = describe(shown_method)
        parser.usage = f"hashkit train --method {shown_method} [--recipe seed|cpu] [options]"
        parser.epilog = (
            f"{shown_method}: reference code {', '.join(info.reference_code) or '–'}; family {info.family}; "
            f"{'supervised' if info.supervised else 'unsupervised'}. Every method: hashkit methods."
        )
    parser.add_argument("-h", "--help", action=MethodHelpAction)
    # One line under a method's own help (the list grows with the catalogue; hashkit methods shows it).
    method_help = ("hashing method (every one: hashkit methods)" if shown_method
                   else f"hashing method: {', '.join(METHODS.names())}")  # fmt: skip
    parser.add_argument("--method", required=parsing, help=method_help)
    parser.add_argument("--code-length", type=int, default=None, help="bits per code (default: 32; with --from: the checkpoint's)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<method>-<dataset>-<bits>bits-seed<seed>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its checkpoint.pt (the last finished epoch; give the same flags as "
        "the original command: one that changes the training is refused, naming the flag)",
    )
    parser.add_argument(
        "--gpu", type=int, default=None,
        help="train on cuda:N (default: CPU); under torchrun any value puts each process on cuda:LOCAL_RANK",
    )
    parser.add_argument(
        "--from", dest="init_from", default=None, metavar="CHECKPOINT",
        help="start from this checkpoint's network (any method's, same --arch and --code-length; for DIHN also the "
        "ADSH database codes it holds); to continue an interrupted run use --resume",
    )
    parser.add_argument(
        "--dry-run", action="store_true", default=None,
        help="print the fully resolved configuration (recipe, optimizer, scheduler, transforms, …) and exit "
        "without loading data or weights",
    )
    parser.add_argument("--json", action="store_true", default=None, help="with --dry-run: print it as one JSON object")
    recipes = _recipes(shown_method)
    if shown_method is not None:
        method_cls = METHODS.get(shown_method)
        mgroup = parser.add_argument_group(f"{shown_method} hyper-parameters", method_cls.paper)
        for key, spec in method_cls.hyperparameters.items():
            mgroup.add_argument(
                flag_name(key), *[flag_name(a) for a in spec.aliases], dest=key, type=spec.type, metavar="V",
                help=f"{spec.help} (default: {spec.default})" + _recipe_note(key, recipes, shown_method),
            )
    add_data_arguments(parser, defaults=False)
    group = parser.add_argument_group(
        "training",
        "Every flag left out takes the value of the recipe (--recipe seed: the method's seed code; --recipe cpu: the "
        "2-core CPU preset), else the default shown. --dry-run prints what a command resolves to.",
    )
    for key, flag in COMMON_FLAGS.items():
        default = GLOBAL_DEFAULTS.get(key, flag.default)
        shown = f" (default: {default})" if default is not None and key not in ("recipe", "cpu_recipe") else ""
        if key == "cpu_recipe":
            group.add_argument("--cpu-recipe", dest="cpu_recipe", action="store_true", default=None, help=flag.help)
            continue
        text = flag.help if not shown_method else RECIPE_SHORT if key == "recipe" else _first_clause(flag.help)
        text += shown + _recipe_note(key, recipes, shown_method)
        if flag.type is bool:
            group.add_argument(flag_name(key), action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        group.add_argument(
            flag_name(key), type=flag.type, default=None, choices=flag.choices, help=text,
            metavar="V" if shown_method and not flag.choices else None,
        )
    if shown_method is not None:
        return
    seen: set[str] = set()
    for name in METHODS.names():  # parsed for every method, shown by --method NAME --help
        for key, spec in METHODS.get(name).hyperparameters.items():
            if key not in seen:
                seen.add(key)
                parser.add_argument(
                    flag_name(key), *[flag_name(a) for a in spec.aliases], dest=key, type=spec.type, default=None,
                    help=argparse.SUPPRESS,
                )


def _shorten(parser: argparse.ArgumentParser, keep: str) -> None:
    """Method help fits a screen or two: short flag help and metavars outside the method's own group."""
    kept = {id(a) for g in parser._action_groups if g.title == keep for a in g._group_actions}
    for action in parser._actions:
        if id(action) in kept or not action.help or action.help is argparse.SUPPRESS or action.dest in ("help", "recipe"):
            continue
        action.help = _first_clause(action.help) + _default_note(action.help)
        if action.option_strings and action.nargs is None and not action.choices:
            action.metavar = "V"


def _default_note(text: str) -> str:
    """The '(default: …)' and '(method: seed …)' parts of a help text, which the short form keeps."""
    return "".join(f" {part}" for part in re.findall(r"\((?:default|[a-z_]+): [^()]*\)", text) if part not in _first_clause(text))


def _first_clause(text: str) -> str:
    """A flag's help up to its first parenthesis, semicolon or colon: the short form of method help."""
    for stop in (" (", "; "):
        text = text.split(stop)[0]
    return text


def _recipes(method: str | None) -> dict[str, dict[str, Any]]:
    """{recipe name: the values it sets} for ``method`` (empty without one)."""
    if method is None:
        return {}
    from hashkit.config import recipe_values
    from hashkit.recipes import RECIPE_NAMES

    return {name: recipe_values(method, name) for name in RECIPE_NAMES}


def _recipe_note(key: str, recipes: dict[str, dict[str, Any]], method: str | None) -> str:
    """' (jmlh: seed 1e-05, cpu 0.0005)' when a recipe of ``method`` sets ``key``, else ''."""
    parts = [f"{name} {values[key]}" for name, values in recipes.items() if key in values]
    return f" ({method}: {', '.join(parts)})" if parts else ""


def run(args: argparse.Namespace) -> int:
    from hashkit.distributed import context_from_environment
    from hashkit.run import dry_run, train

    if args.dry_run:
        resolved = dry_run(namespace_config(args))
        if args.json:
            print(json.dumps(resolved, indent=1, sort_keys=True))
        else:
            for key, value in resolved.items():
                print(f"{key:>20}: {value}")
        return 0
    result = train(namespace_config(args))
    if context_from_environment().is_main:  # under torchrun, one line from rank 0
        print(json.dumps({"map": result["map"], "best_map": result["best_map"], "out": result["config"]["out"]}))
    return 0

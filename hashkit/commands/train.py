"""``hashkit train``: train a method, evaluate it, write checkpoint.pt and result.json."""

from __future__ import annotations

import argparse
import json

from hashkit.commands.common import HelpFormatter, add_data_arguments, flag_name, namespace_config, per_method_defaults
from hashkit.config import COMMON_FLAGS, GLOBAL_DEFAULTS
from hashkit.registry import METHODS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a hashing method and evaluate it",
        formatter_class=HelpFormatter,
        description="Train a deep hashing method, evaluate it, and write OUT/checkpoint.pt and OUT/result.json.\n"
        "Flags whose default is None take the method's seed default (listed in their help).\n"
        "Several processes (data-parallel, gloo on CPU / nccl with --gpu): torchrun --nproc-per-node N -m hashkit\n"
        "train …; --batch-size is then the global batch (a multiple of N), split evenly between the processes.",
    )
    parser.add_argument("--method", required=True, help=f"hashing method: {', '.join(METHODS.names())}")
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
        if flag.type is bool:
            group.add_argument(flag_name(key), action=argparse.BooleanOptionalAction, default=None, help=flag.help + shown)
            continue
        per_method = per_method_defaults(key)
        group.add_argument(
            flag_name(key), type=flag.type, default=None, choices=flag.choices,
            help=flag.help + shown + (f" (seed recipe: {per_method})" if per_method else ""),
        )
    seen: set[str] = set()
    for name in METHODS.names():
        method_cls = METHODS.get(name)
        new = {k: v for k, v in method_cls.hyperparameters.items() if k not in seen}
        if not new:
            continue
        mgroup = parser.add_argument_group(f"{name} hyper-parameters", method_cls.paper)
        for key, spec in new.items():
            seen.add(key)
            users = [m for m in METHODS.names() if key in METHODS.get(m).hyperparameters]
            defaults = "; ".join(f"{m} {METHODS.get(m).hyperparameters[key].default}" for m in users)
            mgroup.add_argument(
                flag_name(key), *[flag_name(a) for a in spec.aliases], dest=key, type=spec.type, default=None,
                help=f"{spec.help} (per method: {defaults})",
            )
    return parser


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

"""``hashkit evaluate``: rebuild a run from its checkpoint alone and print its metrics."""

from __future__ import annotations

import argparse
import json

from hashkit.commands.common import HelpFormatter, add_data_arguments, namespace_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint (rebuilt from the checkpoint alone)",
        formatter_class=HelpFormatter,
        description="Rebuild the model and the data split from a checkpoint, encode query and database, and\n"
        "print the metrics. Data flags override the checkpoint's (default: the split it was trained on).",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by hashkit train")
    parser.add_argument("--topk", type=int, default=None, help="mAP@k cut-off (default: the checkpoint's)")
    parser.add_argument("--metrics", default=None, help="comma-separated: map, precision_radius, pr_curve, precision_at (default: the checkpoint's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--gpu", type=int, default=None, help="evaluate on cuda:N (default: CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="encoding batch size (default: the checkpoint's)")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the checkpoint's)")
    parser.add_argument("--encode-flip", action=argparse.BooleanOptionalAction, default=None,
                        help="encode as the mean of the outputs on each input and its mirror (default: as the run did)")
    add_data_arguments(parser, for_evaluate=True)
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.run import evaluate

    overrides = namespace_config(args)
    checkpoint = overrides.pop("checkpoint")
    as_json = overrides.pop("json")
    result = evaluate(checkpoint, overrides)
    if as_json:
        print(json.dumps(result))
        return 0
    topk = result["topk"] or "ALL"
    print(
        f"{result['method']} {result['code_length']} bits on {result['dataset']}: mAP@{topk} = {result['map']:.4f} "
        f"({result['num_query']} queries, {result['num_database']} database items)"
    )
    for key in ("map_by_group", "precision_radius", "precision_at"):
        if key in result:
            print(f"{key}: {json.dumps(result[key])}")
    return 0

"""``hashkit methods``: every registered method with its family, supervision, paper, reference code and figure."""

from __future__ import annotations

import argparse
import json

from hashkit.commands.common import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "methods",
        help="list the hashing methods (family, supervision, paper, reference code, best measured figure)",
        formatter_class=HelpFormatter,
        description="List every registered method. The figure is the best mAP@ALL of the committed CPU-recipe\n"
        "result cells (results/cifar10-cpu, CIFAR-10 seed protocol); hashkit train --method NAME --help shows a\n"
        "method's flags and recipe defaults.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list (every cell's figure included)")
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.catalogue import all_methods, family_title
    from hashkit.docs_gen import best_figures, best_text

    figures = best_figures()
    infos = all_methods()
    if args.json:
        rows = [
            info.as_dict() | {"cpu_map": {str(bits): value for bits, value in sorted(figures.get(info.name, {}).items())}}
            for info in infos
        ]
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    header = ("method", "family", "supervision", "best CPU mAP@ALL", "reference code", "paper")
    rows = [
        (
            info.name, family_title(info.family), "supervised" if info.supervised else "unsupervised",
            best_text(figures.get(info.name, {})), ", ".join(info.reference_code) or "–", info.paper,
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0

"""``hashkit plot``: precision-recall and precision@N curves of several runs in one image."""

from __future__ import annotations

import argparse
import json

from hashkit.commands.common import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plot",
        help="plot precision-recall and precision@N curves of several runs",
        formatter_class=HelpFormatter,
        description="Draw the precision-recall curves (Hamming radius 0..bits) and precision@N curves of the given\n"
        "runs side by side in one image. The runs need the metrics pr_curve and precision_at: train with\n"
        "--metrics map,pr_curve,precision_at, or save `hashkit evaluate --checkpoint RUN/checkpoint.pt\n"
        "--metrics map,pr_curve,precision_at --json` to RUN/evaluation.json.",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN",
        help="a run folder (its result.json, else its evaluation.json), a result.json, or a saved `hashkit evaluate --json`",
    )
    parser.add_argument("--out", required=True, help="image to write (.png, .pdf or .svg)")
    parser.add_argument("--title", default=None, help="figure title (default: the datasets' names)")
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.plotting import load_curves, plot_curves, save_figure

    curves = load_curves(args.runs)
    out = save_figure(plot_curves(curves, args.title), args.out)
    print(json.dumps({"out": str(out), "runs": [str(c.source) for c in curves]}))
    return 0

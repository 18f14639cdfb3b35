"""``hashkit report``: gather every result.json under a folder into one mAP table (methods × bits)."""

from __future__ import annotations

import argparse
import sys

from hashkit.commands.common import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="tabulate the results of many runs (methods × code lengths, mean ± std over seeds)",
        formatter_class=HelpFormatter,
        description="Collect every result.json (and committed result cell, results/*/*.json) under FOLDER (recursively) into one table: rows method × dataset,\n"
        "columns code lengths, cells 'mean ± std (n)' over seeds. Runs are averaged together only when their\n"
        "settings match (topk, split sizes, backbone, training flags); settings shared by all rows go in the\n"
        "caption, differing ones become columns. Failed, unfinished and unreadable runs are listed below the\n"
        "table (on stderr for --format csv).",
    )
    parser.add_argument("folder", metavar="FOLDER", help="folder holding run folders (e.g. runs/), or one result.json")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv", "json"), help="output format")
    parser.add_argument(
        "--metric", default="map", choices=("map", "best_map", "wall_min"),
        help="map: after the last epoch; best_map: best evaluation during training (picked on the queries, "
        "optimistic); wall_min: wall time per run in minutes",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.report import collect, problem_line, render_csv, render_json, render_markdown, tabulate

    runs, problems = collect(args.folder, args.metric)
    table = tabulate(runs, problems, args.metric)
    if args.format == "markdown":
        sys.stdout.write(render_markdown(table))
    elif args.format == "json":
        sys.stdout.write(render_json(table))
    else:
        sys.stdout.write(render_csv(table))
        for problem in table.problems:
            print(f"hashkit: not in the table: {problem_line(problem)}", file=sys.stderr)
        for note in table.notes:
            print(f"hashkit: note: {note}", file=sys.stderr)
    if not table.rows:
        print(f"hashkit: no finished run under {args.folder} has a {args.metric} value", file=sys.stderr)
        return 1
    return 0

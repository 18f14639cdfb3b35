"""``hashkit export``: copy a folder index into a Milvus collection (batched, resumable)."""

from __future__ import annotations

import argparse
import json

from hashkit.commands.common import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="copy a folder index into a Milvus collection",
        formatter_class=HelpFormatter,
        description="Copy the codes, item ids and model identity of an index folder into a Milvus collection\n"
        "(created if missing), keeping every item's position, so searches of either give the same answer.\n"
        "Batched and resumable: a killed export re-run adds only what is missing. Search it with\n"
        "hashkit search --index milvus://HOST:PORT/COLLECTION (see docs/milvus.md).",
    )
    parser.add_argument("--index", required=True, help="index folder written by hashkit encode")
    parser.add_argument("--to", required=True, help="the collection: milvus://HOST:PORT/COLLECTION")
    parser.add_argument("--index-type", default="BIN_FLAT", choices=("BIN_FLAT", "BIN_IVF_FLAT"),
                        help="Milvus vector index of a new collection: BIN_FLAT (exact scan) or BIN_IVF_FLAT (inverted "
                        "lists; hashkit searches every list, so results stay exact)")
    parser.add_argument("--nlist", type=int, default=1024, help="with --index-type BIN_IVF_FLAT: number of lists")
    parser.add_argument("--batch", type=int, default=10_000, help="items per insert request (at most 16384)")
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.index import Index
    from hashkit.index.milvus import export, parse_address

    parse_address(args.to)  # a bad address is refused before the folder is read
    folder = Index.open(args.index)
    print(json.dumps(export(folder, args.to, index_type=args.index_type, nlist=args.nlist, batch=args.batch)))
    return 0

"""``hashkit search``: the k nearest items (or all within a radius) of query images in an index."""

from __future__ import annotations

import argparse
import json

from hashkit.commands.common import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "search",
        help="search an index with query images",
        formatter_class=HelpFormatter,
        description="Encode query images with the checkpoint and return, per query, the k nearest index items\n"
        "by Hamming distance, or every item within --radius. Items at the same distance are ordered by the\n"
        "query's real-valued network output against their codes (--ties score: an asymmetric score, one dot\n"
        "product per candidate; items with identical codes in a fixed pseudo-random order of their positions),\n"
        "or in insertion order (--ties insertion, the evaluator's order).",
    )
    parser.add_argument("--index", required=True,
                        help="index folder written by hashkit encode, or a Milvus collection milvus://HOST:PORT/COLLECTION")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the index was encoded with")
    parser.add_argument("--query", required=True, nargs="+", help="query image file(s)")
    parser.add_argument("--k", type=int, default=10, help="number of neighbours per query")
    parser.add_argument("--radius", type=int, default=None, help="return every item within this Hamming radius instead of the k nearest")
    parser.add_argument("--backend", default="native", choices=("native", "torch", "faiss", "mih", "faiss-hash"),
                        help="search engine: native (exact linear scan), torch, faiss (needs faiss-cpu), mih (exact "
                        "multi-index hashing, sub-linear; tables built and stored in the index on first use), "
                        "faiss-hash (radius search only)")
    parser.add_argument("--rebuild-mih", action="store_true",
                        help="with --backend mih: rebuild the index's MIH tables first (e.g. after a damaged table file)")
    parser.add_argument("--ties", default="score", choices=("score", "insertion"),
                        help="order of items at the same Hamming distance: score = the query's real-valued output "
                        "against their codes, higher first; insertion = the item added first")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--gpu", type=int, default=None, help="encode (and, with --backend torch, search) on cuda:N")
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit import ties
    from hashkit.api import load
    from hashkit.errors import HashkitError
    from hashkit.index import open_index

    index = open_index(args.index)
    if args.rebuild_mih:
        if args.backend != "mih":
            raise HashkitError("--rebuild-mih needs --backend mih")
        if not hasattr(index, "build_mih"):
            raise HashkitError(f"--rebuild-mih: {args.index} is a Milvus collection; MIH tables belong to folder indexes")
        index.build_mih(force=True)
    hasher = load(args.checkpoint, gpu=args.gpu)
    index.check_compatible(hasher.identity)
    outputs = hasher.embed(args.query, progress=False)
    device = hasher.device if args.backend == "torch" else None
    if args.radius is not None:
        hits = ties.within(index, outputs, args.radius, ties=args.ties, backend=args.backend, device=device)
    else:
        hits = ties.knn(index, outputs, args.k, ties=args.ties, backend=args.backend, device=device)
    doc = ties.results_json(index, args.index, args.query, outputs, hits,
                            None if args.radius is not None else args.k, args.radius, args.ties)
    if args.json:
        print(json.dumps(doc))
        return 0
    for entry in doc["queries"]:
        print(f"# {entry['query']}  ({len(entry['results'])} results)")
        for hit in entry["results"]:
            print(f"{hit['rank']:>4}  {hit['distance']:>3}  {hit['id']}")
    return 0

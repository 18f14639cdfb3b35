"""``hashkit serve``: a local web page to search an index with an image, and to look at runs."""

from __future__ import annotations

import argparse

from hashkit.commands.common import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="a local web page: search an index with an image, look at runs' tables and curves",
        formatter_class=HelpFormatter,
        description="Load the checkpoint and open the index (read-only) once, then serve on http://HOST:PORT/:\n"
        "  /        search page: upload or drop an image (or click a result) and see the nearest items\n"
        "  /runs    with --runs: the hashkit report table and the PR / P@N curves of the runs you tick\n"
        "  POST /api/search  (multipart: file in field 'image', and 'k' or 'radius') answers the same JSON\n"
        "           as hashkit search --json, plus 'timings'.\n"
        "Appends by hashkit encode to the index while it runs show up at the next search.",
    )
    parser.add_argument("--index", required=True,
                        help="index folder written by hashkit encode, or a Milvus collection milvus://HOST:PORT/COLLECTION")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the index was encoded with")
    parser.add_argument("--runs", default=None, help="folder of run folders for the runs page (e.g. runs/)")
    parser.add_argument("--images", default=None,
                        help="the folder given to hashkit encode --images, where the index's relative ids are found "
                        "(for thumbnails; dataset items and absolute paths need no flag)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but 127.0.0.1/localhost exposes the index to the network")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload, in MB")
    parser.add_argument("--max-pixels", type=int, default=40_000_000,
                        help="largest accepted image, in pixels (decompression-bomb guard)")
    parser.add_argument("--ties", default="score", choices=("score", "insertion"),
                        help="order of items at the same Hamming distance (see hashkit search --help)")
    parser.add_argument("--no-labels", action="store_true",
                        help="do not load the checkpoint's dataset to show label names")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder for thumbnails (default: $HASHKIT_CACHE or ~/.cache/hashkit)")
    parser.add_argument("--gpu", type=int, default=None, help="encode on cuda:N (default: CPU)")
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.serve import serve

    serve(args.index, args.checkpoint, runs=args.runs, host=args.host, port=args.port, block=True,
          images_root=args.images, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, ties=args.ties,
          labels=not args.no_labels, cache_dir=args.cache_dir, gpu=args.gpu)
    return 0

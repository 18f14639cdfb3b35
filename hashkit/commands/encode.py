"""``hashkit encode``: encode a collection of images into an on-disk index (create or append)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from loguru import logger

from hashkit.commands.common import HelpFormatter
from hashkit.errors import HashkitError



def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "encode",
        help="encode images into a searchable index with a trained checkpoint",
        formatter_class=HelpFormatter,
        description="Encode a folder tree, a list file, or the checkpoint's dataset database into an index\n"
        "folder (bit-packed codes + item ids + the model's identity), or into a Milvus collection\n"
        "(--out milvus://HOST:PORT/COLLECTION). An existing index is appended to (a folder atomically: a killed\n"
        "append leaves it as it was; a collection skips ids it already holds, so a re-run adds what is missing);\n"
        "a model that differs from the index's is refused. A folder index is locked before any image is\n"
        "encoded: a second writer stops at once naming the first (or waits with --wait).",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by hashkit train")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="a folder (searched recursively for images) or a list file (first column: image path)")
    source.add_argument("--database", action="store_true", help="the database split of the checkpoint's dataset")
    parser.add_argument("--root", default=None, help="with --database: where the dataset lives (default: the checkpoint's); "
                        "with a list file: the folder its relative paths start from (default: the list's folder)")
    parser.add_argument("--out", required=True,
                        help="index folder to create or append to, or a Milvus collection milvus://HOST:PORT/COLLECTION")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when another writer holds the folder index's lock, wait up to this long for it (default: stop at once)")
    parser.add_argument("--index-type", default="BIN_FLAT", choices=("BIN_FLAT", "BIN_IVF_FLAT"),
                        help="with a new milvus:// collection: its vector index (see hashkit export --help)")
    parser.add_argument("--nlist", type=int, default=1024, help="with --index-type BIN_IVF_FLAT: number of lists")
    parser.add_argument("--batch-size", type=int, default=128, help="encoding batch size")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes decoding images")
    parser.add_argument("--gpu", type=int, default=None, help="encode on cuda:N (default: CPU)")
    return parser


def run(args: argparse.Namespace) -> int:
    from hashkit.api import load
    from hashkit.distributed import context_from_environment
    from hashkit.index import writer_lock
    from hashkit.index.milvus import is_milvus_address, parse_address

    ctx = context_from_environment()
    if args.wait < 0:
        raise HashkitError(f"--wait {args.wait:g}: give a number of seconds >= 0")
    if is_milvus_address(args.out):
        parse_address(args.out)  # a malformed address is refused before the checkpoint is loaded
    if ctx.is_distributed:
        if is_milvus_address(args.out):
            raise HashkitError(f"--out {args.out}: a distributed encode writes a folder index; encode into a folder, "
                               "then copy it with hashkit export --index FOLDER --to milvus://...")
        return run_distributed(args, ctx)
    hasher = load(args.checkpoint, gpu=args.gpu)
    images, ids = _collection(args, hasher)
    if is_milvus_address(args.out):
        return _encode_into_milvus(args, hasher, images, ids)
    index_path = Path(args.out)
    # The writer lock is taken before any image is encoded, so a second writer loses no work.
    with writer_lock(index_path, wait=args.wait, purpose=f"hashkit encode --out {index_path}"):
        index = _open_or_create_folder(index_path, hasher)
        before = len(index)
        codes = hasher.encode(images, batch_size=args.batch_size, num_workers=args.num_workers)
        index.add(codes, ids)
    logger.info(f"added {len(ids)} items to {index_path} ({before} → {len(index)})")
    print(json.dumps({"index": str(index_path), "added": len(ids), "count": len(index), "bits": index.bits}))
    return 0


def _open_or_create_folder(index_path: Path, hasher: Any) -> Any:
    from hashkit.index import Index

    if (index_path / "manifest.json").exists():
        index = Index.open(index_path)
        index.check_compatible(hasher.identity)
        return index
    return Index.create(index_path, hasher.code_length, hasher.identity)


def _encode_into_milvus(args: argparse.Namespace, hasher: Any, images: Any, ids: list[str]) -> int:
    """Append to a Milvus collection: ids it already holds are neither encoded nor added (idempotent)."""
    from hashkit.index.milvus import open_or_create

    index = open_or_create(args.out, hasher.code_length, hasher.identity, args.index_type, args.nlist)
    present = index.existing_ids(ids)
    rows = [r for r, item in enumerate(ids) if item not in present]
    if present:
        logger.info(f"{args.out} already holds {len(ids) - len(rows)} of these {len(ids)} items; encoding the rest")
    added = 0
    if rows:
        codes = hasher.encode(_take(images, rows), batch_size=args.batch_size, num_workers=args.num_workers)
        added = index.add(codes, [ids[r] for r in rows])
    count = index.sync()
    logger.info(f"added {added} items to {args.out} ({count} in all)")
    print(json.dumps({"index": args.out, "added": added, "count": count, "bits": index.bits}))
    return 0


def _take(images: Any, rows: list[int]) -> Any:
    """The items at ``rows`` of a path list or an ImageCollection."""
    if isinstance(images, list):
        return [images[r] for r in rows]
    import numpy as np

    picked = np.asarray(rows, dtype=np.int64)
    fields = {"labels": images.labels[picked]}
    if images.paths is not None:
        fields["paths"] = [images.paths[r] for r in rows]
    else:
        fields["pixels"] = images.pixels[picked]
    return dataclasses.replace(images, **fields)


def collect_images(source: Path, root: Path | None = None) -> tuple[list[str], list[str]]:
    """(paths to read, ids to store) for a folder tree (ids relative to it) or a list file."""
    if source.is_dir():
        # The scan of --dataset folder: the same files, ids and order; unreadable files skipped in one warning.
        from hashkit.data.folder import scan_images

        return scan_images(source, "--images")
    if source.is_file():
        base = root or source.parent
        ids = []
        for number, line in enumerate(source.read_text().splitlines(), start=1):
            if line.strip():
                ids.append(line.split()[0])
        if not ids:
            raise HashkitError(f"list file {source} is empty; put one image path per line")
        paths = [str(Path(i) if Path(i).is_absolute() else base / i) for i in ids]
        missing = [(n, p) for n, p in enumerate(paths, start=1) if not Path(p).is_file()]
        if missing:
            n, p = missing[0]
            raise HashkitError(
                f"{source} entry {n}: image {p} does not exist ({len(missing)} missing); fix the list or pass --root"
            )
        return paths, ids
    raise HashkitError(f"--images {source} does not exist; pass a folder of images or a list file")


def _collection(args: argparse.Namespace, hasher: Any) -> tuple[Any, list[str]]:
    """(images to encode, ids) exactly as the single-process path lists them."""
    if args.database:
        from hashkit.run import build_splits

        config = dict(hasher.config)
        if args.root:
            config["root"] = args.root
        database = build_splits(config).database
        return database, [database.item_id(i) for i in range(len(database))]
    return collect_images(Path(args.images), Path(args.root) if args.root else None)


def _shard(images: Any, lo: int, hi: int) -> Any:
    """Items lo..hi-1 of a path list or an ImageCollection."""
    if isinstance(images, list):
        return images[lo:hi]
    fields = {"labels": images.labels[lo:hi]}
    if images.paths is not None:
        fields["paths"] = images.paths[lo:hi]
    else:
        fields["pixels"] = images.pixels[lo:hi]
    return dataclasses.replace(images, **fields)


def run_distributed(args: argparse.Namespace, ctx: Any) -> int:
    """``torchrun --nproc-per-node N -m hashkit encode …``: rank r encodes the r-th contiguous share of
    the collection and writes it as its own segment (:meth:`Index.stage`); rank 0 then lists all
    segments in rank order with one manifest commit (:meth:`Index.commit_staged`). The index equals a
    single-process encode (same codes, ids and order) and a rank that dies leaves it as it was."""
    import torch.distributed as dist

    from hashkit.api import load
    from hashkit.distributed import everywhere, init_process_group, main_only, resolve_distributed_device, shutdown
    from hashkit.index import Index

    device = resolve_distributed_device(ctx, args.gpu)
    init_process_group(ctx, device)
    try:
        hasher = everywhere(ctx, lambda: load(args.checkpoint, device=device))
        images, ids = everywhere(ctx, lambda: _collection(args, hasher))
        index_path = Path(args.out)

        def open_or_create() -> None:
            if (index_path / "manifest.json").exists():
                Index.open(index_path).check_compatible(hasher.identity)
            else:
                Index.create(index_path, hasher.code_length, hasher.identity)

        main_only(ctx, open_or_create)
        index = everywhere(ctx, lambda: Index.open(index_path, verify=False))
        before = len(index)
        lo, hi = len(ids) * ctx.rank // ctx.world_size, len(ids) * (ctx.rank + 1) // ctx.world_size
        codes = hasher.encode(_shard(images, lo, hi), batch_size=args.batch_size, num_workers=args.num_workers,
                              progress=ctx.is_main)
        entry = everywhere(ctx, lambda: index.stage(codes, ids[lo:hi]))
        entries: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(entries, entry)
        main_only(ctx, lambda: index.commit_staged(entries))
        if ctx.is_main:
            logger.info(f"added {len(ids)} items to {index_path} from {ctx.world_size} processes "
                        f"({before} → {len(index)})")
            print(json.dumps({"index": str(index_path), "added": len(ids), "count": len(index), "bits": index.bits,
                              "processes": ctx.world_size}))
    finally:
        shutdown()
    return 0

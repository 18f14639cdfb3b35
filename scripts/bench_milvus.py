"""Benchmark an index in Milvus against hashkit's folder index: export rate and query latency.

    .venv/bin/python scripts/bench_milvus.py                       # 1M x 64-bit codes, 200 queries, k=10
    .venv/bin/python scripts/bench_milvus.py --n 200000 --queries 100
    .venv/bin/python scripts/bench_milvus.py --address 10.0.0.5:19530   # a running server or cluster instead

Codes are the class-structured synthetic codes of scripts/bench_search.py (random centres, each bit flipped
with probability 1/8), written to a folder index; the script then times, in one process on the same queries:

* ``hashkit export`` of the folder into a ``BIN_FLAT`` and a ``BIN_IVF_FLAT`` (``--nlist``) collection:
  items per second, until the server serves them all (``MilvusIndex.sync``), plus the time the server
  then takes to build the vector index (``utility.wait_for_index_building_complete``);
* one query at a time (the latency a search page sees): the folder index's scan (backend ``native``),
  its multi-index hashing (``mih``, tables built first and not timed), and ``MilvusIndex.search`` on each
  collection (exact, including hashkit's tie handling); median and p95 latency per query;
* and checks that every engine returns the same distances and positions as the scan.

Without ``--address`` it starts the embedded Milvus server of the PyPI ``milvus`` package (a single
process on this machine, sharing its cores with the benchmark: a lower bound for a cluster).
Prints one markdown table; ratios are against the folder scan of the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import clustered_codes  # noqa: E402

from hashkit.index import Index  # noqa: E402
from hashkit.index.milvus import MilvusIndex, export, parse_address  # noqa: E402


def start_embedded(base: Path) -> tuple[object, str]:
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base))
    server.start()
    return server, f"127.0.0.1:{server.listen_port}"


def latencies(search, queries: np.ndarray, k: int) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Per-query wall times (ms) of ``search(one_query, k)`` and the stacked answers."""
    times, Ds, Is = [], [], []
    for q in queries:
        start = time.perf_counter()
        D, I = search(q[None], k)
        times.append((time.perf_counter() - start) * 1000)
        Ds.append(D)
        Is.append(I)
    return times, np.concatenate(Ds), np.concatenate(Is)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="codes in the index")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nlist", type=int, default=1024, help="BIN_IVF_FLAT lists")
    parser.add_argument("--batch", type=int, default=10_000, help="export batch (rows per insert)")
    parser.add_argument("--address", default=None, help="HOST:PORT of a running Milvus (default: start the embedded one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from pymilvus import utility

    tmp = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    server = None
    if args.address is None:
        start = time.perf_counter()
        server, address = start_embedded(tmp / "milvus")
        print(f"embedded Milvus server on {address}, started in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    else:
        address = args.address
    try:
        if args.bits % 8:
            parser.error("--bits: a multiple of 8")
        nbytes = args.bits // 8
        rng = np.random.default_rng(args.seed)
        centres = rng.integers(0, 256, (100, nbytes), np.uint8)
        codes = clustered_codes(rng, args.n, nbytes, centres)
        queries_packed = clustered_codes(rng, args.queries, nbytes, centres)
        folder = Index.create(tmp / "folder", args.bits, {"code_length": args.bits, "method": "bench"})
        folder.add(codes, [f"item-{i}" for i in range(args.n)], packed=True)
        folder.build_mih()
        rows = []
        scan_t, D0, I0 = latencies(lambda q, k: folder.search(q, k, backend="native", threads=1), queries_packed, args.k)
        rows.append(("folder scan (native, 1 thread)", None, scan_t, True))
        mih_t, D, I = latencies(lambda q, k: folder.search(q, k, backend="mih", threads=1), queries_packed, args.k)
        rows.append(("folder MIH", None, mih_t, bool((D == D0).all() and (I == I0).all())))
        for index_type in ("BIN_FLAT", "BIN_IVF_FLAT"):
            target = f"milvus://{address}/bench_{index_type.lower()}_{args.n}_{int(time.time())}"
            start = time.perf_counter()
            export(folder, target, index_type=index_type, nlist=args.nlist, batch=args.batch)
            export_s = time.perf_counter() - start
            remote = MilvusIndex.open(target)
            start = time.perf_counter()
            utility.wait_for_index_building_complete(parse_address(target).collection, "code",
                                                     using=MilvusIndex._connect(parse_address(target)))
            build_s = time.perf_counter() - start
            remote.search(queries_packed[:2], args.k)  # warm up
            times, D, I = latencies(remote.search, queries_packed, args.k)
            rows.append((f"Milvus {index_type}" + (f" (nlist {args.nlist}, nprobe = nlist)" if index_type != "BIN_FLAT" else ""),
                         (args.n / export_s, build_s), times, bool((D == D0).all() and (I == I0).all())))
            utility.drop_collection(parse_address(target).collection, using=MilvusIndex._connect(parse_address(target)))
        scan_median = statistics.median(scan_t)
        print(f"\n{args.n:,} codes x {args.bits} bits, {args.queries} single queries, k={args.k}, Milvus at {address}\n")
        print("| engine | export (items/s) | index build after export (s) | median ms/query | p95 ms/query | vs scan | same answers as scan |")
        print("|---|---|---|---|---|---|---|")
        for name, export_info, times, same in rows:
            median = statistics.median(times)
            p95 = float(np.percentile(times, 95))
            rate = f"{export_info[0]:,.0f}" if export_info else "—"
            build = f"{export_info[1]:.1f}" if export_info else "—"
            print(f"| {name} | {rate} | {build} | {median:.2f} | {p95:.2f} | {median / scan_median:.2f}x | {same} |")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the folder index and the embedded server's data
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark exact sub-linear search (multi-index hashing, backend="mih") against the linear scan
(backend="native") and faiss IndexBinaryMultiHash ("faiss-hash", radius search only), on one index.

    .venv/bin/python scripts/bench_mih.py                         # 10M x 64-bit codes, 1,000 queries
    .venv/bin/python scripts/bench_mih.py --n 100000000 --chunk 10000000 --linear-queries 100

Codes are the class-structured synthetic codes of scripts/bench_search.py (random centres, each bit
flipped with probability 1/8). For every k and radius it times the linear scan, MIH and (radius)
faiss-hash in the same process on the same queries, and asserts identical results: top-k
distances and positions (ties by insertion order), radius hits as sorted (distance, position)
lists. ``--linear-queries`` times the linear scan on a prefix of the queries (it costs ~n per query)
and checks MIH on that prefix; MIH itself always runs all queries. Memory: the index's codes (memory
mapped), the MIH tables (file size), faiss's resident-set growth while building its index. Build:
MIH table build time against the time to read the codes once (sha256 of the codes file, a lower
bound for any index build). Prints a markdown table and a projection to 1B codes (assumptions
printed with it).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import clustered_codes, rss_mib  # noqa: E402

import hashkit.index.native as hnative  # noqa: E402
from hashkit.hamming.mih import MihTables, choose_m, substring_widths  # noqa: E402
from hashkit.index import Index  # noqa: E402


CPU: dict[str, float] = {}  # CPU seconds (all threads) of the last best_of, next to its wall time


def best_of(fn, repeat: int):
    """Best wall time of ``repeat`` calls (and its CPU time in CPU["s"]), and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, CPU["s"] = wall, cpu
    return best, out


def ms(wall: float, nq: int) -> str:
    """Wall and CPU milliseconds per query of the last best_of."""
    return f"{wall / nq * 1e3:.3f} ({CPU['s'] / nq * 1e3:.3f})"


def same_hits(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--linear-queries", type=int, default=None, help="queries for the linear scan (default: all)")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--centres", type=int, default=1000)
    ap.add_argument("--ks", default="10,100")
    ap.add_argument("--radii", default="2,4")
    ap.add_argument("--chunk", type=int, default=0, help="add the codes in segments of this many (0: one segment)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    threads = args.threads or hnative.default_threads()
    nbytes = args.bits // 8
    ks = [int(x) for x in args.ks.split(",") if x]
    radii = [int(x) for x in args.radii.split(",") if x]
    nl = min(args.queries, args.linear_queries or args.queries)
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, (args.centres, nbytes), np.uint8)
    q = clustered_codes(rng, args.queries, nbytes, centres)
    print(f"n={args.n:,} x {args.bits} bits, {args.queries:,} queries (linear scan on {nl:,}), {threads} threads",
          flush=True)
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "INDEX"
        index = Index.create(path, args.bits, {"method": "bench", "code_length": args.bits})
        chunk = args.chunk or args.n
        t = time.perf_counter()
        for s in range(0, args.n, chunk):
            c = min(chunk, args.n - s)
            index.add(clustered_codes(rng, c, nbytes, centres), [f"{i:x}" for i in range(s, s + c)])
        print(f"generated + added in {time.perf_counter() - t:.1f} s ({index.num_segments} segments)", flush=True)
        index = Index.open(path, mmap=True, verify=False)
        codes_bytes = args.n * nbytes
        t = time.perf_counter()
        for seg in index._segments:  # read the codes once (what any build must at least do)
            h = hashlib.sha256()
            view = memoryview(np.ascontiguousarray(seg.codes).reshape(-1))
            for s in range(0, len(view), 16 << 20):
                h.update(view[s : s + 16 << 20])
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        index.build_mih()
        build_s = time.perf_counter() - t
        mih_bytes = sum(p.stat().st_size for p in path.glob("*.mih"))
        seg_n = index._segments[0].count
        widths = substring_widths(args.bits, choose_m(args.bits, seg_n))
        print(f"MIH build {build_s:.1f} s (read codes once: {read_s:.1f} s), tables {mih_bytes / 2**20:.0f} MiB, "
              f"widths {widths}", flush=True)
        rss0 = rss_mib()
        index.search(q[:8], 1, backend="mih", threads=threads)  # load tables
        rows_header = ("query", "engine", "queries/s (wall)", "ms/query wall (CPU)", "codes compared/query", "index memory", "identical")
        for k in ks:
            lin_s, (D, I) = best_of(lambda: index.search(q[:nl], k, threads=threads), args.repeat)
            lin_ms = ms(lin_s, nl)
            mih_s, (Dm, Im) = best_of(lambda: index.search(q, k, backend="mih", threads=threads), args.repeat)
            mih_ms = ms(mih_s, args.queries)
            visited = float(index.mih_visited.mean())
            ok = np.array_equal(D, Dm[:nl]) and np.array_equal(I, Im[:nl])
            assert ok, f"MIH top-{k} differs from the linear scan"
            rows.append((f"top-{k}", "linear scan (native)", f"{nl / lin_s:,.1f}", lin_ms,
                         f"{args.n:,}", f"{codes_bytes / 2**20:.0f} MiB (codes)", "reference"))
            rows.append((f"top-{k}", "mih", f"{args.queries / mih_s:,.0f}", mih_ms,
                         f"{visited:,.0f} ({visited / args.n:.2%})",
                         f"{(codes_bytes + mih_bytes) / 2**20:.0f} MiB (codes + {mih_bytes / codes_bytes:.2f}x)",
                         f"yes ({nl:,} queries)"))
            print(rows[-2], rows[-1], sep="\n", flush=True)
        faiss = None
        if not args.no_faiss:
            try:
                import faiss
                faiss.omp_set_num_threads(threads)
            except ImportError:
                print("faiss not installed: skipping faiss-hash")
        for radius in radii:
            lin_s, ref = best_of(lambda: index.range_search(q[:nl], radius, threads=threads), args.repeat)
            lin_ms = ms(lin_s, nl)
            mih_s, got = best_of(lambda: index.range_search(q, radius, backend="mih", threads=threads), args.repeat)
            mih_ms = ms(mih_s, args.queries)
            assert same_hits(ref, got[:nl]), f"MIH radius {radius} differs from the linear scan"
            hits = sum(len(h[1]) for h in got) / args.queries
            rows.append((f"radius {radius} ({hits:,.1f} hits/query)", "linear scan (native)", f"{nl / lin_s:,.1f}",
                         lin_ms, f"{args.n:,}", f"{codes_bytes / 2**20:.0f} MiB (codes)", "reference"))
            rows.append((f"radius {radius}", "mih", f"{args.queries / mih_s:,.0f}", mih_ms,
                         "", f"{(codes_bytes + mih_bytes) / 2**20:.0f} MiB", f"yes ({nl:,} queries)"))
            print(rows[-2], rows[-1], sep="\n", flush=True)
            if faiss is not None:
                before = rss_mib()
                t = time.perf_counter()
                fidx = index._faiss_multihash(radius)
                fbuild = time.perf_counter() - t
                fmem = rss_mib() - before
                f_s, fgot = best_of(lambda: index.range_search(q, radius, backend="faiss-hash", threads=threads),
                                    args.repeat)
                assert same_hits(got, fgot), f"faiss-hash radius {radius} differs from MIH"
                rows.append((f"radius {radius}", f"faiss-hash ({fidx.nhash} tables of {fidx.b} bits)",
                             f"{args.queries / f_s:,.0f}", ms(f_s, args.queries), "",
                             f"{fmem:,.0f} MiB (RSS growth; build {fbuild:.1f} s)", "yes (all queries)"))
                print(rows[-1], flush=True)
                index._faiss_cache.clear()
                del fidx
        print(f"\nRSS after loading MIH tables: {rss0:.0f} MiB -> {rss_mib():.0f} MiB\n")
    print("| " + " | ".join(rows_header) + " |")
    print("|" + "---|" * len(rows_header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nbuild: MIH tables {build_s:.1f} s for {args.n:,} codes ({args.n / build_s / 1e6:.1f} M codes/s); reading "
          f"the codes once (sha256) {read_s:.1f} s; tables {mih_bytes / 2**20:.0f} MiB = "
          f"{mih_bytes / codes_bytes:.2f}x the codes; m = {len(widths)}, substrings {widths}.")
    n1b = 1_000_000_000
    w1b = substring_widths(args.bits, choose_m(args.bits, n1b))
    t1b = MihTables.size_entries(n1b, w1b) * 4
    print(f"1B projection (memory): codes {n1b * nbytes / 2**30:.1f} GiB + tables (m = {len(w1b)}, {w1b}) "
          f"{t1b / 2**30:.1f} GiB; linear scan time per query = measured ms/query x {n1b / args.n:.0f}.")


if __name__ == "__main__":
    main()

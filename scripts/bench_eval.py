"""Benchmark hashkit.evaluate.mean_average_precision against an obvious per-query numpy reference.

Synthetic but realistic codes: class-conditional 64-bit codes (a random ±1 centre per class, or the
sign of the sum of the centres of an item's labels for multi-label data) with independent bit flips,
the flip rate chosen so that mAP is about 0.7; the seed is fixed. The reference is what the seeds and
DeepHash-pytorch do per query (label dot product, float Hamming distance, argsort, cumulative
precision) with a *stable* argsort, so hashkit must agree with it to 1e-6 (and its two CPU paths
with each other to 1e-9).

    python scripts/bench_eval.py            # full run (reference timed on every query)
    python scripts/bench_eval.py --quick    # reference timed on a subset, extrapolated (marked ~)
    python scripts/bench_eval.py --faiss    # against faiss and the popcount floor (issue 36's table)

``--faiss`` prints, in one process and best of ``--repeat`` runs each (interleaved, so that load on a
shared machine hits all columns alike): hashkit's evaluator on each compiled kernel path the CPU can run
(``native``, and ``avx2`` on an AVX-512 machine: the code an AVX2-only CPU gets), faiss
``IndexBinaryFlat`` with ``use_heap = False`` (its multi-count top-k) plus AP from its ranking in
numpy, and the floor: faiss searching k = 1 over the same codes (one popcount per pair, nothing
ranked). All mAPs must agree (faiss's multi-count keeps the stable index order within a distance).

Columns: hashkit's default CPU path (the compiled kernel of hashkit.hamming.kernel), the numpy fallback
(``HASHKIT_NO_KERNELS=1``: popcount + stable radix argsort), the reference, and a "floor": the same
kernel computing only the distance histograms (``pr_curve``: XOR + popcount + one histogram increment
per pair, no ranking), which no exact mAP@ALL can avoid; mAP's cost over the floor is what ranking
still costs. Every measurement runs in a fresh process with single-threaded BLAS (see run_child), the
reference single-threaded, hashkit on torch.get_num_threads() threads; the kernel is compiled (or
loaded from the cache) before the clock starts, and its first-use compile time is printed
separately. Wall and CPU time (all threads) are both reported: on a shared machine CPU time is the
steadier number. Peak memory is the growth of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs) over the resident set before the call: inputs excluded.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hashkit.evaluate as ev  # noqa: E402
from hashkit.hamming import kernel as fastkernels  # noqa: E402
from hashkit.evaluate import mean_average_precision, pr_curve  # noqa: E402

BITS = 64


@dataclass
class Case:
    name: str
    nq: int
    nd: int
    classes: int
    multi_label: bool
    topk: int | None
    flip: float  # bit flip rate, calibrated so that mAP is about 0.7


CASES = [
    Case("CIFAR-10-like 1,000 x 59,000", 1000, 59000, 10, False, None, 0.24),
    Case("CIFAR-10-2-like 10,000 x 50,000", 10000, 50000, 10, False, None, 0.24),
    Case("NUS-WIDE-like 2,100 x 193,734", 2100, 193734, 21, True, 5000, 0.24),
    Case("ImageNet-100-like 5,000 x 128,495", 5000, 128495, 100, False, 1000, 0.22),
]


def make_data(case: Case, seed: int = 0):
    """Class-conditional ±1 float32 codes and one-/multi-hot float32 labels for queries and database."""
    rng = np.random.default_rng(seed)
    centres = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(case.classes, BITS))

    def labels(n: int) -> np.ndarray:
        if not case.multi_label:
            return np.eye(case.classes, dtype=np.float32)[rng.integers(0, case.classes, n)]
        lab = np.zeros((n, case.classes), dtype=np.float32)
        count = rng.integers(1, 4, n)  # 1..3 labels per item, skewed towards frequent labels
        freq = np.linspace(2.0, 0.5, case.classes)
        freq /= freq.sum()
        for k in range(1, 4):
            rows = np.flatnonzero(count >= k)
            lab[rows, rng.choice(case.classes, size=rows.size, p=freq)] = 1.0
        return lab

    def codes(lab: np.ndarray) -> np.ndarray:
        mix = lab @ centres + rng.normal(0.0, 0.1, size=(lab.shape[0], BITS)).astype(np.float32)
        b = np.where(mix >= 0, 1.0, -1.0).astype(np.float32)
        flip = rng.random(b.shape) < case.flip
        b[flip] *= -1.0
        return b

    ql, dl = labels(case.nq), labels(case.nd)
    return codes(ql), codes(dl), ql, dl


def reference_map(qB, rB, qL, rL, topk, kind="stable"):
    """Per-query argsort mAP: a query with no relevant item in the top k adds 0 and counts."""
    k = rB.shape[0] if topk is None else topk
    bits = qB.shape[1]
    total = 0.0
    for i in range(qB.shape[0]):
        gnd = (rL @ qL[i]) > 0
        hamm = 0.5 * (bits - rB @ qB[i])
        order = np.argsort(hamm, kind=kind)
        top = gnd[order][:k]
        found = int(top.sum())
        if found == 0:
            continue
        ranks = np.flatnonzero(top) + 1.0
        total += float(np.mean(np.arange(1, found + 1) / ranks))
    return total / qB.shape[0]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(case_no: int, method: str, nq: int) -> None:
    """Run one measurement in this fresh process and print 'value seconds peak_mib cpu' on stdout."""
    case = CASES[case_no]
    qB, rB, qL, rL = make_data(case)
    qB, qL = qB[:nq], qL[:nq]
    if method in ("kernel", "numpy", "floor"):
        # kernel: the default path; numpy: the fallback (run_child sets HASHKIT_NO_KERNELS=1)
        if ev._cpu_backend() != ("numpy" if method == "numpy" else "kernel"):
            print("None nan nan nan")  # no compiler: no kernel numbers
            return
        if method == "floor":
            fn = lambda: float(pr_curve(qB, rB, qL, rL)[0].mean())  # noqa: E731
        else:
            fn = lambda: mean_average_precision(qB, rB, qL, rL, topk=case.topk)  # noqa: E731
    elif method == "reference":
        fn = lambda: reference_map(qB, rB, qL, rL, case.topk)  # noqa: E731
    else:  # numpy's default (unstable) argsort, to show that ties move the last digits
        fn = lambda: reference_map(qB, rB, qL, rL, case.topk, kind="quicksort")  # noqa: E731
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set (VmHWM) to the current one
        base = _status_kb("VmRSS")
    except OSError:
        base = None
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = (_status_kb("VmHWM") - base) / 1024 if base is not None else float("nan")
    print(f"{value!r} {seconds!r} {peak!r} {cpu!r}")


def run_child(case_no: int, method: str, nq: int) -> tuple:
    """(value, wall seconds, peak MiB, CPU seconds of all threads) measured in a fresh process."""
    # Single-threaded BLAS everywhere: the reference's per-query gemv gains nothing from threads and,
    # on a shared machine, OpenBLAS's waiting worker thread makes it 3-5x slower (measured), which
    # would inflate the baseline. hashkit threads through torch's setting (unchanged).
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    env.pop(fastkernels.ENV_DISABLE, None)
    if method == "numpy":
        env[fastkernels.ENV_DISABLE] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(case_no), method, str(nq)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.split()
    if out[0] == "None":
        return None, None, None, None
    return float(out[0]), float(out[1]), float(out[2]), float(out[3])


def compile_seconds() -> float | None:
    """Wall time of the kernel's first use (compile + load) in a fresh process and an empty cache."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HASHKIT_CACHE=tmp)
        env.pop(fastkernels.ENV_DISABLE, None)
        code = ("import time; t = time.perf_counter(); from hashkit.hamming import kernel as f; "
                "ok = f.load() is not None; print(time.perf_counter() - t if ok else 'None')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             cwd=Path(__file__).resolve().parents[1]).stdout.split()
    return None if not out or out[-1] == "None" else float(out[-1])


def _wc(wall: float | None, cpu: float | None, mark: str = "") -> str:
    return "n/a" if wall is None else f"{mark}{wall:.2f} s ({mark}{cpu:.2f} s)"


def _x(ref: float, ours: float | None, mark: str) -> str:
    return "n/a" if ours is None else f"{mark}{ref / ours:.0f}x"


def cpu_description() -> str:
    """CPU model and the instruction sets that matter for the kernels (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("popcnt", "sse4_2", "avx2", "bmi2", "avx512f", "avx512bw", "avx512vbmi", "avx512_vpopcntdq")
    return f"{model}; instruction sets: {' '.join(f for f in wanted if f in flags) or 'unknown'}"


def default_isas() -> list[str]:
    """native, plus avx2 when native is an AVX-512 build (what an AVX2-only CPU would run)."""
    lib = fastkernels.load("native")
    isas = ["native"]
    if lib is not None and fastkernels.paths(lib).startswith("avx512") and "avx2" in fastkernels.available_isas():
        isas.append("avx2")
    return isas


def _relevance_words(labels: np.ndarray) -> np.ndarray:
    """(n, C) 0/1 labels -> one uint64 per row with bit c set for class c (C <= 64)."""
    assert labels.shape[1] <= 64, "faiss comparison: at most 64 classes for multi-label data"
    return (labels.astype(np.uint64) << np.arange(labels.shape[1], dtype=np.uint64)).sum(1, dtype=np.uint64)


def faiss_map(faiss, q_packed, db_packed, qL, rL, topk: int | None) -> float:
    """mAP@topk from faiss's multi-count k-NN (IndexBinaryFlat, use_heap=False) and AP in numpy.

    Queries go in chunks of about 8M (query, rank) entries (~100 MiB of faiss results).
    """
    nd = db_packed.shape[0]
    k = nd if topk is None else min(topk, nd)
    index = faiss.IndexBinaryFlat(db_packed.shape[1] * 8)
    index.use_heap = False
    index.add(db_packed)
    single = bool((qL.sum(1) == 1).all() and (rL.sum(1) == 1).all())
    q_rel, d_rel = (qL.argmax(1), rL.argmax(1)) if single else (_relevance_words(qL), _relevance_words(rL))
    chunk = max(1, (8 << 20) // k)
    total = 0.0
    for lo in range(0, q_packed.shape[0], chunk):
        _, ids = index.search(q_packed[lo: lo + chunk], k)
        found_ids = d_rel[ids]
        rel = (found_ids == q_rel[lo: lo + chunk, None]) if single else (
            (found_ids & q_rel[lo: lo + chunk, None]) != 0)
        # AP only reads the relevant positions: (#relevant up to p) / p at each of them
        row, col = np.nonzero(rel)
        found = np.bincount(row, minlength=len(rel))
        starts = np.cumsum(found) - found
        prec = (np.arange(len(row)) - starts[row] + 1) / (col + 1.0)
        sums = np.bincount(row, weights=prec, minlength=len(rel))
        total += float((sums[found > 0] / found[found > 0]).sum())
    return total / q_packed.shape[0]


def faiss_floor(faiss, q_packed, db_packed) -> float:
    """faiss IndexBinaryFlat searching k = 1: one XOR + popcount per pair and nothing ranked."""
    index = faiss.IndexBinaryFlat(db_packed.shape[1] * 8)
    index.add(db_packed)
    dist, _ = index.search(q_packed, 1)
    return float(dist.mean())


def _timed(fn, timings: list[tuple[float, float]]):
    """Run ``fn`` once, append its (wall, CPU of all threads) seconds to ``timings``, return its value."""
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    timings.append((time.perf_counter() - t0, time.process_time() - c0))
    return value


def faiss_table(chosen: list[int], repeat: int, isas: list[str]) -> None:
    """The evaluator on each kernel path vs faiss multi-count + AP vs the k = 1 floor (issue 36)."""
    import faiss

    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    print(f"CPU: {cpu_description()}")
    print(f"threads {threads} (hashkit and faiss), faiss {faiss.__version__}, numpy {np.__version__}, "
          f"best of {repeat}, load average {os.getloadavg()[0]:.2f}")
    for isa in isas:
        lib = fastkernels.load(isa)
        print(f"kernel path {isa}: {fastkernels.paths(lib) if lib is not None else 'unavailable'}")
    print()
    print("| configuration (queries x database, @k) | kernel path | mAP | hashkit | faiss multi-count + AP "
          "| floor (faiss k=1) | hashkit / floor | faiss / hashkit |")
    print("|---|---|---|---|---|---|---|---|")
    for c in chosen:
        case = CASES[c]
        qB, rB, qL, rL = make_data(case)
        qp, dp = np.packbits(qB > 0, axis=1), np.packbits(rB > 0, axis=1)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in (*isas, "faiss", "floor")}
        values: dict[str, float] = {}
        for _ in range(repeat):
            for isa in isas:
                os.environ[fastkernels.ENV_ISA] = isa
                values[isa] = _timed(lambda: mean_average_precision(qB, rB, qL, rL, topk=case.topk), times[isa])
            os.environ.pop(fastkernels.ENV_ISA, None)
            values["faiss"] = _timed(lambda: faiss_map(faiss, qp, dp, qL, rL, case.topk), times["faiss"])
            _timed(lambda: faiss_floor(faiss, qp, dp), times["floor"])
        for isa in isas:
            assert abs(values[isa] - values["faiss"]) <= 1e-9, f"{case.name}: {isa} {values[isa]} vs faiss"
        wall = {name: min(w for w, _ in t) for name, t in times.items()}
        cpu = {name: min(c for _, c in t) for name, t in times.items()}
        at = "ALL" if case.topk is None else str(case.topk)

        def cell(name: str) -> str:
            return f"{wall[name]:.3f} s ({cpu[name]:.3f} s)"

        for isa in isas:
            print(f"| {case.name} @{at} | {isa} | {values[isa]:.4f} | {cell(isa)} | {cell('faiss')} | {cell('floor')} "
                  f"| {wall[isa] / wall['floor']:.2f}x ({cpu[isa] / cpu['floor']:.2f}x) "
                  f"| {wall['faiss'] / wall[isa]:.2f}x ({cpu['faiss'] / cpu[isa]:.2f}x) |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}. Wall time (CPU time of all threads), each the "
          f"best of {repeat}; on a shared machine the CPU-time ratios are the steadier ones.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the reference on a query subset")
    parser.add_argument("--ref-queries", type=int, default=200, help="subset size with --quick")
    parser.add_argument("--cases", default="", help="comma-separated case numbers (1-4), default all")
    parser.add_argument("--faiss", action="store_true",
                        help="hashkit vs faiss multi-count + AP vs the k=1 floor, on each kernel path")
    parser.add_argument("--repeat", type=int, default=3, help="with --faiss: best of this many runs")
    parser.add_argument("--isas", default="",
                        help="with --faiss: comma-separated kernel paths (default: native, and avx2 when the "
                             "CPU has AVX-512)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], int(args.child[2]))
        return
    chosen = [int(c) - 1 for c in args.cases.split(",") if c] if args.cases else range(len(CASES))
    if args.faiss:
        if "OMP_WAIT_POLICY" not in os.environ:
            # OpenMP reads this when it loads (torch is imported above): restart with it set. Spinning
            # workers (the default) make faiss 3-7x slower on a machine whose cores are busy (measured).
            env = dict(os.environ, OMP_WAIT_POLICY="passive")
            os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
        isas = [i for i in args.isas.split(",") if i] or default_isas()
        faiss_table(list(chosen), max(1, args.repeat), isas)
        return

    print(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, bits {BITS}, mode {'quick' if args.quick else 'full'}, "
          f"load average {os.getloadavg()[0]:.2f}")
    t_compile = compile_seconds()
    print("kernel first use (compile + load, then cached): "
          + ("unavailable (no C compiler?)" if t_compile is None else f"{t_compile:.2f} s"))
    rows = []
    for c in chosen:
        case = CASES[c]
        at = "ALL" if case.topk is None else str(case.topk)
        k_val, k_wall, k_mem, k_cpu = run_child(c, "kernel", case.nq)
        n_val, n_wall, n_mem, n_cpu = run_child(c, "numpy", case.nq)
        if k_val is not None:
            assert abs(k_val - n_val) <= 1e-9, f"{case.name}: kernel {k_val!r} vs numpy {n_val!r}"
        nref = min(case.nq, args.ref_queries) if args.quick else case.nq
        ref, r_wall, r_mem, r_cpu = run_child(c, "reference", nref)
        ours_sub = n_val if nref == case.nq else run_child(c, "numpy", nref)[0]
        diff = abs(ours_sub - ref)
        if k_val is not None:
            k_sub = k_val if nref == case.nq else run_child(c, "kernel", nref)[0]
            diff = max(diff, abs(k_sub - ref))
        assert diff <= 1e-6, f"{case.name}: hashkit {ours_sub!r} vs reference {ref!r}"
        nq_u = min(100, case.nq)  # the default (unstable) argsort on a few queries
        unstable = abs(run_child(c, "unstable", nq_u)[0] - run_child(c, "numpy", nq_u)[0])
        _, f_wall, _, f_cpu = run_child(c, "floor", case.nq)
        r_wall, r_cpu = r_wall * case.nq / nref, r_cpu * case.nq / nref
        mark = "~" if nref < case.nq else ""
        rows.append((case, at, n_val, k_wall, k_cpu, k_mem, n_wall, n_cpu, n_mem, r_wall, r_cpu, r_mem,
                     mark, diff, unstable, f_wall, f_cpu))
        print(f"  done {case.name} @{at}: mAP {n_val:.4f}, kernel {_wc(k_wall, k_cpu)}, numpy "
              f"{_wc(n_wall, n_cpu)}, reference {_wc(r_wall, r_cpu, mark)}", flush=True)

    print()
    print(f"load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| case | @k | mAP | hashkit kernel wall (CPU) | numpy fallback wall (CPU) | reference wall (CPU) "
          "| speed-up kernel wall (CPU) | speed-up numpy wall (CPU) | CPU ns/pair kernel / floor / numpy "
          "| peak MiB kernel / numpy / ref | max abs diff | unstable-argsort diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (case, at, val, k_wall, k_cpu, k_mem, n_wall, n_cpu, n_mem, r_wall, r_cpu, r_mem, mark, diff,
         unstable, f_wall, f_cpu) in rows:
        pairs = case.nq * case.nd / 1e9
        ns_k = "n/a" if k_cpu is None else f"{k_cpu / pairs:.2f}"
        ns_f = "n/a" if f_cpu is None else f"{f_cpu / pairs:.2f}"
        mem_k = "n/a" if k_mem is None else f"{k_mem:.0f}"
        print(f"| {case.name} | {at} | {val:.4f} | {_wc(k_wall, k_cpu)} | {_wc(n_wall, n_cpu)} "
              f"| {_wc(r_wall, r_cpu, mark)} | {_x(r_wall, k_wall, mark)} ({_x(r_cpu, k_cpu, mark)}) "
              f"| {_x(r_wall, n_wall, mark)} ({_x(r_cpu, n_cpu, mark)}) | {ns_k} / {ns_f} / "
              f"{n_cpu / pairs:.2f} | {mem_k} / {n_mem:.0f} / {r_mem:.0f} | {diff:.1e} | {unstable:.1e} |")
    if args.quick:
        print(f"\n~ reference timed on the first {args.ref_queries} queries of each case and "
              "extrapolated linearly; agreement checked on those queries.")
    print("kernel: hashkit's default CPU path (hashkit.hamming.kernel, compiled on first use); numpy: the "
          "fallback without a compiler (HASHKIT_NO_KERNELS=1). Both on torch.get_num_threads() threads.")
    print("floor: the kernel computing only per-query distance histograms (pr_curve), the part of the "
          "work that no exact mAP@ALL avoids.")
    print("peak MiB: growth of the peak resident set during the call (inputs excluded), fresh process.")
    print("unstable-argsort diff: |mAP with numpy's default argsort - stable mAP| on the first 100 "
          "queries.")


if __name__ == "__main__":
    main()

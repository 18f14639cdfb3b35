"""Benchmark hashkit.evaluate.mean_average_precision against an obvious per-query numpy reference.

Synthetic but realistic codes: class-conditional 64-bit codes (a random ±1 centre per class, or the
sign of the sum of the centres of an item's labels for multi-label data) with independent bit flips,
the flip rate chosen so that mAP is about 0.7; the seed is fixed. The reference is what the seeds and
DeepHash-pytorch do per query (label dot product, float Hamming distance, argsort, cumulative
precision) with a *stable* argsort, so both must agree to 1e-6.

    python scripts/bench_eval.py            # full run (reference timed on every query)
    python scripts/bench_eval.py --quick    # reference timed on a subset, extrapolated (marked ~)

Every measurement runs in a fresh process with single-threaded BLAS (see run_child); hashkit uses
torch.get_num_threads() threads. Wall and CPU time (all threads) are both reported: on a shared
machine CPU time is the steadier number. Peak memory is the growth of the process's peak resident
set (VmHWM, reset through /proc/self/clear_refs) over the resident set before the call: inputs
excluded. The fused-C probe (needs a C compiler, skip with --no-probe) is not part of hashkit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashkit.evaluate import mean_average_precision  # noqa: E402

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


# A fused single-pass C kernel (XOR + popcount + counting ranks), compiled on the fly if a C compiler
# exists. It is NOT part of hashkit (which stays pure torch/numpy); it only measures how close the
# vectorised implementation gets to what one pass over the codes costs on this machine.
PROBE_C = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define S 4 /* independent index segments: breaks the counters' dependency chains */
void ap_rows(const uint64_t *q, const uint64_t *db, int W, const uint64_t *ql, const uint64_t *dl,
             int L, long nq, long nd, int bits, long k, double *ap) {
  #pragma omp parallel
  {
    uint16_t *key = malloc(nd * sizeof(uint16_t));   /* 2*d + rel */
    uint32_t *A = malloc(nd * sizeof(uint32_t)), *B = malloc(nd * sizeof(uint32_t));
    int nb = 2 * (bits + 1);
    uint32_t *cnt = malloc((size_t)S * nb * sizeof(uint32_t));
    #pragma omp for schedule(dynamic, 8)
    for (long i = 0; i < nq; i++) {
      /* pass 1: keys (vectorisable) */
      if (W == 1 && L == 1) {
        uint64_t qq = q[i], qlab = ql[i];
        for (long j = 0; j < nd; j++)
          key[j] = (uint16_t)(2 * __builtin_popcountll(qq ^ db[j]) + ((qlab & dl[j]) != 0));
      } else {
        for (long j = 0; j < nd; j++) {
          int h = 0, r = 0;
          for (int w = 0; w < W; w++) h += __builtin_popcountll(q[i * W + w] ^ db[j * W + w]);
          for (int l = 0; l < L; l++) r |= (ql[i * L + l] & dl[j * L + l]) != 0;
          key[j] = (uint16_t)(2 * h + r);
        }
      }
      /* per-segment histograms of (distance, relevance) */
      long seg = (nd + S - 1) / S;
      memset(cnt, 0, (size_t)S * nb * sizeof(uint32_t));
      for (long j = 0; j < seg; j++)
        for (int s = 0; s < S; s++) { long jj = s * seg + j; if (jj < nd) cnt[s * nb + key[jj]]++; }
      /* exclusive starts: all items before bucket h overall + items of bucket h in earlier segments */
      uint32_t run_all = 0, run_rel = 0;
      uint32_t *start_all = malloc((size_t)S * (bits + 1) * sizeof(uint32_t));
      uint32_t *start_rel = malloc((size_t)S * (bits + 1) * sizeof(uint32_t));
      for (int h = 0; h <= bits; h++) {
        uint32_t a = run_all, r = run_rel;
        for (int s = 0; s < S; s++) {
          start_all[s * (bits + 1) + h] = a; start_rel[s * (bits + 1) + h] = r;
          a += cnt[s * nb + 2 * h] + cnt[s * nb + 2 * h + 1]; r += cnt[s * nb + 2 * h + 1];
        }
        run_all = a; run_rel = r;
      }
      /* pass 2: ranks, S independent chains; relevant (A, B) stored branch-free */
      long m[S] = {0};
      for (long j = 0; j < seg; j++)
        for (int s = 0; s < S; s++) {
          long jj = s * seg + j;
          if (jj >= nd) continue;
          int kk = key[jj], h = kk >> 1, r = kk & 1;
          uint32_t a = ++start_all[s * (bits + 1) + h];
          uint32_t b = (start_rel[s * (bits + 1) + h] += r);
          long idx = s * seg + m[s];
          A[idx] = a; B[idx] = b; m[s] += r;
        }
      double sum = 0; long found = 0;
      for (int s = 0; s < S; s++)
        for (long t = 0; t < m[s]; t++) { long idx = s * seg + t; if (A[idx] <= k) { sum += (double)B[idx] / A[idx]; found++; } }
      ap[i] = found ? sum / found : 0.0;
      free(start_all); free(start_rel);
    }
    free(key); free(A); free(B); free(cnt);
  }
}
"""


def probe_kernel():
    """Compile PROBE_C with the system C compiler (cached in a temp dir) -> ctypes function or None."""
    import ctypes
    import hashlib
    import shutil
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    tag = hashlib.sha1(PROBE_C.encode()).hexdigest()[:12]
    lib = Path(tempfile.gettempdir()) / f"hashkit_bench_probe_{tag}.so"
    if not lib.exists():
        src = lib.with_suffix(".c")
        src.write_text(PROBE_C)
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
    fn = ctypes.CDLL(str(lib)).ap_rows
    fn.restype = None
    return fn


def probe_map(qB, rB, qL, rL, topk):
    """mAP@topk with the fused C kernel (same definition as hashkit); None without a compiler."""
    import ctypes

    fn = probe_kernel()
    if fn is None:
        return None
    from hashkit.hamming import pack_bits, packed_to_words

    q, db = packed_to_words(pack_bits(qB)), packed_to_words(pack_bits(rB))
    ql, dl = packed_to_words(np.packbits(qL > 0, axis=1)), packed_to_words(np.packbits(rL > 0, axis=1))
    ap = np.zeros(len(q))
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    fn(ptr(q), ptr(db), ctypes.c_int(q.shape[1]), ptr(ql), ptr(dl), ctypes.c_int(ql.shape[1]),
       ctypes.c_long(len(q)), ctypes.c_long(len(db)), ctypes.c_int(qB.shape[1]),
       ctypes.c_long(len(db) if topk is None else topk), ptr(ap))
    return float(ap.mean())


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(case_no: int, method: str, nq: int) -> None:
    """Run one measurement in this fresh process and print 'value seconds peak_mib' on stdout."""
    case = CASES[case_no]
    qB, rB, qL, rL = make_data(case)
    qB, qL = qB[:nq], qL[:nq]
    if method == "hashkit":
        fn = lambda: mean_average_precision(qB, rB, qL, rL, topk=case.topk)  # noqa: E731
    elif method == "reference":
        fn = lambda: reference_map(qB, rB, qL, rL, case.topk)  # noqa: E731
    elif method == "probe":
        probe_kernel()  # compile outside the timing
        fn = lambda: probe_map(qB, rB, qL, rL, case.topk)  # noqa: E731
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
    print(f"{value!r} {seconds!r} {peak!r} {cpu!r}" if value is not None else "None nan nan nan")


def run_child(case_no: int, method: str, nq: int) -> tuple:
    """(value, wall seconds, peak MiB, CPU seconds of all threads) measured in a fresh process."""
    # Single-threaded BLAS everywhere: the reference's per-query gemv gains nothing from threads and,
    # on a shared machine, OpenBLAS's waiting worker thread makes it 3-5x slower (measured), which
    # would inflate the baseline. hashkit threads through torch's setting (unchanged).
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(case_no), method, str(nq)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.split()
    if out[0] == "None":
        return None, None, None, None
    return float(out[0]), float(out[1]), float(out[2]), float(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the reference on a query subset")
    parser.add_argument("--ref-queries", type=int, default=200, help="subset size with --quick")
    parser.add_argument("--cases", default="", help="comma-separated case numbers (1-4), default all")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="skip the fused C kernel that estimates the physical limit")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], int(args.child[2]))
        return
    chosen = [int(c) - 1 for c in args.cases.split(",") if c] if args.cases else range(len(CASES))

    print(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, bits {BITS}, mode {'quick' if args.quick else 'full'}, "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = []
    for c in chosen:
        case = CASES[c]
        at = "ALL" if case.topk is None else str(case.topk)
        ours, t_ours, m_ours, c_ours = run_child(c, "hashkit", case.nq)
        nref = min(case.nq, args.ref_queries) if args.quick else case.nq
        ref, t_ref, m_ref, c_ref = run_child(c, "reference", nref)
        ours_sub = ours if nref == case.nq else run_child(c, "hashkit", nref)[0]
        diff = abs(ours_sub - ref)
        assert diff <= 1e-6, f"{case.name}: hashkit {ours_sub!r} vs reference {ref!r}"
        nq_u = min(100, case.nq)  # the default (unstable) argsort on a few queries
        unstable = abs(run_child(c, "unstable", nq_u)[0] - run_child(c, "hashkit", nq_u)[0])
        probe_val, t_probe, _, _ = run_child(c, "probe", case.nq) if args.probe else (None,) * 4
        if probe_val is not None:
            assert abs(probe_val - ours) <= 1e-9, f"{case.name}: probe {probe_val!r} vs {ours!r}"
        t_ref_full, c_ref_full = t_ref * case.nq / nref, c_ref * case.nq / nref
        mark = "~" if nref < case.nq else ""
        rows.append((case, at, ours, t_ours, c_ours, m_ours, t_ref_full, c_ref_full, mark, m_ref, diff,
                     unstable, t_probe))
        print(f"  done {case.name} @{at}: mAP {ours:.4f}, hashkit {t_ours:.2f}s, "
              f"reference {mark}{t_ref_full:.1f}s", flush=True)

    print()
    print(f"load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| case | @k | mAP | hashkit wall (CPU) | hashkit peak MiB | reference wall (CPU) "
          "| reference peak MiB | speed-up wall (CPU) | hashkit ns/pair | fused-C probe wall "
          "| max abs diff | unstable-argsort diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (case, at, ours, t_ours, c_ours, m_ours, t_ref, c_ref, mark, m_ref, diff, unstable,
         t_probe) in rows:
        ns_pair = t_ours / (case.nq * case.nd) * 1e9
        probe = "n/a" if t_probe is None else f"{t_probe:.2f} s ({mark}{t_ref / t_probe:.0f}x)"
        print(f"| {case.name} | {at} | {ours:.4f} | {t_ours:.2f} s ({c_ours:.2f} s) | {m_ours:.0f} "
              f"| {mark}{t_ref:.1f} s ({mark}{c_ref:.1f} s) | {m_ref:.0f} "
              f"| {mark}{t_ref / t_ours:.0f}x ({mark}{c_ref / c_ours:.0f}x) | {ns_pair:.2f} | {probe} "
              f"| {diff:.1e} | {unstable:.1e} |")
    if args.quick:
        print(f"\n~ reference timed on the first {args.ref_queries} queries of each case and "
              "extrapolated linearly; agreement checked on those queries.")
    print("fused-C probe: per query one XOR+popcount pass and one counting-rank pass in C/OpenMP, "
          "compiled on the fly; not part of hashkit, it estimates what a single fused pass costs here.")
    print("peak MiB: growth of the peak resident set during the call (inputs excluded), fresh process.")
    print("unstable-argsort diff: |mAP with numpy's default argsort - stable mAP| on the first 100 "
          "queries.")


if __name__ == "__main__":
    main()

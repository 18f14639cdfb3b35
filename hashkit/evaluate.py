"""Retrieval evaluation of binary codes: mAP@k, precision/recall within a Hamming radius, P@N, PR curve.

Conventions (all functions)
---------------------------
* Codes: (n, bits) ±1 or 0/1, float/int/bool, numpy or torch (validated by
  :func:`hashkit.hamming.to_pm1`). Labels: one-hot / multi-hot 0/1 matrices (n, classes). A database
  item is *relevant* to a query when they share at least one label. Label matrices with no columns on
  both sides (n, 0) mean unlabelled data: no ground truth, ``map`` is NaN and no other metric is given.
* Ranking: ascending Hamming distance, ties broken by database index (a stable sort). This makes
  every number here deterministic and independent of the sort implementation.
* AP@k of a query: the mean of precision@p over the relevant positions p within the top k, i.e.
  ``(1 / R_k) * sum_{p <= k, item p relevant} (#relevant in top p) / p`` with ``R_k`` the number of
  relevant items found in the top k. A query with ``R_k = 0`` scores 0 **and still counts** in the
  mean over queries. ``topk=None`` means all database items (mAP@ALL); ``topk`` larger than the
  database is the same as ``None``.
* Precision / recall within Hamming radius r (HashNet / DHN "P@H<=2"): the retrieved set is every
  item with distance <= r. precision = relevant retrieved / retrieved, **0 for a query that retrieves
  nothing**; recall = relevant retrieved / relevant in the database, 0 for a query with no relevant
  item at all. Both are means over all queries.
* ``pr_curve``: the same precision and recall for every radius r = 0..bits (cumulative within r).
* ``precision_at_n``: (#relevant in the top N) / N in the ranking above; N larger than the database
  is clipped to the database size.

How this relates to the seeds' and to public evaluation code (read for facts, nothing copied)
-------------------------------------------------------------------------------------------
* DeepHash-pytorch (swuxyj/DeepHash-pytorch, utils/tools.py ``CalcTopMap``), DPSH-pytorch
  (jiangqy/DPSH-pytorch, utils/CalcHammingRanking.py ``CalcMap``/``CalcTopMap``) and ADSH
  (jiangqy/ADSH-AAAI2018, ADSH_pytorch/utils/calc_hr.py ``calc_map``/``calc_topMap``): per query
  ``np.argsort`` with numpy's default kind on the float distance ``0.5 * (bits - q @ B.T)``; a query
  with no relevant item in the top k is skipped with ``continue`` but the sum is divided by
  ``num_query``, so it contributes 0 and counts, exactly as here. The only difference is tie order:
  numpy's default sort is not stable (introsort / SIMD sorts for arrays longer than 16), so equal
  distances come out in an implementation-defined order and the last digits of their mAP depend on
  the numpy build and CPU. Stable-sorting their distances reproduces our numbers exactly (see
  tests/test_evaluate.py). Quirk: DeepHash-pytorch's config uses ``topK = -1`` for "all", which
  slices ``gnd[0:-1]`` and so drops the last-ranked item; that changes mAP@ALL only when the last
  item is relevant (negligible).
* HashNet (thuml/HashNet, pytorch/src/test.py ``mean_average_precision``) and thulab/DeepHash
  (DeepHash/evaluation/__init__.py ``get_mAPs``) rank by inner product with an unstable
  argsort/argpartition and **drop** queries with no relevant item in the top R from the mean
  (``np.mean`` over the APs of queries with a hit). That gives a higher mAP than ours whenever such
  queries exist (HashNet issue #2 discusses it). Ours = theirs * (#queries with a hit) / #queries.
* thulab/DeepHash ``MAPs.get_precision_recall_by_Hamming_Radius`` uses the same precision/recall
  within radius as here (0 when nothing is retrieved, recall over all relevant database items), but
  divides by zero for a query with no relevant item in the database; we return recall 0 there.
  DeepHash-pytorch's ``pr_curve`` is over top-N cut-offs, not radii; use ``precision_at_n`` for that.

Speed and memory
----------------
Hamming distance has only bits + 1 values, so no general sort is needed. On CPU the default path is
the compiled kernel of :mod:`hashkit.hamming.kernel` (``kernel.c``) (C, built with the system compiler on first use in
about 1 s and cached): per query one pass computes the distances (XOR + popcount), a relevance bit
per item (a table over the database's label patterns), the distance histogram and, for each relevant
item, its rank in the stable (distance, index) order from the histogram so far plus a compare inside
its 64-item block. AP@k and P@N follow from the increasing ranks of the relevant items, P@H<=r and
the PR curve from the histograms; for mAP@k / P@N with small k a second pass visits only the items up
to the distance bucket that holds rank k. Without a C compiler, or with ``HASHKIT_NO_KERNELS=1``,
the numpy path gives the same numbers: each query row is computed by XOR + popcount on packed 64-bit
words (``hamming_distance_packed``), ranked with numpy's stable radix argsort of the uint8 distances
(a counting sort), and AP only reads the ranks of the relevant items; P@H<=r and the PR curve need
only two per-query histograms; P@N and mAP@k with small k rank only the items up to the bucket
containing the k-th item. Both spread query chunks over ``torch.get_num_threads()`` threads (ctypes
and numpy release the GIL). On CUDA (or any non-CPU torch device) the same quantities are computed
with torch: the matmul distance (``hamming_distance``), ``torch.sort(stable=True)`` and cumulative
sums, ``chunk_size`` queries at a time. Queries are always processed in chunks, so the full distance
matrix never exists.

Measured with ``python scripts/bench_eval.py`` (full run) on the 2-core shared development VM (AMD
EPYC with AVX-512, 64-bit codes, 2 threads; load average 2-4, another job kept both cores busy, so
wall ~ CPU time): 10,000 x 50,000 codes, mAP@ALL, the kernel takes 0.40 s wall / 0.40 s CPU (0.79
CPU-ns per pair), the numpy path 2.55 s / 2.52 s, the per-query argsort reference (single-threaded)
29.9 s / 29.2 s: 75x faster in wall time and 74x in CPU time (numpy path: 12x). The other cases in
CPU time: 1,000 x 59,000 @ALL 66x, 2,100 x 193,734 multi-label @5000 61x, 5,000 x 128,495 @1000
105x. How close to the limit: the same kernel computing only the distance histograms (XOR + popcount
and one histogram increment per pair, which any exact mAP@ALL needs; this is ``pr_curve``) costs
0.53 CPU-ns per pair, so mAP@ALL runs at about 1.5x that floor; the rest is the rank bookkeeping of
the relevant items (10 % of the pairs here).
CPUs without AVX-512 get AVX2 paths of their own (see :mod:`hashkit.hamming.kernel`; every path gives
bit-for-bit the numbers of the numpy path); ``python scripts/bench_eval.py --faiss`` times them against faiss
and the popcount floor (the measurements: docs/evaluation.md).
Peak memory on CPU for 5,000 x 200,000 codes of 64 bits (10 classes; the float32 inputs themselves
take 58 MiB): about 21 MiB extra for mAP@ALL and 32 MiB for all four metrics with the kernel (an
int8 and a packed copy of the codes plus ~15 bytes per database item per thread), 38-39 MiB with the
numpy path. The full float32 distance matrix would take 3.7 GiB.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from hashkit.errors import HashkitError
from hashkit.hamming import kernel as fastkernels
from hashkit.hamming import (
    _as_tensor,
    _pack_pm1_numpy,
    matmul_dtype,
    packed_to_words,
    pm1_matmul_distance,
    to_pm1,
    xor_popcount,
)

__all__ = [
    "METRIC_NAMES",
    "DEFAULT_NS",
    "mean_average_precision",
    "precision_recall_within_radius",
    "precision_at_n",
    "pr_curve",
    "evaluate_codes",
]

METRIC_NAMES: tuple[str, ...] = ("map", "precision_radius", "pr_curve", "precision_at")
DEFAULT_NS: tuple[int, ...] = tuple(range(100, 1001, 100))  # a curve, as papers draw P@N

# Backend used when the device is the CPU: "auto" (the compiled kernel of hashkit.hamming.kernel when it
# loads, else "numpy"), "kernel" (the compiled kernel; an error when it cannot load), "numpy"
# (popcount + radix argsort) or "torch" (the device-generic path that CUDA uses). Tests switch it to
# check that all give identical numbers.
_CPU_BACKEND = "auto"
# bytes of temporaries per (query, database item) pair in the torch path, and the budget per chunk
_TORCH_BYTES_PER_PAIR = 48
_TORCH_CHUNK_BUDGET = {"cpu": 256 << 20, "cuda": 1 << 30}


# ----------------------------------------------------------------------------------------------
# input validation


@dataclass
class _Inputs:
    """Validated inputs: ±1 int8 codes, bool labels and the database's distinct label patterns."""

    q: torch.Tensor  # (nq, bits) int8 ±1, on the caller's device
    db: torch.Tensor  # (nd, bits) int8 ±1
    bits: int
    q_labels: np.ndarray  # (nq, C) bool
    pid: np.ndarray  # (nd,) intp: label-pattern id of each database item
    patterns: np.ndarray  # (U, C) bool: distinct database label rows
    pattern_counts: np.ndarray  # (U,) int64

    @property
    def nq(self) -> int:
        return int(self.q.shape[0])

    @property
    def nd(self) -> int:
        return int(self.db.shape[0])


def _unlabelled(x: Any) -> bool:
    """Whether ``x`` is a label matrix with rows but no columns (n, 0): data without labels."""
    shape = getattr(x, "shape", None)
    return shape is not None and len(shape) == 2 and shape[1] == 0


def _labels(x: Any, name: str) -> np.ndarray:
    """Validate a one-hot/multi-hot label matrix and return it as a bool numpy array (n, C)."""
    t = _as_tensor(x, name)
    if t.ndim == 1:
        raise HashkitError(
            f"{name}: got a 1-D array of shape {tuple(t.shape)}; labels must be one-hot/multi-hot "
            "matrices (n, classes), e.g. numpy.eye(classes)[class_index]"
        )
    if t.ndim != 2 or t.shape[1] == 0:
        raise HashkitError(
            f"{name}: expected a one-hot/multi-hot matrix (n, classes), got shape {tuple(t.shape)}"
        )
    arr = t.detach().cpu().numpy()
    if arr.dtype == np.bool_:
        return arr
    ok = (arr == 0) | (arr == 1)
    if not ok.all():
        value = arr[~ok].flat[0]
        raise HashkitError(
            f"{name}: labels must be 0/1 (one-hot/multi-hot), found value {value!r}; "
            "convert -1/+1 label vectors with labels > 0"
        )
    return arr == 1


def _label_patterns(db_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct label rows of the database: (pattern id per item, patterns (U, C), counts (U,))."""
    nclass = db_labels.shape[1]
    packed = np.ascontiguousarray(np.packbits(db_labels, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    patterns = np.unpackbits(
        np.frombuffer(uniq.tobytes(), dtype=np.uint8).reshape(-1, packed.shape[1]),
        axis=1,
        count=nclass,
    ).astype(bool)
    return inverse.reshape(-1).astype(np.intp), patterns, counts.astype(np.int64)


def _prepare(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any) -> _Inputs:
    """Validate the four inputs together and say exactly which one is wrong."""
    q = to_pm1(query_codes, "query codes")
    db = to_pm1(db_codes, "database codes")
    if q.shape[0] == 0:
        raise HashkitError("query codes: no queries (shape has 0 rows)")
    if db.shape[0] == 0:
        raise HashkitError("database codes: empty database (shape has 0 rows)")
    if q.shape[1] != db.shape[1]:
        raise HashkitError(
            f"query codes have {q.shape[1]} bits but database codes have {db.shape[1]}; "
            "encode both with the same model"
        )
    if q.shape[1] > 65535:
        raise HashkitError(f"codes of {q.shape[1]} bits are longer than supported (65535)")
    ql = _labels(query_labels, "query labels")
    dl = _labels(db_labels, "database labels")
    if ql.shape[0] != q.shape[0]:
        raise HashkitError(
            f"{q.shape[0]} query codes but {ql.shape[0]} query label rows; they must match one-to-one"
        )
    if dl.shape[0] != db.shape[0]:
        raise HashkitError(
            f"{db.shape[0]} database codes but {dl.shape[0]} database label rows; "
            "they must match one-to-one"
        )
    if ql.shape[1] != dl.shape[1]:
        raise HashkitError(
            f"query labels have {ql.shape[1]} classes but database labels have {dl.shape[1]}; "
            "both must use the same class list"
        )
    pid, patterns, counts = _label_patterns(dl)
    return _Inputs(q, db, int(q.shape[1]), ql, pid, patterns, counts)


def _resolve_device(device: Any, inp: _Inputs) -> torch.device:
    """``None`` -> the codes' device (CPU for numpy input); strings and torch.device are checked."""
    if device is None:
        return inp.q.device if inp.q.device.type != "cpu" else inp.db.device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise HashkitError(
            f"device {device!r} is not a valid torch device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HashkitError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HashkitError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return dev


def _check_topk(topk: Any, nd: int) -> int:
    """``None`` -> nd; a positive int is clipped to nd."""
    if topk is None:
        return nd
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise HashkitError(f"topk must be a positive integer or None (all items), got {topk!r}")
    return min(int(topk), nd)


def _check_ns(ns: Any) -> tuple[int, ...]:
    if isinstance(ns, (int, np.integer)) and not isinstance(ns, bool):
        ns = (ns,)
    try:
        values = tuple(ns)
    except TypeError as exc:
        raise HashkitError(f"ns must be a list of positive integers, got {ns!r}") from exc
    if not values or any(
        isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in values
    ):
        raise HashkitError(f"ns must be a non-empty list of positive integers, got {ns!r}")
    return tuple(int(n) for n in values)


def _check_radius(radius: Any) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise HashkitError(f"radius must be a non-negative integer, got {radius!r}")
    return int(radius)


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise HashkitError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


# ----------------------------------------------------------------------------------------------
# per-query statistics, shared by all metrics


@dataclass
class _Stats:
    """Per-query raw numbers; metrics are means of simple functions of these."""

    n_rel: np.ndarray  # (nq,) relevant items in the whole database
    ap: np.ndarray | None = None  # (nq,) AP@k
    hist_all: np.ndarray | None = None  # (nq, bits+1) items at each distance
    hist_rel: np.ndarray | None = None  # (nq, bits+1) relevant items at each distance
    hits: np.ndarray | None = None  # (nq, len(ns)) relevant items in the top N


def _compute(
    inp: _Inputs,
    *,
    ap_k: int | None,
    ns: tuple[int, ...],
    hist: bool,
    device: Any,
    chunk_size: int | None,
) -> _Stats:
    """Compute the per-query statistics that the requested metrics need, in query chunks."""
    dev = _resolve_device(device, inp)
    nq, nd, bits = inp.nq, inp.nd, inp.bits
    ns_clip = np.minimum(np.asarray(ns, dtype=np.int64), nd) if ns else np.zeros(0, np.int64)
    stats = _Stats(n_rel=np.zeros(nq, dtype=np.int64))
    if ap_k is not None:
        stats.ap = np.zeros(nq, dtype=np.float64)
    if hist:
        stats.hist_all = np.zeros((nq, bits + 1), dtype=np.int64)
        stats.hist_rel = np.zeros((nq, bits + 1), dtype=np.int64)
    if ns:
        stats.hits = np.zeros((nq, len(ns)), dtype=np.int64)
    backend = _cpu_backend() if dev.type == "cpu" else "torch"
    if backend == "kernel" and nd < (1 << 31):  # the kernel counts in uint32
        _run_kernel(fastkernels.load(), inp, stats, ap_k, ns_clip, chunk_size)
    elif backend in ("kernel", "numpy"):
        _run_numpy(inp, stats, ap_k, ns_clip, chunk_size)
    else:
        _run_torch(inp, stats, ap_k, ns_clip, chunk_size, dev)
    return stats


def _cpu_backend() -> str:
    """Resolve ``_CPU_BACKEND`` to the CPU path that runs: "kernel", "numpy" or "torch"."""
    if _CPU_BACKEND == "auto":
        return "kernel" if fastkernels.load() is not None else "numpy"
    if _CPU_BACKEND == "kernel" and fastkernels.load() is None:
        raise RuntimeError(
            "the compiled evaluation kernel is not available (no C compiler, a failed build, or "
            f"{fastkernels.ENV_DISABLE}=1); use the 'numpy' backend"
        )
    return _CPU_BACKEND


def _spans(nq: int, chunk_size: int | None, cap: int) -> tuple[list[tuple[int, int]], int]:
    """Query chunks [lo, hi) and the number of threads to spread them over."""
    nthreads = max(1, torch.get_num_threads())
    if chunk_size is None:  # a few tasks per thread; the (chunk, label patterns) table stays small
        chunk_size = max(1, min(256, math.ceil(nq / (4 * nthreads)), cap))
    spans = [(lo, min(lo + chunk_size, nq)) for lo in range(0, nq, chunk_size)]
    return spans, min(nthreads, len(spans))


def _run_spans(task, spans: list[tuple[int, int]], nthreads: int) -> None:
    """Run ``task(lo, hi)`` for every span, on ``nthreads`` threads (numpy and ctypes drop the GIL)."""
    if nthreads == 1:
        for lo, hi in spans:
            task(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=nthreads) as pool:
        for future in [pool.submit(task, lo, hi) for lo, hi in spans]:
            future.result()


def _relevant_patterns(inp: _Inputs, lo: int, hi: int) -> np.ndarray:
    """(hi-lo, U) bool: does query i share a label with database label pattern u."""
    overlap = inp.q_labels[lo:hi].astype(np.float32) @ inp.patterns.T.astype(np.float32)
    return overlap > 0.5


def _run_numpy(
    inp: _Inputs, stats: _Stats, ap_k: int | None, ns_clip: np.ndarray, chunk_size: int | None
) -> None:
    """CPU path: one query row at a time (popcount distances, radix argsort), rows over threads."""
    nq, nd, bits = inp.nq, inp.nd, inp.bits
    qw = packed_to_words(_pack_pm1_numpy(inp.q.cpu().numpy()))
    dbw = packed_to_words(_pack_pm1_numpy(inp.db.cpu().numpy()))
    db_cols = [np.ascontiguousarray(dbw[:, w]) for w in range(dbw.shape[1])]
    dist_dtype = np.uint8 if bits <= 255 else np.uint16
    need_k = max(ap_k or 0, int(ns_clip.max()) if ns_clip.size else 0)
    hist = stats.hist_all is not None
    nbins = bits + 1

    def task(lo: int, hi: int) -> None:
        relpat = _relevant_patterns(inp, lo, hi)
        stats.n_rel[lo:hi] = relpat.astype(np.int64) @ inp.pattern_counts
        xor = np.empty(nd, dtype=np.uint64)
        cnt = np.empty(nd, dtype=np.uint8)
        d = np.empty(nd, dtype=dist_dtype)
        rel = np.empty(nd, dtype=bool)
        for r, i in enumerate(range(lo, hi)):
            # Hamming distances of query i to every database item: XOR + popcount per 64-bit word
            xor_popcount(qw[i], db_cols, d, xor, cnt)
            np.take(relpat[r], inp.pid, out=rel)
            counts = None
            if hist:
                counts = np.bincount(d, minlength=nbins)
                stats.hist_all[i] = counts
                stats.hist_rel[i] = np.bincount(d[rel], minlength=nbins)
            if not need_k:
                continue
            if need_k * 2 <= nd:
                # only the items up to the distance bucket that holds the need_k-th item matter;
                # flatnonzero keeps index order, so a stable sort of that subset is the ranking
                if counts is None:
                    counts = np.bincount(d, minlength=nbins)
                cut = int(np.searchsorted(np.cumsum(counts), need_k))
                cand = np.flatnonzero(d <= cut)
                order = cand[np.argsort(d[cand], kind="stable")[:need_k]]
            else:
                order = np.argsort(d, kind="stable")  # radix sort for uint8/uint16 keys
            pos = np.flatnonzero(rel[order])  # 0-based ranks of the relevant items, ascending
            if ap_k is not None:
                found = pos[: int(np.searchsorted(pos, ap_k))]
                if found.size:
                    prec = np.arange(1, found.size + 1, dtype=np.float64) / (found + 1)
                    stats.ap[i] = prec.sum() / found.size
            if ns_clip.size:
                stats.hits[i] = np.searchsorted(pos, ns_clip)  # relevant items ranked < N

    _run_spans(task, *_spans(nq, chunk_size, (1 << 22) // len(inp.patterns)))


def _label_words(labels: np.ndarray) -> np.ndarray:
    """(n, C <= 64) bool labels -> (n,) uint64 with bit c set for label c."""
    packed = np.zeros((labels.shape[0], 8), dtype=np.uint8)
    packed[:, : (labels.shape[1] + 7) // 8] = np.packbits(labels, axis=1, bitorder="little")
    return np.ascontiguousarray(packed.view("<u8").reshape(-1).astype(np.uint64))


def _run_kernel(
    lib: Any, inp: _Inputs, stats: _Stats, ap_k: int | None, ns_clip: np.ndarray, chunk_size: int | None
) -> None:
    """CPU path with the compiled kernel (hashkit.hamming.kernel): one fused pass per query, no sort."""
    fn = lib.hk_eval_rows
    nq, nd, bits = inp.nq, inp.nd, inp.bits
    qw = np.ascontiguousarray(packed_to_words(_pack_pm1_numpy(inp.q.cpu().numpy())))
    dbw = np.ascontiguousarray(packed_to_words(_pack_pm1_numpy(inp.db.cpu().numpy())))
    # relevance: a byte table over label-pattern ids (<= 256 patterns), else 64-bit label words
    # (<= 64 classes, e.g. multi-label data with many label combinations), else int32 pattern ids
    n_pat, n_cls = inp.patterns.shape
    pid8 = pid32 = dlab = qlab = None
    if n_pat <= 256:
        pid8 = np.ascontiguousarray(inp.pid, dtype=np.uint8)
    elif n_cls <= 64:
        dlab = _label_words(inp.patterns)[inp.pid]
        qlab = _label_words(inp.q_labels)
    else:
        pid32 = np.ascontiguousarray(inp.pid, dtype=np.int32)
    ns_arr = np.ascontiguousarray(ns_clip, dtype=np.int64)
    outs = (stats.ap, stats.hits, stats.hist_all, stats.hist_rel, stats.n_rel)
    for a in outs:
        assert a is None or (a.flags.c_contiguous and a.dtype in (np.float64, np.int64))

    def ptr(a: np.ndarray | None) -> int | None:
        return None if a is None else a.ctypes.data

    def task(lo: int, hi: int) -> None:
        relq = None
        if dlab is None:
            relq = np.ascontiguousarray(_relevant_patterns(inp, lo, hi), dtype=np.uint8)
        rc = fn(ptr(qw), ptr(dbw), qw.shape[1], nd, bits, ptr(pid8), ptr(pid32), ptr(relq), n_pat,
                ptr(dlab), ptr(qlab), lo, hi, ap_k or 0, ptr(ns_arr), len(ns_arr),
                *(ptr(a) for a in outs))
        if rc != 0:
            raise MemoryError(f"evaluation kernel: out of memory for a database of {nd} items")

    _run_spans(task, *_spans(nq, chunk_size, max(1, (1 << 22) // n_pat)))


def _run_torch(
    inp: _Inputs,
    stats: _Stats,
    ap_k: int | None,
    ns_clip: np.ndarray,
    chunk_size: int | None,
    dev: torch.device,
) -> None:
    """Device-generic path (CUDA): matmul distances, stable sort and cumsums, chunk by chunk."""
    nq, nd, bits = inp.nq, inp.nd, inp.bits
    q = inp.q.to(dev)
    db = inp.db.to(dev)
    ftype = matmul_dtype(dev, bits)
    dbf = db.to(ftype)
    pid = torch.from_numpy(inp.pid).to(dev)
    need_k = max(ap_k or 0, int(ns_clip.max()) if ns_clip.size else 0)
    hist = stats.hist_all is not None
    if chunk_size is None:
        budget = _TORCH_CHUNK_BUDGET.get(dev.type, 256 << 20)
        chunk_size = max(1, min(nq, budget // (_TORCH_BYTES_PER_PAIR * nd)))
    ranks = torch.arange(1, need_k + 1, dtype=torch.float64, device=dev) if need_k else None
    for lo in range(0, nq, chunk_size):
        hi = min(lo + chunk_size, nq)
        relpat = torch.from_numpy(_relevant_patterns(inp, lo, hi)).to(dev)
        stats.n_rel[lo:hi] = (
            relpat.to(torch.int64) @ torch.from_numpy(inp.pattern_counts).to(dev)
        ).cpu().numpy()
        dist = pm1_matmul_distance(q[lo:hi].to(ftype), dbf, bits)  # (chunk, nd) int16, exact
        rel = relpat[:, pid]  # (chunk, nd) bool
        if hist:
            idx = dist.long()
            h_all = torch.zeros((hi - lo, bits + 1), dtype=torch.int64, device=dev)
            h_all.scatter_add_(1, idx, torch.ones_like(idx))
            h_rel = torch.zeros_like(h_all).scatter_add_(1, idx, rel.long())
            stats.hist_all[lo:hi] = h_all.cpu().numpy()
            stats.hist_rel[lo:hi] = h_rel.cpu().numpy()
            del idx
        if need_k:
            order = torch.sort(dist, dim=1, stable=True).indices[:, :need_k]
            rs = rel.gather(1, order)  # relevance in rank order
            del order
            cum = rs.cumsum(1)
            if ap_k is not None:
                rsa = rs[:, :ap_k]
                num = ((cum[:, :ap_k] / ranks[:ap_k]) * rsa).sum(1)
                found = rsa.sum(1)
                ap = torch.where(found > 0, num / found.clamp(min=1), torch.zeros_like(num))
                stats.ap[lo:hi] = ap.cpu().numpy()
            if ns_clip.size:
                cols = torch.from_numpy(ns_clip - 1).to(dev)
                stats.hits[lo:hi] = cum[:, cols].cpu().numpy()
            del rs, cum
        del dist, rel


# ----------------------------------------------------------------------------------------------
# metrics from the statistics


def _pr_from_hist(stats: _Stats) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall within radius r for r = 0..bits (conventions: module docstring)."""
    cum_all = np.cumsum(stats.hist_all, axis=1)
    cum_rel = np.cumsum(stats.hist_rel, axis=1)
    prec = np.divide(cum_rel, cum_all, out=np.zeros(cum_all.shape), where=cum_all > 0)
    n_rel = stats.n_rel[:, None]
    rec = np.divide(cum_rel, n_rel, out=np.zeros(cum_rel.shape), where=n_rel > 0)
    return prec.mean(axis=0), rec.mean(axis=0)


def _precision_at(stats: _Stats, ns: tuple[int, ...], nd: int) -> dict[int, float]:
    denom = np.minimum(np.asarray(ns, dtype=np.float64), nd)
    values = (stats.hits / denom).mean(axis=0)
    return {n: float(v) for n, v in zip(ns, values)}


def mean_average_precision(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = None,
    device: Any = None,
    chunk_size: int | None = None,
) -> float:
    """mAP@topk (None = all) of Hamming ranking with ties broken by database index.

    Queries with no relevant item in the top k score 0 and count in the mean (module docstring
    compares this with DeepHash-pytorch / DPSH / ADSH / HashNet). ``device``: 'cpu', 'cuda:N' or a
    torch.device (default: the codes' device); ``chunk_size``: queries per work unit.
    """
    inp = _prepare(query_codes, db_codes, query_labels, db_labels)
    k = _check_topk(topk, inp.nd)
    stats = _compute(inp, ap_k=k, ns=(), hist=False, device=device, chunk_size=_check_chunk(chunk_size))
    return float(stats.ap.mean())


def precision_recall_within_radius(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    radius: int = 2,
    device: Any = None,
    chunk_size: int | None = None,
) -> tuple[float, float]:
    """Mean (precision, recall) of the items within Hamming distance <= radius (HashNet P@H<=2).

    A query that retrieves nothing has precision 0; one with no relevant database item has recall
    0; both still count in the means.
    """
    inp = _prepare(query_codes, db_codes, query_labels, db_labels)
    r = min(_check_radius(radius), inp.bits)
    stats = _compute(inp, ap_k=None, ns=(), hist=True, device=device, chunk_size=_check_chunk(chunk_size))
    prec, rec = _pr_from_hist(stats)
    return float(prec[r]), float(rec[r])


def precision_at_n(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    ns: Sequence[int] = DEFAULT_NS,
    device: Any = None,
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Mean precision of the top N items for each N in ``ns`` -> {N: precision}.

    Same ranking as mAP (distance, then database index); N above the database size is clipped to it.
    """
    inp = _prepare(query_codes, db_codes, query_labels, db_labels)
    ns_t = _check_ns(ns)
    stats = _compute(inp, ap_k=None, ns=ns_t, hist=False, device=device, chunk_size=_check_chunk(chunk_size))
    return _precision_at(stats, ns_t, inp.nd)


def pr_curve(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    device: Any = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall within Hamming radius r for r = 0..bits -> two float64 arrays.

    Entry r uses the items with distance <= r (same conventions as precision_recall_within_radius).
    """
    inp = _prepare(query_codes, db_codes, query_labels, db_labels)
    stats = _compute(inp, ap_k=None, ns=(), hist=True, device=device, chunk_size=_check_chunk(chunk_size))
    return _pr_from_hist(stats)


def _metric_list(metrics: str | Iterable[str]) -> tuple[str, ...]:
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [str(m).strip() for m in names if str(m).strip()]
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise HashkitError(
            f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(METRIC_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


def evaluate_codes(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    metrics: str | Iterable[str] = ("map",),
    topk: int | None = None,
    device: Any = None,
    ns: Sequence[int] | None = None,
    radius: int = 2,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Compute several metrics in one pass over the queries and return a JSON-serialisable dict.

    Keys (only the requested ones): ``map`` (float, mAP@topk), ``precision_radius``
    ({"radius", "precision", "recall"}), ``pr_curve`` ({"precision": [...], "recall": [...]} over
    radii 0..bits) and ``precision_at`` ({"100": ..., ...} for N in ``ns``, default 100, 200, …, 1000).
    ``metrics`` is a list of names from METRIC_NAMES or a comma-separated string.
    """
    names = _metric_list(metrics)
    if _unlabelled(query_labels) and _unlabelled(db_labels):
        # No label columns on either side (an unlabelled dataset, e.g. a flat --dataset folder): no item is
        # relevant or irrelevant, so no metric exists. mAP is NaN — not 0, which reads as "nothing relevant
        # was found" — and result.json writes it as null (hashkit.atomic.json_safe); the other metrics are absent.
        _prepare(query_codes, db_codes, np.ones((len(query_labels), 1)), np.ones((len(db_labels), 1)))
        return {"map": float("nan")} if "map" in names else {}
    inp = _prepare(query_codes, db_codes, query_labels, db_labels)
    k = _check_topk(topk, inp.nd)
    r = _check_radius(radius)
    ns_t = _check_ns(DEFAULT_NS if ns is None else ns) if "precision_at" in names else ()
    stats = _compute(
        inp,
        ap_k=k if "map" in names else None,
        ns=ns_t,
        hist="precision_radius" in names or "pr_curve" in names,
        device=device,
        chunk_size=_check_chunk(chunk_size),
    )
    out: dict[str, Any] = {}
    if "map" in names:
        out["map"] = float(stats.ap.mean())
    if "precision_radius" in names or "pr_curve" in names:
        prec, rec = _pr_from_hist(stats)
        if "precision_radius" in names:
            rr = min(r, inp.bits)
            out["precision_radius"] = {
                "radius": r,
                "precision": float(prec[rr]),
                "recall": float(rec[rr]),
            }
        if "pr_curve" in names:
            out["pr_curve"] = {"precision": prec.tolist(), "recall": rec.tolist()}
    if "precision_at" in names:
        out["precision_at"] = {str(n): v for n, v in _precision_at(stats, ns_t, inp.nd).items()}
    return out

"""The native search engine: exact top-k and radius search by XOR + popcount, streaming over codes.

Distances come from the compiled kernel's ``hk_tile_distances`` (:mod:`hashkit.hamming.kernel`: the
same AVX-512 / AVX2 / scalar popcount path as the evaluator, per ``HASHKIT_KERNEL_ISA``), or without
it from :func:`hashkit.hamming.xor_popcount` (numpy popcount, numpy 1.x fallback included), in tiles of ``QUERY_CHUNK`` queries x ``SCAN_ITEMS`` codes (uint8/uint16, about 1 MiB),
computed in sub-tiles of ``XOR_ITEMS`` codes (the uint64 XOR buffer, about L2); codes stream in
blocks of at most ``BLOCK_BYTES`` packed bytes. Tuning measured on a 2-core EPYC.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np

from hashkit.hamming import kernel, word_columns, xor_popcount

QUERY_CHUNK = 32
SCAN_ITEMS = 1 << 15
XOR_ITEMS = 4096
BLOCK_BYTES = 32 << 20
STATE_BYTES = 256 << 20  # per-search bound on the running top-k state; queries are batched above it


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _dist_dtype(bits: int) -> type:
    return np.uint8 if bits + 1 <= 255 else np.uint16


class _Scratch(threading.local):
    """Per-thread buffers: XOR words and popcounts of a sub-tile, distances and mask of a tile."""

    def get(self, qc: int, ddtype: type) -> None:
        size, xsize = qc * SCAN_ITEMS, qc * XOR_ITEMS
        if getattr(self, "size", 0) < size or self.xsize < xsize or self.ddtype is not ddtype:
            self.size, self.xsize, self.ddtype = size, xsize, ddtype
            self.x = np.empty(xsize, np.uint64)
            self.t = np.empty(xsize, np.uint8)
            self.d = np.empty(size, ddtype)
            self.m = np.zeros(size + 8, np.bool_)  # + 8: room to zero-pad to whole uint64 words


def _sparse_flatnonzero(m: np.ndarray, size: int) -> np.ndarray:
    """Ascending indices of True in ``m[:size]``: test 8 flags per uint64 word, expand only hit words.

    About twice as fast as np.flatnonzero when few flags are set (the common case after the
    first tiles, since only items closer than the current k-th neighbour are flagged).
    """
    size8 = -(-size // 8) * 8
    m[size:size8] = False
    hit = np.flatnonzero(m[:size8].view(np.uint64) != 0)
    if hit.size == 0:
        return hit
    r, c = np.nonzero(m[:size8].reshape(-1, 8)[hit])
    return hit[r] * 8 + c


def _tile_distances(
    q: list[np.ndarray], words: np.ndarray, j: int, n: int, scratch: _Scratch, ddtype: type,
    qflat: np.ndarray | None = None,
) -> np.ndarray:
    """Hamming distances (len(q[0]), n) between the query words and codes j..j+n of ``words``.

    With the compiled kernel (and ``qflat``, the query words as a contiguous (W, qc) array): one
    fused call. Otherwise popcount(q XOR x) summed over the uint64 words, XOR_ITEMS codes at a time
    so the uint64 intermediate stays in L2. Returns a view into the per-thread scratch buffer.
    """
    qc = len(q[0])
    scratch.get(qc, ddtype)
    D = scratch.d[: qc * n].reshape(qc, n)
    lib = kernel.load() if qflat is not None else None
    if lib is not None and words.dtype == np.uint64 and words.strides[1] == 8 and words.strides[0] % 8 == 0:
        lib.hk_tile_distances(qflat.ctypes.data, qc, words[:, j:].ctypes.data, words.strides[0] // 8,
                              words.shape[0], n, D.ctypes.data, int(ddtype is np.uint16))
        return D
    for s in range(0, n, XOR_ITEMS):
        e = min(n, s + XOR_ITEMS)
        x = scratch.x[: qc * (e - s)].reshape(qc, e - s)
        tmp = scratch.t[: qc * (e - s)].reshape(qc, e - s)
        xor_popcount(q, [words[w, j + s : j + e] for w in range(len(q))], D[:, s:e], x, tmp)
    return D


class _KnnChunk:
    """Running exact top-k of a few queries, sorted by (distance, position), merged tile by tile.

    Codes arrive in position order, so an item whose distance equals the current k-th distance can
    never enter (it loses the tie); only strictly closer items are candidates. Candidates are merged
    by a stable sort on (row, distance) of [current best, new candidates]: equal keys keep the
    current best first and candidates in position order, i.e. exact (distance, position) order.
    """

    def __init__(self, qwords: np.ndarray, k: int, bits: int) -> None:
        self.q = [np.ascontiguousarray(qwords[w])[:, None] for w in range(len(qwords))]
        self.qflat = np.ascontiguousarray(qwords, dtype=np.uint64)  # (W, qc) for the compiled kernel
        qc = qwords.shape[1]
        self.k, self.qc = k, qc
        self.ddtype = _dist_dtype(bits)
        self.sent = bits + 1  # "no item yet": larger than any distance
        self.best_d = np.full((qc, k), self.sent, self.ddtype)
        self.best_i = np.full((qc, k), -1, np.int64)
        self.tau = np.full((qc, 1), self.sent, self.ddtype)
        self.full = False
        self.seen = 0  # codes scanned so far; tiles grow geometrically up to SCAN_ITEMS
        self.first_tile = max(1024, 2 * k)
        self.merge_at = max(8192, qc * k)
        self._rows = np.repeat(np.arange(qc), k)
        self._take = np.arange(k)
        self._small_key = qc * (self.sent + 1) <= 1 << 16
        self._cand: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._ncand = 0

    def scan(self, base: int, words: np.ndarray, scratch: _Scratch) -> None:
        """Fold codes ``words`` (W, c), positions base..base+c, into the running top-k."""
        c = words.shape[1]
        j = 0
        while j < c:
            n = min(SCAN_ITEMS, max(self.first_tile, self.seen), c - j)
            D = _tile_distances(self.q, words, j, n, scratch, self.ddtype, self.qflat)
            np.less(D, self.tau, out=scratch.m[: self.qc * n].reshape(self.qc, n))
            flat = _sparse_flatnonzero(scratch.m, self.qc * n)
            if flat.size:
                rows, cols = np.divmod(flat, n)
                self._cand.append((rows, cols + (base + j), D.reshape(-1)[flat]))
                self._ncand += flat.size
                if not self.full or self._ncand >= self.merge_at:
                    self.merge()
            j += n
            self.seen += n
        self.merge()

    def merge(self) -> None:
        """Merge pending candidates into best_d / best_i and update the per-query threshold tau."""
        if not self._cand:
            return
        rows_c = np.concatenate([c[0] for c in self._cand])
        rows = np.concatenate([self._rows, rows_c])
        d = np.concatenate([self.best_d.reshape(-1)] + [c[2] for c in self._cand])
        p = np.concatenate([self.best_i.reshape(-1)] + [c[1] for c in self._cand])
        key = rows * (self.sent + 1) + d
        if self._small_key:
            key = key.astype(np.uint16)  # stable sort of 16-bit keys is a radix sort
        order = np.argsort(key, kind="stable")
        counts = np.bincount(rows_c, minlength=self.qc) + self.k
        starts = np.cumsum(counts) - counts
        sel = order[(starts[:, None] + self._take).reshape(-1)]
        self.best_d = d[sel].reshape(self.qc, self.k)
        self.best_i = p[sel].reshape(self.qc, self.k)
        self.tau = self.best_d[:, -1:].copy()
        self.full = bool((self.best_i[:, -1] >= 0).all())
        self._cand, self._ncand = [], 0


class _RangeChunk:
    """All (row, position, distance) with distance <= radius for a few queries, in position order."""

    def __init__(self, qwords: np.ndarray, radius: int, bits: int) -> None:
        self.q = [np.ascontiguousarray(qwords[w])[:, None] for w in range(len(qwords))]
        self.qflat = np.ascontiguousarray(qwords, dtype=np.uint64)  # (W, qc) for the compiled kernel
        self.qc = qwords.shape[1]
        self.ddtype = _dist_dtype(bits)
        self.radius = self.ddtype(radius)
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def scan(self, base: int, words: np.ndarray, scratch: _Scratch) -> None:
        c = words.shape[1]
        for j in range(0, c, SCAN_ITEMS):
            n = min(SCAN_ITEMS, c - j)
            D = _tile_distances(self.q, words, j, n, scratch, self.ddtype, self.qflat)
            np.less_equal(D, self.radius, out=scratch.m[: self.qc * n].reshape(self.qc, n))
            flat = _sparse_flatnonzero(scratch.m, self.qc * n)
            if flat.size:
                rows, cols = np.divmod(flat, n)
                self.found.append((rows, cols + (base + j), D.reshape(-1)[flat]))


def _run_chunks(
    q: np.ndarray,
    blocks: Callable[[], Iterator[tuple[int, np.ndarray]]],
    make: Callable[[np.ndarray], Any],
    threads: int | None,
    batch: int,
) -> list[tuple[int, Any]]:
    """Scan all code blocks for query batches of ``batch``; threads share each block's query chunks."""
    nthreads = max(1, int(threads or default_threads()))
    qwords = word_columns(q)
    nq = qwords.shape[1]
    qc = max(1, min(QUERY_CHUNK, math.ceil(nq / nthreads)))
    batch = max(qc * nthreads, batch // qc * qc)
    scratch = _Scratch()
    done: list[tuple[int, Any]] = []
    pool = ThreadPoolExecutor(nthreads) if nthreads > 1 and nq > qc else None
    try:
        for b0 in range(0, nq, batch):
            chunks = [(s, make(qwords[:, s : min(s + qc, b0 + batch, nq)])) for s in range(b0, min(nq, b0 + batch), qc)]
            for base, words in blocks():
                if pool is None:
                    for _, ch in chunks:
                        ch.scan(base, words, scratch)
                else:
                    list(pool.map(lambda item: item[1].scan(base, words, scratch), chunks))
            done.extend(chunks)
    finally:
        if pool is not None:
            pool.shutdown()
    return done


def native_knn(
    q: np.ndarray, blocks: Callable[[], Iterator[tuple[int, np.ndarray]]], k: int, bits: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (k <= number of codes) with the numpy popcount engine."""
    batch = max(1, STATE_BYTES // (k * 9 + 1))
    chunks = _run_chunks(q, blocks, lambda qw: _KnnChunk(qw, k, bits), threads, batch)
    D = np.concatenate([ch.best_d for _, ch in chunks]).astype(np.int32)
    I = np.concatenate([ch.best_i for _, ch in chunks])
    return D, I


def native_range(
    q: np.ndarray, blocks: Callable[[], Iterator[tuple[int, np.ndarray]]], radius: int, bits: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position, distance) of every pair within ``radius``, per row in position order."""
    chunks = _run_chunks(q, blocks, lambda qw: _RangeChunk(qw, radius, bits), threads, len(q))
    parts = [(r + s, p, d) for s, ch in chunks for r, p, d in ch.found]
    return concat3(parts)


def concat3(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    rows, pos, dist = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return rows.astype(np.int64), pos.astype(np.int64), dist.astype(np.int32)


def group_sorted(
    rows: np.ndarray, pos: np.ndarray, dist: np.ndarray, nrows: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split (row, position, distance) triples per row, each sorted by (distance, position)."""
    order = np.lexsort((pos, dist, rows))
    rows, pos, dist = rows[order], pos[order], dist[order]
    bounds = np.searchsorted(rows, np.arange(nrows + 1))
    return [
        (dist[a:b].astype(np.int32), pos[a:b].astype(np.int64)) for a, b in zip(bounds[:-1], bounds[1:])
    ]

"""Multi-index hashing (MIH): exact sub-linear k-NN and radius search in Hamming space.

Norouzi, Punjani, Fleet, "Fast Exact Search in Hamming Space with Multi-Index Hashing" (TPAMI 2014;
CVPR 2012). Each code is cut into ``m`` disjoint substrings (contiguous bit ranges, widths differing
by at most one); table ``j`` groups the codes by the value of substring ``j``. Pigeonhole: if
``d(q, x) <= m*r + j`` then some substring ``j' `` has ``d_j'(q, x) <= r`` with ``j' <= j`` when it
is exactly ``r``, so searching every table at substring radius ``0, 1, 2, ...`` (all keys at that
distance from the query's substring) finds every code in order of this bound. After table ``j`` at
radius ``r`` every code with ``d <= m*r + j`` has been met (an unmet code has ``d_j' >= r + 1`` for
``j' <= j`` and ``>= r`` for the rest), so:

* exact k-NN stops as soon as the k-th best distance found is ``<= m*r + j``; all codes at that
  distance are then known, so ties are broken exactly by position (insertion order);
* exact radius search for ``R`` stops after the first ``(r, j)`` with ``m*r + j >= R`` (the
  paper's ``r_j`` choice: the first ``R mod m + 1`` tables at ``floor(R/m)``, the rest one less).

A code met again in another table or radius is skipped without a visited set: it was first met at
``r* = min_j d_j``, in the first table with that distance, which its substring distances tell.

Choice of ``m`` (:func:`choose_m`): the paper's analysis puts the substring length near ``log2 n``
(Sec. 4.3: ``m = b / log2 n``), so a table has about ``n`` buckets, most holding O(1) codes. We
use ``m = ceil(bits / log2 n)``: substrings of at most ``log2 n`` bits, so each table's direct-address
bucket array (``2^s + 1`` uint32) is at most ~``n`` entries and the tables cost
``m * (4 + <= 4)`` bytes per code (64-bit codes: 1.5-3x the codes themselves).

Tables: one uint32 buffer holding, per table, ``off`` (``2^s + 1`` bucket starts) then ``perm`` (the
``n`` positions sorted by substring value, ascending inside a bucket: a counting sort). The loops run
in C (``hk_mih_*`` in ``kernel.c``); without a compiler the same algorithm runs in numpy (slower, same
results). A query whose next radius would enumerate more than ``n / 8`` keys (a query far from
everything; hashing cannot prune it) is answered by a linear scan of the ``n`` codes instead, which
bounds the worst case near a scan's cost.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashkit.errors import HashkitError
from hashkit.hamming import kernel
from hashkit.hamming.codes import packed_to_words
from hashkit.hamming.distance import popcount_words

__all__ = ["MIH_VERSION", "MihTables", "choose_m", "substring_widths", "build_tables", "mih_knn", "mih_range"]

MIH_VERSION = 1
MAX_CODES = (1 << 32) - 1  # positions and bucket starts are uint32


def choose_m(bits: int, n: int) -> int:
    """Number of substrings for ``n`` codes of ``bits`` bits: ``ceil(bits / log2 n)``, in 1..bits."""
    return max(1, min(bits, math.ceil(bits / math.log2(max(n, 2)))))


def substring_widths(bits: int, m: int) -> tuple[int, ...]:
    """Widths of the ``m`` contiguous substrings: the first ``bits % m`` are one bit longer."""
    base, extra = divmod(bits, m)
    return tuple(base + (1 if j < extra else 0) for j in range(m))


@dataclass
class MihTables:
    """The m hash tables of one set of n codes (see the module docstring for the layout)."""

    bits: int
    n: int
    widths: tuple[int, ...]
    tab: np.ndarray  # uint32: off_0, perm_0, off_1, perm_1, ...

    def __post_init__(self) -> None:
        self.m = len(self.widths)
        self.starts = tuple(int(x) for x in np.cumsum((0,) + self.widths[:-1]))
        off_at, perm_at, at = [], [], 0
        for s in self.widths:
            off_at.append(at)
            perm_at.append(at + (1 << s) + 1)
            at += (1 << s) + 1 + self.n
        if len(self.tab) != at or self.tab.dtype != np.uint32:
            raise HashkitError(f"MIH tables hold {len(self.tab)} entries, expected {at} for {self.n} codes")
        self.off_at = np.array(off_at, np.int64)
        self.perm_at = np.array(perm_at, np.int64)
        self.sw = np.array(self.widths, np.int32)
        nbytes = (self.bits + 7) // 8
        self.masks = np.ascontiguousarray(_substring_masks(nbytes, self.starts, self.widths))

    @staticmethod
    def size_entries(n: int, widths: tuple[int, ...]) -> int:
        return sum((1 << s) + 1 + n for s in widths)

    def off(self, j: int) -> np.ndarray:
        a = int(self.off_at[j])
        return self.tab[a : a + (1 << self.widths[j]) + 1]

    def perm(self, j: int) -> np.ndarray:
        a = int(self.perm_at[j])
        return self.tab[a : a + self.n]

    def keys(self, packed: np.ndarray) -> np.ndarray:
        return substring_keys(packed, self.starts, self.widths)


def _be_words(packed: np.ndarray) -> np.ndarray:
    """Packed codes (n, nbytes) as big-endian-read uint64 words (n, W): code bit 0 = MSB of word 0."""
    n, nbytes = packed.shape
    W = max(1, (nbytes + 7) // 8)
    if nbytes == W * 8 and packed.flags.c_contiguous:
        return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)
    buf = np.zeros((n, W * 8), np.uint8)
    buf[:, :nbytes] = packed
    return buf.view(">u8").astype(np.uint64)


def substring_keys(packed: np.ndarray, starts: tuple[int, ...], widths: tuple[int, ...]) -> np.ndarray:
    """Value of each substring of each packed code, (n, m) uint32 (bit order of the code, MSB first)."""
    out = np.empty((len(packed), len(widths)), np.uint32)
    step = 1 << 20
    for lo in range(0, len(packed), step):
        w = _be_words(packed[lo : lo + step])
        for j, (a, s) in enumerate(zip(starts, widths)):
            wi, off = divmod(a, 64)
            if off + s <= 64:
                key = (w[:, wi] >> np.uint64(64 - off - s)) & np.uint64((1 << s) - 1)
            else:  # spans two words
                low = off + s - 64
                hi = w[:, wi] & np.uint64((1 << (64 - off)) - 1)
                key = (hi << np.uint64(low)) | (w[:, wi + 1] >> np.uint64(64 - low))
            out[lo : lo + step, j] = key
    return out


def _substring_masks(nbytes: int, starts: tuple[int, ...], widths: tuple[int, ...]) -> np.ndarray:
    """(m, W) uint64 masks in the kernels' word layout (packed bytes viewed as native uint64)."""
    W = max(1, (nbytes + 7) // 8)
    bitsv = np.zeros((len(widths), W * 64), np.uint8)
    for j, (a, s) in enumerate(zip(starts, widths)):
        bitsv[j, a : a + s] = 1
    return np.packbits(bitsv, axis=1, bitorder="big").view(np.uint64)


def build_tables(packed: np.ndarray, bits: int, m: int | None = None, threads: int | None = None) -> MihTables:
    """Build the MIH tables of packed codes (n, ceil(bits/8)); ``m`` defaults to :func:`choose_m`.

    The ``m`` tables are independent: with the compiled kernel they are built on ``threads`` threads
    (default: the CPU count), each a counting sort of its substring keys (``hk_mih_build``). The sort is
    memory-bound (a random write per code into ``2^s`` buckets); an LSD radix sort with 6-11-bit digits
    was measured no faster on this 2-core VM (10M codes, 22-bit keys: 0.53-0.64 s against 0.37-0.62 s)
    and was not kept."""
    n = len(packed)
    if n > MAX_CODES:
        raise HashkitError(f"multi-index hashing holds at most {MAX_CODES} codes per segment; got {n}")
    widths = substring_widths(bits, m or choose_m(bits, n))
    if widths[0] > 32:
        raise HashkitError(f"MIH substrings of {widths[0]} bits are too wide (at most 32); use m >= {-(-bits // 32)}")
    tab = np.empty(MihTables.size_entries(n, widths), np.uint32)
    starts = tuple(int(x) for x in np.cumsum((0,) + widths[:-1]))
    at = np.cumsum([0] + [(1 << s) + 1 + n for s in widths])
    lib = kernel.load() if sys.byteorder == "little" else None  # hk_mih_keys reads little-endian words
    words = np.ascontiguousarray(packed_to_words(packed)) if lib is not None else None

    def one_table(j: int) -> None:
        s = widths[j]
        off = tab[at[j] : at[j] + (1 << s) + 1]
        perm = tab[at[j] + (1 << s) + 1 : at[j + 1]]
        if lib is not None:
            keys = np.empty(n, np.uint32)
            lib.hk_mih_keys(words.ctypes.data, n, words.shape[1], starts[j], s, keys.ctypes.data)
            lib.hk_mih_build(keys.ctypes.data, n, s, off.ctypes.data, perm.ctypes.data)
        else:
            keys = np.ascontiguousarray(substring_keys(packed, (starts[j],), (s,))[:, 0])
            off[0] = 0
            np.cumsum(np.bincount(keys, minlength=1 << s), out=off[1:], dtype=np.uint32)
            perm[:] = np.argsort(keys, kind="stable")

    _run(one_table, list(range(len(widths))), _threads(threads) if lib is not None else 1)
    return MihTables(bits, n, widths, tab)


# --------------------------------------------------------------------------------------------------
# search


def _threads(threads: int | None) -> int:
    if threads:
        return max(1, int(threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _spans(nq: int, threads: int) -> list[tuple[int, int]]:
    step = max(1, min(256, math.ceil(nq / threads)))
    return [(lo, min(nq, lo + step)) for lo in range(0, nq, step)]


def _prepare(t: MihTables, words: np.ndarray, q_packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    db = np.ascontiguousarray(words)
    if db.shape[0] != t.n:
        raise HashkitError(f"MIH tables were built for {t.n} codes but {db.shape[0]} were given")
    qw = np.ascontiguousarray(packed_to_words(q_packed))
    qk = np.ascontiguousarray(t.keys(q_packed))
    return db, qw, qk


def mih_knn(
    t: MihTables, words: np.ndarray, q_packed: np.ndarray, k: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k (1 <= k <= n) of each query: (D int32, I int64) sorted by (distance, position),
    plus the number of codes whose distance was computed per query (the work done).

    ``words``: the n codes as native uint64 words (n, W) (:func:`hashkit.hamming.packed_to_words`).
    """
    db, qw, qk = _prepare(t, words, q_packed)
    nq = len(qw)
    D = np.empty((nq, k), np.int32)
    I = np.empty((nq, k), np.int64)
    seen = np.zeros(nq, np.int64)
    lib = kernel.load()
    W = db.shape[1]

    def task(span: tuple[int, int]) -> None:
        lo, hi = span
        if lib is not None:
            rc = lib.hk_mih_knn(db.ctypes.data, W, t.n, t.m, t.sw.ctypes.data, t.masks.ctypes.data,
                                t.tab.ctypes.data, t.off_at.ctypes.data, t.perm_at.ctypes.data,
                                qw.ctypes.data, qk.ctypes.data, lo, hi, k, D.ctypes.data, I.ctypes.data,
                                seen.ctypes.data)
            if rc != 0:
                raise MemoryError("MIH search: out of memory")
            return
        for i in range(lo, hi):
            d, p, seen[i] = _np_knn_one(t, db, qw[i], qk[i], k)
            D[i], I[i] = d, p

    _run(task, _spans(nq, _threads(threads)), _threads(threads))
    return D, I, seen


def mih_range(
    t: MihTables, words: np.ndarray, q_packed: np.ndarray, radius: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, position, distance) with distance <= radius, unordered (int64, int64, int32)."""
    db, qw, qk = _prepare(t, words, q_packed)
    nq = len(qw)
    lib = kernel.load()
    W = db.shape[1]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def task(span: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        lo, hi = span
        out = []
        if lib is None:
            for i in range(lo, hi):
                p, d = _np_range_one(t, db, qw[i], qk[i], radius)
                out.append((np.full(len(p), i, np.int64), p, d))
            return out
        cap = 1 << 16
        used = np.zeros(1, np.int64)
        while lo < hi:
            rows, pos, dist = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int32)
            nxt = lib.hk_mih_range(db.ctypes.data, W, t.n, t.m, t.sw.ctypes.data, t.masks.ctypes.data,
                                   t.tab.ctypes.data, t.off_at.ctypes.data, t.perm_at.ctypes.data,
                                   qw.ctypes.data, qk.ctypes.data, lo, hi, radius, cap, rows.ctypes.data,
                                   pos.ctypes.data, dist.ctypes.data, used.ctypes.data)
            u = int(used[0])
            out.append((rows[:u], pos[:u], dist[:u]))
            if nxt == lo:  # one query's results do not fit: grow the buffer
                cap *= 4
            lo = nxt
        return out

    for chunk in _run(task, _spans(nq, _threads(threads)), _threads(threads)):
        parts.extend(chunk)
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _run(task: Any, spans: list[Any], threads: int) -> list[Any]:
    """task(span) for every span (query row ranges, or table numbers), on up to ``threads`` threads."""
    if threads <= 1 or len(spans) <= 1:
        return [task(s) for s in spans]
    with ThreadPoolExecutor(min(threads, len(spans))) as pool:  # ctypes and numpy release the GIL
        return list(pool.map(task, spans))


# --------------------------------------------------------------------------------------------------
# numpy fallback (no C compiler): the same algorithm, one query at a time


_COMB_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _weight_keys(s: int, r: int) -> np.ndarray:
    """All s-bit values with exactly r set bits (uint32)."""
    if (s, r) not in _COMB_CACHE:
        vals = [sum(1 << b for b in c) for c in itertools.combinations(range(s), r)]
        _COMB_CACHE[(s, r)] = np.array(vals, np.uint32)
    return _COMB_CACHE[(s, r)]


def _gather(t: MihTables, j: int, key: np.uint32, r: int) -> np.ndarray:
    """Positions in the buckets of table j at substring distance exactly r from ``key``."""
    keys = _weight_keys(t.widths[j], r) ^ key
    off = t.off(j)
    a, b = off[keys].astype(np.int64), off[keys + 1].astype(np.int64)
    cnt = b - a
    total = int(cnt.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(cnt) - cnt
    idx = np.repeat(a - first, cnt) + np.arange(total)
    return t.perm(j)[idx].astype(np.int64)


def _dists(t: MihTables, db: np.ndarray, qw: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full distances (c,) and substring distances (c, m) of the codes at ``pos``."""
    z = db[pos] ^ qw
    d = popcount_words(z).sum(axis=1, dtype=np.int64)
    sub = np.stack([popcount_words(z & t.masks[j]).sum(axis=1, dtype=np.int64) for j in range(t.m)], axis=1)
    return d, sub


def _first_met(sub: np.ndarray, r: int, j: int) -> np.ndarray:
    return (sub >= r).all(axis=1) & (sub[:, :j] > r).all(axis=1)


def _linear(db: np.ndarray, qw: np.ndarray) -> np.ndarray:
    return popcount_words(db ^ qw).sum(axis=1, dtype=np.int64)


def _np_knn_one(t: MihTables, db: np.ndarray, qw: np.ndarray, qk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    best_d, best_p = np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys, seen = 0, 0
    for r in range(max(t.widths) + 1):
        keys += sum(math.comb(s, r) for s in t.widths)
        if keys > t.n // 8 + 64:
            d = _linear(db, qw)
            order = np.lexsort((np.arange(t.n), d))[:k]
            return d[order], order, t.n
        for j in range(t.m):
            if r <= t.widths[j]:
                pos = _gather(t, j, qk[j], r)
                if pos.size:
                    d, sub = _dists(t, db, qw, pos)
                    ok = _first_met(sub, r, j)
                    seen += int(ok.sum())
                    best_d = np.concatenate([best_d, d[ok]])
                    best_p = np.concatenate([best_p, pos[ok]])
                    order = np.lexsort((best_p, best_d))[:k]
                    best_d, best_p = best_d[order], best_p[order]
            if len(best_d) == k and best_d[-1] <= t.m * r + j:
                return best_d, best_p, seen
    return best_d, best_p, seen  # pragma: no cover - the last radius covers everything


def _np_range_one(t: MihTables, db: np.ndarray, qw: np.ndarray, qk: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    keys = 0
    plan = []
    for r in range(max(t.widths) + 1):
        for j in range(t.m):
            plan.append((r, j))
            keys += math.comb(t.widths[j], r)
            if t.m * r + j >= radius:
                break
        else:
            continue
        break
    if keys > t.n // 8 + 64:
        d = _linear(db, qw)
        p = np.flatnonzero(d <= radius)
        return p.astype(np.int64), d[p].astype(np.int32)
    ps, ds = [], []
    for r, j in plan:
        if r <= t.widths[j]:
            pos = _gather(t, j, qk[j], r)
            if pos.size:
                d, sub = _dists(t, db, qw, pos)
                ok = _first_met(sub, r, j) & (d <= radius)
                ps.append(pos[ok])
                ds.append(d[ok])
    if not ps:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate(ps), np.concatenate(ds).astype(np.int32)

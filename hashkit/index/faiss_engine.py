"""The faiss search engines (optional ``faiss-cpu``): IndexBinaryFlat k-NN / radius, IndexBinaryMultiHash radius.

Results are re-sorted into hashkit's exact (distance, position) order.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from hashkit.errors import HashkitError


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise HashkitError(
            "backend 'faiss' needs the faiss package: pip install faiss-cpu (or use backend='native')"
        ) from exc
    return faiss


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    faiss = import_faiss()
    if not threads:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def faiss_knn(fidx: Any, q: np.ndarray, k: int, n: int, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with faiss, re-sorted by (distance, position).

    faiss orders equal distances arbitrarily, so fetch k' >= k candidates and accept a query only
    when the k'-th distance exceeds the k-th (then every item tied at the k-th distance is among the
    candidates) or k' = n; otherwise retry that query with 4 k'.
    """
    D = np.empty((len(q), k), np.int32)
    I = np.empty((len(q), k), np.int64)
    todo = np.arange(len(q))
    kk = min(n, max(2 * k, k + 16))
    with _faiss_threads(threads):
        while todo.size:
            Df, If = fidx.search(np.ascontiguousarray(q[todo]), kk)
            Df, If = Df.astype(np.int64), If.astype(np.int64)
            key = np.where(If >= 0, Df * (n + 1) + If, np.iinfo(np.int64).max)
            key.sort(axis=1)
            key = key[:, :k]
            dk, ik = key // (n + 1), key % (n + 1)
            ok = np.full(len(todo), kk >= n) | (np.where(If >= 0, Df, -1).max(axis=1) > dk[:, -1])
            D[todo[ok]], I[todo[ok]] = dk[ok], ik[ok]
            todo = todo[~ok]
            kk = min(n, 4 * kk)
    return D, I


def faiss_range(
    fidx: Any, q: np.ndarray, radius: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss binary range_search keeps distance < r; ask for radius + 1 to include the radius."""
    with _faiss_threads(threads):
        lims, Df, If = fidx.range_search(np.ascontiguousarray(q), radius + 1)
    rows = np.repeat(np.arange(len(q)), np.diff(lims.astype(np.int64)))
    return rows.astype(np.int64), If.astype(np.int64), Df.astype(np.int32)

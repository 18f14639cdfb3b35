"""Hamming distances: XOR + popcount on packed uint64 words (CPU, numpy) and the ±1 matmul (torch).

There is exactly one popcount here (:func:`popcount_words`: ``numpy.bitwise_count`` on numpy >= 2, a
byte lookup table on numpy 1.x) and one XOR + popcount accumulation (:func:`xor_popcount`) that
the evaluator's numpy path, the search index's native engine and :func:`hamming_distance_packed`
all call; the compiled kernels (:mod:`hashkit.hamming.kernel`) compute the same sums in C.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from hashkit.errors import HashkitError
from hashkit.hamming.codes import packed_to_words, to_pm1

__all__ = [
    "popcount_words",
    "xor_popcount",
    "hamming_distance",
    "hamming_distance_packed",
    "matmul_dtype",
    "pm1_matmul_distance",
]

# True forces the numpy 1.x fallback even on numpy >= 2 (tests compare both paths)
FORCE_FALLBACK = False
# popcount of every byte value, for the fallback
_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def popcount_words(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-element popcount of a uint64 array (uint8 unless ``out`` says otherwise).

    ``numpy.bitwise_count`` when numpy has it (>= 2), else a byte-table lookup (numpy 1.x): same
    numbers, several times slower.
    """
    if not FORCE_FALLBACK and hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(words, out=out) if out is not None else np.bitwise_count(words)
    w = np.ascontiguousarray(words, dtype=np.uint64)
    counts = _POPCOUNT8[w.view(np.uint8)].reshape(*w.shape, 8).sum(-1, dtype=np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


def xor_popcount(
    a: Sequence[Any], b: Sequence[np.ndarray], out: np.ndarray, xor: np.ndarray, tmp: np.ndarray
) -> np.ndarray:
    """``out = sum_w popcount(a[w] ^ b[w])``: Hamming distances from per-word operands; returns ``out``.

    ``a[w]`` and ``b[w]`` are uint64 arrays (or scalars) of word ``w`` that broadcast to
    ``out.shape`` (a query row against a database column: scalar x (n,); a query chunk against a
    tile: (q, 1) x (n,)). ``xor`` (uint64) and ``tmp`` (uint8) are scratch buffers of ``out``'s
    shape, so the caller controls allocation and cache footprint.
    """
    np.bitwise_xor(a[0], b[0], out=xor)
    popcount_words(xor, out=out)
    for w in range(1, len(b)):
        np.bitwise_xor(a[w], b[w], out=xor)
        popcount_words(xor, out=tmp)
        np.add(out, tmp, out=out, casting="unsafe")
    return out


def matmul_dtype(device: torch.device, bits: int) -> torch.dtype:
    """float16 on CUDA up to 2048 bits (every partial sum of ±1 products is an exact small integer
    there), float32 elsewhere."""
    return torch.float16 if (device.type == "cuda" and bits <= 2048) else torch.float32


def pm1_matmul_distance(q: torch.Tensor, db: torch.Tensor, bits: int) -> torch.Tensor:
    """d = (bits - q·b) / 2 for ±1 codes already in a float type (:func:`matmul_dtype`); int16 (nq, nd)."""
    dot = q @ db.T
    return ((bits - dot.float()) * 0.5).round_().to(torch.int16)


def hamming_distance(query_codes: Any, db_codes: Any) -> torch.Tensor:
    """All-pairs Hamming distances (nq, nd) as int16 via d = (bits - q·b) / 2, on the codes' device.

    Meant for chunks: the result holds nq * nd entries. CUDA uses a float16 matmul (exact up to 2048
    bits), CPU float32. Both inputs must be on the same device.
    """
    q = to_pm1(query_codes, "query codes")
    b = to_pm1(db_codes, "database codes")
    if q.shape[1] != b.shape[1]:
        raise HashkitError(
            f"query codes have {q.shape[1]} bits but database codes have {b.shape[1]}; "
            "both sides must come from the same model"
        )
    bits = q.shape[1]
    if bits > 32767:
        raise HashkitError(f"codes of {bits} bits are longer than supported (32767)")
    if q.device != b.device:
        raise HashkitError(f"query codes are on {q.device} but database codes on {b.device}")
    ftype = matmul_dtype(q.device, bits)
    return pm1_matmul_distance(q.to(ftype), b.to(ftype), bits)


def hamming_distance_packed(query_packed: Any, db_packed: Any) -> np.ndarray:
    """All-pairs Hamming distances (nq, nd) from packed codes by XOR + popcount (numpy, CPU).

    Returns uint8 when codes have at most 255 bits (8 * bytes per code), else uint16. Meant for
    chunks of queries; the result holds nq * nd entries.
    """
    q = packed_to_words(query_packed)
    b = packed_to_words(db_packed)
    if q.shape[1] != b.shape[1]:
        raise HashkitError(
            f"packed query codes have {q.shape[1]} words but database codes have {b.shape[1]}"
        )
    nbits = q.shape[1] * 64
    dtype = np.uint8 if nbits <= 255 else np.uint16
    out = np.zeros((q.shape[0], b.shape[0]), dtype=dtype)
    cols = [np.ascontiguousarray(b[:, w]) for w in range(b.shape[1])]
    xor = np.empty(b.shape[0], dtype=np.uint64)
    tmp = np.empty(b.shape[0], dtype=np.uint8)
    for i in range(q.shape[0]):
        xor_popcount(q[i], cols, out[i], xor, tmp)
    return out

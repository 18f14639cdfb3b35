"""Hamming space: binary codes, packing, distances and the compiled kernels, in one package.

Code conventions (see docs/HELPERS.md): a binary code is a row of ``bits`` values, either ±1 or 0/1,
float, int or bool, as a torch tensor or numpy array; ``+1``/``1``/``True`` is the set bit. Everything
here validates codes with :func:`to_pm1` and works in ±1.

Bit order of :func:`pack_bits` is the one of ``numpy.packbits(..., bitorder="big")``: bit ``j`` of a
code (``j = 0`` first) goes to byte ``j // 8`` at bit position ``7 - j % 8`` (most significant bit
first); a last partial byte is padded with zero bits, which never change a Hamming distance because
both sides are padded alike.

Two distance kernels, both exact integers:

* :func:`hamming_distance` — the matmul formulation ``d = (bits - q·b) / 2`` on ±1 codes; device
  generic (CPU float32, CUDA float16 — exact for any code length up to 2048 bits because every partial
  sum is a small integer). Use it for query chunks on a GPU.
* :func:`hamming_distance_packed` — XOR + popcount on packed 64-bit words with numpy
  (``numpy.bitwise_count`` on numpy >= 2, a byte lookup table otherwise); the fastest option on CPU:
  about 0.8 ns per pair on one core of the development VM, against 2-4 ns for the float GEMM, which
  also writes a 4-byte result per pair.

This package is the one place that knows about Hamming distance: :mod:`.codes` (validation,
packing, word layouts), :mod:`.distance` (the numpy popcount with its numpy 1.x fallback, the
torch matmul), :mod:`.kernel` (the compiled C kernels of ``kernel.c``, shipped as package data)
and :mod:`.mih` (multi-index hashing tables for sub-linear exact search). The evaluator, the
search index and ``hashkit search`` all use it. Names exported here are stable API.
"""

from __future__ import annotations

from hashkit.hamming.codes import (
    _as_tensor,
    _pack_pm1_numpy,
    pack_bits,
    packed_to_words,
    to_pm1,
    unpack_bits,
    word_columns,
)
from hashkit.hamming.distance import (
    hamming_distance,
    hamming_distance_packed,
    matmul_dtype,
    pm1_matmul_distance,
    popcount_words,
    xor_popcount,
)

_popcount_words = popcount_words  # the former private name (tests, older callers)

__all__ = [
    "to_pm1",
    "pack_bits",
    "unpack_bits",
    "packed_to_words",
    "word_columns",
    "popcount_words",
    "xor_popcount",
    "hamming_distance",
    "hamming_distance_packed",
    "matmul_dtype",
    "pm1_matmul_distance",
]

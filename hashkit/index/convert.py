"""Code conversion for the index: any ±1 / 0-1 / packed input -> validated packed uint8 rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from hashkit.errors import HashkitError
from hashkit.hamming import pack_bits, to_pm1

__all__ = ["as_packed"]


def as_packed(codes: Any, bits: int, what: str = "codes", packed: bool | None = None) -> np.ndarray:
    """Validate ``codes`` and return them packed: uint8 (n, ceil(bits/8)), MSB-first, zero padded.

    Accepts ±1 or 0/1 values (any numeric/bool dtype, numpy or torch) of shape (n, bits) or (bits,),
    or already packed uint8 (n, ceil(bits/8)); ``packed=None`` guesses from dtype and width.
    """
    if hasattr(codes, "detach"):  # torch tensor
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise HashkitError(f"{what} must be a 2-D array (n, {bits}); got shape {arr.shape}")
    nbytes = (bits + 7) // 8
    width = arr.shape[1]
    if packed is None:
        packed = arr.dtype == np.uint8 and width == nbytes and width != bits
    if packed:
        if arr.dtype != np.uint8 or width != nbytes:
            raise HashkitError(
                f"{what}: packed codes for {bits} bits must be uint8 of width {nbytes}; "
                f"got {arr.dtype} of width {width}"
            )
        out = np.ascontiguousarray(arr)
        pad = nbytes * 8 - bits
        if pad and len(out) and np.any(out[:, -1] & np.uint8((1 << pad) - 1)):
            raise HashkitError(
                f"{what}: packed codes have nonzero padding bits after bit {bits}; pack codes "
                "MSB-first with zero padding (like numpy.packbits)"
            )
        return out
    if width != bits:
        raise HashkitError(
            f"{what} have code length {width} but the index holds {bits}-bit codes "
            f"(code length {width} vs {bits}); use codes from the model the index was built with"
        )
    out = np.empty((len(arr), nbytes), np.uint8)
    step = 1 << 16  # bounds the temporaries of validation + packing
    for s in range(0, len(arr), step):
        # to_pm1 refuses anything but ±1 or 0/1 (real outputs, NaN, a -1/0/1 mix) naming `what`
        chunk = pack_bits(to_pm1(arr[s : s + step], what))
        out[s : s + len(chunk)] = chunk.numpy() if hasattr(chunk, "numpy") else np.asarray(chunk)
    return out

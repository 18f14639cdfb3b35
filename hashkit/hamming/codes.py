"""Binary codes: validation (±1 or 0/1), bit packing and the uint64 word layouts of the kernels.

Conventions: see :mod:`hashkit.hamming`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hashkit.errors import HashkitError

__all__ = ["to_pm1", "pack_bits", "unpack_bits", "packed_to_words", "word_columns"]


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """Return ``x`` as a torch tensor without copying numpy arrays; lists and scalars are converted."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a user error
        raise HashkitError(f"{name}: cannot read {type(x).__name__} as an array ({exc})") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise HashkitError(f"{name}: expected a numeric or bool array, got dtype {arr.dtype}")
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = np.array(arr, copy=True)  # torch.from_numpy needs writeable, non-negative strides
    return torch.from_numpy(arr)


def to_pm1(codes: Any, name: str = "codes", dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Validate binary codes (n, bits) given as ±1 or 0/1 and return them as a ±1 tensor.

    Accepts float/int/bool numpy arrays or torch tensors on any device (the result stays there).
    Raises HashkitError for a wrong rank, values other than {-1, +1} or {0, 1}, or NaN.
    """
    t = _as_tensor(codes, name)
    if t.ndim != 2:
        raise HashkitError(
            f"{name}: expected a 2-D (n, bits) array of binary codes, got shape {tuple(t.shape)}; "
            "reshape a single code to (1, bits)"
        )
    if t.shape[1] == 0:
        raise HashkitError(f"{name}: codes have 0 bits (shape {tuple(t.shape)})")
    if t.dtype == torch.bool:
        return torch.where(t, 1, -1).to(dtype)
    if t.is_complex():
        raise HashkitError(f"{name}: complex codes are not binary codes")
    if t.numel() == 0:
        return torch.empty(t.shape, dtype=dtype, device=t.device)
    if t.device.type == "cpu" and t.dtype in _NUMPY_OK:
        # numpy on CPU: torch's intra-op threads cost 10-100x more here on a loaded machine (measured)
        out = torch.from_numpy(_pm1_numpy(t.detach().numpy(), name))
        return out if dtype == torch.int8 else out.to(dtype)
    out = torch.empty(t.shape, dtype=dtype, device=t.device)
    step = max(1, (1 << 20) // t.shape[1])  # row blocks keep the temporaries small (~1M entries)
    seen_neg = seen_zero = False
    for lo in range(0, t.shape[0], step):
        block = t[lo : lo + step]
        pos, neg = block == 1, block == -1
        known = pos | neg
        if not bool(known.all()):
            zero = block == 0
            bad = ~(known | zero)
            if bool(bad.any()):
                _not_binary(name, block[bad][0].item())
            seen_zero = True
        seen_neg = seen_neg or bool(neg.any())
        if seen_neg and seen_zero:
            _mixed(name)
        out[lo : lo + step] = pos.to(dtype) * 2 - 1
    return out


_NUMPY_OK = (torch.float16, torch.float32, torch.float64, torch.int8, torch.uint8, torch.int16,
             torch.int32, torch.int64)


def _not_binary(name: str, value: Any) -> None:
    raise HashkitError(
        f"{name}: codes are not binary: found value {value!r}; expected ±1 or 0/1 "
        "codes (binarise real-valued outputs u with b = sign(u), sign(0) = +1)"
    )


def _mixed(name: str) -> None:
    raise HashkitError(f"{name}: codes mix -1, 0 and 1; use either ±1 or 0/1 codes, not both")


def _pm1_numpy(arr: np.ndarray, name: str) -> np.ndarray:
    """:func:`to_pm1` for a 2-D numpy array -> int8 ±1, validated block by block (same errors)."""
    out = np.empty(arr.shape, dtype=np.int8)
    step = max(1, (1 << 20) // arr.shape[1])
    seen_neg = seen_zero = False
    for lo in range(0, arr.shape[0], step):
        block = arr[lo : lo + step]
        pos = block == 1
        neg = block == -1
        known = pos | neg
        if not known.all():
            bad = ~(known | (block == 0))
            if bad.any():
                _not_binary(name, block[bad][0].item())
            seen_zero = True
        seen_neg = seen_neg or bool(neg.any())
        if seen_neg and seen_zero:
            _mixed(name)
        o = out[lo : lo + step]
        np.multiply(pos, 2, out=o, dtype=np.int8)
        o -= 1
    return out


def pack_bits(codes: Any) -> torch.Tensor:
    """Pack binary codes (n, bits) into uint8 (n, ceil(bits/8)), MSB first like numpy.packbits.

    Set bit = code value +1 (or 1). Runs on the codes' device; zero-pads the last byte.
    """
    pm1 = to_pm1(codes, "codes to pack")
    if pm1.device.type == "cpu":
        return torch.from_numpy(_pack_pm1_numpy(pm1.numpy()))
    n, bits = pm1.shape
    nbytes = (bits + 7) // 8
    ones = torch.zeros((n, nbytes * 8), dtype=torch.uint8, device=pm1.device)
    ones[:, :bits] = (pm1 > 0).to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=pm1.device)
    return (ones.view(n, nbytes, 8).to(torch.int32) * weights).sum(-1).to(torch.uint8)


def _pack_pm1_numpy(pm1: np.ndarray) -> np.ndarray:
    """numpy.packbits of already validated ±1 codes, in row blocks (no full-size bool temporary)."""
    n, bits = pm1.shape
    out = np.empty((n, (bits + 7) // 8), dtype=np.uint8)
    step = max(1, (1 << 20) // bits)
    for lo in range(0, n, step):
        out[lo : lo + step] = np.packbits(pm1[lo : lo + step] > 0, axis=1, bitorder="big")
    return out


def unpack_bits(packed: Any, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: uint8 (n, ceil(bits/8)) -> ±1 int8 codes (n, bits)."""
    t = _as_tensor(packed, "packed codes")
    if t.dtype != torch.uint8 or t.ndim != 2:
        raise HashkitError(
            f"packed codes: expected a 2-D uint8 array from pack_bits, got {t.dtype} {tuple(t.shape)}"
        )
    if bits < 1 or (bits + 7) // 8 != t.shape[1]:
        raise HashkitError(
            f"packed codes: {t.shape[1]} bytes per code cannot hold {bits} bits "
            f"(expected {(max(bits, 0) + 7) // 8} bytes); pass the code length used when packing"
        )
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=t.device)
    bits01 = (t.unsqueeze(-1) >> shifts) & 1
    return (bits01.reshape(t.shape[0], -1)[:, :bits].to(torch.int8) * 2 - 1).to(torch.int8)


def packed_to_words(packed: Any) -> np.ndarray:
    """View packed codes (n, nbytes) as uint64 words (n, ceil(nbytes/8)), zero-padded; numpy, CPU."""
    arr = packed.cpu().numpy() if isinstance(packed, torch.Tensor) else np.asarray(packed)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise HashkitError(
            f"packed codes: expected a 2-D uint8 array from pack_bits, got {arr.dtype} {arr.shape}"
        )
    n, nbytes = arr.shape
    nwords = max(1, (nbytes + 7) // 8)
    if nbytes == nwords * 8:
        return np.ascontiguousarray(arr).view(np.uint64)
    padded = np.zeros((n, nwords * 8), dtype=np.uint8)
    padded[:, :nbytes] = arr
    return padded.view(np.uint64)




def word_columns(packed: np.ndarray) -> np.ndarray:
    """Packed codes (c, nbytes) as zero-padded uint64 words laid out (W, c), W = ceil(nbytes/8).

    One contiguous row per word: the search engine's tiles XOR a whole row with a query word. A view
    when the codes are exactly one contiguous word wide (64 bits), else a copy.
    """
    c, nbytes = packed.shape
    W = (nbytes + 7) // 8
    if nbytes == 8 and packed.flags.c_contiguous:
        return packed.view(np.uint64).reshape(1, c)
    buf = np.zeros((c, W * 8), np.uint8)
    buf[:, :nbytes] = packed
    return np.ascontiguousarray(buf.view(np.uint64).T)

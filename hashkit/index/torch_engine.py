"""The torch search engine (any device, e.g. CUDA): matmul distances, top-k over unique int64 keys."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from hashkit.hamming import hamming_distance, unpack_bits
from hashkit.index.native import concat3

_KEY_SHIFT = 40  # keys: distance << 40 | position (positions < 2**40)


def _torch_device(device: Any) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _torch_tiles(
    q: np.ndarray, packed_blocks: Callable[..., Iterator[tuple[int, np.ndarray]]], bits: int, device: Any
) -> Iterator[tuple[int, int, Any, int]]:
    """Yield (query start, code start, distances int64 tensor (qd, cb), cb) tiles on the device.

    Codes travel packed (8x less host->device traffic), are unpacked on the device with
    hashkit.hamming.unpack_bits, and compared with hamming_distance (d = (bits - q.x) / 2, a float16
    matmul on cuda, exact up to 2048 bits; float32 elsewhere).
    """
    import torch

    dev = _torch_device(device)
    cb = max(1024, (1 << 22) // max(64, bits))  # codes per device block: 65536 up to 64 bits
    qd = max(1, (1 << 24) // cb)  # queries per tile: qd * cb int64 keys = 128 MiB

    def unpack(packed: np.ndarray) -> Any:
        return unpack_bits(torch.from_numpy(np.array(packed, dtype=np.uint8, copy=True)).to(dev), bits)

    qt = [unpack(q[s : s + qd]) for s in range(0, len(q), qd)]
    for base, packed in packed_blocks(cb):
        for j in range(0, len(packed), cb):
            x = unpack(packed[j : j + cb])
            for qi, qp in enumerate(qt):
                yield qi * qd, base + j, hamming_distance(qp, x).to(torch.int64), len(x)


def torch_knn(
    q: np.ndarray, packed_blocks: Callable[..., Iterator[tuple[int, np.ndarray]]], k: int, bits: int, device: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k on a torch device: top-k of unique int64 keys (distance << 40 | position)."""
    import torch

    best: dict[int, Any] = {}
    for qs, start, dist, cb in _torch_tiles(q, packed_blocks, bits, device):
        pos = torch.arange(start, start + cb, device=dist.device, dtype=torch.int64)
        key = (dist << _KEY_SHIFT) | pos
        cand = torch.topk(key, min(k, cb), dim=1, largest=False, sorted=False).values
        if qs in best:
            cand = torch.cat([best[qs], cand], dim=1)
            cand = torch.topk(cand, min(k, cand.shape[1]), dim=1, largest=False, sorted=False).values
        best[qs] = cand
    keys = torch.cat([torch.sort(best[qs], dim=1).values for qs in sorted(best)]).cpu().numpy()
    return (keys >> _KEY_SHIFT).astype(np.int32), keys & ((1 << _KEY_SHIFT) - 1)


def torch_range(
    q: np.ndarray, packed_blocks: Callable[..., Iterator[tuple[int, np.ndarray]]], radius: int, bits: int, device: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = []
    for qs, start, dist, _ in _torch_tiles(q, packed_blocks, bits, device):
        r, c = (dist <= radius).nonzero(as_tuple=True)
        if len(r):
            parts.append(((r + qs).cpu().numpy(), (c + start).cpu().numpy(), dist[r, c].cpu().numpy()))
    return concat3(parts)

"""The ``mih`` search engine: multi-index hashing tables per segment, stored beside the segment.

Every segment (immutable) gets its own tables (:mod:`hashkit.hamming.mih`), built from its codes
with ``m`` chosen from the code length and the segment's size, written to
``seg-NNNNNN-<rand>-mih<version>-<rand>.mih`` (uint32, little-endian: per table the ``2^s + 1``
bucket starts then the ``n`` positions) and listed in that segment's manifest entry as::

    "mih": {"file", "bytes", "sha256", "version", "widths", "codes_sha256"}

Written like everything else in an index: the file is fsync'd and renamed into place, then the
manifest is replaced atomically (generation + 1); a build killed at any point leaves the index as
it was. Tables are *stale* when their format version differs or they were built from other codes
(``codes_sha256`` differs from the segment's codes): stale or missing tables are rebuilt; a listed
table file that is missing, truncated or fails its sha256 is refused with a HashkitError (rebuild with
``Index.build_mih(force=True)`` or ``hashkit search --backend mih --rebuild-mih``).

A search runs MIH in every segment (local top-k / radius hits, exact) and merges by (distance,
position), so results equal the linear scan's, order and ties included.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from hashkit.atomic import atomic_save
from hashkit.errors import HashkitError
from hashkit.hamming.mih import MIH_VERSION, MihTables, build_tables, mih_knn, mih_range
from hashkit.index.storage import _IO_CHUNK, _as_bytes, _check_digest, _check_size

__all__ = ["is_fresh", "write_tables", "load_tables", "knn_segments", "range_segments"]


def is_fresh(entry: dict, bits: int) -> bool:
    """True when the segment lists tables of the current format built from its current codes."""
    mih = entry.get("mih")
    if not isinstance(mih, dict):
        return False
    try:
        widths = [int(w) for w in mih["widths"]]
        return (
            mih["version"] == MIH_VERSION
            and mih["codes_sha256"] == entry["files"]["codes"]["sha256"]
            and sum(widths) == bits
            and all(1 <= w <= 32 for w in widths)
            and isinstance(mih["file"], str)
            and isinstance(mih["bytes"], int)
            and isinstance(mih["sha256"], str)
        )
    except (KeyError, TypeError, ValueError):
        return False


def write_tables(root: Path, entry: dict, tables: MihTables) -> dict:
    """Write (fsync'd, atomic rename) the tables of segment ``entry``; return the manifest's "mih" entry."""
    fname = f"{entry['name']}-mih{MIH_VERSION}-{secrets.token_hex(4)}.mih"
    h = hashlib.sha256()
    view = _as_bytes(tables.tab.astype("<u4", copy=False))

    def writer(handle: Any) -> None:
        for s in range(0, len(view), _IO_CHUNK):
            chunk = view[s : s + _IO_CHUNK]
            h.update(chunk)
            handle.write(chunk)

    atomic_save(root / fname, writer)
    return {
        "file": fname,
        "bytes": len(view),
        "sha256": h.hexdigest(),
        "version": MIH_VERSION,
        "widths": list(tables.widths),
        "codes_sha256": entry["files"]["codes"]["sha256"],
    }


def load_tables(root: Path, entry: dict, bits: int, mmap: bool, verify: bool) -> MihTables:
    """Map (or read) a segment's listed tables; size always checked, sha256 when ``verify``."""
    mih = entry["mih"]
    fpath = root / mih["file"]
    widths = tuple(int(w) for w in mih["widths"])
    expected = MihTables.size_entries(int(entry["count"]), widths) * 4
    if mih["bytes"] != expected:
        raise HashkitError(
            f"index manifest lists MIH tables {fpath} of {mih['bytes']} bytes but {entry['count']} codes "
            f"need {expected}; rebuild them with Index.build_mih(force=True) or hashkit search --rebuild-mih"
        )
    try:
        _check_size(fpath, expected)
        tab = np.memmap(fpath, dtype="<u4", mode="r") if mmap else np.fromfile(fpath, dtype="<u4")
        if verify:
            h = hashlib.sha256()
            view = _as_bytes(tab)
            for s in range(0, len(view), _IO_CHUNK):
                h.update(view[s : s + _IO_CHUNK])
            _check_digest(fpath, h.hexdigest(), mih["sha256"])
    except HashkitError as exc:
        raise HashkitError(
            f"{exc}. For MIH tables: rebuild them with Index.build_mih(force=True) or hashkit search --rebuild-mih"
        ) from None
    except (OSError, ValueError) as exc:
        raise HashkitError(f"cannot read MIH tables {fpath}: {exc}") from exc
    return MihTables(bits, int(entry["count"]), widths, np.asarray(tab).view(np.uint32))


def build(codes: np.ndarray, bits: int) -> MihTables:
    """Tables of one segment's packed codes (m from bits and the segment's size)."""
    return build_tables(np.asarray(codes), bits)


def knn_segments(
    parts: list[tuple[int, MihTables, np.ndarray]], q: np.ndarray, k: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k over segments given as (first position, tables, words); merged by (distance,
    position). Also returns per query the number of codes whose distance was computed."""
    ds, ps, visited = [], [], np.zeros(len(q), np.int64)
    for start, tables, words in parts:
        kk = min(k, tables.n)
        D, I, seen = mih_knn(tables, words, q, kk, threads)
        ds.append(D)
        ps.append(I + start)
        visited += seen
    if len(ds) == 1:
        return ds[0], ps[0], visited
    D, P = np.concatenate(ds, axis=1), np.concatenate(ps, axis=1)
    key = (D.astype(np.int64) << 40) | P  # positions < 2**40
    order = np.argsort(key, axis=1)[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(P, order, 1), visited


def range_segments(
    parts: list[tuple[int, MihTables, np.ndarray]], q: np.ndarray, radius: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position, distance) of every pair within ``radius`` over all segments, unordered."""
    rows, pos, dist = [], [], []
    for start, tables, words in parts:
        r, p, d = mih_range(tables, words, q, radius, threads)
        rows.append(r)
        pos.append(p + start)
        dist.append(d)
    return np.concatenate(rows), np.concatenate(pos), np.concatenate(dist)

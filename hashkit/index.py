"""On-disk exact Hamming search index (faiss-like API) over bit-packed binary codes.

Directory layout of an index ``INDEX/`` (format version 1)::

    manifest.json              bits, count, model identity, format version, and for every segment
                               the size and sha256 of each of its files
    seg-000001-<rand>.codes    uint8 (n, ceil(bits/8)): codes packed MSB-first (numpy.packbits order),
                               zero padded to whole bytes when bits % 8 != 0 (padding never changes
                               a Hamming distance; packed input with nonzero padding bits is refused)
    seg-000001-<rand>.offsets  little-endian int64 (n + 1): where each item id starts in ``.ids``
    seg-000001-<rand>.ids      the item ids (e.g. image paths), UTF-8, concatenated
    .lock                      writer lock (flock); holds no data

Crash safety: segments are immutable. ``add`` writes (and fsyncs) a new segment, then atomically
replaces ``manifest.json``; readers trust only what the manifest lists, so an append killed at any
point leaves the index exactly as it was (left-over files are deleted by the next writer).
Integrity: ``open`` always checks every listed file exists with the listed size; it also checks the
sha256 of every file when the data is read into memory (``mmap=False``) or totals at most
``VERIFY_ON_OPEN_BYTES`` (256 MiB). Larger memory-mapped indexes get the size check only on open;
``Index.verify()`` (or ``open(..., verify=True)``) runs the full checksum. A damaged file is refused
with a one-line :class:`HashkitError` naming it.

Concurrency: one writer at a time (``.lock``); an open Index is a snapshot of the manifest it read
(reopen to see later appends). ``compact`` deletes the old segment files, which open memory maps
keep reading on POSIX; other readers should reopen.

Search is exact. ``search(q, k)`` returns ``(D, I)`` of shape ``(n_query, k)``: Hamming distances
(int32) and item positions (int64, insertion order), sorted by (distance, position) so ties go to
the item added first. When ``k > len(index)`` the missing columns are padded with ``D = I = -1``.
Backends:

* ``native`` (default, CPU): XOR + ``numpy.bitwise_count`` over uint64 words, tiles of
  32 queries x 32768 codes (buffers stay in L2/L3), a running per-query top-k whose k-th distance
  filters each tile, exact stable merges. Codes stream in blocks of <= 32 MiB, so memory is
  O(threads x tile + n_query x k) whatever the index size (memory-mapped indexes larger than RAM
  work). A thread pool over query chunks uses every core (numpy releases the GIL in its loops);
  a single query runs on one core.
* ``torch`` (``device=``, e.g. "cuda"): packed codes are sent to the device, unpacked there and
  compared with ``hashkit.hamming.hamming_distance`` (±1 matmul); top-k over unique int64 keys
  ``distance << 40 | position`` gives the same tie order.
* ``faiss`` (optional, ``pip install faiss-cpu``): IndexBinaryFlat. faiss does not promise an order
  among equal distances, so hashkit fetches k' >= k candidates, re-sorts them by (distance,
  position) and retries with a larger k' any query whose k'-th distance equals its k-th (then a tie
  could be cut off); results equal the native engine's. The codes are copied into RAM.
* ``faiss-hash`` (``range_search`` only): IndexBinaryMultiHash with radius + 1 hash tables over
  disjoint substrings, exact by the pigeonhole principle (two codes within the radius agree
  exactly on at least one substring); much faster than a scan for small radii.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import math
import os
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from hashkit.atomic import atomic_save, atomic_write_json
from hashkit.errors import HashkitError
from hashkit.hamming import hamming_distance, pack_bits, to_pm1, unpack_bits

FORMAT = "hashkit-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
MAX_BITS = 65534
VERIFY_ON_OPEN_BYTES = 256 << 20
BACKENDS = ("native", "torch", "faiss", "faiss-hash")

# Native engine tuning (measured on a 2-core EPYC): distances are computed for QUERY_CHUNK queries x
# SCAN_ITEMS codes at a time (uint8, 1 MiB), in sub-tiles of XOR_ITEMS codes (the uint64 XOR buffer,
# 1 MiB, about L2); codes stream in blocks of at most BLOCK_BYTES packed bytes.
QUERY_CHUNK = 32
SCAN_ITEMS = 1 << 15
XOR_ITEMS = 4096
BLOCK_BYTES = 32 << 20
STATE_BYTES = 256 << 20  # per-search bound on the running top-k state; queries are batched above it
_KEY_SHIFT = 40  # torch keys: distance << 40 | position (positions < 2**40)
_SUFFIX = {"codes": ".codes", "offsets": ".offsets", "ids": ".ids"}
_SEGMENT_RE = re.compile(r"^seg-\d{6,}-[0-9a-f]{8}$")
_IO_CHUNK = 16 << 20


# --------------------------------------------------------------------------------------------------
# public class


@dataclass
class _Segment:
    """One immutable append: its manifest entry and its (memory-mapped or loaded) arrays."""

    entry: dict
    codes: np.ndarray
    offsets: np.ndarray
    blob: np.ndarray

    @property
    def count(self) -> int:
        return int(self.entry["count"])


class Index:
    """Exact Hamming search over packed binary codes stored in an index directory.

    Build with :meth:`create` + :meth:`add`, reopen with :meth:`open`. Not thread-safe for
    concurrent ``add``; one writer at a time per directory (enforced with a lock file).
    """

    def __init__(self, path: Path, manifest: dict, segments: list[_Segment], mmap: bool) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self.path = Path(path)
        self._manifest = manifest
        self._segments = segments
        self._mmap = mmap
        self.bits = int(manifest["bits"])
        self.nbytes = (self.bits + 7) // 8
        self._faiss_cache: dict[tuple, Any] = {}
        self._reindex()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, bits: int, model_identity: Mapping[str, Any] | None = None) -> "Index":
        """Create an empty index directory for ``bits``-bit codes from the model ``model_identity``."""
        path = Path(path)
        bits = _check_bits(bits)
        identity = dict(model_identity or {})
        try:
            json.dumps(identity)
        except (TypeError, ValueError) as exc:
            raise HashkitError(f"model identity for index {path} must be JSON-serialisable: {exc}") from exc
        code_length = identity.get("code_length")
        if code_length is not None and int(code_length) != bits:
            raise HashkitError(
                f"cannot create index {path}: model identity says code_length {code_length} but bits={bits}"
            )
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise HashkitError(
                f"cannot create index at {path}: it already exists and is not empty; "
                "open it with Index.open or choose another path"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HashkitError(f"cannot create index folder {path}: {exc.strerror or exc}") from exc
        now = _now()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bits": bits,
            "bytes_per_code": (bits + 7) // 8,
            "bit_order": "msb-first (numpy.packbits), zero padded to whole bytes",
            "count": 0,
            "generation": 0,
            "model_identity": identity,
            "created": now,
            "updated": now,
            "segments": [],
        }
        atomic_write_json(path / MANIFEST, manifest)
        return cls(path, manifest, [], mmap=True)

    @classmethod
    def open(cls, path: str | os.PathLike, mmap: bool = True, verify: bool | None = None) -> "Index":
        """Open an index; ``mmap=True`` maps the codes instead of reading them (for indexes > RAM).

        ``verify``: True = sha256 every file now, False = sizes only, None (default) = sha256 when
        the files are read (``mmap=False``) or total at most ``VERIFY_ON_OPEN_BYTES``.
        """
        path = Path(path)
        manifest = _read_manifest(path)
        total = sum(f["bytes"] for seg in manifest["segments"] for f in seg["files"].values())
        do_verify = verify if verify is not None else (not mmap or total <= VERIFY_ON_OPEN_BYTES)
        nbytes = manifest["bytes_per_code"]
        segments = [_load_segment(path, entry, nbytes, mmap, do_verify) for entry in manifest["segments"]]
        return cls(path, manifest, segments, mmap)

    # ---- properties ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._manifest["count"])

    def __repr__(self) -> str:
        return (
            f"Index({str(self.path)!r}, bits={self.bits}, count={len(self)}, "
            f"segments={len(self._segments)}, mmap={self._mmap})"
        )

    @property
    def model_identity(self) -> dict:
        """A copy of the model identity stored at creation (method, arch, code length, checkpoint...)."""
        return copy.deepcopy(self._manifest["model_identity"])

    @property
    def num_segments(self) -> int:
        """How many appends (segments) the index holds; :meth:`compact` merges them into one."""
        return len(self._segments)

    def check_compatible(self, identity: Mapping[str, Any] | None, fields: Sequence[str] | None = None) -> None:
        """Raise HashkitError naming the first field where ``identity`` differs from the index's model.

        Compares ``fields`` (default: every key of either identity; a key missing on one side is a
        mismatch). A ``code_length`` different from the index's bits is always refused.
        """
        theirs = dict(identity or {})
        ours = self._manifest["model_identity"]
        code_length = theirs.get("code_length")
        if code_length is not None and int(code_length) != self.bits:
            raise HashkitError(
                f"model does not match index {self.path}: code length {code_length} vs {self.bits} "
                "bits in the index; use the model the index was built with, or rebuild the index"
            )
        keys = list(fields) if fields is not None else list(dict.fromkeys([*ours, *theirs]))
        for key in keys:
            a, b = ours.get(key, _MISSING), theirs.get(key, _MISSING)
            if a != b:
                what = "another model: " if key in ("checkpoint_sha256", "checkpoint") else ""
                raise HashkitError(
                    f"model does not match index {self.path}: {what}{key} {_short(b)} vs {_short(a)} "
                    "in the index; use the model the index was built with, or rebuild the index"
                )

    # ---- writing ------------------------------------------------------------------------------

    def add(self, codes: Any, ids: Sequence[str | os.PathLike], packed: bool | None = None) -> None:
        """Append ``codes`` (n, bits) of ±1 / 0-1 values, or packed uint8 (n, ceil(bits/8)), with one id each.

        Atomic: on any failure or kill the on-disk index is exactly as before.
        ``packed=None`` guesses: uint8 of width ceil(bits/8) (and not ``bits``) means packed.
        """
        data = as_packed(codes, self.bits, what="codes to add", packed=packed)
        n = len(data)
        id_list = _check_ids(ids, n)
        if n == 0:
            return
        blob, offsets = _encode_ids(id_list)
        with _writer_lock(self.path):
            on_disk = self._check_unchanged()
            _remove_orphans(self.path, on_disk)
            gen = int(on_disk["generation"]) + 1
            name = f"seg-{gen:06d}-{secrets.token_hex(4)}"
            entry = _write_segment(self.path, name, n, [("codes", [data]), ("offsets", [offsets]), ("ids", [blob])])
            manifest = dict(on_disk)
            manifest.update(
                count=int(on_disk["count"]) + n,
                generation=gen,
                updated=_now(),
                segments=[*on_disk["segments"], entry],
            )
            self._commit(manifest, [entry])
        if self._mmap:
            segment = _load_segment(self.path, entry, self.nbytes, True, False)
        else:
            segment = _Segment(entry, data, offsets, blob)
        self._manifest = manifest
        self._segments.append(segment)
        self._reindex()

    def compact(self) -> None:
        """Merge all segments into one (fewer files, faster search after many small appends); atomic."""
        if len(self._segments) <= 1:
            return
        with _writer_lock(self.path):
            on_disk = self._check_unchanged()
            _remove_orphans(self.path, on_disk)
            gen = int(on_disk["generation"]) + 1
            name = f"seg-{gen:06d}-{secrets.token_hex(4)}"
            shifts = np.cumsum([0] + [int(s.offsets[-1]) for s in self._segments[:-1]])
            parts = [
                ("codes", [s.codes for s in self._segments]),
                ("offsets", [np.zeros(1, "<i8")]
                 + [(s.offsets[1:] + sh).astype("<i8") for s, sh in zip(self._segments, shifts)]),
                ("ids", [s.blob for s in self._segments]),
            ]
            entry = _write_segment(self.path, name, len(self), parts)
            manifest = dict(on_disk)
            manifest.update(generation=gen, updated=_now(), segments=[entry])
            self._commit(manifest, [entry])
            for old in on_disk["segments"]:
                for f in old["files"].values():
                    with contextlib.suppress(OSError):
                        (self.path / f["file"]).unlink()
        self._manifest = manifest
        self._segments = [_load_segment(self.path, entry, self.nbytes, self._mmap, not self._mmap)]
        self._reindex()

    def verify(self) -> None:
        """Full integrity check: sha256 of every file on disk against the manifest; raises HashkitError."""
        for segment in self._segments:
            for kind in ("codes", "offsets", "ids"):
                f = segment.entry["files"][kind]
                fpath = self.path / f["file"]
                _check_size(fpath, f["bytes"])
                h = hashlib.sha256()
                try:
                    with open(fpath, "rb") as handle:
                        while chunk := handle.read(_IO_CHUNK):
                            h.update(chunk)
                except OSError as exc:
                    raise HashkitError(f"cannot read index file {fpath}: {exc.strerror or exc}") from exc
                _check_digest(fpath, h.hexdigest(), f["sha256"])
            _check_offsets(self.path / segment.entry["files"]["offsets"]["file"], segment, full=True)

    # ---- reading ------------------------------------------------------------------------------

    def ids(self, positions: Any) -> Any:
        """Item ids for positions: an int gives a str; an array gives nested lists (None where -1)."""
        arr = np.asarray(positions)
        if arr.ndim == 0:
            return self._id_at(int(arr))
        flat = arr.reshape(-1).astype(np.int64)
        if flat.size and (flat.max() >= len(self) or flat.min() < -1):
            bad = flat[(flat >= len(self)) | (flat < -1)][0]
            raise IndexError(f"position {bad} out of range for index {self.path} of {len(self)} items")
        segs = np.searchsorted(self._starts, flat, side="right") - 1
        out = [None if p < 0 else self._decode(int(s), int(p - self._starts[s])) for p, s in zip(flat, segs)]
        return np.array(out, dtype=object).reshape(arr.shape).tolist()

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Packed codes (uint8, (m, ceil(bits/8))) of positions [start, stop), copied into memory."""
        stop = len(self) if stop is None else min(stop, len(self))
        pieces = [p for _, p in self._packed_blocks(max(1, stop - start), start, stop)]
        return np.concatenate(pieces) if pieces else np.zeros((0, self.nbytes), np.uint8)

    def search(
        self,
        query_codes: Any,
        k: int,
        backend: str = "native",
        device: Any = None,
        threads: int | None = None,
        packed: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes by Hamming distance: (D int32, I int64), each (n_query, k).

        Rows are sorted by (distance, position). Columns beyond ``len(self)`` hold D = I = -1.
        ``backend``: "native" (CPU, ``threads`` = cores by default), "torch" (``device``, default
        cuda if available), "faiss" (IndexBinaryFlat; identical results, codes copied into RAM).
        """
        q = as_packed(query_codes, self.bits, what="query codes", packed=packed)
        k = _check_count(k, "k")
        backend = _check_backend(backend, device, knn=True)
        nq, n = len(q), len(self)
        D = np.full((nq, k), -1, np.int32)
        I = np.full((nq, k), -1, np.int64)
        kk = min(k, n)
        if nq == 0 or kk == 0:
            return D, I
        if backend == "native":
            d, i = _native_knn(q, self._word_blocks, kk, self.bits, threads)
        elif backend == "torch":
            d, i = _torch_knn(q, self._packed_blocks, kk, self.bits, device)
        else:
            d, i = _faiss_knn(self._faiss_flat(), q, kk, n, threads)
        D[:, :kk] = d
        I[:, :kk] = i
        return D, I

    def range_search(
        self,
        query_codes: Any,
        radius: int,
        backend: str = "native",
        device: Any = None,
        threads: int | None = None,
        packed: bool | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All items within Hamming distance ``radius`` (inclusive) of each query: a list of (D, I).

        Each pair is sorted by (distance, position). ``backend="faiss-hash"`` uses faiss
        IndexBinaryMultiHash with radius + 1 hash tables (exact, fast for small radii).
        """
        q = as_packed(query_codes, self.bits, what="query codes", packed=packed)
        radius = _check_count(radius, "radius")
        backend = _check_backend(backend, device, knn=False)
        nq, n = len(q), len(self)
        if nq == 0:
            return []
        if n == 0:
            return [(np.zeros(0, np.int32), np.zeros(0, np.int64)) for _ in range(nq)]
        radius = min(radius, self.bits)
        if backend == "native":
            rows, pos, dist = _native_range(q, self._word_blocks, radius, self.bits, threads)
        elif backend == "torch":
            rows, pos, dist = _torch_range(q, self._packed_blocks, radius, self.bits, device)
        else:
            fidx = self._faiss_flat() if backend == "faiss" else self._faiss_multihash(radius)
            rows, pos, dist = _faiss_range(fidx, q, radius, threads)
        return _group_sorted(rows, pos, dist, nq)

    # ---- internals ----------------------------------------------------------------------------

    def _reindex(self) -> None:
        counts = [s.count for s in self._segments]
        self._starts = np.cumsum([0] + counts[:-1]).astype(np.int64) if counts else np.zeros(0, np.int64)
        self._faiss_cache.clear()

    def _id_at(self, pos: int) -> str | None:
        if pos == -1:
            return None
        if not 0 <= pos < len(self):
            raise IndexError(f"position {pos} out of range for index {self.path} of {len(self)} items")
        s = int(np.searchsorted(self._starts, pos, side="right") - 1)
        return self._decode(s, pos - int(self._starts[s]))

    def _decode(self, seg: int, local: int) -> str:
        segment = self._segments[seg]
        a, b = int(segment.offsets[local]), int(segment.offsets[local + 1])
        return bytes(segment.blob[a:b]).decode("utf-8", "surrogateescape")

    def _check_unchanged(self) -> dict:
        on_disk = _read_manifest(self.path)
        if on_disk["generation"] != self._manifest["generation"]:
            raise HashkitError(
                f"index {self.path} changed on disk since it was opened (another writer); "
                "reopen it with Index.open and try again"
            )
        return on_disk

    def _commit(self, manifest: dict, new_entries: list[dict]) -> None:
        """Atomically replace the manifest; on failure delete the new (unreferenced) files."""
        try:
            atomic_write_json(self.path / MANIFEST, manifest)
        except BaseException:
            with contextlib.suppress(Exception):
                listed = {s["name"] for s in _read_manifest(self.path)["segments"]}
                for entry in new_entries:
                    if entry["name"] not in listed:
                        for f in entry["files"].values():
                            with contextlib.suppress(OSError):
                                (self.path / f["file"]).unlink()
            raise
        _fsync_dir(self.path)

    def _packed_blocks(
        self, max_items: int | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first position, packed (c, nbytes) uint8) blocks of at most ~2*max_items codes.

        Small segments are concatenated; large ones are sliced (views of the memory map).
        """
        max_items = max_items or max(SCAN_ITEMS, BLOCK_BYTES // self.nbytes)
        stop = len(self) if stop is None else stop
        pending: list[np.ndarray] = []
        pending_n = pending_base = 0
        for seg, seg_start in zip(self._segments, self._starts.tolist()):
            lo, hi = max(start, seg_start), min(stop, seg_start + seg.count)
            for s in range(lo, hi, max_items):
                piece = np.asarray(seg.codes[s - seg_start : min(hi, s + max_items) - seg_start])  # plain view
                if not pending:
                    pending_base = s
                pending.append(piece)
                pending_n += len(piece)
                if pending_n >= max_items:
                    yield pending_base, pending[0] if len(pending) == 1 else np.concatenate(pending)
                    pending, pending_n = [], 0
        if pending:
            yield pending_base, pending[0] if len(pending) == 1 else np.concatenate(pending)

    def _word_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first position, words (W, c) uint64) blocks for the native engine."""
        for base, packed in self._packed_blocks():
            yield base, _word_columns(packed)

    def _faiss_flat(self) -> Any:
        key = ("flat", len(self))
        if key not in self._faiss_cache:
            faiss = _import_faiss()
            fidx = faiss.IndexBinaryFlat(self.nbytes * 8)
            for _, packed in self._packed_blocks():
                fidx.add(np.ascontiguousarray(packed))
            self._faiss_cache[key] = fidx
        return self._faiss_cache[key]

    def _faiss_multihash(self, radius: int) -> Any:
        nbits = self.nbytes * 8
        nhash = radius + 1
        b = min(64, nbits // nhash)
        if b < 1:  # more substrings than bits: hashing cannot prune, scan instead
            return self._faiss_flat()
        key = ("multihash", len(self), nhash, b)
        if key not in self._faiss_cache:
            faiss = _import_faiss()
            fidx = faiss.IndexBinaryMultiHash(nbits, nhash, b)
            for _, packed in self._packed_blocks():
                fidx.add(np.ascontiguousarray(packed))
            self._faiss_cache[key] = fidx
        return self._faiss_cache[key]


# --------------------------------------------------------------------------------------------------
# code conversion


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


def _word_columns(packed: np.ndarray) -> np.ndarray:
    """View/copy packed codes (c, nbytes) as zero-padded uint64 words laid out (W, c), W = ceil(nbytes/8)."""
    c, nbytes = packed.shape
    W = (nbytes + 7) // 8
    if nbytes == 8 and packed.flags.c_contiguous:
        return packed.view(np.uint64).reshape(1, c)
    buf = np.zeros((c, W * 8), np.uint8)
    buf[:, :nbytes] = packed
    return np.ascontiguousarray(buf.view(np.uint64).T)


# --------------------------------------------------------------------------------------------------
# native engine (numpy popcount, threads over query chunks, streaming over code blocks)


def _default_threads() -> int:
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
    q: list[np.ndarray], words: np.ndarray, j: int, n: int, scratch: _Scratch, ddtype: type
) -> np.ndarray:
    """Hamming distances (len(q[0]), n) between the query words and codes j..j+n of ``words``.

    popcount(q XOR x) summed over the uint64 words, XOR_ITEMS codes at a time so the uint64
    intermediate stays in L2; returns a view into the per-thread scratch buffer.
    """
    qc = len(q[0])
    scratch.get(qc, ddtype)
    D = scratch.d[: qc * n].reshape(qc, n)
    for s in range(0, n, XOR_ITEMS):
        e = min(n, s + XOR_ITEMS)
        x = scratch.x[: qc * (e - s)].reshape(qc, e - s)
        np.bitwise_xor(q[0], words[0, j + s : j + e], out=x)
        np.bitwise_count(x, out=D[:, s:e])
        if len(q) > 1:
            tmp = scratch.t[: qc * (e - s)].reshape(qc, e - s)
            for w in range(1, len(q)):
                np.bitwise_xor(q[w], words[w, j + s : j + e], out=x)
                np.bitwise_count(x, out=tmp)
                np.add(D[:, s:e], tmp, out=D[:, s:e])
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
            D = _tile_distances(self.q, words, j, n, scratch, self.ddtype)
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
        self.qc = qwords.shape[1]
        self.ddtype = _dist_dtype(bits)
        self.radius = self.ddtype(radius)
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def scan(self, base: int, words: np.ndarray, scratch: _Scratch) -> None:
        c = words.shape[1]
        for j in range(0, c, SCAN_ITEMS):
            n = min(SCAN_ITEMS, c - j)
            D = _tile_distances(self.q, words, j, n, scratch, self.ddtype)
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
    nthreads = max(1, int(threads or _default_threads()))
    qwords = _word_columns(q)
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


def _native_knn(
    q: np.ndarray, blocks: Callable[[], Iterator[tuple[int, np.ndarray]]], k: int, bits: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (k <= number of codes) with the numpy popcount engine."""
    batch = max(1, STATE_BYTES // (k * 9 + 1))
    chunks = _run_chunks(q, blocks, lambda qw: _KnnChunk(qw, k, bits), threads, batch)
    D = np.concatenate([ch.best_d for _, ch in chunks]).astype(np.int32)
    I = np.concatenate([ch.best_i for _, ch in chunks])
    return D, I


def _native_range(
    q: np.ndarray, blocks: Callable[[], Iterator[tuple[int, np.ndarray]]], radius: int, bits: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position, distance) of every pair within ``radius``, per row in position order."""
    chunks = _run_chunks(q, blocks, lambda qw: _RangeChunk(qw, radius, bits), threads, len(q))
    parts = [(r + s, p, d) for s, ch in chunks for r, p, d in ch.found]
    return _concat3(parts)


def _concat3(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    rows, pos, dist = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return rows.astype(np.int64), pos.astype(np.int64), dist.astype(np.int32)


def _group_sorted(
    rows: np.ndarray, pos: np.ndarray, dist: np.ndarray, nrows: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split (row, position, distance) triples per row, each sorted by (distance, position)."""
    order = np.lexsort((pos, dist, rows))
    rows, pos, dist = rows[order], pos[order], dist[order]
    bounds = np.searchsorted(rows, np.arange(nrows + 1))
    return [
        (dist[a:b].astype(np.int32), pos[a:b].astype(np.int64)) for a, b in zip(bounds[:-1], bounds[1:])
    ]


# --------------------------------------------------------------------------------------------------
# torch engine (any device)


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


def _torch_knn(
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


def _torch_range(
    q: np.ndarray, packed_blocks: Callable[..., Iterator[tuple[int, np.ndarray]]], radius: int, bits: int, device: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = []
    for qs, start, dist, _ in _torch_tiles(q, packed_blocks, bits, device):
        r, c = (dist <= radius).nonzero(as_tuple=True)
        if len(r):
            parts.append(((r + qs).cpu().numpy(), (c + start).cpu().numpy(), dist[r, c].cpu().numpy()))
    return _concat3(parts)


# --------------------------------------------------------------------------------------------------
# faiss backend


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise HashkitError(
            "backend 'faiss' needs the faiss package: pip install faiss-cpu (or use backend='native')"
        ) from exc
    return faiss


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    faiss = _import_faiss()
    if not threads:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _faiss_knn(fidx: Any, q: np.ndarray, k: int, n: int, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
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


def _faiss_range(
    fidx: Any, q: np.ndarray, radius: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss binary range_search keeps distance < r; ask for radius + 1 to include the radius."""
    with _faiss_threads(threads):
        lims, Df, If = fidx.range_search(np.ascontiguousarray(q), radius + 1)
    rows = np.repeat(np.arange(len(q)), np.diff(lims.astype(np.int64)))
    return rows.astype(np.int64), If.astype(np.int64), Df.astype(np.int32)


# --------------------------------------------------------------------------------------------------
# on-disk helpers


_MISSING = "<absent>"


def _short(value: Any) -> str:
    s = repr(value) if value is not _MISSING else _MISSING
    return s if len(s) <= 40 else s[:37] + "..."


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_BITS:
        raise HashkitError(f"code length (bits) must be an integer in 1..{MAX_BITS}; got {bits!r}")
    return int(bits)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise HashkitError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _check_backend(backend: str, device: Any, knn: bool) -> str:
    allowed = BACKENDS[:3] if knn else BACKENDS
    if backend not in allowed:
        raise HashkitError(f"unknown search backend {backend!r}; choose one of {', '.join(allowed)}")
    if device is not None and backend != "torch":
        raise HashkitError(f"device={device!r} needs backend='torch' (backend {backend!r} runs on the CPU)")
    return backend


def _check_ids(ids: Any, n: int) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise HashkitError("ids must be a list of strings (e.g. image paths), one per code; got a single string")
    out = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in ids]
    if len(out) != n:
        raise HashkitError(f"got {n} codes but {len(out)} ids; pass one id (e.g. the image path) per code")
    for i, s in enumerate(out):
        if not isinstance(s, str) or not s:
            raise HashkitError(f"id #{i} must be a non-empty string (e.g. the image path); got {s!r}")
    return out


def _encode_ids(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode("utf-8", "surrogateescape") for s in ids]
    offsets = np.zeros(len(ids) + 1, "<i8")
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


def _as_bytes(arr: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _write_segment(root: Path, name: str, count: int, parts: list[tuple[str, list[np.ndarray]]]) -> dict:
    """Write (fsync'd) the files of a new segment from array pieces; return its manifest entry."""
    files = {}
    for kind, pieces in parts:
        fname = name + _SUFFIX[kind]
        h = hashlib.sha256()
        size = 0

        def writer(handle: Any) -> None:
            nonlocal size
            for piece in pieces:
                view = _as_bytes(piece)
                for s in range(0, len(view), _IO_CHUNK):
                    chunk = view[s : s + _IO_CHUNK]
                    h.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)

        atomic_save(root / fname, writer)
        files[kind] = {"file": fname, "bytes": size, "sha256": h.hexdigest()}
    return {"name": name, "count": count, "files": files}


def _read_manifest(root: Path) -> dict:
    """Load and validate ``root/manifest.json``; any problem is a one-line HashkitError."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        if root.is_dir():
            raise HashkitError(f"{root} is not a hashkit index: {MANIFEST} is missing")
        raise HashkitError(f"no index at {root}; build one first (e.g. hashkit encode)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HashkitError(f"index manifest {mpath} is unreadable ({exc}); the index is damaged, rebuild it") from exc
    def bad(why: str) -> HashkitError:
        return HashkitError(f"index manifest {mpath} is invalid: {why}; the index is damaged, rebuild it")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise bad(f"format is not {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise HashkitError(
            f"index {root} has format version {version!r}; this hashkit reads up to {FORMAT_VERSION}: upgrade hashkit"
        )
    try:
        bits = _check_bits(manifest["bits"])
        nbytes = (bits + 7) // 8
        if manifest["bytes_per_code"] != nbytes:
            raise bad(f"bytes_per_code {manifest['bytes_per_code']} does not match bits {bits}")
        if not isinstance(manifest["model_identity"], dict):
            raise bad("model_identity is not an object")
        total = 0
        for seg in manifest["segments"]:
            name, count = seg["name"], seg["count"]
            if not isinstance(name, str) or not _SEGMENT_RE.match(name):
                raise bad(f"bad segment name {name!r}")
            if not isinstance(count, int) or count < 1:
                raise bad(f"segment {name} has count {count!r}")
            expect = {"codes": count * nbytes, "offsets": (count + 1) * 8}
            for kind in _SUFFIX:
                f = seg["files"][kind]
                well_formed = isinstance(f["bytes"], int) and isinstance(f["sha256"], str)
                if f["file"] != name + _SUFFIX[kind] or not well_formed:
                    raise bad(f"segment {name} lists a bad {kind} file entry")
                if kind in expect and f["bytes"] != expect[kind]:
                    raise bad(f"segment {name} {kind} is {f['bytes']} bytes but {count} items need {expect[kind]}")
            total += count
        if total != manifest["count"]:
            raise bad(f"count {manifest['count']!r} differs from the segments' total {total}")
        if not isinstance(manifest["generation"], int):
            raise bad("generation is not an integer")
    except (KeyError, TypeError) as exc:
        raise bad(f"missing or malformed field {exc}") from exc
    return manifest


def _check_size(fpath: Path, expected: int) -> None:
    try:
        size = fpath.stat().st_size
    except FileNotFoundError:
        raise HashkitError(
            f"index file {fpath} listed in the manifest is missing; the index is damaged, rebuild it"
        ) from None
    if size != expected:
        state = "truncated" if size < expected else "longer than recorded"
        raise HashkitError(
            f"index file {fpath} is {state} ({size} bytes, manifest says {expected}); "
            "the index is damaged, rebuild it"
        )


def _check_digest(fpath: Path, digest: str, expected: str) -> None:
    if digest != expected:
        raise HashkitError(
            f"index file {fpath} is corrupt (sha256 {digest[:12]}... but the manifest says "
            f"{expected[:12]}...); the index is damaged, rebuild it"
        )


def _check_offsets(fpath: Path, segment: _Segment, full: bool) -> None:
    off = segment.offsets
    ok = int(off[0]) == 0 and int(off[-1]) == len(segment.blob)
    if ok and full:
        ok = bool(np.all(np.diff(off) >= 0))
    if not ok:
        raise HashkitError(f"index file {fpath} is corrupt (id offsets inconsistent); the index is damaged, rebuild it")


def _load_segment(root: Path, entry: dict, nbytes: int, mmap: bool, verify: bool) -> _Segment:
    """Size-check (and optionally sha256-check) a segment's files and map or read them."""
    arrays = {}
    for kind, dtype in (("codes", np.uint8), ("offsets", "<i8"), ("ids", np.uint8)):
        f = entry["files"][kind]
        fpath = root / f["file"]
        _check_size(fpath, f["bytes"])
        try:
            if mmap and f["bytes"] > 0:
                arr = np.memmap(fpath, dtype=dtype, mode="r")
            else:
                arr = np.fromfile(fpath, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise HashkitError(f"cannot read index file {fpath}: {exc}") from exc
        if verify:
            h = hashlib.sha256()
            view = _as_bytes(arr)
            for s in range(0, len(view), _IO_CHUNK):
                h.update(view[s : s + _IO_CHUNK])
            _check_digest(fpath, h.hexdigest(), f["sha256"])
        arrays[kind] = arr
    segment = _Segment(entry, arrays["codes"].reshape(entry["count"], nbytes), arrays["offsets"], arrays["ids"])
    _check_offsets(root / entry["files"]["offsets"]["file"], segment, full=verify)
    return segment


def _remove_orphans(root: Path, manifest: dict) -> None:
    """Delete files left by killed writers: segments the manifest does not list, temp files."""
    listed = {f["file"] for seg in manifest["segments"] for f in seg["files"].values()}
    for p in root.iterdir():
        name = p.name
        orphan = name.startswith("seg-") and name not in listed
        temp = name.startswith((".seg-", f".{MANIFEST}.")) and name.endswith(".tmp")
        if orphan or temp:
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    """Exclusive, non-blocking writer lock on ``root/.lock`` (no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HashkitError(f"cannot write to index {root}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HashkitError(
                f"index {root} is being written by another process (lock {root / LOCK}); wait and retry"
            ) from None
        yield
    finally:
        os.close(fd)


def _fsync_dir(root: Path) -> None:
    """Make the manifest rename durable (best effort; not supported everywhere)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

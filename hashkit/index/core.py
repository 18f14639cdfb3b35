"""The :class:`Index` class: create/open/add/compact/verify an index directory and search it.

Storage is :mod:`hashkit.index.storage`, code conversion :mod:`hashkit.index.convert`, and each
search backend is its own module (native, torch_engine, faiss_engine, mih); this file only wires
them together.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from loguru import logger

from hashkit.atomic import atomic_write_json
from hashkit.errors import HashkitError
from hashkit.hamming import packed_to_words, word_columns
from hashkit.hamming.mih import MihTables
from hashkit.index import mih as _mih
from hashkit.index.convert import as_packed
from hashkit.index.faiss_engine import faiss_knn, faiss_range, import_faiss
from hashkit.index import native as _native
from hashkit.index.native import group_sorted, native_knn, native_range
from hashkit.index.storage import (
    _IO_CHUNK,
    _MISSING,
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    VERIFY_ON_OPEN_BYTES,
    _check_bits,
    _check_digest,
    _check_ids,
    _check_offsets,
    _check_size,
    _encode_ids,
    _fsync_dir,
    _load_segment,
    _now,
    _read_manifest,
    _remove_orphans,
    _Segment,
    _short,
    _write_segment,
    _writer_lock,
    segment_files,
)
from hashkit.index.torch_engine import torch_knn, torch_range

BACKENDS = ("native", "torch", "faiss", "mih", "faiss-hash")
KNN_BACKENDS = ("native", "torch", "faiss", "mih")  # faiss-hash: range_search only


class Index:
    """Exact Hamming search over packed binary codes stored in an index directory.

    Build with :meth:`create` + :meth:`add`, reopen with :meth:`open`. Not thread-safe for
    concurrent ``add``; one writer at a time per directory (enforced with a lock file).
    """

    def __init__(
        self, path: Path, manifest: dict, segments: list[_Segment], mmap: bool, verify: bool = True
    ) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self.path = Path(path)
        self._verify = verify  # sha256-check files read later (MIH tables) as open() did
        self._mih_cache: dict[str, tuple[MihTables, np.ndarray]] = {}
        self.mih_visited: np.ndarray | None = None  # per query of the last mih search: codes compared
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
        # A folder holding only the writer lock (hashkit encode locks before it creates) counts as empty.
        if path.exists() and (not path.is_dir() or any(p.name != LOCK for p in path.iterdir())):
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
        return cls(path, manifest, segments, mmap, do_verify)

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
        check_identity(self._manifest["model_identity"], identity, self.bits, str(self.path), fields)

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

    def stage(self, codes: Any, ids: Sequence[str | os.PathLike], packed: bool | None = None) -> dict | None:
        """Write a new segment's files without listing it: one process's part of a multi-process append.

        Returns its manifest entry (None for no codes); :meth:`commit_staged` lists the entries of all
        processes with one manifest replacement. Until then readers do not see the files, and the next
        writer deletes them if the commit never comes (a process died). Takes no lock, so several
        processes (``hashkit encode`` under torchrun) can stage at once.
        """
        data = as_packed(codes, self.bits, what="codes to add", packed=packed)
        id_list = _check_ids(ids, len(data))
        if len(data) == 0:
            return None
        blob, offsets = _encode_ids(id_list)
        name = f"seg-{int(self._manifest['generation']) + 1:06d}-{secrets.token_hex(4)}"
        return _write_segment(self.path, name, len(data), [("codes", [data]), ("offsets", [offsets]), ("ids", [blob])])

    def commit_staged(self, entries: Sequence[dict | None]) -> None:
        """Append the segments written by :meth:`stage` (in this order) with one atomic manifest commit.

        Every staged file is checked against its entry (size and sha256) first; a missing or damaged
        one is refused and the index stays as it was.
        """
        staged = [e for e in entries if e]
        if not staged:
            return
        with _writer_lock(self.path):
            on_disk = self._check_unchanged()
            segments = [_load_segment(self.path, e, self.nbytes, self._mmap, True) for e in staged]
            manifest = dict(on_disk)
            manifest.update(
                count=int(on_disk["count"]) + sum(int(e["count"]) for e in staged),
                generation=int(on_disk["generation"]) + 1,
                updated=_now(),
                segments=[*on_disk["segments"], *staged],
            )
            self._commit(manifest, staged)
        self._manifest = manifest
        self._segments.extend(segments)
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
                for f in segment_files(old):
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
            if _mih.is_fresh(segment.entry, self.bits):
                _mih.load_tables(self.path, segment.entry, self.bits, True, True)
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
        cuda if available), "faiss" (IndexBinaryFlat; identical results, codes copied into RAM),
        "mih" (multi-index hashing, sub-linear and exact; tables built on first use, see
        :meth:`build_mih`).
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
            d, i = native_knn(q, self._word_blocks, kk, self.bits, threads)
        elif backend == "torch":
            d, i = torch_knn(q, self._packed_blocks, kk, self.bits, device)
        elif backend == "mih":
            d, i, self.mih_visited = _mih.knn_segments(self._mih_parts(), q, kk, threads)
        else:
            d, i = faiss_knn(self._faiss_flat(), q, kk, n, threads)
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

        Each pair is sorted by (distance, position). ``backend="mih"``: hashkit's multi-index
        hashing tables (exact, sub-linear for small radii); ``backend="faiss-hash"`` uses faiss
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
            rows, pos, dist = native_range(q, self._word_blocks, radius, self.bits, threads)
        elif backend == "torch":
            rows, pos, dist = torch_range(q, self._packed_blocks, radius, self.bits, device)
        elif backend == "mih":
            rows, pos, dist = _mih.range_segments(self._mih_parts(), q, radius, threads)
        else:
            fidx = self._faiss_flat() if backend == "faiss" else self._faiss_multihash(radius)
            rows, pos, dist = faiss_range(fidx, q, radius, threads)
        return group_sorted(rows, pos, dist, nq)

    # ---- multi-index hashing ------------------------------------------------------------------

    def build_mih(self, force: bool = False) -> int:
        """Build the multi-index hashing tables of every segment that lacks fresh ones (all with
        ``force``), store them beside the segments and list them in the manifest (atomic).

        Returns the number of segments whose tables were built. ``search``/``range_search`` with
        ``backend="mih"`` call this on first use; call it after :meth:`add` / :meth:`compact` to pay
        the build time up front. Tables whose format or codes changed (stale) are rebuilt.
        """
        with _writer_lock(self.path):
            on_disk = self._check_unchanged()
            _remove_orphans(self.path, on_disk)
            entries, built = [], 0
            for entry, segment in zip(on_disk["segments"], self._segments):
                if not force and _mih.is_fresh(entry, self.bits):
                    entries.append(entry)
                    continue
                tables = _mih.build(segment.codes, self.bits)
                entry = {**entry, "mih": _mih.write_tables(self.path, entry, tables)}
                entries.append(entry)
                self._mih_cache[entry["name"]] = (tables, self._segment_words(segment))
                built += 1
            if not built:
                return 0
            manifest = dict(on_disk)
            manifest.update(generation=int(on_disk["generation"]) + 1, updated=_now(), segments=entries)
            self._commit(manifest, [])
            for old, new in zip(on_disk["segments"], entries):  # replaced (stale) tables
                if isinstance(old.get("mih"), dict) and old["mih"].get("file") != new["mih"]["file"]:
                    with contextlib.suppress(OSError, TypeError):
                        (self.path / old["mih"]["file"]).unlink()
        self._manifest = manifest
        for segment, entry in zip(self._segments, entries):
            segment.entry = entry
        return built

    def _mih_parts(self) -> list[tuple[int, MihTables, np.ndarray]]:
        """(first position, tables, uint64 words) of every segment, building missing/stale tables.

        Tables are written to disk when the index is writable; otherwise (another writer holds the
        lock, read-only folder) they are built in memory for this Index object, with a warning.
        """
        if any(not _mih.is_fresh(s.entry, self.bits) for s in self._segments):
            try:
                self.build_mih()
            except HashkitError as exc:
                logger.warning(f"MIH tables of {self.path} could not be stored ({exc}); building them in memory")
                for segment in self._segments:
                    if not _mih.is_fresh(segment.entry, self.bits) and segment.entry["name"] not in self._mih_cache:
                        self._mih_cache[segment.entry["name"]] = (
                            _mih.build(segment.codes, self.bits), self._segment_words(segment))
        parts = []
        for segment, start in zip(self._segments, self._starts.tolist()):
            name = segment.entry["name"]
            if name not in self._mih_cache:
                tables = _mih.load_tables(self.path, segment.entry, self.bits, self._mmap, self._verify)
                self._mih_cache[name] = (tables, self._segment_words(segment))
            tables, words = self._mih_cache[name]
            parts.append((start, tables, words))
        return parts

    @staticmethod
    def _segment_words(segment: _Segment) -> np.ndarray:
        """A segment's codes as (n, W) native uint64 words (a view for 64-bit codes)."""
        return np.ascontiguousarray(packed_to_words(np.asarray(segment.codes)))

    # ---- internals ----------------------------------------------------------------------------

    def _reindex(self) -> None:
        counts = [s.count for s in self._segments]
        self._starts = np.cumsum([0] + counts[:-1]).astype(np.int64) if counts else np.zeros(0, np.int64)
        self._faiss_cache.clear()
        live = {s.entry["name"] for s in self._segments}
        for name in [n for n in getattr(self, "_mih_cache", {}) if n not in live]:
            del self._mih_cache[name]

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
        max_items = max_items or max(_native.SCAN_ITEMS, _native.BLOCK_BYTES // self.nbytes)
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
            yield base, word_columns(packed)

    def _faiss_flat(self) -> Any:
        key = ("flat", len(self))
        if key not in self._faiss_cache:
            faiss = import_faiss()
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
            faiss = import_faiss()
            fidx = faiss.IndexBinaryMultiHash(nbits, nhash, b)
            for _, packed in self._packed_blocks():
                fidx.add(np.ascontiguousarray(packed))
            self._faiss_cache[key] = fidx
        return self._faiss_cache[key]


def check_identity(ours: Mapping[str, Any], identity: Mapping[str, Any] | None, bits: int, where: str,
                   fields: Sequence[str] | None = None) -> None:
    """Raise HashkitError naming the first field where ``identity`` differs from ``ours`` (an index's stored
    model identity, folder or Milvus collection ``where``); a code length other than ``bits`` is refused."""
    theirs = dict(identity or {})
    code_length = theirs.get("code_length")
    if code_length is not None and int(code_length) != bits:
        raise HashkitError(
            f"model does not match index {where}: code length {code_length} vs {bits} "
            "bits in the index; use the model the index was built with, or rebuild the index"
        )
    keys = list(fields) if fields is not None else list(dict.fromkeys([*ours, *theirs]))
    for key in keys:
        a, b = ours.get(key, _MISSING), theirs.get(key, _MISSING)
        if a != b:
            what = "another model: " if key in ("checkpoint_sha256", "checkpoint") else ""
            raise HashkitError(
                f"model does not match index {where}: {what}{key} {_short(b)} vs {_short(a)} "
                "in the index; use the model the index was built with, or rebuild the index"
            )


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise HashkitError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _check_backend(backend: str, device: Any, knn: bool) -> str:
    allowed = KNN_BACKENDS if knn else BACKENDS
    if backend not in allowed:
        raise HashkitError(f"unknown search backend {backend!r}; choose one of {', '.join(allowed)}")
    if device is not None and backend != "torch":
        raise HashkitError(f"device={device!r} needs backend='torch' (backend {backend!r} runs on the CPU)")
    return backend

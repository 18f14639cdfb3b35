"""Index storage: the directory format, the manifest, immutable segments, integrity checks, the lock.

Format and crash-safety rules: see :mod:`hashkit.index`. Everything that reads or writes files of an
index directory lives here; the search engines only see arrays.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hashkit.atomic import atomic_save
from hashkit.errors import HashkitError

FORMAT = "hashkit-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
MAX_BITS = 65534
VERIFY_ON_OPEN_BYTES = 256 << 20
_SUFFIX = {"codes": ".codes", "offsets": ".offsets", "ids": ".ids"}
_SEGMENT_RE = re.compile(r"^seg-\d{6,}-[0-9a-f]{8}$")
_IO_CHUNK = 16 << 20


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


def segment_files(entry: dict) -> list[dict]:
    """Every file entry a segment lists: codes, offsets, ids, and its MIH tables when it has them."""
    files = list(entry["files"].values())
    mih = entry.get("mih")
    if isinstance(mih, dict) and isinstance(mih.get("file"), str):
        files.append(mih)
    return files


def _remove_orphans(root: Path, manifest: dict) -> None:
    """Delete files left by killed writers: segments the manifest does not list, temp files."""
    listed = {f["file"] for seg in manifest["segments"] for f in segment_files(seg)}
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

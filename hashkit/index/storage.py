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
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from loguru import logger

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


_HELD: dict[str, int] = {}  # index folders whose writer lock this process holds -> nesting depth


@contextlib.contextmanager
def writer_lock(root: str | os.PathLike, wait: float = 0.0, purpose: str = "") -> Iterator[None]:
    """Hold the exclusive writer lock of index folder ``root`` (created if missing) for the ``with`` block.

    The lock is ``flock`` on ``root/.lock``: the kernel releases it when its holder exits, killed or not, so
    a lock left by a dead writer is never in the way. While held, the file names the holder (pid, host,
    start time, ``purpose``) so that a second writer can say who it is waiting for. A second writer stops at
    once with that name, or retries for up to ``wait`` seconds. A record left by a writer that died
    (its pid no longer running) is reported and overwritten. Re-entrant within a process (``Index.add``
    inside ``hashkit encode``'s lock). No-op where fcntl is unavailable (Windows).
    """
    root = Path(root)
    key = str(root.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise HashkitError(f"cannot write to index {root}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait:g} s" if wait else ""
                    raise HashkitError(
                        f"index {root} is being written by {_describe_holder(_read_holder(fd))}{waited} "
                        f"(lock {root / LOCK}); wait for it to finish, or pass --wait SECONDS"
                    ) from None
                time.sleep(min(0.2, max(0.01, deadline - time.monotonic())))
        left = _read_holder(fd)
        if left.get("pid") and not _pid_alive(left):
            logger.warning(f"index {root}: taking over the writer lock left by {_describe_holder(left)}, which is no "
                           "longer running (its lock was released when it died)")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(), "purpose": purpose}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: no holder to name
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# Internal name kept for the writers in this package.
_writer_lock = writer_lock


def _read_holder(fd: int) -> dict:
    """The holder record in an open lock file ({} when empty or unreadable: an older hashkit, or none)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        record = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _pid_alive(record: dict) -> bool:
    """Whether the record's pid still runs (only knowable on the same host; assumed alive elsewhere)."""
    if record.get("host") not in (None, socket.gethostname()):
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def _describe_holder(record: dict) -> str:
    if not record.get("pid"):
        return "another process"
    what = f" ({record['purpose']})" if record.get("purpose") else ""
    return f"pid {record['pid']} on {record.get('host', '?')} since {record.get('since', '?')}{what}"


def _fsync_dir(root: Path) -> None:
    """Make the manifest rename durable (best effort; not supported everywhere)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""What ``hashkit serve`` does besides HTTP: encode uploads in batches, search a live index, make thumbnails.

Framework-free on purpose (the FastAPI routes in ``app.py`` only parse and format), so it is tested and
benchmarked without a server.

* :class:`EncodeBatcher` — one thread owns the network; requests hand it a transformed image tensor and
  wait on a future. Whatever arrived while a batch ran is stacked into the next forward pass, so eight
  concurrent clients cost about one batched pass instead of eight queued ones.
* :class:`SearchBatcher` — the same for searches: one thread, concurrent queries answered by one
  multi-query search (both are :class:`Batcher` s: one loop, two batch functions).
* :class:`LiveIndex` — the index opened read-only (memory-mapped); before each request it stats
  ``manifest.json`` and reopens when an ``hashkit encode`` has committed an append. A reader only ever
  sees segments the manifest lists, and the manifest is replaced atomically after its segments are
  fsynced, so a half-written segment is never visible; a reopen that fails (e.g. a compaction deleting
  files mid-open) keeps the previous snapshot.
* :class:`ItemSource` — position → image (and label names, when the index holds the checkpoint's dataset
  items): thumbnails are served by position only, never by a path taken from a request.
* :func:`decode_upload` — bytes → RGB image or a one-line :class:`UploadError` (not an image, truncated,
  too many pixels: a decompression-bomb guard checked on the header before any pixel is decoded).
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from PIL import Image, UnidentifiedImageError

from hashkit import ties as tie_order
from hashkit.atomic import atomic_write_bytes
from hashkit.errors import HashkitError

THUMB_PX = 160  # longest side of a cached thumbnail (CIFAR's 32 px images are kept at their size)
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: above any camera photo people search with, far below a bomb


class UploadError(ValueError):
    """A bad upload: the message is one line for the page; ``status`` the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(
            f"{name}: {width}×{height} = {width * height:,} pixels is above the limit of {max_pixels:,} "
            "(decompression-bomb guard); send a smaller image or raise --max-pixels"
        )


def decode_upload(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An uploaded file as an RGB image (decoded as ``hashkit encode`` decodes files), or UploadError."""
    from hashkit.data.base import load_rgb

    if not data:
        raise UploadError(f"{name}: empty file; choose an image (JPEG, PNG, …)")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            check_pixels(probe, name, max_pixels)
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{name}: {exc}; send a smaller image") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"{name}: not an image file hashkit can read (JPEG, PNG, WebP, BMP, GIF, TIFF)") from exc
    try:
        return load_rgb(name, data=data)
    except HashkitError as exc:
        raise UploadError(f"{name}: truncated or corrupt image; re-export or choose another file") from exc
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{name}: {exc}; send a smaller image") from exc


class Batcher(ABC):
    """A worker thread that runs queued requests in batches: whatever arrived while one batch ran forms
    the next (up to ``max_batch``). Subclasses say what a batch does (:meth:`run_batch`); a failure is
    handed to every request of its batch and the worker goes on."""

    def __init__(self, name: str, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @abstractmethod
    def run_batch(self, requests: list[Any]) -> list[Any]:
        """One result per request, in order."""

    def _submit(self, request: Any) -> Future:
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            while len(items) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                items.append(item)
            try:
                results = self.run_batch([request for request, _ in items])
                self.batches += 1
                self.items += len(items)
                for (_, future), result in zip(items, results):
                    future.set_result(result)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)


class EncodeBatcher(Batcher):
    """Runs the network on one thread; concurrent requests' images are batched into one forward pass."""

    def __init__(self, hasher: Any, max_batch: int = 32) -> None:
        self.hasher = hasher
        super().__init__("hashkit-encode", max_batch)

    def submit(self, tensor: torch.Tensor) -> Future:
        """Queue one transformed image (C, H, W); the future gives its real-valued output (bits,) float32."""
        return self._submit(tensor)

    def encode(self, image: Image.Image) -> np.ndarray:
        """Transform + encode one image, waiting for the result (for callers without an event loop)."""
        return self.submit(self.hasher.transform(image)).result()

    def run_batch(self, requests: list[torch.Tensor]) -> list[np.ndarray]:
        with torch.no_grad():
            batch = torch.stack(requests).to(self.hasher.device)
            return list(self.hasher.outputs(batch).float().cpu().numpy())


@dataclass(frozen=True)
class SearchRequest:
    """One query's search: its real-valued output (bits,), and ``k`` or ``radius``, on an index snapshot."""

    index: Any
    output: np.ndarray
    k: int | None
    radius: int | None
    ties: str


class SearchBatcher(Batcher):
    """Runs searches on one thread; concurrent queries with the same index snapshot, k (or radius) and tie
    rule are answered by one multi-query search. A scan over the index costs about the same for one query
    as for a few (the codes are read once per block of queries), and one search thread at a time keeps
    concurrent requests from fighting over the cores (measured with ``scripts/bench_serve.py``: 8
    clients searching a 1M-code index one by one on their own threads took 220 ms per search at p50)."""

    def __init__(self, max_batch: int = 64) -> None:
        super().__init__("hashkit-search", max_batch)

    def submit(self, request: SearchRequest) -> Future:
        """Queue one search; the future gives its (distances, positions) like :func:`hashkit.ties.knn`'s rows."""
        return self._submit(request)

    def run_batch(self, requests: list[SearchRequest]) -> list[tuple[np.ndarray, np.ndarray]]:
        groups: dict[tuple[int, int | None, int | None, str], list[int]] = {}
        for at, r in enumerate(requests):
            groups.setdefault((id(r.index), r.k, r.radius, r.ties), []).append(at)
        results: list[Any] = [None] * len(requests)
        for (_, k, radius, ties), members in groups.items():
            index = requests[members[0]].index
            outputs = np.stack([requests[at].output for at in members])
            if radius is not None:
                hits = tie_order.within(index, outputs, radius, ties)
            else:
                hits = tie_order.knn(index, outputs, int(k), ties)  # type: ignore[arg-type]
            for at, hit in zip(members, hits):
                results[at] = hit
        return results


class LiveIndex:
    """The index, opened read-only and reopened when ``manifest.json`` changes (a committed append).

    A ``milvus://`` index is opened once: Milvus serves appends itself, so every search sees them.
    """

    def __init__(self, path: str | os.PathLike, identity: dict[str, Any] | None = None) -> None:
        from hashkit.index import open_index
        from hashkit.index.milvus import is_milvus_address

        self.remote = is_milvus_address(path)
        self.path: Any = str(path) if self.remote else Path(path)
        self._identity = identity
        self._lock = threading.Lock()
        self._stamp = self._manifest_stamp()
        self._index = open_index(self.path)
        if identity is not None:
            self._index.check_compatible(identity)

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        if self.remote:
            return None
        try:
            st = os.stat(self.path / "manifest.json")
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> Any:
        """The newest committed snapshot (an ``Index``); cheap when nothing changed (one stat)."""
        from hashkit.index import Index

        stamp = self._manifest_stamp()
        if stamp == self._stamp or stamp is None:
            return self._index
        with self._lock:
            if stamp != self._stamp:
                try:
                    index = Index.open(self.path)
                    if self._identity is not None:
                        index.check_compatible(self._identity)
                except HashkitError as exc:  # e.g. files replaced mid-open: keep serving the old snapshot
                    logger.warning(f"keeping the previous snapshot of {self.path}: {exc}")
                    return self._index
                logger.info(f"{self.path}: reopened after an append ({len(self._index)} → {len(index)} items)")
                self._index, self._stamp = index, stamp
        return self._index


@dataclass
class _DatasetItems:
    collection: Any
    rows: dict[str, int]
    class_names: list[str]


class ItemSource:
    """Position → the item's image and label names; thumbnails made once and cached (atomic writes).

    An item id is looked up, in order, among the checkpoint's dataset items (when the index was encoded with
    ``hashkit encode --database``: gives label names, and works for in-memory datasets), as an absolute file,
    and relative to ``images_root`` (the folder given to ``hashkit encode --images``; a relative id that
    would leave it is refused).
    """

    def __init__(self, images_root: str | os.PathLike | None, cache_dir: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.images_root = Path(images_root).resolve() if images_root else None
        self.cache_dir = cache_dir
        self.max_pixels = max_pixels
        self._dataset: _DatasetItems | None = None
        self.dataset_ready = threading.Event()

    def load_dataset(self, config: dict[str, Any]) -> None:
        """Index the checkpoint's dataset items by id (for labels); failures only disable labels."""
        try:
            from hashkit.run import build_splits

            splits = build_splits(config)
            pool = splits.extra.get("pool")
            if pool is None:
                from hashkit.data.base import ImageCollection

                pool = ImageCollection.concatenate([splits.train, splits.query, splits.database], source=splits.name)
            rows = {pool.item_id(i): i for i in range(len(pool))}
            self._dataset = _DatasetItems(pool, rows, list(splits.class_names))
            logger.info(f"labels: {len(rows):,} items of {splits.name} known")
        except (HashkitError, OSError, KeyError, ValueError) as exc:
            logger.info(f"labels: not shown ({exc})")
        finally:
            self.dataset_ready.set()

    def labels(self, item_id: str) -> list[str] | None:
        data = self._dataset
        if data is None or item_id not in data.rows:
            return None
        row = data.collection.labels[data.rows[item_id]]
        return [data.class_names[j] for j in np.flatnonzero(row)]

    def _file(self, item_id: str) -> Path | None:
        path = Path(item_id)
        if path.is_absolute():
            return path if path.is_file() else None
        if self.images_root is None:
            return None
        candidate = (self.images_root / path).resolve()
        if not candidate.is_relative_to(self.images_root) or not candidate.is_file():
            return None
        return candidate

    def image(self, item_id: str) -> Image.Image | None:
        """The item's RGB image, or None when it cannot be found."""
        from hashkit.data.base import load_rgb

        data = self._dataset
        if data is not None and item_id in data.rows:
            return data.collection.load(data.rows[item_id])
        path = self._file(item_id)
        if path is None:
            return None
        with Image.open(path) as probe:
            check_pixels(probe, str(path), self.max_pixels)
        return load_rgb(path)

    def thumbnail(self, item_id: str) -> bytes | None:
        """JPEG bytes of the item's thumbnail, from the cache or made (and cached) now."""
        path = None if (self._dataset and item_id in self._dataset.rows) else self._file(item_id)
        stat = f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path is not None else "dataset"
        key = hashlib.sha256(f"{item_id}\0{stat}\0{THUMB_PX}".encode("utf-8", "surrogateescape")).hexdigest()
        cached = self.cache_dir / key[:2] / f"{key}.jpg"
        if cached.is_file():
            return cached.read_bytes()
        image = self.image(item_id)
        if image is None:
            return None
        image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        try:
            atomic_write_bytes(cached, data)
        except HashkitError as exc:  # a read-only cache still serves the thumbnail
            logger.warning(str(exc))
        return data


def thumbnail_cache(cache_dir: str | os.PathLike | None, index_path: Path | str) -> Path:
    """``<cache>/thumbnails/<hash of the index folder, or of the milvus:// address>``."""
    from hashkit.paths import cache_root

    where = index_path if isinstance(index_path, str) and index_path.startswith("milvus://") else Path(index_path).resolve()
    tag = hashlib.sha256(str(where).encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "thumbnails" / tag


def now_ms() -> float:
    return time.perf_counter() * 1000.0

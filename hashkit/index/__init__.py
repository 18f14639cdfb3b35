"""On-disk exact Hamming search index (faiss-like API) over bit-packed binary codes.

Package layout, one job per module: :mod:`.core` (the :class:`Index` class), :mod:`.storage`
(directory format, manifest, segments, checks, lock), :mod:`.convert` (input codes -> packed rows),
and one module per search backend: :mod:`.native`, :mod:`.torch_engine`, :mod:`.faiss_engine`,
:mod:`.mih`. Hamming distances themselves come from :mod:`hashkit.hamming`.

Directory layout of an index ``INDEX/`` (format version 1)::

    manifest.json              bits, count, model identity, format version, and for every segment
                               the size and sha256 of each of its files
    seg-000001-<rand>.codes    uint8 (n, ceil(bits/8)): codes packed MSB-first (numpy.packbits order),
                               zero padded to whole bytes when bits % 8 != 0 (padding never changes
                               a Hamming distance; packed input with nonzero padding bits is refused)
    seg-000001-<rand>.offsets  little-endian int64 (n + 1): where each item id starts in ``.ids``
    seg-000001-<rand>.ids      the item ids (e.g. image paths), UTF-8, concatenated
    seg-000001-<rand>-mih1-<rand>.mih   optional multi-index hashing tables of that segment
    .lock                      writer lock (flock); while held, a JSON line naming the holder
                               (pid, host, since, purpose) so a second writer can say who it waits for

Crash safety: segments are immutable. ``add`` writes (and fsyncs) a new segment, then atomically
replaces ``manifest.json``; readers trust only what the manifest lists, so an append killed at any
point leaves the index exactly as it was (left-over files are deleted by the next writer).
Integrity: ``open`` always checks every listed file exists with the listed size; it also checks the
sha256 of every file when the data is read into memory (``mmap=False``) or totals at most
``VERIFY_ON_OPEN_BYTES`` (256 MiB). Larger memory-mapped indexes get the size check only on open;
``Index.verify()`` (or ``open(..., verify=True)``) runs the full checksum. A damaged file is refused
with a one-line :class:`HashkitError` naming it.

Concurrency: one writer at a time (``.lock``, :func:`writer_lock`; ``hashkit encode`` takes it before
it encodes anything, so a second writer stops at once naming the first, or waits with ``--wait``); an open Index is a snapshot of the manifest it read
(reopen to see later appends). ``compact`` deletes the old segment files, which open memory maps
keep reading on POSIX; other readers should reopen.

Search is exact. ``search(q, k)`` returns ``(D, I)`` of shape ``(n_query, k)``: Hamming distances
(int32) and item positions (int64, insertion order), sorted by (distance, position) so ties go to
the item added first. When ``k > len(index)`` the missing columns are padded with ``D = I = -1``.
Backends:

* ``native`` (default, CPU): XOR + popcount (:func:`hashkit.hamming.xor_popcount`) over uint64 words, tiles of
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
* ``mih``: multi-index hashing (Norouzi et al., TPAMI 2014), exact top-k and radius search that
  compares a small part of the collection; per-segment tables stored beside the segments and listed
  in the manifest (:mod:`hashkit.index.mih`, :mod:`hashkit.hamming.mih`). Results equal the native
  engine's, ties included.
* ``milvus://HOST:PORT/COLLECTION`` instead of a folder: the index lives in a Milvus collection
  (:mod:`.milvus`, :func:`open_index`); same search API and results.
* ``faiss-hash`` (``range_search`` only): IndexBinaryMultiHash with radius + 1 hash tables over
  disjoint substrings, exact by the pigeonhole principle (two codes within the radius agree
  exactly on at least one substring); much faster than a scan for small radii.
"""

from __future__ import annotations

import os
from typing import Any

from hashkit.index.convert import as_packed
from hashkit.index.core import BACKENDS, Index
from hashkit.index.storage import FORMAT, FORMAT_VERSION, MANIFEST, MAX_BITS, VERIFY_ON_OPEN_BYTES, writer_lock

__all__ = ["Index", "open_index", "writer_lock", "as_packed", "BACKENDS", "FORMAT", "FORMAT_VERSION", "MANIFEST", "MAX_BITS",
           "VERIFY_ON_OPEN_BYTES"]


def open_index(target: str | os.PathLike, **options: Any) -> Any:
    """Open an index named by a folder path or a ``milvus://HOST:PORT/COLLECTION`` address.

    Both answer the same search API (``search``, ``range_search``, ``ids``, ``codes``, ``check_compatible``);
    ``options`` (``mmap``, ``verify``) apply to folders only.
    """
    from hashkit.index.milvus import MilvusIndex, is_milvus_address

    if is_milvus_address(target):
        return MilvusIndex.open(str(target))
    return Index.open(target, **options)

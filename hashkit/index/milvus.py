"""An index that lives in a Milvus collection (``milvus://HOST:PORT/COLLECTION``), for collections that
outgrow one machine or people who already run Milvus.

The collection (one per index) holds, per item::

    position  INT64 primary key   the item's insertion position (0, 1, 2, ...), as in a folder index
    item      VARCHAR             the item id (e.g. an image path)
    code      BINARY_VECTOR       the code packed MSB-first (numpy.packbits), dim = bits rounded up to
                                  whole bytes (zero padding never changes a Hamming distance)

and, as JSON in the collection's description, the format, the bits, the model identity (a model that
differs is refused, as by a folder index) and the vector index type (``BIN_FLAT``: exact scan; or
``BIN_IVF_FLAT`` with ``nlist`` lists, searched with ``nprobe = nlist`` so it stays exact).

Appends are idempotent per item id: ids already in the collection are skipped, so a killed ``encode`` or
``export`` re-run adds only what is missing. Unlike a folder index an append is not atomic (Milvus has no
multi-batch transaction): a killed append leaves a prefix of its batches, which the re-run completes.
One writer at a time per collection (Milvus has no lock hashkit can take; positions are counted).

Search is exact and ordered like a folder index's (distance, then position):
Milvus returns the true top-k *distances* (BIN_FLAT is a scan), but says nothing about *which* items it
returns when several share the k-th distance, nor their order. So hashkit asks for k + 1 neighbours; when
the (k+1)-th is farther than the k-th no tie group is cut and sorting the k by (distance, position) is
exact. Otherwise it fetches every item at exactly the k-th distance, keeps the items closer than it, and
takes the first k by (distance, position). The fetch is a top-16,384 search (Milvus' largest k) that is
complete when it reaches past that distance; if not, the positions are split in two (a boolean filter on
``position``) until each part's is. (Not Milvus' range search: on a BIN_IVF_FLAT collection it returned
fewer items than its top-k search, see :meth:`MilvusIndex._within`.)
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from loguru import logger

from hashkit.errors import HashkitError
from hashkit.index.convert import as_packed
from hashkit.index.core import check_identity
from hashkit.index.storage import MAX_BITS, _check_bits, _check_ids

SCHEME = "milvus://"
FORMAT = "hashkit-milvus-index"
FORMAT_VERSION = 1
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
MAX_HITS = 16_384  # Milvus' largest top-k / range-search limit and query window
MAX_ID_CHARS = 4_096  # VARCHAR length of the item field
INSERT_ROWS = 10_000  # rows per insert request (well under gRPC's 64 MiB message limit)
LOOKUP_IDS = 1_000  # ids per "item in [...]" query
_POSITIONS_END = 1 << 62  # above every position: searches cover [0, _POSITIONS_END)
_WITHIN_LIMITS = (256, 4096, MAX_HITS)  # top-k sizes tried in turn to fetch every item within a distance
_SHORT_RETRIES = 6  # re-asks of a search that returned fewer hits than asked for (about 6 s in all)
_CONNECT_TIMEOUT_S = 10.0  # HASHKIT_MILVUS_TIMEOUT overrides: how long to wait for an unreachable server
# Reads use Milvus' "Session" consistency: a process sees its own writes, and does not wait for the server's
# next time tick (Strong costs ~200 ms per request on the embedded server). A writer ends every append with
# one Strong request (:meth:`MilvusIndex.sync`), which returns once the server serves all its writes, so a
# reader started after ``hashkit encode`` / ``export`` returned sees every item they added.
READ_CONSISTENCY = "Session"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def is_milvus_address(target: Any) -> bool:
    """True when ``target`` names a Milvus collection rather than an index folder."""
    return isinstance(target, str) and target.startswith(SCHEME)


@dataclass(frozen=True)
class MilvusAddress:
    host: str
    port: int
    collection: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.host}:{self.port}/{self.collection}"

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> MilvusAddress:
    """``milvus://HOST:PORT/COLLECTION`` -> its parts; anything else is refused with the expected form."""
    form = "expected milvus://HOST:PORT/COLLECTION, e.g. milvus://127.0.0.1:19530/photos"
    if not is_milvus_address(text):
        raise HashkitError(f"{text!r} is not a Milvus address; {form}")
    rest = text[len(SCHEME):]
    server, _, collection = rest.partition("/")
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HashkitError(f"Milvus address {text}: no HOST:PORT before the collection; {form}")
    if not _NAME.fullmatch(collection):
        raise HashkitError(
            f"Milvus address {text}: collection name {collection!r} must be letters, digits and _, not starting "
            f"with a digit (at most 255); {form}"
        )
    return MilvusAddress(host.strip("[]"), int(port), collection)


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as exc:
        raise HashkitError(
            f"a milvus:// index needs the Milvus client: pip install 'pymilvus>=2.5.18,<2.6' (or pip install hashkit[milvus]) ({exc})"
        ) from exc
    return pymilvus


def _reason(exc: BaseException) -> str:
    """The server's message of a pymilvus exception, without the class wrapper."""
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())


class MilvusIndex:
    """A hashkit index stored in a Milvus collection; the same search API as :class:`hashkit.index.Index`.

    Open with :meth:`open`, create with :meth:`create` (or :func:`open_or_create`). Results of
    :meth:`search` and :meth:`range_search` equal a folder index's holding the same codes in the same order.
    """

    def __init__(self, address: MilvusAddress, collection: Any, meta: dict) -> None:
        """Internal: use :meth:`open` or :meth:`create`."""
        self.address = address
        self.path = str(address)  # the name errors and results use, as a folder index's path
        self._collection = collection
        self._meta = meta
        self.bits = int(meta["bits"])
        self.nbytes = (self.bits + 7) // 8
        self._id_cache: dict[int, str] = {}

    # ---- connection ---------------------------------------------------------------------------

    @staticmethod
    def _connect(address: MilvusAddress) -> str:
        """Connect (once per server per process) and return the pymilvus connection alias."""
        pymilvus = _pymilvus()
        alias = f"hashkit-{address.host}-{address.port}"
        if pymilvus.connections.has_connection(alias):
            return alias
        timeout = float(os.environ.get("HASHKIT_MILVUS_TIMEOUT", _CONNECT_TIMEOUT_S))
        try:
            pymilvus.connections.connect(alias=alias, host=address.host, port=str(address.port), timeout=timeout)
        except Exception as exc:  # pymilvus raises MilvusException or grpc errors, depending on the failure
            raise HashkitError(
                f"cannot reach Milvus at {address.server} (for {address}) within {timeout:g} s: {_reason(exc)}; "
                "start the server or fix the address"
            ) from exc
        return alias

    @classmethod
    def open(cls, target: str | MilvusAddress) -> "MilvusIndex":
        """Open an existing collection written by hashkit; a missing or foreign one is refused."""
        address = target if isinstance(target, MilvusAddress) else parse_address(target)
        pymilvus = _pymilvus()
        alias = cls._connect(address)
        try:
            if not pymilvus.utility.has_collection(address.collection, using=alias):
                raise HashkitError(
                    f"Milvus collection {address.collection} does not exist at {address.server}; create it with "
                    f"hashkit encode --out {address} or hashkit export --index FOLDER --to {address}"
                )
            collection = pymilvus.Collection(address.collection, using=alias)
            meta = _read_meta(address, collection.description)
            collection.load()
        except HashkitError:
            raise
        except Exception as exc:
            raise HashkitError(f"Milvus at {address.server}: cannot open {address}: {_reason(exc)}") from exc
        return cls(address, collection, meta)

    @classmethod
    def create(cls, target: str | MilvusAddress, bits: int, model_identity: Mapping[str, Any] | None = None,
               index_type: str = "BIN_FLAT", nlist: int = 1024) -> "MilvusIndex":
        """Create an empty collection for ``bits``-bit codes of ``model_identity`` (refused if it exists)."""
        address = target if isinstance(target, MilvusAddress) else parse_address(target)
        bits = _check_bits(bits)
        if index_type not in INDEX_TYPES:
            raise HashkitError(f"--index-type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
        if index_type == "BIN_IVF_FLAT" and not 1 <= int(nlist) <= 65536:
            raise HashkitError(f"--nlist {nlist}: choose a number of lists between 1 and 65536")
        identity = dict(model_identity or {})
        code_length = identity.get("code_length")
        if code_length is not None and int(code_length) != bits:
            raise HashkitError(f"cannot create {address}: model identity says code_length {code_length} but bits={bits}")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "bits": bits, "model_identity": identity,
                "index_type": index_type, "nlist": int(nlist) if index_type == "BIN_IVF_FLAT" else None}
        pymilvus = _pymilvus()
        alias = cls._connect(address)
        DataType, FieldSchema = pymilvus.DataType, pymilvus.FieldSchema
        schema = pymilvus.CollectionSchema(
            [
                FieldSchema("position", DataType.INT64, is_primary=True, auto_id=False),
                FieldSchema("item", DataType.VARCHAR, max_length=MAX_ID_CHARS),
                FieldSchema("code", DataType.BINARY_VECTOR, dim=8 * ((bits + 7) // 8)),
            ],
            description=json.dumps(meta),
        )
        try:
            if pymilvus.utility.has_collection(address.collection, using=alias):
                raise HashkitError(f"cannot create {address}: the collection already exists; open it or choose another name")
            collection = pymilvus.Collection(address.collection, schema, using=alias, consistency_level=READ_CONSISTENCY)
            params = {"nlist": int(nlist)} if index_type == "BIN_IVF_FLAT" else {}
            collection.create_index("code", {"index_type": index_type, "metric_type": "HAMMING", "params": params})
            collection.load()
        except HashkitError:
            raise
        except Exception as exc:
            raise HashkitError(f"Milvus at {address.server}: cannot create {address}: {_reason(exc)}") from exc
        logger.info(f"created Milvus collection {address} ({bits} bits, {index_type})")
        return cls(address, collection, meta)

    # ---- properties ---------------------------------------------------------------------------

    def __len__(self) -> int:
        rows = self._call("count the items", self._collection.query, expr="", output_fields=["count(*)"],
                          consistency_level=READ_CONSISTENCY)
        return int(rows[0]["count(*)"])

    def __repr__(self) -> str:
        return f"MilvusIndex({self.path!r}, bits={self.bits}, index_type={self._meta['index_type']})"

    @property
    def model_identity(self) -> dict:
        return json.loads(json.dumps(self._meta["model_identity"]))

    @property
    def index_type(self) -> str:
        return str(self._meta["index_type"])

    def check_compatible(self, identity: Mapping[str, Any] | None, fields: Sequence[str] | None = None) -> None:
        """Raise HashkitError naming the first field where ``identity`` differs from the collection's model."""
        check_identity(self._meta["model_identity"], identity, self.bits, self.path, fields)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if type(exc).__module__.startswith(("pymilvus", "grpc")):
                raise HashkitError(f"Milvus at {self.address.server}: cannot {what} in {self.path}: {_reason(exc)}") from exc
            raise

    def sync(self) -> int:
        """Wait until the server serves every write made so far; returns the count. (No flush: Milvus logs
        each insert durably before acknowledging it, and seals segments itself; a flush costs seconds.)"""
        rows = self._call("count the items", self._collection.query, expr="", output_fields=["count(*)"],
                          consistency_level="Strong")
        return int(rows[0]["count(*)"])

    # ---- writing ------------------------------------------------------------------------------

    def add(self, codes: Any, ids: Sequence[str | os.PathLike], packed: bool | None = None) -> int:
        """Append ``codes`` with their ``ids``, skipping ids the collection already holds; returns how many
        were added. Not atomic: a killed append leaves some of its batches, and re-running it adds the rest."""
        data = as_packed(codes, self.bits, what="codes to add", packed=packed)
        id_list = _check_ids(ids, len(data))
        long = next((i for i in id_list if len(i) > MAX_ID_CHARS), None)
        if long is not None:
            raise HashkitError(f"item id {long[:60]!r}... is longer than {MAX_ID_CHARS} characters, the Milvus item field")
        present = self.existing_ids(id_list)
        keep, seen = [], set(present)
        for row, item in enumerate(id_list):
            if item not in seen:
                seen.add(item)
                keep.append(row)
        if len(keep) < len(id_list):
            logger.info(f"{self.path}: {len(id_list) - len(keep)} of {len(id_list)} ids already present; skipped")
        if not keep:
            return 0
        start = len(self)
        beyond = self._call("read items", self._collection.query, expr=f"position >= {start}", output_fields=["position"],
                            limit=1, consistency_level=READ_CONSISTENCY)
        if beyond:  # positions are 0..count-1 unless an export was cut short
            raise HashkitError(
                f"{self.path} has gaps in its positions (an interrupted hashkit export?); re-run that export to "
                "finish it before appending"
            )
        rows = np.asarray(keep, dtype=np.int64)
        self._insert(np.arange(start, start + len(rows), dtype=np.int64), [id_list[r] for r in rows], data[rows])
        self.sync()
        return len(rows)

    def _insert(self, positions: np.ndarray, ids: list[str], packed: np.ndarray) -> None:
        for lo in range(0, len(positions), INSERT_ROWS):
            hi = lo + INSERT_ROWS
            self._call("insert items", self._collection.insert,
                       [positions[lo:hi].tolist(), ids[lo:hi], [bytes(row) for row in packed[lo:hi]]])

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already in the collection."""
        found: set[str] = set()
        for lo in range(0, len(ids), LOOKUP_IDS):
            chunk = list(ids[lo: lo + LOOKUP_IDS])
            rows = self._call("look up item ids", self._collection.query, expr=f"item in {json.dumps(chunk)}",
                              output_fields=["item"], consistency_level=READ_CONSISTENCY)
            found.update(r["item"] for r in rows)
        return found

    def rows_between(self, start: int, stop: int, fields: Sequence[str] = ("item",)) -> dict[int, dict]:
        """position -> row (the ``fields``) of every stored position in [start, stop)."""
        out: dict[int, dict] = {}
        for lo in range(start, stop, MAX_HITS):
            hi = min(stop, lo + MAX_HITS)
            rows = self._call("read items", self._collection.query, expr=f"position >= {lo} and position < {hi}",
                              output_fields=list(fields), limit=MAX_HITS, consistency_level=READ_CONSISTENCY)
            out.update((int(r["position"]), r) for r in rows)
        return out

    # ---- reading ------------------------------------------------------------------------------

    def ids(self, positions: Any) -> Any:
        """Item ids for positions: an int gives a str; an array gives nested lists (None where -1)."""
        arr = np.asarray(positions)
        flat = arr.reshape(-1).astype(np.int64)
        missing = sorted({int(p) for p in flat if p >= 0 and int(p) not in self._id_cache})
        for lo in range(0, len(missing), MAX_HITS):
            chunk = missing[lo: lo + MAX_HITS]
            rows = self._call("read item ids", self._collection.query, expr=f"position in {chunk}",
                              output_fields=["item"], limit=len(chunk), consistency_level=READ_CONSISTENCY)
            self._id_cache.update((int(r["position"]), r["item"]) for r in rows)
        unknown = [p for p in missing if p not in self._id_cache]
        if unknown:
            raise IndexError(f"position {unknown[0]} out of range for index {self.path}")
        out = [None if p < 0 else self._id_cache[int(p)] for p in flat]
        return out[0] if arr.ndim == 0 else np.array(out, dtype=object).reshape(arr.shape).tolist()

    def codes_at(self, positions: Any) -> np.ndarray:
        """Packed codes (uint8, (m, ceil(bits/8))) of the items at ``positions`` (any order, repeats allowed)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        unique = np.unique(positions)
        found: dict[int, bytes] = {}
        for lo in range(0, len(unique), MAX_HITS):
            chunk = unique[lo: lo + MAX_HITS].tolist()
            rows = self._call("read codes", self._collection.query, expr=f"position in {chunk}",
                              output_fields=["code"], limit=len(chunk), consistency_level=READ_CONSISTENCY)
            found.update((int(r["position"]), _vector_bytes(r["code"])) for r in rows)
        if len(found) < len(unique):
            bad = next(int(p) for p in unique if int(p) not in found)
            raise IndexError(f"position {bad} out of range for index {self.path}")
        return np.array([np.frombuffer(found[int(p)], np.uint8) for p in positions], dtype=np.uint8).reshape(
            len(positions), self.nbytes)

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Packed codes of positions [start, stop)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self.codes_at(np.arange(start, max(start, stop)))

    def _search_params(self, extra: Mapping[str, Any] | None = None) -> dict:
        params: dict[str, Any] = {}
        if self._meta["index_type"] == "BIN_IVF_FLAT":
            params["nprobe"] = int(self._meta["nlist"])  # every list: exact, like the scan
        params.update(extra or {})
        return {"metric_type": "HAMMING", "params": params}

    def _raw_search(self, q: np.ndarray, limit: int, extra: Mapping[str, Any] | None = None,
                    expr: str | None = None, with_ids: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """Milvus' answer per query as (distances int32, positions int64), in Milvus' order; with ``with_ids``
        the hits' item ids come along and are cached for :meth:`ids`."""
        result = self._call("search", self._collection.search, [bytes(row) for row in q], "code",
                            self._search_params(extra), limit=limit, expr=expr,
                            output_fields=["item"] if with_ids else [], consistency_level=READ_CONSISTENCY)
        out = []
        for hits in result:
            pos = np.array(hits.ids, dtype=np.int64)
            dist = np.array(hits.distances, dtype=np.float64)
            if with_ids:
                for h in hits:
                    self._id_cache[int(h.id)] = h.entity.get("item")
            out.append((np.rint(dist).astype(np.int32), pos))
        return out

    def _complete_search(self, q: np.ndarray, want: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Milvus' top-``want`` of each query, insisting on ``want`` distinct hits (``want`` <= the count): a
        shorter answer (Milvus de-duplicates primary keys after cutting each segment's top-k, e.g. while a
        segment is handed over) could hide a true neighbour. Short rows are asked again after 0.1, 0.2, 0.4 …
        s, then refused."""
        answers: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int32), np.zeros(0, np.int64))] * len(q)
        short = list(range(len(q)))
        for attempt in range(_SHORT_RETRIES + 1):
            if attempt:
                time.sleep(0.1 * 2 ** (attempt - 1))
            for row, (d, p) in zip(short, self._raw_search(q[short], want)):
                p, first = np.unique(p, return_index=True)  # a row seen twice (a segment handed over) counts once
                answers[row] = (d[first], p)
            short = [row for row in short if len(answers[row][1]) < want]
            if not short:
                return answers
            logger.debug(f"{self.path}: Milvus answered {len(answers[short[0]][1])} of {want} neighbours; asking again")
        raise HashkitError(
            f"Milvus answered {len(answers[short[0]][1])} of {want} neighbours for a query of {self.path} after "
            f"{_SHORT_RETRIES} retries (segments being sealed or indexed?); retry the search later"
        )

    def _within(self, q: np.ndarray, lowest: int, highest: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Every item at distance in [lowest, highest] among positions [start, stop), complete.

        Uses Milvus' exact top-k, not its range search: a range search of a ``BIN_IVF_FLAT`` collection
        returned fewer items than the top-k search of the same collection did (1M codes, nlist 1024, every list
        probed). The top-16,384 of the positions is complete for the range when it holds fewer than 16,384
        items or reaches past ``highest``; otherwise the positions are split in two until each part is.
        """
        expr = f"position >= {start} and position < {stop}"
        for limit in _WITHIN_LIMITS:  # most ranges are small: a short top-k first, the 16,384 window if needed
            d, p = self._raw_search(q[None], limit, expr=expr, with_ids=False)[0]
            p, first = np.unique(p, return_index=True)
            d = d[first]
            if len(p) < limit or d.max() > highest or stop - start <= limit:
                keep = (d >= lowest) & (d <= highest)
                return d[keep], p[keep]
        middle = (start + stop) // 2
        d1, p1 = self._within(q, lowest, highest, start, middle)
        d2, p2 = self._within(q, lowest, highest, middle, stop)
        return np.concatenate([d1, d2]), np.concatenate([p1, p2])

    def search(self, query_codes: Any, k: int, backend: str = "native", device: Any = None,
               threads: int | None = None, packed: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes: (D int32, I int64) of shape (n_query, k), rows sorted by (distance, position),
        columns beyond the collection's size D = I = -1 — exactly :meth:`hashkit.index.Index.search`'s answer."""
        from hashkit.index.core import _check_count

        _check_backend(backend)
        q = as_packed(query_codes, self.bits, what="query codes", packed=packed)
        k = _check_count(k, "k")
        n = len(self)
        D = np.full((len(q), k), -1, np.int32)
        I = np.full((len(q), k), -1, np.int64)
        kk = min(k, n)
        if len(q) == 0 or kk == 0:
            return D, I
        if kk >= MAX_HITS:
            raise HashkitError(f"k={k}: a Milvus index answers at most k={MAX_HITS - 1}; use --radius or a smaller k")
        for row, (d, p) in enumerate(self._complete_search(q, min(kk + 1, n))):
            order = np.lexsort((p, d))
            d, p = d[order], p[order]
            if len(p) > kk and d[kk] == d[kk - 1]:  # the k-th distance's group is cut: fetch all of it
                edge = int(d[kk - 1])
                ds, ps = self._within(q[row], edge, edge, 0, _POSITIONS_END)
                closer = d < edge
                d, p = np.concatenate([d[closer], ds]), np.concatenate([p[closer], ps])
                order = np.lexsort((p, d))
                d, p = d[order], p[order]
            D[row, :kk], I[row, :kk] = d[:kk], p[:kk]
        return D, I

    def range_search(self, query_codes: Any, radius: int, backend: str = "native", device: Any = None,
                     threads: int | None = None, packed: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every item within Hamming ``radius`` (inclusive) of each query, sorted by (distance, position)."""
        from hashkit.index.core import _check_count

        _check_backend(backend)
        q = as_packed(query_codes, self.bits, what="query codes", packed=packed)
        radius = min(_check_count(radius, "radius"), self.bits)
        n = len(self)
        out = []
        for row in range(len(q)):
            d, p = self._within(q[row], 0, radius, 0, _POSITIONS_END) if n else (np.zeros(0, np.int32), np.zeros(0, np.int64))
            order = np.lexsort((p, d))
            out.append((d[order].astype(np.int32), p[order].astype(np.int64)))
        return out


def _check_backend(backend: str) -> None:
    if backend not in ("native", "milvus"):
        raise HashkitError(
            f"--backend {backend} searches a folder index; a milvus:// index is searched by Milvus (leave --backend out)"
        )


def _vector_bytes(value: Any) -> bytes:
    """A BINARY_VECTOR field as returned by a query: bytes, or a one-element list of bytes."""
    return bytes(value[0]) if isinstance(value, (list, tuple)) else bytes(value)


def _read_meta(address: MilvusAddress, description: str) -> dict:
    try:
        meta = json.loads(description)
        ok = isinstance(meta, dict) and meta.get("format") == FORMAT and 1 <= int(meta["bits"]) <= MAX_BITS
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise HashkitError(
            f"Milvus collection {address.collection} at {address.server} was not written by hashkit (its description "
            "is not a hashkit index header); choose another collection name"
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise HashkitError(f"{address}: format version {meta['format_version']} is newer than this hashkit reads; upgrade hashkit")
    return meta


def open_or_create(target: str, bits: int, identity: Mapping[str, Any] | None, index_type: str = "BIN_FLAT",
                   nlist: int = 1024) -> MilvusIndex:
    """Open ``target`` (refused if its model differs from ``identity``) or create it when it does not exist."""
    address = parse_address(target)
    pymilvus = _pymilvus()
    alias = MilvusIndex._connect(address)
    try:
        exists = pymilvus.utility.has_collection(address.collection, using=alias)
    except Exception as exc:
        raise HashkitError(f"Milvus at {address.server}: cannot list collections: {_reason(exc)}") from exc
    if exists:
        index = MilvusIndex.open(address)
        index.check_compatible(identity)
        if index.bits != bits:
            raise HashkitError(f"{address} holds {index.bits}-bit codes, not {bits}; use another collection")
        return index
    return MilvusIndex.create(address, bits, identity, index_type=index_type, nlist=nlist)


def export(folder_index: Any, target: str, index_type: str = "BIN_FLAT", nlist: int = 1024,
           batch: int = INSERT_ROWS) -> dict:
    """Copy a folder index into a Milvus collection, keeping positions; resumable and idempotent.

    Batch by batch (``batch`` positions), the positions already stored are read back and only the missing
    rows inserted, so a killed export re-run adds only what is missing. A collection holding other items at
    the same positions (another index) is refused before anything is written.
    """
    if not 1 <= batch <= MAX_HITS:
        raise HashkitError(f"--batch {batch}: choose 1 to {MAX_HITS} rows per request")
    index = open_or_create(target, folder_index.bits, folder_index.model_identity, index_type, nlist)
    if index.index_type != index_type:
        logger.warning(f"{target} already has a {index.index_type} index; keeping it (asked for {index_type})")
    n = len(folder_index)
    held = len(index)
    if held > n:
        raise HashkitError(f"{target} holds {held} items, more than the {n} of {folder_index.path}; export into a new collection")
    added = 0
    for start, stop in _batches(n, batch):
        ids = folder_index.ids(np.arange(start, stop))
        stored = index.rows_between(start, stop, ("item",)) if held else {}
        clash = next((p for p, r in stored.items() if r["item"] != ids[p - start]), None)
        if clash is not None:
            raise HashkitError(
                f"{target} position {clash} holds {stored[clash]['item']!r}, not {ids[clash - start]!r} as in "
                f"{folder_index.path}; export into a new collection"
            )
        rows = np.array([p for p in range(start, stop) if p not in stored], dtype=np.int64)
        if len(rows):
            packed = folder_index.codes(start, stop)[rows - start]
            index._insert(rows, [ids[p - start] for p in rows], packed)
            added += len(rows)
        logger.info(f"export to {target}: {stop}/{n} items ({added} added)")
    index.sync()
    return {"index": str(folder_index.path), "to": target, "added": added, "count": len(index), "bits": index.bits,
            "index_type": index.index_type}


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)

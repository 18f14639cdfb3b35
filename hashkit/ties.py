"""Order search results that share a Hamming distance by an asymmetric score (for ``hashkit search`` / ``serve``).

With short codes many database items share a code (on CIFAR-10 at 32 bits, >1,000 items can sit at
distance 0 from one query), so "ties go to the item added first" puts whatever was encoded first at the
top. When *searching* (not evaluating — the evaluator keeps the stable, documented tie order) hashkit
orders items at the same Hamming distance by the asymmetric score ``s = u · b``: the query's real-valued
network output ``u`` (before the sign; flip-averaged when the run encodes that way) against the item's
±1 code ``b``, higher first. For a fixed distance d, ``u · b = ‖u‖₁ − 2 Σ_{i: b_i ≠ sign u_i} |u_i|``,
so the score prefers items whose d disagreeing bits are the ones the network was least sure of.

Items with the *same code* get the same score, and no code-only rule can separate them. They are put in
a fixed pseudo-random order of their positions (:func:`scramble`, a bijective multiplicative hash), not in
insertion order: collections are usually encoded in file-name order, i.e. class by class, and insertion
order then puts the stray items of the classes stored first at the top of every tie group (measured on
the CIFAR-10 database with a 32-bit OrthoCos model, where a median of 3,401 items share the query's code:
P@10 0.27 in insertion order; docs/web.md has the figures). The order is deterministic (the same
index gives the same answer), independent of the query, and any order inside a group of identical codes
is as defensible as another; this one is not correlated with how the files were named.

Written on top of the public :class:`hashkit.index.Index` API (``search``, ``range_search``, ``codes``),
so it works with every backend: a k-NN query asks for k + 1 neighbours; when the (k+1)-th is farther
than the k-th, no tie crosses the cut and only the top k are re-ordered; otherwise every item within the
k-th distance is fetched with ``range_search`` and the best k by (distance, −score, scramble(position))
are kept.
Cost: one dot product per candidate, plus one range scan when a tie group is cut.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hashkit.errors import HashkitError

TIES = ("score", "insertion")
_MAX_CALLS = 64  # gather_codes reads at most this many contiguous blocks per call (few large copies)
_MIN_BLOCK = 4096


def check_ties(ties: str) -> str:
    if ties not in TIES:
        raise HashkitError(f"--ties {ties!r}: choose one of {', '.join(TIES)}")
    return ties


def signs(outputs: np.ndarray) -> np.ndarray:
    """±1 int8 codes of real-valued outputs with sign(0) = +1 (hashkit.model.binarize's convention)."""
    return np.where(np.asarray(outputs) >= 0, 1, -1).astype(np.int8)


def gather_codes(index: Any, positions: np.ndarray) -> np.ndarray:
    """±1 float32 codes (m, bits) of the items at ``positions`` (any order, repeats allowed).

    Reads contiguous blocks through ``Index.codes(start, stop)`` — at most ``_MAX_CALLS`` of them — so a
    memory-mapped index larger than RAM is never copied whole unless the candidates cover all of it.
    """
    positions = np.asarray(positions, dtype=np.int64)
    out = np.empty((len(positions), index.bits), np.float32)
    if len(positions) == 0:
        return out
    if hasattr(index, "codes_at"):  # a Milvus index reads exactly the rows asked for
        bits = np.unpackbits(index.codes_at(positions), axis=1, count=index.bits)
        return bits.astype(np.float32) * 2.0 - 1.0
    block = max(_MIN_BLOCK, -(-len(index) // _MAX_CALLS))
    blocks = positions // block
    for b in np.unique(blocks):
        rows = np.flatnonzero(blocks == b)
        start = int(b) * block
        packed = index.codes(start, start + block)
        bits = np.unpackbits(packed[positions[rows] - start], axis=1, count=index.bits)
        out[rows] = bits.astype(np.float32) * 2.0 - 1.0
    return out


SCRAMBLE = 0x9E3779B97F4A7C15  # odd, so p ↦ p · SCRAMBLE mod 2^64 is a bijection (Fibonacci hashing)


def scramble(positions: np.ndarray) -> np.ndarray:
    """The tie order of identical codes: positions mapped through a fixed bijection of uint64 (p · SCRAMBLE
    mod 2^64), so it is deterministic, total and unrelated to insertion order."""
    with np.errstate(over="ignore"):
        return np.asarray(positions).astype(np.uint64) * np.uint64(SCRAMBLE)


def _order(index: Any, output: np.ndarray, dist: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Permutation sorting (dist, pos) by (distance, −score, scramble(position))."""
    if len(pos) <= 1:
        return np.arange(len(pos))
    score = gather_codes(index, pos) @ np.asarray(output, np.float32)
    return np.lexsort((scramble(pos), -score, dist))


def knn(index: Any, outputs: np.ndarray, k: int, ties: str = "score", backend: str = "native",
        device: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the k nearest items as (distances int32, positions int64) — fewer if the index is smaller.

    ``outputs``: (n_query, bits) real-valued network outputs (their signs are the query codes).
    ``ties="insertion"`` gives exactly ``Index.search``'s order (distance, position).
    """
    outputs = np.asarray(outputs, dtype=np.float32)
    ties = check_ties(ties)
    codes = signs(outputs)
    if ties == "insertion":
        D, I = index.search(codes, k, backend=backend, device=device)
        return [(d[i >= 0], i[i >= 0]) for d, i in zip(D, I)]
    if k < 1:  # let the index word the error for k
        index.search(codes, k, backend=backend, device=device)
    D, I = index.search(codes, k + 1, backend=backend, device=device)
    hits = []
    for row, (d, i) in enumerate(zip(D, I)):
        keep = i >= 0
        d, i = d[keep], i[keep]
        if len(i) > k and d[k] == d[k - 1]:  # a tie group is cut at k: fetch all of it
            d, i = index.range_search(codes[row: row + 1], int(d[k - 1]), backend=_range_backend(backend),
                                      device=device)[0]
        else:
            d, i = d[:k], i[:k]
        order = _order(index, outputs[row], d, i)[:k]
        hits.append((d[order].astype(np.int32), i[order].astype(np.int64)))
    return hits


def within(index: Any, outputs: np.ndarray, radius: int, ties: str = "score", backend: str = "native",
           device: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, every item within Hamming ``radius``, ordered by (distance, −score, scramble(position))."""
    outputs = np.asarray(outputs, dtype=np.float32)
    ties = check_ties(ties)
    hits = index.range_search(signs(outputs), radius, backend=backend, device=device)
    if ties == "insertion":
        return hits
    out = []
    for row, (d, i) in enumerate(hits):
        order = _order(index, outputs[row], d, i)
        out.append((d[order], i[order]))
    return out


def _range_backend(backend: str) -> str:
    return "native" if backend == "faiss" else backend  # faiss range search copies the codes; native scans


def results_json(index: Any, index_label: str, queries: Sequence[str], outputs: np.ndarray,
                 hits: Sequence[tuple[np.ndarray, np.ndarray]], k: int | None, radius: int | None,
                 ties: str) -> dict[str, Any]:
    """The document ``hashkit search --json`` prints and ``POST /api/search`` returns.

    ``{"index", "k", "radius", "ties", "queries": [{"query", "code", "results": [{"rank", "id", "distance",
    "position"}]}]}``; ``code`` is the query's code as a string of 0/1 (1 = +1), bit 0 first.
    """
    codes = signs(outputs)
    return {
        "index": index_label,
        "k": k,
        "radius": radius,
        "ties": ties,
        "queries": [
            {
                "query": name,
                "code": "".join("1" if b > 0 else "0" for b in code),
                "results": [
                    {"rank": rank, "id": index.ids(int(pos)), "distance": int(dist), "position": int(pos)}
                    for rank, (dist, pos) in enumerate(zip(d, i), start=1)
                ],
            }
            for name, code, (d, i) in zip(queries, codes, hits)
        ],
    }

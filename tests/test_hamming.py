"""hashkit.hamming as the one Hamming module: the numpy 1.x popcount fallback gives the fast path's
numbers everywhere it is used (evaluator, index), and the C source ships as a package file."""

from __future__ import annotations

import numpy as np
import pytest

import hashkit.evaluate as ev
import hashkit.hamming.distance as hdist
from hashkit.hamming import hamming_distance, hamming_distance_packed, kernel, pack_bits, xor_popcount
from hashkit.index import Index


def _codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    centres = rng.choice([-1, 1], size=(8, bits))
    flips = rng.random((n, bits)) < 0.15
    return np.where(flips, -1, 1) * centres[rng.integers(0, 8, n)]


@pytest.mark.parametrize("bits", [8, 64, 100, 256])
def test_fallback_popcount_matches_fast_path_in_index_and_evaluator(monkeypatch, tmp_path, bits):
    if not hasattr(np, "bitwise_count"):
        pytest.skip("numpy < 2: only the fallback exists here")
    rng = np.random.default_rng(bits)
    db, q = _codes(rng, 700, bits), _codes(rng, 9, bits)
    labels_db = np.eye(4)[rng.integers(0, 4, 700)]
    labels_q = np.eye(4)[rng.integers(0, 4, 9)]
    index = Index.create(tmp_path / "idx", bits)
    index.add(db[:300], [f"a{i}" for i in range(300)])
    index.add(db[300:], [f"b{i}" for i in range(400)])
    monkeypatch.setattr(ev, "_CPU_BACKEND", "numpy")
    monkeypatch.setenv(kernel.ENV_DISABLE, "1")  # the index's numpy tiles, not the compiled kernel

    def run() -> tuple:
        D, I = index.search(q, 25, threads=2)
        hits = index.range_search(q, bits // 4, threads=1)
        res = ev.evaluate_codes(q, db, labels_q, labels_db, metrics=ev.METRIC_NAMES, topk=50, radius=2)
        return D, I, hits, res, hamming_distance_packed(pack_bits(q), pack_bits(db))

    fast = run()
    monkeypatch.setattr(hdist, "FORCE_FALLBACK", True)
    slow = run()
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    for (d1, i1), (d2, i2) in zip(fast[2], slow[2]):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(i1, i2)
    assert fast[3] == slow[3]
    np.testing.assert_array_equal(fast[4], slow[4])
    # and both equal the ±1 matmul definition d = (bits - q.b) / 2
    np.testing.assert_array_equal(slow[4], hamming_distance(q, db).numpy())
    ref = hamming_distance(q, db).numpy().astype(np.int64)
    order = np.lexsort((np.broadcast_to(np.arange(700), ref.shape), ref), axis=1)[:, :25]
    np.testing.assert_array_equal(slow[1], order)


def test_xor_popcount_broadcasts_rows_and_tiles():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**63, size=(3, 2), dtype=np.uint64)
    b = rng.integers(0, 2**63, size=(5, 2), dtype=np.uint64)
    expect = np.array([[sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(r, c)) for c in b] for r in a])
    out = np.empty((3, 5), np.uint16)
    xor_popcount([a[:, :1], a[:, 1:]], [b[:, 0], b[:, 1]], out, np.empty((3, 5), np.uint64), np.empty((3, 5), np.uint8))
    np.testing.assert_array_equal(out, expect)


def test_kernel_source_is_a_package_file():
    """The C source is a real file next to the loader (setup.py ships it as package data)."""
    assert kernel.SOURCE_FILE.name == "kernel.c" and kernel.SOURCE_FILE.is_file()
    assert "hk_eval_rows" in kernel.SOURCE == kernel.SOURCE_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("bits", [64, 100, 300])
def test_native_search_same_on_every_kernel_path_and_numpy(monkeypatch, tmp_path, bits):
    """The native engine's tiles come from the compiled kernel (AVX-512 / AVX2 / popcnt / portable
    builds) or numpy without it: identical neighbours, distances and radius hits."""
    if kernel.load() is None:
        pytest.skip("compiled kernel unavailable")
    rng = np.random.default_rng(bits)
    db, q = _codes(rng, 1500, bits), _codes(rng, 7, bits)
    index = Index.create(tmp_path / "idx", bits)
    index.add(db[:999], [f"a{i}" for i in range(999)])  # two segments, tiles with ragged ends
    index.add(db[999:], [f"b{i}" for i in range(501)])

    def run() -> tuple:
        D, I = index.search(q, 40, threads=2)
        return D, I, index.range_search(q, bits // 3, threads=1)

    monkeypatch.setenv(kernel.ENV_DISABLE, "1")
    want = run()
    ref = hamming_distance(q, db).numpy().astype(np.int64)  # the ±1 matmul definition
    np.testing.assert_array_equal(want[1], np.lexsort((np.broadcast_to(np.arange(1500), ref.shape), ref), axis=1)[:, :40])
    monkeypatch.delenv(kernel.ENV_DISABLE)
    for path in kernel.available_isas():
        monkeypatch.setenv(kernel.ENV_ISA, path)
        got = run()
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        for (d1, i1), (d2, i2) in zip(got[2], want[2]):
            np.testing.assert_array_equal(d1, d2)
            np.testing.assert_array_equal(i1, i2)

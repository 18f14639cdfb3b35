"""hashkit.index: exact Hamming search against a brute-force reference, on-disk integrity, crash safety."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hashkit.index.core as hcore
import hashkit.index.native as hnative
from hashkit.errors import HashkitError
from hashkit.index import Index

REPO = Path(__file__).resolve().parents[1]


# ---- slow obvious reference -------------------------------------------------------------------------


def ref_dist(q01: np.ndarray, db01: np.ndarray) -> np.ndarray:
    """Hamming distance by counting differing entries of unpacked 0/1 codes."""
    return (q01[:, None, :] != db01[None, :, :]).sum(-1)


def ref_knn(q01: np.ndarray, db01: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort every item by (distance, position), keep k, pad with -1."""
    dist = ref_dist(q01, db01)
    D = np.full((len(q01), k), -1)
    I = np.full((len(q01), k), -1)
    for r in range(len(q01)):
        order = sorted(range(len(db01)), key=lambda j: (dist[r, j], j))[:k]
        D[r, : len(order)] = dist[r, order]
        I[r, : len(order)] = order
    return D, I


def ref_range(q01: np.ndarray, db01: np.ndarray, radius: int) -> list[tuple[list, list]]:
    dist = ref_dist(q01, db01)
    out = []
    for r in range(len(q01)):
        hits = sorted((dist[r, j], j) for j in range(len(db01)) if dist[r, j] <= radius)
        out.append(([d for d, _ in hits], [j for _, j in hits]))
    return out


def as_lists(res: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[list, list]]:
    return [(d.tolist(), i.tolist()) for d, i in res]


def random_codes(rng: np.random.Generator, n: int, bits: int, centers: int = 3) -> np.ndarray:
    """0/1 codes around a few centres (so there are exact duplicates and many ties)."""
    c = rng.integers(0, 2, (centers, bits))
    flips = rng.random((n, bits)) < 0.15
    return c[rng.integers(0, centers, n)] ^ flips


@pytest.fixture(params=["default", "tiny"])
def tiles(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the real tiling, and with tiny tiles/blocks so every chunking/merge path is hit."""
    if request.param == "tiny":
        monkeypatch.setattr(hnative, "SCAN_ITEMS", 11)
        monkeypatch.setattr(hnative, "XOR_ITEMS", 4)
        monkeypatch.setattr(hnative, "QUERY_CHUNK", 3)
        monkeypatch.setattr(hnative, "BLOCK_BYTES", 40)
    return request.param


def build(path: Path, db01: np.ndarray, parts: int = 1, identity: dict | None = None) -> Index:
    bits = db01.shape[1]
    index = Index.create(path, bits, identity or {"method": "dpsh", "code_length": bits})
    for chunk in np.array_split(np.arange(len(db01)), parts):
        index.add(db01[chunk] * 2 - 1, [f"img/{j}.jpg" for j in chunk])  # ±1 input
    return index


# ---- exact results ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bits,n,nq,k",
    [(1, 30, 4, 5), (3, 60, 9, 10), (8, 100, 7, 100), (13, 90, 5, 12), (64, 120, 11, 9), (70, 50, 6, 60), (300, 40, 5, 7)],
)
def test_knn_matches_bruteforce(tmp_path: Path, tiles: str, bits: int, n: int, nq: int, k: int) -> None:
    rng = np.random.default_rng(bits * 1000 + n)
    db = random_codes(rng, n, bits)
    q = np.concatenate([db[:2], random_codes(rng, nq - 2, bits)])
    index = build(tmp_path / "idx", db, parts=3)
    D_ref, I_ref = ref_knn(q, db, k)
    for threads in (1, 2):
        D, I = index.search(q, k, threads=threads)  # 0/1 int query input
        assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == (nq, k)
        np.testing.assert_array_equal(D, D_ref)
        np.testing.assert_array_equal(I, I_ref)
    D, I = index.search(np.packbits(q, axis=1), k, packed=True)  # packed input (bits=1 is ambiguous)
    np.testing.assert_array_equal(I, I_ref)


def test_k_larger_than_index_is_padded_and_k_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    db = random_codes(rng, 5, 16)
    index = build(tmp_path / "idx", db)
    D, I = index.search(db[:2], 8)
    assert D.shape == (2, 8)
    assert (D[:, 5:] == -1).all() and (I[:, 5:] == -1).all()
    np.testing.assert_array_equal(I, ref_knn(db[:2], db, 8)[1])
    D, I = index.search(db[:2], 0)
    assert D.shape == (2, 0) and I.shape == (2, 0)
    assert index.search(db[:0], 3)[0].shape == (0, 3)


def test_empty_index(tmp_path: Path) -> None:
    index = Index.create(tmp_path / "idx", 32, {})
    q = np.ones((3, 32))
    D, I = index.search(q, 4)
    assert (D == -1).all() and (I == -1).all() and D.shape == (3, 4)
    assert [len(i) for _, i in index.range_search(q, 5)] == [0, 0, 0]
    reopened = Index.open(tmp_path / "idx")
    assert len(reopened) == 0 and reopened.num_segments == 0
    assert (reopened.search(q, 2)[1] == -1).all()


@pytest.mark.parametrize("bits,radius", [(4, 0), (4, 1), (13, 3), (64, 20), (70, 100)])
def test_range_search_matches_bruteforce(tmp_path: Path, tiles: str, bits: int, radius: int) -> None:
    rng = np.random.default_rng(bits + radius)
    db = random_codes(rng, 80, bits)
    q = np.concatenate([db[:3], random_codes(rng, 4, bits)])
    index = build(tmp_path / "idx", db, parts=2)
    expected = ref_range(q, db, radius)
    for threads in (1, 2):
        assert as_lists(index.range_search(q, radius, threads=threads)) == expected


def test_reopen_mmap_and_memory_after_appends(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    db = random_codes(rng, 150, 24)
    q = random_codes(rng, 6, 24)
    index = build(tmp_path / "idx", db, parts=4)
    assert len(index) == 150 and index.num_segments == 4
    expected = ref_knn(q, db, 20)
    for mmap in (True, False):
        reopened = Index.open(tmp_path / "idx", mmap=mmap)
        assert len(reopened) == 150 and reopened.bits == 24
        assert reopened.model_identity == {"method": "dpsh", "code_length": 24}
        D, I = reopened.search(q, 20)
        np.testing.assert_array_equal(D, expected[0])
        np.testing.assert_array_equal(I, expected[1])
        assert reopened.ids(I[0, 0]) == f"img/{I[0, 0]}.jpg"
        np.testing.assert_array_equal(reopened.codes(), np.packbits(db, axis=1))
    # appending to an index opened into memory, then reopening again (memory-mapped)
    reopened = Index.open(tmp_path / "idx", mmap=False)
    more = random_codes(rng, 30, 24)
    reopened.add(more, [f"new/{j}" for j in range(30)])
    everything = np.concatenate([db, more])
    for index2 in (reopened, Index.open(tmp_path / "idx", mmap=True)):
        np.testing.assert_array_equal(index2.search(q, 40)[1], ref_knn(q, everything, 40)[1])
        assert index2.ids([[0, 150, -1]]) == [["img/0.jpg", "new/0", None]]


def test_input_forms_give_identical_results(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    db = random_codes(rng, 40, 20)
    index = Index.create(tmp_path / "idx", 20, {})
    index.add(torch.from_numpy(db.astype(bool)), [Path(f"img/{j}.jpg") for j in range(40)])  # bool tensor, PathLike ids
    expected = ref_knn(db[:4], db, 6)
    for q in (db[:4], db[:4] * 2.0 - 1, torch.from_numpy(db[:4] * 2 - 1).float(), np.packbits(db[:4], axis=1)):
        np.testing.assert_array_equal(index.search(q, 6)[1], expected[1])
    np.testing.assert_array_equal(index.search(db[0], 6)[1], expected[1][:1])  # one code as 1-D
    assert index.ids(expected[1][0, 0]) == "img/0.jpg"


@pytest.mark.parametrize("bits", [64, 96])
def test_search_memory_is_bounded_by_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int) -> None:
    """Searching a memory-mapped index holds only block/tile buffers, never all codes: the peak
    traced memory does not grow with the index size."""
    import tracemalloc

    monkeypatch.setattr(hnative, "BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(hnative, "SCAN_ITEMS", 2048)
    monkeypatch.setattr(hnative, "XOR_ITEMS", 512)
    rng = np.random.default_rng(4)
    peaks = []
    for n in (50_000, 400_000):
        packed = rng.integers(0, 256, (n, bits // 8), np.uint8)
        path = tmp_path / f"idx{n}"
        Index.create(path, bits, {}).add(packed, ["x"] * n)
        index = Index.open(path, mmap=True)
        tracemalloc.start()
        try:
            D, I = index.search(packed[:8], 10, threads=2)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(I[:, 0], np.arange(8))
    # 8x more codes: the peak must stay far below the codes' size and must not scale with it (the
    # scan's candidate buffers vary a little with the data, hence the slack).
    assert peaks[1] < packed.nbytes / 3, f"search used {peaks[1]} bytes for {packed.nbytes} bytes of codes"
    assert peaks[1] < 2.5 * peaks[0] + 65536, peaks


def test_compact_keeps_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    db = random_codes(rng, 90, 20)
    index = build(tmp_path / "idx", db, parts=5)
    before = index.search(db[:5], 30)
    index.compact()
    assert index.num_segments == 1
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("seg-")).__len__() == 3
    for idx in (index, Index.open(tmp_path / "idx", verify=True)):
        after = idx.search(db[:5], 30)
        np.testing.assert_array_equal(after[1], before[1])
        assert idx.ids(list(range(90))) == [f"img/{j}.jpg" for j in range(90)]


def test_bits_not_multiple_of_8_padding(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    db = random_codes(rng, 40, 13)
    index = build(tmp_path / "idx", db)
    data = (tmp_path / "idx" / index._segments[0].entry["files"]["codes"]["file"]).read_bytes()
    assert len(data) == 40 * 2  # 13 bits -> 2 bytes per code, zero padded
    np.testing.assert_array_equal(np.frombuffer(data, np.uint8).reshape(40, 2), np.packbits(db, axis=1))
    bad = np.packbits(db[:2], axis=1)
    bad[:, -1] |= 1  # a padding bit set
    with pytest.raises(HashkitError, match="padding bits"):
        index.search(bad, 3, packed=True)


def test_torch_backend_cpu_identical(tmp_path: Path, tiles: str) -> None:
    rng = np.random.default_rng(5)
    for bits in (5, 64, 72):
        db = random_codes(rng, 70, bits)
        q = random_codes(rng, 6, bits)
        index = build(tmp_path / f"idx{bits}", db, parts=2)
        for k in (1, 25, 100):
            D, I = index.search(q, k, backend="torch", device="cpu")
            D_ref, I_ref = ref_knn(q, db, k)
            np.testing.assert_array_equal(D, D_ref)
            np.testing.assert_array_equal(I, I_ref)
        assert as_lists(index.range_search(q, bits // 3, backend="torch", device="cpu")) == ref_range(q, db, bits // 3)


def test_faiss_backend_identical_to_native(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    for bits in (6, 16, 64):  # 6 bits: masses of ties, faiss tie order differs and is re-sorted
        db = random_codes(rng, 300, bits)
        q = random_codes(rng, 12, bits)
        index = build(tmp_path / f"idx{bits}", db, parts=2)
        for k in (1, 10, 150, 400):
            native = index.search(q, k)
            D, I = index.search(q, k, backend="faiss")
            np.testing.assert_array_equal(D, native[0])
            np.testing.assert_array_equal(I, native[1])
        for radius in (0, 2, bits // 2):
            expected = as_lists(index.range_search(q, radius))
            assert expected == ref_range(q, db, radius)
            assert as_lists(index.range_search(q, radius, backend="faiss")) == expected
            assert as_lists(index.range_search(q, radius, backend="faiss-hash")) == expected


# ---- refusals --------------------------------------------------------------------------------------


def test_incompatible_model_and_code_length(tmp_path: Path) -> None:
    identity = {"method": "dpsh", "arch": "alexnet", "code_length": 64, "checkpoint_sha256": "a" * 64}
    index = Index.create(tmp_path / "idx", 64, identity)
    index.check_compatible(dict(identity))
    with pytest.raises(HashkitError, match="code length 32 vs 64"):
        index.check_compatible({**identity, "code_length": 32})
    with pytest.raises(HashkitError, match="another model: checkpoint_sha256"):
        index.check_compatible({**identity, "checkpoint_sha256": "b" * 64})
    with pytest.raises(HashkitError, match="method 'hashnet' vs 'dpsh'"):
        Index.open(tmp_path / "idx").check_compatible({**identity, "method": "hashnet"})
    index.check_compatible({**identity, "method": "hashnet"}, fields=["arch", "code_length"])
    with pytest.raises(HashkitError, match="code length 32 vs 64"):
        index.search(np.ones((2, 32)), 3)
    with pytest.raises(HashkitError, match="code_length 32 but bits=64"):
        Index.create(tmp_path / "other", 64, {"code_length": 32})


def test_bad_inputs_refused(tmp_path: Path) -> None:
    index = Index.create(tmp_path / "idx", 8, {})
    with pytest.raises(HashkitError, match="codes to add: codes are not binary"):
        index.add(np.full((2, 8), 0.3), ["a", "b"])
    with pytest.raises(HashkitError, match="mix -1, 0 and 1"):
        index.add(np.array([[-1, 0, 1, 1, 1, 1, 1, 1]]), ["a"])
    with pytest.raises(HashkitError, match="2 codes but 1 ids"):
        index.add(np.ones((2, 8)), ["a"])
    with pytest.raises(HashkitError, match="already exists"):
        Index.create(tmp_path / "idx", 8, {})
    with pytest.raises(HashkitError, match="no index at"):
        Index.open(tmp_path / "nothing")
    with pytest.raises(HashkitError, match="k must be"):
        index.search(np.ones((1, 8)), -1)
    with pytest.raises(HashkitError, match="unknown search backend"):
        index.search(np.ones((1, 8)), 1, backend="annoy")


def _segment_file(path: Path, kind: str) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / manifest["segments"][0]["files"][kind]["file"]


def test_truncated_segment_refused(tmp_path: Path) -> None:
    build(tmp_path / "idx", random_codes(np.random.default_rng(0), 50, 64))
    f = _segment_file(tmp_path / "idx", "codes")
    f.write_bytes(f.read_bytes()[:-3])
    for mmap in (True, False):
        with pytest.raises(HashkitError, match=rf"{f.name} is truncated \(397 bytes, manifest says 400\)"):
            Index.open(tmp_path / "idx", mmap=mmap)


@pytest.mark.parametrize("kind", ["codes", "ids", "offsets"])
def test_corrupted_byte_refused(tmp_path: Path, kind: str) -> None:
    build(tmp_path / "idx", random_codes(np.random.default_rng(0), 50, 64))
    f = _segment_file(tmp_path / "idx", kind)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    for mmap in (True, False):
        with pytest.raises(HashkitError, match=rf"{f.name} is corrupt"):
            Index.open(tmp_path / "idx", mmap=mmap)
    index = Index.open(tmp_path / "idx", verify=False)  # size check only (what large mmap opens do)
    with pytest.raises(HashkitError, match=rf"{f.name} is corrupt \(sha256"):
        index.verify()


def test_manifest_pointing_to_missing_file_refused(tmp_path: Path) -> None:
    build(tmp_path / "idx", random_codes(np.random.default_rng(0), 10, 8))
    f = _segment_file(tmp_path / "idx", "ids")
    f.unlink()
    with pytest.raises(HashkitError, match=rf"{f.name} listed in the manifest is missing"):
        Index.open(tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(HashkitError, match="manifest.json is unreadable"):
        Index.open(tmp_path / "idx")


def test_stale_writer_refused(tmp_path: Path) -> None:
    db = random_codes(np.random.default_rng(0), 10, 8)
    a = build(tmp_path / "idx", db)
    b = Index.open(tmp_path / "idx")
    b.add(db, [f"b{j}" for j in range(10)])
    with pytest.raises(HashkitError, match="changed on disk"):
        a.add(db, [f"a{j}" for j in range(10)])
    assert len(Index.open(tmp_path / "idx")) == 20


# ---- crash safety ----------------------------------------------------------------------------------


def _snapshot(path: Path, q: np.ndarray) -> tuple:
    index = Index.open(path, verify=True)
    D, I = index.search(q, 15)
    return len(index), (path / "manifest.json").read_bytes(), D.tolist(), I.tolist(), index.ids(I)


def test_failed_append_leaves_index_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    db = random_codes(rng, 60, 32)
    q = random_codes(rng, 4, 32)
    index = build(tmp_path / "idx", db, parts=2)
    before = _snapshot(tmp_path / "idx", q)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated, after the segment data was written)")

    monkeypatch.setattr(hcore, "atomic_write_json", fail)
    with pytest.raises(OSError, match="simulated"):
        index.add(random_codes(rng, 25, 32), [f"x{j}" for j in range(25)])
    monkeypatch.undo()
    assert _snapshot(tmp_path / "idx", q) == before
    assert len(index) == 60 and index.num_segments == 2  # the in-memory view is unchanged too
    assert len([p for p in (tmp_path / "idx").iterdir() if p.name.startswith("seg-")]) == 6  # new files removed
    index.add(db[:5], [f"y{j}" for j in range(5)])  # the index is still writable
    assert len(Index.open(tmp_path / "idx")) == 65


def test_killed_append_leaves_index_unchanged(tmp_path: Path) -> None:
    """A real SIGKILL after the segment files are written, just before the manifest is replaced."""
    rng = np.random.default_rng(12)
    db = random_codes(rng, 60, 32)
    q = random_codes(rng, 4, 32)
    build(tmp_path / "idx", db)
    before = _snapshot(tmp_path / "idx", q)
    child = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        import hashkit.index.core as hcore
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        hcore.atomic_write_json = die
        index = hcore.Index.open({str(tmp_path / "idx")!r})
        index.add(np.ones((500, 32)), ["k%d" % j for j in range(500)])
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p for p in (tmp_path / "idx").iterdir() if p.name.startswith("seg-")]
    assert len(leftovers) == 6  # 3 listed + 3 written by the killed append, never listed
    assert _snapshot(tmp_path / "idx", q) == before
    index = Index.open(tmp_path / "idx")
    index.add(db[:5], [f"y{j}" for j in range(5)])  # the next writer deletes the orphans
    assert len([p for p in (tmp_path / "idx").iterdir() if p.name.startswith("seg-")]) == 6
    assert len(Index.open(tmp_path / "idx", verify=True)) == 65

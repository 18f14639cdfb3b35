"""Multi-index hashing (backend="mih"): identical results to the linear scan, order and ties included;
tables stored beside the segments, sha256-checked, rebuilt when stale, refused when damaged."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hashkit.hamming.kernel as hkernel
from hashkit.errors import HashkitError
from hashkit.hamming import mih, pack_bits, packed_to_words
from hashkit.index import Index


def _clustered(rng: np.random.Generator, n: int, bits: int, centres: np.ndarray, flip: float) -> np.ndarray:
    flips = rng.random((n, bits)) < flip
    return centres[rng.integers(0, len(centres), n)] * np.where(flips, -1, 1)


def _brute(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances of ±1 codes, the obvious way."""
    return (q[:, None, :] != db[None, :, :]).sum(-1)


def _same(a, b) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.fixture(params=["kernel", "numpy"])
def engine(request, monkeypatch):
    """Run each test with the compiled loops and with the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(hkernel, "_state", {"lib": None})
    elif hkernel.load() is None:
        pytest.skip("no C compiler: the compiled MIH loops are not available")
    return request.param


@pytest.mark.parametrize("bits", [8, 24, 64, 100])
def test_mih_equals_linear_scan_random_and_clustered(tmp_path, engine, bits):
    rng = np.random.default_rng(bits)
    centres = rng.choice([-1, 1], size=(6, bits))
    parts = [
        rng.choice([-1, 1], size=(400, bits)),  # uniform: far queries fall back to a scan
        _clustered(rng, 1500, bits, centres, 0.04),  # structured: hashing prunes
        np.repeat(centres[:2], 40, axis=0),  # exact duplicates: ties at distance 0
        _clustered(rng, 3, bits, centres, 0.1),  # a tiny segment (k > its size)
    ]
    index = Index.create(tmp_path / "idx", bits)
    for j, part in enumerate(parts):
        index.add(part, [f"s{j}-{i}" for i in range(len(part))])
    db = np.concatenate(parts)
    q = np.concatenate([_clustered(rng, 25, bits, centres, 0.06), rng.choice([-1, 1], size=(5, bits)), db[:3]])
    ks, radii = (1, 2, 10, 37, 100, len(db), len(db) + 5), (0, 1, 2, 3, 4, 5, 7, bits // 3, bits)
    if engine == "numpy":  # the fallback runs one query at a time in Python: fewer cases
        q, ks, radii = q[::4], (1, 10, len(db) + 5), (0, 3, bits // 3, bits)
    dist = _brute(q, db)
    for k in ks:
        D, I = index.search(q, k, backend="mih", threads=2)
        _same((D, I), index.search(q, k))
        kk = min(k, len(db))
        order = np.lexsort((np.broadcast_to(np.arange(len(db)), dist.shape), dist), axis=1)[:, :kk]
        np.testing.assert_array_equal(I[:, :kk], order)
        np.testing.assert_array_equal(D[:, :kk], np.take_along_axis(dist, order, 1))
    for radius in radii:
        got = index.range_search(q, radius, backend="mih", threads=2)
        want = index.range_search(q, radius)
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w)
            np.testing.assert_array_equal(np.sort(g[1]), np.flatnonzero(dist[i] <= radius))


def test_mih_tables_core_against_brute_force(engine):
    """hashkit.hamming.mih alone, with m forced small and large (wide and 1-bit substrings)."""
    rng = np.random.default_rng(7)
    bits = 40
    centres = rng.choice([-1, 1], size=(3, bits))
    db = _clustered(rng, 700, bits, centres, 0.08)
    db[100:130] = db[5]  # ties
    q = _clustered(rng, 12, bits, centres, 0.08)
    dbp, qp = pack_bits(db).numpy(), pack_bits(q).numpy()
    dist = _brute(q, db)
    for m in (2, 3, 5, 40):
        t = mih.build_tables(dbp, bits, m=m)
        assert t.m == m and sum(t.widths) == bits
        for k in (1, 5, 31, 700):
            D, I, seen = mih.mih_knn(t, packed_to_words(dbp), qp, k, threads=1)
            order = np.lexsort((np.broadcast_to(np.arange(700), dist.shape), dist), axis=1)[:, :k]
            np.testing.assert_array_equal(I, order)
            np.testing.assert_array_equal(D, np.take_along_axis(dist, order, 1))
            assert (seen >= k).all() and (seen <= 700).all()
        for radius in (0, 2, 6, 13):
            rows, pos, d = mih.mih_range(t, packed_to_words(dbp), qp, radius, threads=2)
            got = sorted(zip(rows.tolist(), pos.tolist(), d.tolist()))
            r, p = np.nonzero(dist <= radius)
            assert got == sorted(zip(r.tolist(), p.tolist(), dist[r, p].tolist()))


def test_mih_table_build_is_a_stable_sort_by_substring(monkeypatch):
    """The compiled build (a counting sort per table, tables on several threads) equals an obvious
    reference: positions stably sorted by substring value, and bucket starts from a histogram. Keys
    are clustered so that buckets hold many equal keys and many are empty."""
    if hkernel.load() is None:
        pytest.skip("no C compiler: the numpy build is the reference itself")
    rng = np.random.default_rng(11)
    n, bits = 70_000, 64
    centres = rng.choice([-1, 1], size=(40, bits))
    packed = pack_bits(_clustered(rng, n, bits, centres, 0.02)).numpy()
    for m in (3, 4, 6):  # substrings of 22/21, 16 and 11 bits
        t = mih.build_tables(packed, bits, m=m, threads=2)
        keys = t.keys(packed)
        for j, s in enumerate(t.widths):
            want_perm = np.argsort(keys[:, j], kind="stable")
            want_off = np.concatenate([[0], np.cumsum(np.bincount(keys[:, j], minlength=1 << s))])
            np.testing.assert_array_equal(t.perm(j), want_perm)
            np.testing.assert_array_equal(t.off(j), want_off)


def test_mih_prunes_structured_codes():
    """On clustered codes a close query compares only a small fraction of the collection."""
    rng = np.random.default_rng(3)
    centres = rng.choice([-1, 1], size=(50, 64))
    db = _clustered(rng, 20000, 64, centres, 0.03)
    q = _clustered(rng, 20, 64, centres, 0.03)
    t = mih.build_tables(pack_bits(db).numpy(), 64)
    assert t.m == mih.choose_m(64, 20000) == 5  # ceil(64 / log2(20000))
    _, _, seen = mih.mih_knn(t, packed_to_words(pack_bits(db).numpy()), pack_bits(q).numpy(), 10)
    assert seen.mean() < 0.1 * len(db)


def test_choose_m_follows_bits_over_log2_n():
    assert mih.choose_m(64, 10_000_000) == 3  # log2 = 23.3 -> substrings of 22/21/21 bits
    assert mih.choose_m(64, 100_000_000) == 3  # 26.6
    assert mih.choose_m(64, 1 << 32) == 2
    assert mih.choose_m(32, 1_000_000) == 2
    assert mih.choose_m(128, 1_000_000) == 7
    assert mih.choose_m(8, 1) == 8 and mih.choose_m(64, 2) == 64
    assert mih.substring_widths(64, 3) == (22, 21, 21)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_mih_tables_stored_listed_checked_and_rebuilt(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.choice([-1, 1], size=(300, 32))
    q = codes[:4]
    root = tmp_path / "idx"
    index = Index.create(root, 32)
    index.add(codes[:200], [f"a{i}" for i in range(200)])
    want = index.search(q, 7)
    assert index.build_mih() == 1 and index.build_mih() == 0  # built once, then fresh
    entry = _manifest(root)["segments"][0]["mih"]
    assert (root / entry["file"]).stat().st_size == entry["bytes"]
    assert entry["codes_sha256"] == _manifest(root)["segments"][0]["files"]["codes"]["sha256"]
    _same(Index.open(root).search(q, 7, backend="mih"), want)

    # a new segment gets its tables on first mih search; the old one is reused
    index.add(codes[200:], [f"b{i}" for i in range(100)])
    want = index.search(q, 7)
    _same(index.search(q, 7, backend="mih"), want)
    segs = _manifest(root)["segments"]
    assert segs[0]["mih"]["file"] == entry["file"] and "mih" in segs[1]

    # stale (built from other codes): rebuilt, not used
    m = _manifest(root)
    m["segments"][0]["mih"]["codes_sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(m))
    reopened = Index.open(root)
    _same(reopened.search(q, 7, backend="mih"), want)
    fresh = _manifest(root)["segments"][0]["mih"]
    assert fresh["file"] != entry["file"] and not (root / entry["file"]).exists()
    assert fresh["codes_sha256"] == m["segments"][0]["files"]["codes"]["sha256"]

    # damaged table file: refused, naming the file and the fix; --rebuild-mih / force repairs it
    tfile = root / fresh["file"]
    data = bytearray(tfile.read_bytes())
    data[10] ^= 0xFF
    tfile.write_bytes(bytes(data))
    with pytest.raises(HashkitError, match=r"corrupt.*build_mih\(force=True\)"):
        Index.open(root).search(q, 7, backend="mih")
    with pytest.raises(HashkitError, match="corrupt"):
        Index.open(root).verify()
    tfile.unlink()
    with pytest.raises(HashkitError, match="missing"):
        Index.open(root).search(q, 7, backend="mih")
    again = Index.open(root)
    assert again.build_mih(force=True) == 2
    _same(again.search(q, 7, backend="mih"), want)
    again.verify()

    # compact: one segment, the old tables are deleted, new ones built on use
    again.compact()
    assert not list(root.glob("*.mih"))
    _same(again.search(q, 7, backend="mih"), want)
    assert len(list(root.glob("*.mih"))) == 1


def test_mih_in_memory_when_index_is_locked(tmp_path, monkeypatch):
    """Another writer holds the lock: tables are built in memory, results still exact."""
    import hashkit.index.core as hcore

    rng = np.random.default_rng(2)
    codes = rng.choice([-1, 1], size=(100, 16))
    index = Index.create(tmp_path / "idx", 16)
    index.add(codes, [f"x{i}" for i in range(100)])

    def locked(*args, **kwargs):
        raise HashkitError("index is being written by another process")

    monkeypatch.setattr(hcore.Index, "build_mih", locked)
    _same(index.search(codes[:5], 9, backend="mih"), index.search(codes[:5], 9))
    assert "mih" not in _manifest(tmp_path / "idx")["segments"][0]


def test_mih_bad_backend_use():
    with pytest.raises(HashkitError, match="unknown search backend 'faiss-hash'.*mih"):
        from hashkit.index.core import _check_backend

        _check_backend("faiss-hash", None, knn=True)
    with pytest.raises(HashkitError, match="needs backend='torch'"):
        from hashkit.index.core import _check_backend

        _check_backend("mih", "cuda", knn=True)


def test_cli_search_backend_mih_matches_native(tmp_path, capsys):
    """``hashkit search --backend mih`` (in process) gives the native engine's hits; --rebuild-mih rebuilds."""
    import hashkit
    from hashkit.cli import main
    from test_retrieval_cli import make_checkpoint, make_images

    checkpoint = make_checkpoint(tmp_path / "model.pt")
    paths = [str(p) for p in make_images(tmp_path / "photos", 10, seed=5)]
    model = hashkit.load(checkpoint)
    index = Index.create(tmp_path / "idx", model.code_length, model.identity)
    index.add(model.encode(paths, progress=False), paths)
    base = ["search", "--index", str(tmp_path / "idx"), "--checkpoint", str(checkpoint), "--query", paths[2], "--json"]
    results = {}
    for extra in (["--k", "4"], ["--k", "4", "--backend", "mih"], ["--radius", "6"],
                  ["--radius", "6", "--backend", "mih", "--rebuild-mih"]):
        assert main(base + extra) == 0
        results[" ".join(extra)] = json.loads(capsys.readouterr().out)["queries"]
    assert results["--k 4"] == results["--k 4 --backend mih"]
    assert results["--radius 6"] == results["--radius 6 --backend mih --rebuild-mih"]
    assert "mih" in _manifest(tmp_path / "idx")["segments"][0]
    assert main(base + ["--rebuild-mih"]) == 2
    assert "--rebuild-mih needs --backend mih" in capsys.readouterr().err

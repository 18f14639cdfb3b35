"""hashkit.evaluate and hashkit.hamming against slow, obvious references written here.

The references rank with Python's sorted() on (distance, index), count differing bits one by one and
loop over queries, so they share nothing with the implementation but the definitions in the
hashkit.evaluate module docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import hashkit.evaluate as ev
from hashkit.hamming import kernel as fastkernels
from hashkit.errors import HashkitError
from hashkit.hamming import (
    _popcount_words,
    hamming_distance,
    hamming_distance_packed,
    pack_bits,
    packed_to_words,
    to_pm1,
    unpack_bits,
)

# ------------------------------------------------------------------------------------------------
# slow references


def _bits(code) -> list[int]:
    """A code as a list of 0/1 ints (set bit = +1 or 1)."""
    return [1 if float(v) > 0 else 0 for v in np.asarray(code, dtype=np.float64)]


def _relevant(ql, dl) -> bool:
    return any(float(a) > 0 and float(b) > 0 for a, b in zip(ql, dl))


def _ranking(qcode, db):
    """Database indices in (Hamming distance, index) order, plus the distances."""
    q = _bits(qcode)
    dist = [sum(a != b for a, b in zip(q, _bits(row))) for row in db]
    return sorted(range(len(db)), key=lambda j: (dist[j], j)), dist


def ref_stats(Q, D, QL, DL, k):
    """Per query: (AP@k, list of (distance, relevant) pairs, rank-ordered relevance flags)."""
    out = []
    for qi in range(len(Q)):
        order, dist = _ranking(Q[qi], D)
        rel = [_relevant(QL[qi], DL[j]) for j in range(len(D))]
        flags = [rel[j] for j in order]
        hits, precs = 0, []
        for p, f in enumerate(flags[:k], start=1):
            if f:
                hits += 1
                precs.append(hits / p)
        ap = sum(precs) / len(precs) if precs else 0.0
        out.append((ap, dist, rel, flags))
    return out


def ref_map(Q, D, QL, DL, topk=None):
    k = len(D) if topk is None else topk
    stats = ref_stats(Q, D, QL, DL, k)
    return sum(s[0] for s in stats) / len(stats)


def ref_pr(Q, D, QL, DL, bits):
    """Mean precision and recall within radius r = 0..bits."""
    P, R = np.zeros(bits + 1), np.zeros(bits + 1)
    for _, dist, rel, _ in ref_stats(Q, D, QL, DL, 0):
        total_rel = sum(rel)
        for r in range(bits + 1):
            got = [j for j in range(len(D)) if dist[j] <= r]
            good = sum(rel[j] for j in got)
            P[r] += good / len(got) if got else 0.0
            R[r] += good / total_rel if total_rel else 0.0
    return P / len(Q), R / len(Q)


def ref_p_at(Q, D, QL, DL, ns):
    res = {}
    stats = ref_stats(Q, D, QL, DL, 0)
    for n in ns:
        m = min(n, len(D))
        res[n] = sum(sum(s[3][:m]) / m for s in stats) / len(stats)
    return res


# ------------------------------------------------------------------------------------------------
# random cases


BACKENDS = ("numpy", "torch") + (("kernel",) if fastkernels.load() is not None else ())


def _labels(rng, n, classes, multi):
    if multi:
        lab = (rng.random((n, classes)) < 0.3).astype(np.int64)
        lab[rng.random(n) < 0.15] = 0  # some items/queries with no label at all
        return lab
    return np.eye(classes, dtype=np.int64)[rng.integers(0, classes, n)]


def _case(seed):
    """A small random problem with ties everywhere (few bits) or none (many bits)."""
    rng = np.random.default_rng(seed)
    bits = [1, 2, 3, 4, 4, 8, 13, 64, 65, 130][seed % 10]
    nq, nd = int(rng.integers(1, 9)), int(rng.integers(1, 45))
    classes = int(rng.integers(1, 6))
    multi = bool(seed % 3 == 0)
    Q = rng.choice([-1, 1], size=(nq, bits))
    D = rng.choice([-1, 1], size=(nd, bits))
    if nd > 3:  # plant duplicates of the query codes in the database
        D[rng.integers(0, nd, min(nq, nd))] = Q[: min(nq, nd)]
    QL, DL = _labels(rng, nq, classes, multi), _labels(rng, nd, classes, multi)
    if not multi and classes > 1 and seed % 4 == 1:
        DL[DL[:, 0] == 1] = np.eye(classes, dtype=np.int64)[1]  # class 0 absent from the database
    return rng, bits, Q, D, QL, DL


def _encode(rng, Q, D, QL, DL, seed):
    """The same problem in different input flavours: ±1 / 0/1, float / int / bool, numpy / torch."""
    flavour = seed % 5
    if flavour == 0:
        return Q.astype(np.float32), D.astype(np.float64), QL.astype(np.float32), DL
    if flavour == 1:
        return (Q > 0).astype(np.int64), (D > 0).astype(np.uint8), QL.astype(bool), DL.astype(bool)
    if flavour == 2:
        return torch.tensor(Q, dtype=torch.float32), torch.tensor(D), torch.tensor(QL), torch.tensor(DL)
    if flavour == 3:
        return torch.tensor(Q > 0), torch.tensor((D > 0).astype(np.float32)), QL, torch.tensor(DL).float()
    return Q.astype(np.int8), torch.tensor(D, dtype=torch.int8), QL, DL.astype(np.float64)


def _kernel_or_skip() -> None:
    if fastkernels.load() is None:
        pytest.skip("compiled kernel unavailable (no C compiler or HASHKIT_NO_KERNELS=1)")


@pytest.fixture(params=["kernel", "numpy", "torch"])
def backend(request, monkeypatch):
    """Run a test on the compiled kernel, the numpy CPU path and the device-generic torch path (CUDA's)."""
    if request.param == "kernel":
        _kernel_or_skip()
    monkeypatch.setattr(ev, "_CPU_BACKEND", request.param)
    return request.param


@pytest.mark.parametrize("seed", range(40))
def test_random_cases_match_reference(seed, backend):
    rng, bits, Q, D, QL, DL = _case(seed)
    q, d, ql, dl = _encode(rng, Q, D, QL, DL, seed)
    nd = len(D)
    chunk = [None, 1, 3, 7][seed % 4]
    for topk in sorted({None, 1, max(1, nd // 3), nd, nd + 5}, key=lambda x: -1 if x is None else x):
        got = ev.mean_average_precision(q, d, ql, dl, topk=topk, chunk_size=chunk)
        assert got == pytest.approx(ref_map(Q, D, QL, DL, topk), abs=1e-12), topk
    P, R = ref_pr(Q, D, QL, DL, bits)
    p, r = ev.pr_curve(q, d, ql, dl, chunk_size=chunk)
    np.testing.assert_allclose(p, P, atol=1e-12)
    np.testing.assert_allclose(r, R, atol=1e-12)
    for radius in (0, 2, bits + 3):
        pr = ev.precision_recall_within_radius(q, d, ql, dl, radius=radius, chunk_size=chunk)
        rr = min(radius, bits)
        assert pr == pytest.approx((P[rr], R[rr]), abs=1e-12)
    ns = (1, 2, max(1, nd // 2), nd + 7)
    assert ev.precision_at_n(q, d, ql, dl, ns=ns, chunk_size=chunk) == pytest.approx(
        ref_p_at(Q, D, QL, DL, ns), abs=1e-12
    )


def test_long_codes_use_wide_distances(backend):
    """300 bits: distances above 255 need uint16 on the numpy path."""
    rng = np.random.default_rng(7)
    Q = rng.choice([-1, 1], size=(3, 300))
    D = np.concatenate([rng.choice([-1, 1], size=(20, 300)), -Q, Q])  # distances 300 and 0
    QL, DL = _labels(rng, 3, 3, False), _labels(rng, 26, 3, False)
    for topk in (None, 4):
        assert ev.mean_average_precision(Q, D, QL, DL, topk=topk) == pytest.approx(
            ref_map(Q, D, QL, DL, topk), abs=1e-12
        )
    P, R = ref_pr(Q, D, QL, DL, 300)
    p, r = ev.pr_curve(Q, D, QL, DL)
    np.testing.assert_allclose(p, P, atol=1e-12)
    np.testing.assert_allclose(r, R, atol=1e-12)


def test_bigger_case_backends_agree_with_vectorised_reference(monkeypatch):
    """A few thousand items with heavy ties (12 bits): every path equals a stable-argsort reference."""
    rng = np.random.default_rng(3)
    nq, nd, bits, classes = 40, 3000, 12, 7
    Q = rng.choice([-1.0, 1.0], size=(nq, bits))
    D = rng.choice([-1.0, 1.0], size=(nd, bits))
    QL, DL = _labels(rng, nq, classes, True), _labels(rng, nd, classes, True)
    for topk in (None, 50, 2000):
        k = nd if topk is None else topk
        total = 0.0
        for i in range(nq):  # DeepHash-pytorch's CalcTopMap arithmetic, but with a stable argsort
            gnd = (DL @ QL[i]) > 0
            order = np.argsort(0.5 * (bits - D @ Q[i]), kind="stable")
            top = gnd[order][:k]
            if top.sum():
                total += np.mean(np.arange(1, top.sum() + 1) / (np.flatnonzero(top) + 1.0))
        expected = total / nq
        got = {}
        for name in BACKENDS:
            monkeypatch.setattr(ev, "_CPU_BACKEND", name)
            got[name] = ev.mean_average_precision(Q, D, QL, DL, topk=topk, chunk_size=9)
        for name in BACKENDS:
            assert got[name] == pytest.approx(expected, abs=1e-12), name
    res = {}
    for name in BACKENDS:
        monkeypatch.setattr(ev, "_CPU_BACKEND", name)
        res[name] = ev.evaluate_codes(Q, D, QL, DL, metrics=ev.METRIC_NAMES, ns=(1, 10, 2999))
    assert json.dumps(res["numpy"])
    for name in BACKENDS[1:]:
        assert res[name].keys() == res["numpy"].keys()
        for key in ("precision", "recall"):
            np.testing.assert_allclose(res[name]["pr_curve"][key], res["numpy"]["pr_curve"][key], atol=1e-12)
        assert res[name]["precision_at"] == pytest.approx(res["numpy"]["precision_at"], abs=1e-12)
        assert res[name]["map"] == pytest.approx(res["numpy"]["map"], abs=1e-12)


def _ref_numpy_dist(Q, D, QL, DL, topk, ns):
    """Reference for bigger cases: numpy distances, then Python's sorted() on (distance, index)."""
    nd, bits = len(D), Q.shape[1]
    dist = (Q[:, None, :] != D[None, :, :]).sum(-1)
    rel = (QL @ DL.T) > 0
    k = nd if topk is None else min(topk, nd)
    aps, p_at, prec, rec = [], {n: 0.0 for n in ns}, np.zeros(bits + 1), np.zeros(bits + 1)
    for i in range(len(Q)):
        order = sorted(range(nd), key=lambda j: (dist[i, j], j))
        flags = [bool(rel[i, j]) for j in order]
        hits, precs = 0, []
        for p, f in enumerate(flags[:k], start=1):
            if f:
                hits += 1
                precs.append(hits / p)
        aps.append(sum(precs) / len(precs) if precs else 0.0)
        for n in ns:
            p_at[n] += sum(flags[: min(n, nd)]) / min(n, nd) / len(Q)
        for r in range(bits + 1):
            got = dist[i] <= r
            good = int((got & rel[i]).sum())
            prec[r] += good / got.sum() if got.any() else 0.0
            rec[r] += good / rel[i].sum() if rel[i].any() else 0.0
    return float(np.mean(aps)), p_at, prec / len(Q), rec / len(Q)


@pytest.mark.parametrize(
    "bits, nd, classes, multi, patterns",
    [
        (1, 130, 3, False, (1, 64)),  # ties everywhere, several 64-item blocks and a partial one
        (4, 64, 2, False, (1, 64)),  # exactly one full block
        (8, 333, 100, False, (65, 256)),  # 65..256 label patterns: two lookup tables
        (13, 200, 7, True, (65, 256)),  # multi-label
        (64, 400, 20, True, (257, 400)),  # > 256 label patterns, <= 64 classes: label words
        (16, 300, 70, True, (257, 300)),  # > 256 patterns and > 64 classes: int32 pattern ids
        (65, 192, 5, False, (1, 64)),  # two words per code
        (128, 150, 10, False, (1, 64)),
        (130, 140, 4, True, (1, 64)),  # three words per code
        (300, 200, 6, False, (1, 64)),  # 16-bit distances
    ],
)
def test_kernel_blocks_match_reference(bits, nd, classes, multi, patterns, backend):
    """Databases of several 64-item blocks (the kernel's vector paths), with planted ties."""
    rng = np.random.default_rng(bits * 1000 + nd)
    nq = 6
    Q = rng.choice([-1, 1], size=(nq, bits))
    D = rng.choice([-1, 1], size=(nd, bits))
    D[rng.integers(0, nd, 40)] = Q[rng.integers(0, nq, 40)]  # exact duplicates: distance 0 ties
    D[rng.integers(0, nd, 20)] = D[rng.integers(0, nd, 20)]  # duplicate database rows
    QL, DL = _labels(rng, nq, classes, multi), _labels(rng, nd, classes, multi)
    if not multi:
        QL[0] = 0
        QL[0, classes - 1] = 1
        DL[DL[:, classes - 1] == 1] = np.eye(classes, dtype=np.int64)[0]  # query 0: nothing relevant
    assert patterns[0] <= len(np.unique(DL, axis=0)) <= patterns[1]
    ns = (1, 5, nd // 2, nd, nd + 3)
    chunk = [None, 1, 4][bits % 3]
    for topk in (None, 1, 7, nd // 4, nd // 2, nd - 1, nd + 10):  # small k: the kernel's 2nd pass
        m = _ref_numpy_dist(Q, D, QL, DL, topk, ())[0]
        assert ev.mean_average_precision(Q, D, QL, DL, topk=topk, chunk_size=chunk) == pytest.approx(
            m, abs=1e-12
        ), topk
    small = (1, 3, nd // 4)
    p_small = _ref_numpy_dist(Q, D, QL, DL, None, small)[1]
    assert ev.precision_at_n(Q, D, QL, DL, ns=small, chunk_size=chunk) == pytest.approx(p_small, abs=1e-12)
    m, p_at, prec, rec = _ref_numpy_dist(Q, D, QL, DL, 5, ns)
    res = ev.evaluate_codes(Q, D, QL, DL, metrics=ev.METRIC_NAMES, topk=5, ns=ns, radius=2, chunk_size=chunk)
    assert res["map"] == pytest.approx(m, abs=1e-12)
    assert res["precision_at"] == pytest.approx({str(n): v for n, v in p_at.items()}, abs=1e-12)
    np.testing.assert_allclose(res["pr_curve"]["precision"], prec, atol=1e-12)
    np.testing.assert_allclose(res["pr_curve"]["recall"], rec, atol=1e-12)
    assert (res["precision_radius"]["precision"], res["precision_radius"]["recall"]) == pytest.approx(
        (prec[min(2, bits)], rec[min(2, bits)]), abs=1e-12
    )


def _path_stats(monkeypatch, path: str, Q, D, QL, DL, topk, ns, hist, chunk=None) -> ev._Stats:
    """Per-query statistics from one CPU path: a kernel level of ISA_LEVELS, or "numpy"; topk None:
    mAP@ALL, 0: no AP."""
    if path == "numpy":
        monkeypatch.setattr(ev, "_CPU_BACKEND", "numpy")
    else:
        monkeypatch.setattr(ev, "_CPU_BACKEND", "kernel")
        monkeypatch.setenv(fastkernels.ENV_ISA, path)
    inp = ev._prepare(Q, D, QL, DL)
    k = None if topk == 0 else ev._check_topk(topk, inp.nd)
    return ev._compute(inp, ap_k=k, ns=ns, hist=hist, device="cpu", chunk_size=chunk)


# (bits, nd, classes, multi): one and two words per code (the AVX2 popcount), three words, 16-bit
# distances; <= 16 label patterns (one vpshufb), 17..128 and 129..256 (the two halves of the 256-bit
# set), label words (> 256 patterns, <= 64 classes) and int32 pattern ids (> 64 classes)
PATH_CASES = [(64, 700, 10, False), (128, 400, 16, False), (48, 1100, 100, False), (64, 900, 200, False),
              (130, 300, 5, False), (300, 260, 6, False), (64, 800, 21, True), (16, 700, 80, True)]


@pytest.mark.parametrize("bits, nd, classes, multi", PATH_CASES)
def test_every_kernel_path_is_bit_for_bit_the_numpy_path(monkeypatch, bits, nd, classes, multi):
    """AVX-512 / AVX2 / scalar popcnt / portable builds and the numpy fallback: identical floats."""
    _kernel_or_skip()
    paths = fastkernels.available_isas()
    assert paths[0] == "native" and paths[-1] == "portable"
    rng = np.random.default_rng(bits + nd + classes)
    nq = 24
    Q, D = rng.choice([-1, 1], size=(nq, bits)), rng.choice([-1, 1], size=(nd, bits))
    D[rng.integers(0, nd, nd // 3)] = Q[rng.integers(0, nq, nd // 3)]  # distance-0 ties
    QL, DL = _labels(rng, nq, classes, multi), _labels(rng, nd, classes, multi)
    ns = (1, 50, nd // 2)
    for topk, hist in ((0, True), (None, False), (9, False), (nd // 5, False), (nd // 5, True)):
        want = _path_stats(monkeypatch, "numpy", Q, D, QL, DL, topk, ns, hist)
        for path in paths:
            got = _path_stats(monkeypatch, path, Q, D, QL, DL, topk, ns, hist)
            for field in ("n_rel", "ap", "hits", "hist_all", "hist_rel"):
                a, b = getattr(want, field), getattr(got, field)
                assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), (path, topk, field)
        if topk != 0:
            m = _ref_numpy_dist(Q, D, QL, DL, topk, ns)[0]  # the independent slow reference
            assert want.ap.mean() == pytest.approx(m, abs=1e-12)


def test_small_k_cut_from_the_previous_query_falls_back_exactly(monkeypatch):
    """mAP@k guesses the distance cut from the previous query; a query whose k-th item lies beyond it
    (here: a query far from everything after one with hundreds of exact copies) gets the full pass."""
    _kernel_or_skip()
    rng = np.random.default_rng(5)
    bits, nd = 64, 2000
    D = rng.choice([-1, 1], size=(nd, bits))
    near = D[0].copy()
    D[:600] = near  # 600 items at distance 0 from the near query
    far = -near  # every item >= 1 away, most ~32, the copies 64
    Q = np.stack([near, far, near, far, near, rng.choice([-1, 1], size=bits)])
    QL, DL = _labels(rng, len(Q), 7, False), _labels(rng, nd, 7, False)
    for path in ("numpy", *fastkernels.available_isas()):
        got = _path_stats(monkeypatch, path, Q, D, QL, DL, 400, (100, 450), False, chunk=len(Q))  # one call
        if path == "numpy":
            want = got
        assert np.array_equal(got.ap, want.ap) and np.array_equal(got.hits, want.hits), path
        assert np.array_equal(got.n_rel, want.n_rel), path
    m, p_at = _ref_numpy_dist(Q, D, QL, DL, 400, (100, 450))[:2]
    assert want.ap.mean() == pytest.approx(m, abs=1e-12)
    assert list(want.hits.mean(0) / [100, 450]) == pytest.approx([p_at[100], p_at[450]], abs=1e-12)


def test_kernel_isa_choice(monkeypatch):
    """HASHKIT_KERNEL_ISA picks a level; a wrong one is a one-line error naming the variable."""
    _kernel_or_skip()
    assert fastkernels.selected_isa() == "native"
    native = fastkernels.paths(fastkernels.load())
    assert native in ("avx512-vpopcntdq+bw+vbmi", "avx512-bw", "avx2", "popcnt", "portable")
    assert fastkernels.paths(fastkernels.load("portable")) == "portable"
    for path in fastkernels.available_isas()[1:-1]:  # the lower x86 levels this CPU has
        monkeypatch.setenv(fastkernels.ENV_ISA, path)
        assert fastkernels.paths(fastkernels.load()) == path
    monkeypatch.setenv(fastkernels.ENV_ISA, "avx9")
    with pytest.raises(HashkitError, match="HASHKIT_KERNEL_ISA='avx9': choose one of native, avx2"):
        fastkernels.load()
    monkeypatch.setattr(fastkernels, "_cpu_flags", lambda: frozenset({"sse2"}))
    monkeypatch.setenv(fastkernels.ENV_ISA, "avx2")
    with pytest.raises(HashkitError, match="this CPU cannot run it; choose one of native, portable"):
        fastkernels.load()


# ------------------------------------------------------------------------------------------------
# the compiled kernel: cache, fallback


def test_kernel_is_the_default_cpu_path_when_available():
    expect = "kernel" if fastkernels.load() is not None else "numpy"
    assert ev._CPU_BACKEND == "auto" and ev._cpu_backend() == expect


def test_no_kernels_env_forces_numpy_path(monkeypatch):
    want = ev.mean_average_precision(HAND_Q, HAND_D, HAND_QL, HAND_DL)
    monkeypatch.setenv(fastkernels.ENV_DISABLE, "1")
    assert fastkernels.load() is None and ev._cpu_backend() == "numpy"
    assert ev.mean_average_precision(HAND_Q, HAND_D, HAND_QL, HAND_DL) == want == pytest.approx(0.35)
    monkeypatch.setattr(ev, "_CPU_BACKEND", "kernel")
    with pytest.raises(RuntimeError, match="kernel is not available"):
        ev.mean_average_precision(HAND_Q, HAND_D, HAND_QL, HAND_DL)


def test_kernel_falls_back_without_compiler_or_on_build_failure(monkeypatch, tmp_path):
    monkeypatch.setenv("HASHKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(fastkernels, "_state", {})
    monkeypatch.setattr(fastkernels.shutil, "which", lambda name: None)
    assert fastkernels.load() is None  # no compiler
    assert ev._cpu_backend() == "numpy"
    assert ev.mean_average_precision(HAND_Q, HAND_D, HAND_QL, HAND_DL) == pytest.approx(0.35)
    monkeypatch.undo()
    monkeypatch.setenv("HASHKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(fastkernels, "_state", {})
    monkeypatch.setattr(fastkernels, "SOURCE", "this is not C;\n")
    if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        assert fastkernels.load() is None  # the compiler rejects the source
        assert not list((tmp_path / "kernels").glob("*.so"))
        assert not [p for p in (tmp_path / "kernels").iterdir() if p.name.startswith(".build")]


def test_kernel_cache_concurrent_first_use(monkeypatch, tmp_path):
    """Two threads building into an empty cache both succeed; one .so remains, reused afterwards."""
    _kernel_or_skip()
    monkeypatch.setenv("HASHKIT_CACHE", str(tmp_path))
    with ThreadPoolExecutor(2) as pool:
        libs = list(pool.map(lambda _: fastkernels._build(), range(2)))
    assert all(lib is not None for lib in libs)
    files = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert len(files) == 1 and files[0].endswith(".so"), files

    def no_compile(*args):
        raise AssertionError("the cached library should have been reused")

    monkeypatch.setattr(fastkernels, "_compile", no_compile)
    assert fastkernels._build() is not None
    monkeypatch.undo()
    # A damaged cache entry is rebuilt. This process has the library mapped (and dlopen would hand back
    # that handle for the same path), so the damage goes into a new file and a fresh process loads it;
    # truncating the mapped file in place would crash this process with SIGBUS.
    damaged = tmp_path / "kernels" / files[0]
    damaged.unlink()
    damaged.write_bytes(b"truncated")
    probe = "from hashkit.hamming import kernel as fastkernels; import sys; sys.exit(0 if fastkernels._build() is not None else 3)"
    env = {**os.environ, "HASHKIT_CACHE": str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", probe], env=env, timeout=300).returncode == 0
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == files and damaged.stat().st_size > 1000


# ------------------------------------------------------------------------------------------------
# cases computed on paper

# 2-bit codes. Query 0 = (+1, +1), class 0; query 1 = (-1, -1), class 2 (absent from the database).
HAND_Q = np.array([[1, 1], [-1, -1]])
HAND_QL = np.array([[1, 0, 0], [0, 0, 1]])
HAND_D = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [1, 1]])
HAND_DL = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]])
# Query 0: distances to items 0..4 are 2, 1, 0, 1, 0; relevant items are 0, 2, 3.
# Ranking by (distance, index): 2 (R), 4 (N), 1 (N), 3 (R), 0 (R) -> relevant at ranks 1, 4, 5.
#   AP@ALL = (1/1 + 2/4 + 3/5) / 3 = 2.1 / 3 = 0.7
#   AP@4   = (1/1 + 2/4) / 2 = 0.75;   AP@3 = (1/1) / 1 = 1.0
#   (an unstable sort that put item 4 before item 2 would give (1/2 + 2/3 + 3/5) / 3 = 0.5889)
# Query 1: nothing relevant -> AP 0, and it still counts: mAP@ALL = (0.7 + 0) / 2 = 0.35.
# Radius 0: query 0 retrieves {2, 4} -> precision 1/2, recall 1/3; query 1 retrieves {0} -> 0, 0.
#   mean precision 0.25, mean recall 1/6.  Radius 1: query 0 retrieves {1,2,3,4}: 2/4, recall 2/3;
#   query 1 retrieves {0,1,3}: 0 -> (0.25, 1/3).  Radius 2: everything: query 0 3/5, recall 1 ->
#   (0.3, 0.5).
# P@2: query 0 top-2 = {2, 4} -> 1/2, query 1 -> 0: 0.25.  P@5 = (3/5 + 0) / 2 = 0.3; P@9 is P@5.


def test_hand_computed_map(backend):
    assert ev.mean_average_precision(HAND_Q, HAND_D, HAND_QL, HAND_DL) == pytest.approx(0.35)
    assert ev.mean_average_precision(HAND_Q[:1], HAND_D, HAND_QL[:1], HAND_DL) == pytest.approx(0.7)
    assert ev.mean_average_precision(HAND_Q[:1], HAND_D, HAND_QL[:1], HAND_DL, topk=4) == pytest.approx(0.75)
    assert ev.mean_average_precision(HAND_Q[:1], HAND_D, HAND_QL[:1], HAND_DL, topk=3) == pytest.approx(1.0)


def test_hand_computed_radius_pr_and_p_at_n(backend):
    args = (HAND_Q, HAND_D, HAND_QL, HAND_DL)
    assert ev.precision_recall_within_radius(*args, radius=0) == pytest.approx((0.25, 1 / 6))
    assert ev.precision_recall_within_radius(*args, radius=1) == pytest.approx((0.25, 1 / 3))
    assert ev.precision_recall_within_radius(*args) == pytest.approx((0.3, 0.5))
    p, r = ev.pr_curve(*args)
    np.testing.assert_allclose(p, [0.25, 0.25, 0.3])
    np.testing.assert_allclose(r, [1 / 6, 1 / 3, 0.5])
    assert ev.precision_at_n(*args, ns=(2, 5, 9)) == pytest.approx({2: 0.25, 5: 0.3, 9: 0.3})


def test_hand_computed_multi_label(backend):
    # One bit, 0/1 codes. Query (1) with labels {0, 2}. Items: code 1 labels {1} (N), code 0 labels
    # {2} (R), code 1 labels {0, 1} (R), code 1 no labels (N). Distances 0, 1, 0, 0; ranking by
    # (distance, index): 0 (N), 2 (R), 3 (N), 1 (R) -> AP = (1/2 + 2/4) / 2 = 0.5.
    q, ql = np.array([[1]]), np.array([[1, 0, 1]])
    d = np.array([[1], [0], [1], [1]])
    dl = np.array([[0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    assert ev.mean_average_precision(q, d, ql, dl) == pytest.approx(0.5)
    assert ev.mean_average_precision(q, d, ql, dl, topk=2) == pytest.approx(1 / 2)
    # radius 0 retrieves items 0, 2, 3 (one relevant of two): precision 1/3, recall 1/2
    assert ev.precision_recall_within_radius(q, d, ql, dl, radius=0) == pytest.approx((1 / 3, 1 / 2))


def test_query_retrieving_nothing_within_radius_has_precision_zero(backend):
    # 4 bits; the database is at distance 3 and 4 from the query, radius 2 retrieves nothing.
    q, ql = np.array([[1, 1, 1, 1]]), np.array([[1]])
    d, dl = np.array([[-1, -1, -1, 1], [-1, -1, -1, -1]]), np.array([[1], [1]])
    assert ev.precision_recall_within_radius(q, d, ql, dl, radius=2) == (0.0, 0.0)
    assert ev.precision_recall_within_radius(q, d, ql, dl, radius=3) == pytest.approx((1.0, 0.5))


def test_relation_to_hashnet_convention():
    """HashNet / thulab drop no-hit queries: ours = theirs * (#queries with a hit) / #queries."""
    rng, bits, Q, D, QL, DL = _case(12)
    stats = ref_stats(Q, D, QL, DL, len(D))
    hit = [s[0] for s in stats if any(s[3])]
    theirs = sum(hit) / len(hit) if hit else 0.0
    ours = ev.mean_average_precision(Q, D, QL, DL)
    assert ours == pytest.approx(theirs * len(hit) / len(Q), abs=1e-12)


# ------------------------------------------------------------------------------------------------
# evaluate_codes


def test_evaluate_codes_dict(backend):
    args = (HAND_Q, HAND_D, HAND_QL, HAND_DL)
    res = ev.evaluate_codes(*args, metrics="map,precision_radius,pr_curve,precision_at", ns=(2, 5))
    assert set(res) == set(ev.METRIC_NAMES)
    assert res["map"] == pytest.approx(0.35)
    assert res["precision_radius"] == pytest.approx({"radius": 2, "precision": 0.3, "recall": 0.5})
    assert res["pr_curve"]["precision"] == pytest.approx([0.25, 0.25, 0.3])
    assert res["pr_curve"]["recall"] == pytest.approx([1 / 6, 1 / 3, 0.5])
    assert res["precision_at"] == pytest.approx({"2": 0.25, "5": 0.3})
    assert json.loads(json.dumps(res)) == res
    only = ev.evaluate_codes(*args, metrics=["precision_radius"], radius=0, topk=3)
    assert only == {"precision_radius": pytest.approx({"radius": 0, "precision": 0.25, "recall": 1 / 6})}
    assert ev.evaluate_codes(*args, topk=4)["map"] == pytest.approx(0.75 / 2)
    default_ns = ev.evaluate_codes(*args, metrics=("precision_at",))["precision_at"]
    assert list(default_ns) == [str(n) for n in ev.DEFAULT_NS]


def test_device_arguments():
    args = (HAND_Q, HAND_D, HAND_QL, HAND_DL)
    assert ev.mean_average_precision(*args, device="cpu") == pytest.approx(0.35)
    assert ev.mean_average_precision(*args, device=torch.device("cpu")) == pytest.approx(0.35)
    with pytest.raises(HashkitError, match="not a valid torch device"):
        ev.mean_average_precision(*args, device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(HashkitError, match="CUDA is not available"):
            ev.mean_average_precision(*args, device="cuda:0")


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(q=np.ones((2, 3))), "query codes have 3 bits but database codes have 2"),
        (dict(d=np.full((5, 2), 0.5)), "not binary: found value 0.5"),
        (dict(d=np.array([[1, 0], [-1, 1], [1, 1], [1, 1], [1, 1]])), "mix -1, 0 and 1"),
        (dict(q=np.array([1, -1])), "2-D"),
        (dict(q=np.array([[np.nan, 1.0], [1.0, 1.0]])), "not binary"),
        (dict(ql=np.eye(4)[:2]), "query labels have 4 classes but database labels have 3"),
        (dict(ql=HAND_QL[:1]), "2 query codes but 1 query label rows"),
        (dict(dl=HAND_DL[:4]), "5 database codes but 4 database label rows"),
        (dict(dl=np.array([0, 1, 0, 0, 1])), "1-D array"),
        (dict(ql=HAND_QL * 2), "labels must be 0/1"),
        (dict(d=np.ones((0, 2))), "empty database"),
        (dict(q=np.ones((0, 2)), ql=np.ones((0, 3))), "no queries"),
    ],
)
def test_input_errors(change, match):
    q, d = change.get("q", HAND_Q), change.get("d", HAND_D)
    ql, dl = change.get("ql", HAND_QL), change.get("dl", HAND_DL)
    with pytest.raises(HashkitError, match=match):
        ev.mean_average_precision(q, d, ql, dl)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(topk=0), "topk must be a positive integer or None"),
        (dict(topk=-1), "topk must be"),
        (dict(topk=2.5), "topk must be"),
        (dict(chunk_size=0), "chunk_size must be"),
        (dict(radius=-1, metrics="precision_radius"), "radius must be"),
        (dict(ns=(), metrics="precision_at"), "ns must be"),
        (dict(ns=(10, 0), metrics="precision_at"), "ns must be"),
        (dict(metrics="map,ndcg"), "unknown metric.*ndcg.*choose from map"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(HashkitError, match=match):
        ev.evaluate_codes(HAND_Q, HAND_D, HAND_QL, HAND_DL, **kwargs)


# ------------------------------------------------------------------------------------------------
# hashkit.hamming


def test_to_pm1_conventions():
    expect = torch.tensor([[1, -1, 1]], dtype=torch.int8)
    for codes in (
        np.array([[1.0, -1.0, 1.0]]),
        np.array([[1, 0, 1]], dtype=np.uint8),
        np.array([[True, False, True]]),
        torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64),
        [[1, -1, 1]],
    ):
        assert torch.equal(to_pm1(codes), expect)
    assert to_pm1(np.zeros((2, 4))).eq(-1).all()  # all-zero 0/1 codes
    assert to_pm1(np.ones((1, 2)), dtype=torch.float32).dtype == torch.float32
    with pytest.raises(HashkitError, match="0 bits"):
        to_pm1(np.ones((3, 0)))
    with pytest.raises(HashkitError, match="not binary: found value 2"):
        to_pm1(np.array([[2, 1]]))


@pytest.mark.parametrize("bits", [1, 7, 8, 9, 64, 65, 130])
def test_pack_unpack_and_distances(bits):
    rng = np.random.default_rng(bits)
    a = rng.choice([-1, 1], size=(6, bits))
    b = rng.choice([-1, 1], size=(11, bits))
    packed = pack_bits(a)
    assert packed.dtype == torch.uint8 and packed.shape == (6, (bits + 7) // 8)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(a > 0, axis=1))  # MSB first
    assert torch.equal(unpack_bits(packed, bits), torch.tensor(a, dtype=torch.int8))
    brute = np.array([[int((x != y).sum()) for y in b] for x in a])
    assert torch.equal(hamming_distance(a, b), torch.tensor(brute, dtype=torch.int16))
    np.testing.assert_array_equal(hamming_distance_packed(packed, pack_bits(b)), brute)
    assert packed_to_words(packed).shape == (6, max(1, (bits + 63) // 64))


def test_popcount_fallback_without_numpy_bitwise_count(monkeypatch):
    words = np.random.default_rng(0).integers(0, 2**63, size=100, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    expect = np.array([bin(int(w)).count("1") for w in words], dtype=np.uint8)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(_popcount_words(words), expect)
    out = np.empty(100, dtype=np.uint8)
    _popcount_words(words, out=out)
    np.testing.assert_array_equal(out, expect)


def test_hamming_errors():
    with pytest.raises(HashkitError, match="3 bits but database codes have 4"):
        hamming_distance(np.ones((1, 3)), np.ones((1, 4)))
    with pytest.raises(HashkitError, match="cannot hold 9 bits"):
        unpack_bits(pack_bits(np.ones((1, 8))), 9)
    with pytest.raises(HashkitError, match="uint8"):
        packed_to_words(np.ones((2, 2), dtype=np.int32))


def test_bench_faiss_comparison_computes_the_same_map(monkeypatch):
    """scripts/bench_eval.py --faiss: its faiss multi-count + AP gives hashkit's mAP (same tie order)."""
    faiss = pytest.importorskip("faiss")
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_eval.py"
    spec = importlib.util.spec_from_file_location("bench_eval", script)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_eval", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(3)
    for multi, topk in ((False, None), (False, 30), (True, 50)):
        Q, D = rng.choice([-1, 1], size=(12, 16)), rng.choice([-1, 1], size=(400, 16))
        QL, DL = _labels(rng, 12, 5, multi), _labels(rng, 400, 5, multi)
        want = ev.mean_average_precision(Q, D, QL, DL, topk=topk)
        qp, dp = np.packbits(Q > 0, axis=1), np.packbits(D > 0, axis=1)
        assert bench.faiss_map(faiss, qp, dp, QL, DL, topk) == pytest.approx(want, abs=1e-12)
        assert bench.faiss_floor(faiss, qp, dp) == pytest.approx(
            hamming_distance(Q, D).numpy().min(1).mean(), abs=1e-9)
    assert "instruction sets:" in bench.cpu_description()

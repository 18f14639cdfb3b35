"""ADSH and DIHN against slow references, and the incremental protocol (data/incremental.py).

* the DCC update of V equals a brute force over every assignment of each bit column (in the same
  cyclic order) of the full ADSH objective written out with loops, and never increases it;
* the chunked Sᵀ Ũ and similarity ratio equal the dense computation;
* the ADSH / DIHN network losses equal per-pair loops;
* DIHN keeps the original database codes of the ADSH checkpoint bit-identical and checks the protocol;
* the incremental protocol: sizes, classes, order, determinism, query groups;
* an integration run on real CIFAR-10 (small): the DIHN step raises mAP on the new classes.
"""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest
import torch

import hashkit.methods.adsh as adsh_module
from hashkit.data.base import DataConfig, DatasetSplits, ImageCollection, one_hot
from hashkit.data.incremental import incremental_option
from hashkit.data.splits import query_train_database
from hashkit.errors import HashkitError
from hashkit.method import Batch, TrainingData
from hashkit.methods.adsh import ADSH, adsh_loss, dcc_update, similarity_ratio, similarity_t_matmul, soft_similarity
from hashkit.methods.dihn import DIHN, dihn_loss

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------- slow references
def reference_similarity(labels_a, labels_b):
    """S_ij ∈ {+1, −r}, r = #similar/#dissimilar over the whole block, with loops."""
    shared = [[float(labels_a[i] @ labels_b[j]) > 0 for j in range(len(labels_b))] for i in range(len(labels_a))]
    similar = sum(map(sum, shared))
    dissimilar = len(labels_a) * len(labels_b) - similar
    r = similar / dissimilar if dissimilar else 0.0
    return [[1.0 if shared[i][j] else -r for j in range(len(labels_b))] for i in range(len(labels_a))], r


def reference_objective(v, u, sample, s, code_length, gamma):
    """ADSH eq. 3 with V given: Σ_{i∈Ω} Σ_j (ũ_iᵀ v_j − c S_ij)² + γ Σ_{i∈Ω} ‖v_{ω_i} − ũ_i‖², with loops."""
    total = 0.0
    for a, i in enumerate(sample):
        for j in range(len(v)):
            total += (sum(float(u[a, k]) * float(v[j, k]) for k in range(code_length)) - code_length * s[a][j]) ** 2
        total += gamma * sum((float(v[i, k]) - float(u[a, k])) ** 2 for k in range(code_length))
    return total


def brute_force_sweep(v, u, sample, s, code_length, gamma, rows):
    """Bit by bit (k = 0..c−1), set column k of the ``rows`` to the best of all 2^len(rows) sign
    assignments of the full objective; returns the V after the sweep and the objective after each bit."""
    v = v.clone()
    history = [reference_objective(v, u, sample, s, code_length, gamma)]
    for k in range(code_length):
        best, best_value = None, math.inf
        for signs in itertools.product((-1.0, 1.0), repeat=len(rows)):
            v[rows, k] = torch.tensor(signs, dtype=v.dtype)
            value = reference_objective(v, u, sample, s, code_length, gamma)
            if value < best_value - 1e-9:
                best, best_value = signs, value
        v[rows, k] = torch.tensor(best, dtype=v.dtype)
        history.append(best_value)
    return v, history


def random_problem(seed, n=7, m=4, bits=4, classes=3, multi_label=False):
    g = torch.Generator().manual_seed(seed)
    labels = one_hot(torch.randint(0, classes, (n,), generator=g).numpy(), classes).astype(np.float64)
    if multi_label:
        labels = np.maximum(labels, (torch.rand(n, classes, generator=g) > 0.85).numpy())
    labels = torch.from_numpy(labels)
    sample = torch.randperm(n, generator=g)[:m]
    u = torch.tanh(2 * torch.randn(m, bits, generator=g, dtype=torch.float64))
    v = torch.randint(0, 2, (n, bits), generator=g).double() * 2 - 1
    return labels, sample, u, v


# ---------------------------------------------------------------------------- the V update (DCC)
@pytest.mark.parametrize("seed,multi_label", [(0, False), (1, False), (4, True), (3, False)])
def test_dcc_equals_bitwise_brute_force_and_never_increases(seed: int, multi_label: bool) -> None:
    bits, gamma = 4, 3.0  # a small γ keeps both terms in play on a tiny problem
    labels, sample, u, v = random_problem(seed, bits=bits, multi_label=multi_label)
    s, r = reference_similarity(labels[sample], labels)
    ratio = similarity_ratio(labels[sample], labels)
    assert r > 0 and ratio == pytest.approx(r, rel=1e-12)
    s_t_u = similarity_t_matmul(labels[sample], labels, ratio, u)
    u_bar = torch.zeros_like(v)
    u_bar[sample] = u
    fast = dcc_update(v, u, s_t_u, u_bar, bits, gamma)
    slow, history = brute_force_sweep(v, u, sample.tolist(), s, bits, gamma, rows=list(range(len(v))))
    assert torch.equal(fast, slow)
    assert all(b <= a + 1e-9 for a, b in zip(history, history[1:]))
    assert reference_objective(fast, u, sample.tolist(), s, bits, gamma) == pytest.approx(history[-1], rel=1e-12)
    assert set(fast.unique().tolist()) <= {-1.0, 1.0}


def test_dcc_on_frozen_rows_matches_brute_force_over_new_rows_only() -> None:
    """DIHN's update: only rows ≥ num_frozen are variables; the objective still spans all rows."""
    bits, gamma, frozen = 4, 3.0, 3
    labels, sample, u, v = random_problem(5, n=8, m=5, bits=bits)
    s, _ = reference_similarity(labels[sample], labels)
    method = ADSH(bits, {"gamma": gamma}, CPU)
    method.num_codes, method.num_frozen, method.labels, method.V = len(v), frozen, labels, v.clone()
    method.sample, method.U, method.ratio = sample, u, similarity_ratio(labels[sample], labels)
    method.on_epoch_end(0)
    slow, history = brute_force_sweep(v, u, sample.tolist(), s, bits, gamma, rows=list(range(frozen, len(v))))
    assert torch.equal(method.V, slow)
    assert torch.equal(method.V[:frozen], v[:frozen])
    assert history[-1] <= history[0]


@pytest.mark.parametrize("multi_label", [True, False])
def test_chunked_similarity_products_equal_dense(monkeypatch: pytest.MonkeyPatch, multi_label: bool) -> None:
    """Multi-label: chunked blocks; single-label: the exact low-rank form. Both equal the dense Sᵀ Ũ."""
    g = torch.Generator().manual_seed(0)
    labels = torch.from_numpy(one_hot(torch.randint(0, 5, (50,), generator=g).numpy(), 5)).float()
    if multi_label:
        labels[::7, 2] = 1
    sample = labels[torch.randperm(50, generator=g)[:9]]
    u = torch.randn(9, 6, generator=g)
    dense_shared = (sample @ labels.t() > 0).float()
    r = dense_shared.sum() / (1 - dense_shared).sum()
    dense = torch.where(dense_shared > 0, 1.0, -r)
    monkeypatch.setattr(adsh_module, "CHUNK_ELEMENTS", 20)  # 2 database rows per chunk
    assert similarity_ratio(sample, labels) == pytest.approx(float(r), rel=1e-6)
    torch.testing.assert_close(similarity_t_matmul(sample, labels, float(r), u), dense.t() @ u)
    torch.testing.assert_close(soft_similarity(sample, labels, float(r)), dense)


# ---------------------------------------------------------------------------- network losses
def reference_loss(outputs, batch_labels, batch_index, labels, v, gamma, mu, code_length, r):
    """Per pair: (tanh(o_i)ᵀ v_j − c S_ij)², γ‖v_i − tanh(o_i)‖², μ Σ tanh(o_i); all / (b·n)."""
    b, n = len(outputs), len(v)
    square = quant = corr = 0.0
    for a in range(b):
        t = [math.tanh(float(x)) for x in outputs[a]]
        for j in range(n):
            s = 1.0 if float(batch_labels[a] @ labels[j]) > 0 else -r
            square += (sum(t[k] * float(v[j, k]) for k in range(code_length)) - code_length * s) ** 2
        quant += gamma * sum((float(v[int(batch_index[a]), k]) - t[k]) ** 2 for k in range(code_length))
        corr += mu * sum(t)
    return square / (b * n), quant / (b * n), corr / (b * n)


def test_adsh_and_dihn_losses_match_reference() -> None:
    bits, gamma, mu = 6, 200.0, 50.0
    labels, _, _, v = random_problem(3, n=12, m=4, bits=bits, classes=4)
    g = torch.Generator().manual_seed(9)
    outputs = 1.5 * torch.randn(5, bits, generator=g, dtype=torch.float64)
    index = torch.tensor([0, 3, 4, 8, 11])
    r = 0.37
    s = soft_similarity(labels[index], labels, r)
    ref_sq, ref_q, ref_c = reference_loss(outputs, labels[index], index, labels, v, gamma, mu, bits, r)
    terms = adsh_loss(torch.tanh(outputs), s, v, v[index], gamma, bits)
    assert set(terms) == {"similarity", "quantization"}
    assert terms["similarity"].item() == pytest.approx(ref_sq, rel=1e-10)
    assert terms["quantization"].item() == pytest.approx(ref_q, rel=1e-10)
    terms = dihn_loss(torch.tanh(outputs), s, v, v[index], gamma, mu, bits)
    assert terms["correlation"].item() == pytest.approx(ref_c, rel=1e-10)
    assert terms["similarity"].item() == pytest.approx(ref_sq, rel=1e-10)


def test_adsh_epoch_samples_trains_and_updates_codes() -> None:
    """One outer iteration through the method's hooks, as the Trainer drives them."""
    bits, n = 8, 40
    labels = torch.from_numpy(one_hot(np.arange(n) % 4, 4)).float()
    method = ADSH(bits, {"num_samples": 10, "max_epoch": 3}, CPU)
    method.setup(TrainingData(num_items=n, labels=labels))
    order = method.epoch_indices(0, torch.Generator().manual_seed(0))
    assert len(order) == 30 and len(method.sample.unique()) == 10
    for p in range(3):  # each pass visits the sample once, in its own order
        assert sorted(order[p * 10 : (p + 1) * 10].tolist()) == sorted(method.sample.tolist())
    again = ADSH(bits, {"num_samples": 10, "max_epoch": 3}, CPU)
    again.setup(TrainingData(num_items=n, labels=labels))
    assert torch.equal(again.epoch_indices(0, torch.Generator().manual_seed(0)), order)
    before = method.V.clone()
    g = torch.Generator().manual_seed(1)
    for start in range(0, 30, 7):
        index = order[start : start + 7]
        outputs = torch.randn(len(index), bits, generator=g, requires_grad=True)
        losses = method.training_step(outputs, Batch(torch.zeros(len(index)), labels[index], index))
        sum(losses.values()).backward()
        assert outputs.grad is not None and outputs.grad.abs().sum() > 0
    assert method.U.abs().sum(dim=1).gt(0).all()  # every sampled point has its relaxed code
    method.on_epoch_end(0)
    assert not torch.equal(before, method.V) and set(method.V.unique().tolist()) <= {-1.0, 1.0}
    state = method.state_dict()
    other = ADSH(bits, {}, CPU)
    other.load_state_dict(state)
    assert torch.equal(other.V, method.V)


# ---------------------------------------------------------------------------- the incremental protocol
def toy_pool(per_class: int = 30, classes: int = 10) -> ImageCollection:
    cls = np.repeat(np.arange(classes), per_class)
    pixels = (np.arange(len(cls), dtype=np.int64)[:, None, None, None] % 251 * np.ones((1, 2, 2, 3))).astype(np.uint8)
    return ImageCollection(one_hot(cls, classes), pixels=pixels, source="toy")


@incremental_option
def toy_dataset(config: DataConfig) -> DatasetSplits:
    """A CIFAR-like in-memory dataset under the seed protocol (what the cifar10 factory does)."""
    pool = toy_pool()
    query, train, database = query_train_database(
        pool.labels, config.num_query or 50, config.num_train or 100, config.num_database, config.seed
    )
    return DatasetSplits(
        "toy", pool.subset(train), pool.subset(query), pool.subset(database), [f"c{i}" for i in range(10)], None, "toy",
        extra={"pool": pool, "query_index": query, "train_index": train, "database_index": database},
    )


def test_incremental_protocol_sizes_classes_order_and_determinism() -> None:
    plain = toy_dataset(DataConfig(seed=3))
    splits = toy_dataset(DataConfig(seed=3, options={"num_seen": 7}))
    info = splits.extra["incremental"]
    classes = lambda c: set(c.labels.argmax(1).tolist())  # noqa: E731
    assert info["seen_classes"] == [f"c{i}" for i in range(7)] and info["new_classes"] == ["c7", "c8", "c9"]
    # queries: unchanged, all classes; groups split them by class
    assert np.array_equal(splits.extra["query_index"], plain.extra["query_index"]) and classes(splits.query) == set(range(10))
    groups = splits.extra["query_groups"]
    assert np.array_equal(groups["new"], splits.query.labels.argmax(1) >= 7) and np.array_equal(groups["seen"], ~groups["new"])
    # database: the same images, original (seen) first then incremental (new)
    assert (info["num_original"], info["num_incremental"]) == (25 * 7, 25 * 3)
    assert sorted(splits.extra["database_index"].tolist()) == sorted(plain.extra["database_index"].tolist())
    db_classes = splits.database.labels.argmax(1)
    assert (db_classes[: info["num_original"]] < 7).all() and (db_classes[info["num_original"] :] >= 7).all()
    assert np.array_equal(splits.database.pixels, splits.extra["pool"].pixels[splits.extra["database_index"]])
    # training images: seen classes only (the protocol's 10 per class → 70)
    assert classes(splits.train) == set(range(7)) and len(splits.train) == 70
    assert info["protocol"] == {"seed": 3, "num_seen": 7, "num_query": None, "num_database": None}
    # determinism: the same flags give the same split; another seed another one
    again = toy_dataset(DataConfig(seed=3, options={"num_seen": 7}))
    assert np.array_equal(again.extra["database_index"], splits.extra["database_index"])
    other = toy_dataset(DataConfig(seed=4, options={"num_seen": 7}))
    assert not np.array_equal(other.extra["query_index"], splits.extra["query_index"])
    with pytest.raises(HashkitError, match="--num-seen 10"):
        toy_dataset(DataConfig(seed=3, options={"num_seen": 10}))


def test_num_seen_flag_reaches_the_cli() -> None:
    import argparse

    from hashkit.commands.common import add_data_arguments
    from hashkit.registry import DATASETS

    assert "num_seen" in DATASETS.get("cifar10").cli_flags
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    assert parser.parse_args(["--num-seen", "7"]).num_seen == 7
    assert parser.parse_args([]).num_seen is None


# ---------------------------------------------------------------------------- ADSH / DIHN on the protocol
def adsh_checkpoint(splits, bits, seed=3, **config):
    info = splits.extra["incremental"]
    v = (torch.randint(0, 2, (info["num_original"], bits), generator=torch.Generator().manual_seed(0)) * 2 - 1).float()
    return {
        "method": "adsh",
        "config": {"dataset": "toy", "seed": seed, "num_seen": 7, "num_query": None, "num_database": None, **config},
        "method_state": {"V": v.to(torch.int8), "num_frozen": 0},
    }


def test_adsh_learns_original_codes_and_encodes_new_images() -> None:
    bits = 6
    splits = toy_dataset(DataConfig(seed=3, options={"num_seen": 7}))
    info = splits.extra["incremental"]
    labels = torch.from_numpy(splits.database.labels).float()
    method = ADSH(bits, {"num_samples": 20}, CPU)
    method.setup(TrainingData(len(splits.database), labels, splits=splits))
    assert len(method.V) == info["num_original"] and len(method.labels) == info["num_original"]
    order = method.epoch_indices(0, torch.Generator().manual_seed(0))
    assert order.max() < info["num_original"]  # never visits an incremental image
    encoded = []

    def encode(images):
        encoded.append(len(images))
        return -torch.ones(len(images), bits)

    codes = method.database_codes(splits, encode)
    assert encoded == [info["num_incremental"]]
    assert torch.equal(codes[: info["num_original"]], method.V) and (codes[info["num_original"] :] == -1).all()


def test_dihn_keeps_original_codes_bit_identical() -> None:
    bits = 6
    splits = toy_dataset(DataConfig(seed=3, options={"num_seen": 7}))
    info = splits.extra["incremental"]
    labels = torch.from_numpy(splits.database.labels).float()
    checkpoint = adsh_checkpoint(splits, bits)
    method = DIHN(bits, {"num_samples": 40, "max_epoch": 2}, CPU)
    method.setup(TrainingData(len(splits.database), labels, splits=splits, init_checkpoint=checkpoint))
    old = checkpoint["method_state"]["V"].float()
    new_before = method.V[info["num_original"] :].clone()
    g = torch.Generator().manual_seed(2)
    for epoch in range(3):
        order = method.epoch_indices(epoch, torch.Generator().manual_seed(epoch))
        assert order.max() >= info["num_original"] or epoch  # samples the whole database
        for start in range(0, len(order), 16):
            index = order[start : start + 16]
            outputs = torch.randn(len(index), bits, generator=g)
            losses = method.training_step(outputs, Batch(torch.zeros(len(index)), labels[index], index))
            assert set(losses) == {"similarity", "quantization", "correlation"}
        method.on_epoch_end(epoch)
        assert torch.equal(method.V[: info["num_original"]], old)
    assert not torch.equal(method.V[info["num_original"] :], new_before)
    codes = method.database_codes(splits, lambda images: pytest.fail("DIHN must not re-encode the database"))
    assert torch.equal(codes[: info["num_original"]], old) and len(codes) == len(splits.database)
    restored = DIHN(bits, {}, CPU)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.V, method.V) and restored.num_frozen == info["num_original"]


def test_dihn_refuses_a_checkpoint_of_another_protocol() -> None:
    bits = 6
    splits = toy_dataset(DataConfig(seed=3, options={"num_seen": 7}))
    labels = torch.from_numpy(splits.database.labels).float()
    data = lambda checkpoint, s=splits: TrainingData(len(s.database), labels, splits=s, init_checkpoint=checkpoint)  # noqa: E731
    method = DIHN(bits, {}, CPU)
    with pytest.raises(HashkitError, match="--seed 4"):
        method.setup(data(adsh_checkpoint(splits, bits, seed=4)))
    with pytest.raises(HashkitError, match="--num-database 500"):
        method.setup(data(adsh_checkpoint(splits, bits, num_database=500)))
    with pytest.raises(HashkitError, match="without --num-seen"):
        method.setup(data(adsh_checkpoint(splits, bits, num_seen=None)))
    with pytest.raises(HashkitError, match="--from"):
        method.setup(data(None))
    plain = toy_dataset(DataConfig(seed=3))
    with pytest.raises(HashkitError, match="--num-seen 7"):
        method.setup(TrainingData(len(plain.database), torch.from_numpy(plain.database.labels).float(), splits=plain,
                                  init_checkpoint=adsh_checkpoint(splits, bits)))
    wrong_bits = adsh_checkpoint(splits, bits + 2)
    with pytest.raises(HashkitError, match="shape"):
        method.setup(data(wrong_bits))


# ---------------------------------------------------------------------------- integration on real CIFAR-10
def test_dihn_raises_new_class_map_on_real_cifar10(cifar_tar, hashkit_cache, tmp_path) -> None:
    """ADSH on 7 seen classes, then DIHN on the 3 new ones, CPU-sized: 200 queries, a 2,000-image database
    (1,400 original + 600 incremental), EfficientNet-Lite0 at 64 px with a frozen backbone (the hash layer
    trains on cached features), 16 bits, 6 outer iterations × 3 passes over 500 sampled points each.
    DIHN must beat the ADSH codes on the new classes, without touching the original database codes."""
    from hashkit.checkpoint import load_checkpoint
    from hashkit.run import evaluate, train

    common = {
        "dataset": "cifar10", "root": str(cifar_tar), "seed": 0, "num_seen": 7, "num_query": 200, "num_train": 500,
        "num_database": 2000, "arch": "efficientnet_lite0", "image_size": 64, "freeze_backbone": True,
        "code_length": 16, "lr": 1e-3, "max_iter": 6, "num_samples": 500, "evaluate_interval": 6,
    }
    started = time.perf_counter()
    adsh = train({**common, "method": "adsh", "out": str(tmp_path / "adsh")})
    dihn = train({**common, "method": "dihn", "out": str(tmp_path / "dihn"), "init_from": str(tmp_path / "adsh" / "checkpoint.pt")})
    adsh_eval = evaluate(tmp_path / "adsh" / "checkpoint.pt", {})
    dihn_eval = evaluate(tmp_path / "dihn" / "checkpoint.pt", {})
    numbers = {name: {"map": m["map"], **m["map_by_group"]} for name, m in (("adsh", adsh_eval), ("dihn", dihn_eval))}
    print(json.dumps({**numbers, "seconds": round(time.perf_counter() - started, 1)}))
    # evaluate from the checkpoint alone gives what training reported, on the same protocol
    assert adsh_eval["num_database"] == dihn_eval["num_database"] == 2000
    assert adsh_eval["map"] == pytest.approx(adsh["map"], abs=1e-9) and dihn_eval["map"] == pytest.approx(dihn["map"], abs=1e-9)
    old = load_checkpoint(tmp_path / "adsh" / "checkpoint.pt")["method_state"]["V"]
    new = load_checkpoint(tmp_path / "dihn" / "checkpoint.pt")["method_state"]["V"]
    assert old.shape == (1400, 16) and new.shape == (2000, 16)
    assert torch.equal(new[:1400], old)  # the original database was not re-encoded
    assert numbers["dihn"]["new"] > numbers["adsh"]["new"] + 0.15
    assert numbers["dihn"]["map"] > numbers["adsh"]["map"]

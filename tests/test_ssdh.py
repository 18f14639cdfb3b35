"""SSDH: the threshold rule and S (paper eq. 1) and the known-pairs loss (eq. 2, relaxed) against slow,
obvious references; and a proof that training never reads labels (bit-identical weights).

Which images S is built from (issue 29): ``--recipe seed`` takes the features through one seeded draw of the
training transform per image, as TreezzZ/SSDH_PyTorch ssdh.py ``extract_features(model, train_dataloader, …)``
(data/transform.py: RandomResizedCrop(224) + flip); the CPU recipe keeps the test transform's features and its
trained codes are pinned to the values recorded before that change. Mutation that fails here: in
methods/ssdh.py read ``data.pretrained_features`` whatever ``--similarity-transform`` says →
``test_setup_takes_the_features_its_similarity_transform_names`` fails; applying ``self.eval_transform`` in
``ImagePipeline.augmented_features`` fails ``test_augmented_features_are_seeded_draws_of_the_training_transform``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import hashkit.methods.ssdh as ssdh_module
from hashkit.method import Batch, TrainingData
from hashkit.methods.ssdh import SSDH, fit_distances, fit_half_gaussians, pseudo_similarity, ssdh_loss

CPU = torch.device("cpu")


# ---------- references (slow and obvious) ----------

def reference_fit(distances: list[float], alpha: float, beta: float) -> tuple[float, float, float, float, float]:
    """The seed's recipe spelled out: 200 bins (k/100, (k+1)/100], mode = left edge of the fullest (first
    on ties), each half mirrored about the mode and fitted by scipy's Gaussian MLE."""
    d = np.asarray(distances, dtype=np.float64)
    counts = [int(np.sum((d > k / 100) & (d <= (k + 1) / 100))) + (int(np.sum(d <= 0)) if k == 0 else 0) for k in range(200)]
    best = 0
    for k in range(200):
        if counts[k] > counts[best]:
            best = k
    mode = best / 100
    left, right = d[d <= mode], d[d > mode]
    left_mean, left_std = norm.fit(np.concatenate([left, 2 * mode - left]))
    right_mean, right_std = norm.fit(np.concatenate([2 * mode - right, right]))
    assert left_mean == pytest.approx(mode) and right_mean == pytest.approx(mode)
    return mode, left_std, right_std, mode - alpha * left_std, mode + beta * right_std


def reference_cosine_distances(features: np.ndarray) -> np.ndarray:
    n = len(features)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                a, b = features[i], features[j]
                out[i, j] = 1.0 - float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))
    return out


def reference_similarity(features: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    d = reference_cosine_distances(features)
    n = len(features)
    pairs = [d[i, j] for i in range(n) for j in range(i + 1, n)]
    _, _, _, low, high = reference_fit(pairs, alpha, beta)
    s = np.zeros((n, n), dtype=np.int8)
    for i in range(n):
        for j in range(n):
            s[i, j] = 1 if d[i, j] < low else (-1 if d[i, j] > high else 0)
    return s


def reference_loss(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Loop over the batch pairs with S_ij ≠ 0 only; (1/b²) Σ (tanh(u_i)·tanh(u_j)/r − S_ij)²."""
    b, r = u.shape
    total = u.new_zeros(())
    for i in range(b):
        for j in range(b):
            if s[i, j] != 0:
                inner = sum(torch.tanh(u[i, k]) * torch.tanh(u[j, k]) for k in range(r)) / r
                total = total + (inner - float(s[i, j])) ** 2
    return total / (b * b)


def clustered_features(n_per: int = 20, dim: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(3, dim, generator=g) * 2
    feats = [c + 0.6 * torch.rand(n_per, dim, generator=g) for c in centres]
    return torch.cat(feats).relu()


# ---------- eq. 1: fit and thresholds ----------

def test_fit_on_hand_computed_distances() -> None:
    # Fullest bin (0.50, 0.51] (five 0.505s) → m = 0.50. Left half {0.40, 0.30}: σ_l² = (0.1² + 0.2²)/2.
    # Right half {0.505 ×5, 0.70, 0.90}: σ_r² = (5·0.005² + 0.2² + 0.4²)/7.
    d = torch.tensor([0.505] * 5 + [0.40, 0.30, 0.70, 0.90], dtype=torch.float64)
    fit = fit_half_gaussians(d, alpha=1.0, beta=1.0)
    sigma_l, sigma_r = math.sqrt(0.025), math.sqrt((5 * 0.005**2 + 0.04 + 0.16) / 7)
    assert fit.mode == pytest.approx(0.50)
    assert fit.sigma_left == pytest.approx(sigma_l, rel=1e-12)  # 0.158114
    assert fit.sigma_right == pytest.approx(sigma_r, rel=1e-12)  # 0.169084
    assert fit.similar_below == pytest.approx(0.50 - sigma_l, rel=1e-12)  # 0.341886: only 0.30 is similar
    assert fit.dissimilar_above == pytest.approx(0.50 + sigma_r, rel=1e-12)  # 0.669084: 0.70, 0.90 dissimilar
    assert fit.num_pairs == 9
    fit2 = fit_half_gaussians(d, alpha=2.0, beta=0.5)
    assert fit2.similar_below == pytest.approx(0.50 - 2 * sigma_l) and fit2.dissimilar_above == pytest.approx(0.50 + 0.5 * sigma_r)


def test_fit_recovers_a_known_two_half_gaussian_mixture() -> None:
    rng = np.random.default_rng(0)
    mode, sigma_l, sigma_r, n = 0.605, 0.10, 0.06, 200_000
    left = rng.random(n) < sigma_l / (sigma_l + sigma_r)  # weights ∝ σ: a density continuous at the mode
    d = np.where(left, mode - np.abs(rng.normal(0, sigma_l, n)), mode + np.abs(rng.normal(0, sigma_r, n)))
    fit = fit_half_gaussians(torch.from_numpy(d), alpha=2.0, beta=2.0)
    ref = reference_fit(list(d), 2.0, 2.0)
    got = (fit.mode, fit.sigma_left, fit.sigma_right, fit.similar_below, fit.dissimilar_above)
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)
    # The estimator itself: mode to within a bin, both spreads to within 5% of the truth.
    assert abs(fit.mode - mode) <= 0.01
    assert fit.sigma_left == pytest.approx(sigma_l, rel=0.05)
    assert fit.sigma_right == pytest.approx(sigma_r, rel=0.05)


def test_similarity_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    features = clustered_features()
    for alpha, beta in [(2.0, 2.0), (1.0, 0.5), (0.0, 0.0)]:
        expected = reference_similarity(features.double().numpy(), alpha, beta)
        got = pseudo_similarity(features, fit_distances(features, alpha, beta))
        assert got.dtype == torch.int8
        assert np.array_equal(got.numpy(), expected), (alpha, beta)
        assert torch.equal(got, got.t())
        if alpha > 0:
            assert set(np.unique(expected).tolist()) == {-1, 0, 1}
    # Blockwise computation (a few rows at a time) gives the same fit and S.
    full_fit = fit_distances(features, 1.0, 1.0)
    full = pseudo_similarity(features, full_fit)
    monkeypatch.setattr(ssdh_module, "BLOCK_ELEMENTS", 7 * len(features))
    assert torch.allclose(fit_distances(features, 1.0, 1.0).as_tensor(), full_fit.as_tensor(), rtol=1e-12)
    assert torch.equal(pseudo_similarity(features, full_fit), full)


def test_self_pairs_follow_the_rule() -> None:
    features = clustered_features()
    fit = fit_distances(features, 2.0, 2.0)
    assert fit.similar_below > 0
    assert torch.all(pseudo_similarity(features, fit).diagonal() == 1)
    far = fit_distances(features, 1000.0, 2.0)  # threshold below 0: nothing, not even i = i, is similar
    assert far.similar_below < 0
    assert torch.all(pseudo_similarity(features, far) <= 0)


# ---------- eq. 2: the loss on known pairs ----------

def test_loss_matches_reference_and_its_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    b, r = 7, 12
    s = torch.randint(-1, 2, (b, b), generator=g)
    s = torch.triu(s) + torch.triu(s, 1).t()
    u = (torch.randn(b, r, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    loss = ssdh_loss(u, s.to(torch.int8))
    (grad,) = torch.autograd.grad(loss, u)
    u_ref = u.detach().clone().requires_grad_()
    ref = reference_loss(u_ref, s)
    (grad_ref,) = torch.autograd.grad(ref, u_ref)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(grad, grad_ref, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: ssdh_loss(x, s), (u.detach().clone().requires_grad_(),))


def test_unknown_pairs_contribute_nothing() -> None:
    g = torch.Generator().manual_seed(2)
    b, r = 6, 8
    s = torch.tensor([[1, -1, 0, 0, 1, 0], [-1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0],
                      [0, 1, 0, 1, -1, 0], [1, 0, 0, -1, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.int8)  # fmt: skip
    u = torch.randn(b, r, generator=g, dtype=torch.float64, requires_grad=True)
    ssdh_loss(u, s).backward()
    # Items 2 and 5 have only unknown pairs: their outputs get exactly zero gradient …
    assert torch.all(u.grad[[2, 5]] == 0)
    assert torch.all(u.grad[[0, 1, 3, 4]].abs().sum(1) > 0)
    # … and changing them changes nothing.
    moved = u.detach().clone()
    moved[[2, 5]] = torch.randn(2, r, generator=g, dtype=torch.float64) * 5
    assert ssdh_loss(moved, s).item() == ssdh_loss(u.detach(), s).item()
    # Flipping the target of an unknown pair to ±1 does change the loss (the mask is what silences it).
    s2 = s.clone()
    s2[2, 3] = s2[3, 2] = 1
    assert ssdh_loss(u.detach(), s2).item() != ssdh_loss(u.detach(), s).item()


def test_loss_is_zero_when_relaxed_codes_match_s() -> None:
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    u = torch.atanh(h * (1 - 1e-12)).double()
    s = torch.tensor([[1, 1, -1], [1, 1, -1], [-1, -1, 1]], dtype=torch.int8)
    assert ssdh_loss(u, s).item() == pytest.approx(0.0, abs=1e-9)


# ---------- the method ----------

def test_method_step_reads_s_rows_of_the_batch_and_never_labels() -> None:
    features = clustered_features()
    method = SSDH(12, {}, CPU)
    assert method.hparams == {"alpha": 2.0, "beta": 2.0, "similarity_transform": "test"} and SSDH.supervised is False
    calls = []
    method.setup(TrainingData(num_items=len(features), labels=None, pretrained_features=lambda: calls.append(1) or features))
    assert calls == [1]
    expected = torch.from_numpy(reference_similarity(features.double().numpy(), 2.0, 2.0))
    assert torch.equal(method.S, expected)
    index = torch.tensor([3, 41, 7, 22, 59])
    outputs = torch.randn(5, 12, dtype=torch.float64, requires_grad=True)
    poisoned = torch.full((5, 3), float("nan"))  # labels of the batch: NaN would poison any use
    losses = method.training_step(outputs, Batch(inputs=torch.zeros(5), labels=poisoned, index=index))
    assert set(losses) == {"pairwise"}
    assert losses["pairwise"].item() == pytest.approx(reference_loss(outputs.detach(), expected[index][:, index]).item(), rel=1e-12)
    losses["pairwise"].backward()
    assert torch.isfinite(outputs.grad).all() and outputs.grad.abs().sum() > 0


def test_state_round_trip_and_mismatch_warning() -> None:
    from loguru import logger

    features = clustered_features()
    method = SSDH(8, {"alpha": 1.0, "beta": 1.0}, CPU)
    method.setup(TrainingData(num_items=len(features), labels=None, pretrained_features=lambda: features))
    state = method.state_dict()
    assert set(state) == {"fit", "pair_counts"} and "S" not in state  # S is recomputed, not stored
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        same = SSDH(8, {"alpha": 1.0, "beta": 1.0}, CPU)
        same.setup(TrainingData(num_items=len(features), labels=None, pretrained_features=lambda: features))
        same.load_state_dict(state)
        assert not messages
        assert torch.equal(same.S, method.S)
        other = SSDH(8, {"alpha": 1.0, "beta": 1.0}, CPU)
        other.load_state_dict(state)  # before setup (as evaluation does): nothing to compare yet
        other.setup(TrainingData(num_items=len(features), labels=None, pretrained_features=lambda: features * torch.rand(features.shape)))
        assert any("differs from the checkpoint" in m for m in messages)
    finally:
        logger.remove(sink)


def test_setup_without_features_is_a_clear_error() -> None:
    from hashkit.errors import HashkitError

    with pytest.raises(HashkitError, match="pretrained backbone features"):
        SSDH(8, {}, CPU).setup(TrainingData(num_items=4, labels=None))


# ---------- end to end: labels are never read ----------

def synthetic_splits(permute_train_labels: bool):
    """Three colour/texture groups of 32×32 images; optionally the training labels are permuted."""
    from hashkit.data.base import DatasetSplits, ImageCollection, one_hot

    rng = np.random.default_rng(0)
    n_train, n_query, n_db = 12, 3, 6
    classes = np.arange(n_train + n_query + n_db) % 3
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.float64)
    pixels = base[classes][:, None, None, :] + rng.normal(0, 40, (len(classes), 32, 32, 3))
    stripes = (np.arange(32) // (2 + 2 * classes[:, None])) % 2  # per-class stripe width
    pixels = np.clip(pixels + 60 * stripes[:, None, :, None], 0, 255).astype(np.uint8)
    labels = one_hot(classes, 3)
    train_labels = labels[:n_train]
    if permute_train_labels:
        train_labels = train_labels[np.random.default_rng(1).permutation(n_train)]
        assert not np.array_equal(train_labels, labels[:n_train])

    def part(lo: int, hi: int, lab: np.ndarray) -> ImageCollection:
        return ImageCollection(lab, pixels=pixels[lo:hi], source="synthetic")

    return DatasetSplits(
        name="synthetic",
        train=part(0, n_train, train_labels),
        query=part(n_train, n_train + n_query, labels[n_train : n_train + n_query]),
        database=part(n_train + n_query, len(classes), labels[n_train + n_query :]),
        class_names=["r", "g", "b"],
        default_topk=None,
        protocol="synthetic",
    )


def train_tiny(method: str, permute: bool, out, monkeypatch: pytest.MonkeyPatch) -> dict:
    pytest.importorskip("hashkit.evaluate")
    import hashkit.run as run

    monkeypatch.setattr(run, "build_splits", lambda config: synthetic_splits(permute))
    config = {
        "method": method, "dataset": "cifar10", "code_length": 8, "out": str(out), "seed": 0,
        "arch": "efficientnet_lite0", "pretrained": True, "image_size": 32, "batch_size": 6, "max_iter": 1,
        "lr": 1e-3, "num_workers": 0, "metrics": "map", "topk": None, "alpha": 1.0, "beta": 1.0,
    }  # fmt: skip
    result = run.train(config)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return {"result": result, "model": state["model"], "method_state": state["method_state"]}


def test_training_never_reads_labels(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = train_tiny("ssdh", False, tmp_path / "a", monkeypatch)
    b = train_tiny("ssdh", True, tmp_path / "b", monkeypatch)
    assert a["result"]["history"][0]["losses"]["pairwise"] > 0
    assert torch.all(a["method_state"]["pair_counts"] > 0)  # S has similar and dissimilar pairs
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # Control: the same comparison does see a supervised method's use of labels.
    c = train_tiny("dpsh", False, tmp_path / "c", monkeypatch)
    d = train_tiny("dpsh", True, tmp_path / "d", monkeypatch)
    assert not torch.equal(c["model"]["head.linear.weight"], d["model"]["head.linear.weight"])


# ---------- which images the similarity's features see (issue 29) ----------

def test_setup_takes_the_features_its_similarity_transform_names() -> None:
    """``train`` builds S from ``augmented_features`` (the seed's training loader), ``test`` from the test
    transform's ``pretrained_features``; the recipes choose ``train`` for the seed and keep ``test`` on CPU."""
    from hashkit.config import resolve_config

    near = torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    far = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.0]])
    calls: list[str] = []

    def data() -> TrainingData:
        return TrainingData(num_items=4, labels=None,
                            pretrained_features=lambda: calls.append("test") or far,
                            augmented_features=lambda: calls.append("train") or near)  # fmt: skip

    for transform, features in (("train", near), ("test", far)):
        calls.clear()
        method = SSDH(8, {"alpha": 0.5, "beta": 0.5, "similarity_transform": transform}, CPU)
        method.setup(data())
        reference = SSDH(8, {"alpha": 0.5, "beta": 0.5}, CPU)
        reference.build_similarity(features)
        assert calls == [transform] and torch.equal(method.S, reference.S)
    from hashkit.errors import HashkitError

    with pytest.raises(HashkitError, match="--similarity-transform 'crop' is unknown"):
        SSDH(8, {"similarity_transform": "crop"}, CPU).setup(data())
    assert resolve_config({"method": "ssdh", "recipe": "seed"})["similarity_transform"] == "train"
    assert resolve_config({"method": "ssdh", "recipe": "cpu"})["similarity_transform"] == "test"


def test_augmented_features_are_seeded_draws_of_the_training_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    """One draw of the training transform per image, in order, eval mode, from the seed alone: the same seed
    gives the same features, another seed others, the test transform others again; the global RNG is untouched."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_distributed import use_tiny_backbones

    from hashkit.data.base import ImageDataset
    from hashkit.model import build_model
    from hashkit.pipeline import ImagePipeline

    use_tiny_backbones(monkeypatch)
    torch.manual_seed(0)
    model = build_model("tiny-bn", 8, False, None)
    pipeline = ImagePipeline(model, image_size=32, batch_size=4, num_workers=0, device=CPU,
                             train_transform="resized_crop_flip", test_transform="resize")  # fmt: skip
    images = synthetic_splits(False).train
    state = torch.get_rng_state()
    a = pipeline.augmented_features(images, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, pipeline.augmented_features(images, seed=3))
    assert not torch.equal(a, pipeline.augmented_features(images, seed=4))
    assert not torch.allclose(a, pipeline.features(images), atol=1e-3)
    torch.manual_seed(3)  # the reference: the training transform item by item from that seed, backbone in eval
    dataset = ImageDataset(images, pipeline.train_transform)
    inputs = torch.stack([dataset[i][0] for i in range(len(images))])
    model.eval()
    with torch.no_grad():
        expected = model.backbone(inputs)
    torch.testing.assert_close(a, expected, rtol=1e-5, atol=1e-6)


# The CPU recipe's trained codes, recorded before the seed recipe's training-transform features existed
# (commit f7ec103's tree): synthetic 4-class data of tests/test_method_registry.py, EfficientNet-Lite0 at 32 px,
# 16 bits, 2 epochs, α = β = 1 (the tiny set's thresholds). sha256 of the packed codes of query + database, mAP.
# Keyed by torch's CPU capability, as tests/test_pinned_codes.py (float kernels round differently across CPU
# classes), and recorded with one torch thread, which the test sets (the torch_threads fixture).
# AVX512: recorded the same way on 2026-12-07 (f7ec103's tree on an AVX-512 host); the same codes as AVX2.
PINNED_CPU = {
    "AVX2": ("d467313b6006f8d535fca4efacedc80bcea3f9585262f1c972619eaed2edd8f8", 0.7997325594833828),
    "AVX512": ("d467313b6006f8d535fca4efacedc80bcea3f9585262f1c972619eaed2edd8f8", 0.7997325594833828),
}


def test_cpu_recipe_codes_do_not_move(tmp_path, monkeypatch: pytest.MonkeyPatch, torch_threads: int) -> None:
    import hashlib
    import sys
    from pathlib import Path

    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in PINNED_CPU:
        pytest.skip(f"no SSDH codes recorded for CPU class {capability} (recorded: {list(PINNED_CPU)})")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_method_registry import synthetic_splits as registry_splits
    from test_method_registry import train_ok

    from hashkit.model import binarize
    from hashkit.registry import DATASETS
    from hashkit.run import load_run

    DATASETS.names()
    monkeypatch.setitem(DATASETS._entries, "synthetic", lambda config: registry_splits(config))
    out = tmp_path / "ssdh"
    result = train_ok([
        "train", "--method", "ssdh", "--dataset", "synthetic", "--recipe", "cpu", "--image-size", "32",
        "--code-length", "16", "--batch-size", "8", "--max-iter", "2", "--seed", "0", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--alpha", "1", "--beta", "1",
    ])  # fmt: skip
    assert result["config"]["similarity_transform"] == "test"
    _, splits, _, _, pipeline, _ = load_run(out / "checkpoint.pt", {"cache_dir": str(tmp_path / "cache")}, CPU)
    codes = torch.cat([binarize(pipeline.encode(splits.query)), binarize(pipeline.encode(splits.database))])
    packed = np.packbits((codes.numpy() > 0).astype(np.uint8), axis=1)
    assert (hashlib.sha256(packed.tobytes()).hexdigest(), float(result["map"])) == PINNED_CPU[capability]


def test_cached_path_refuses_training_transform_features(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Cached activations hold the test transform's views only: ``train`` under the CPU recipe is one line."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_method_registry import cli
    from test_method_registry import synthetic_splits as registry_splits

    from hashkit.registry import DATASETS

    DATASETS.names()
    monkeypatch.setitem(DATASETS._entries, "synthetic", lambda config: registry_splits(config))
    rc = cli(["train", "--method", "ssdh", "--dataset", "synthetic", "--recipe", "cpu", "--image-size", "32",
              "--code-length", "8", "--max-iter", "1", "--out", str(tmp_path / "run"), "--cache-dir",
              str(tmp_path / "cache"), "--similarity-transform", "train"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "pass --similarity-transform test" in err


def test_seed_recipe_similarity_runs_end_to_end_from_the_run_seed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through hashkit.run: ``train`` features give another fit than ``test`` features, and the same --seed
    gives the same fit (S is rebuilt identically at every start, --resume included)."""
    import hashkit.run as run

    monkeypatch.setattr(run, "build_splits", lambda config: synthetic_splits(False))

    def fit(transform: str, seed: int, out: str) -> torch.Tensor:
        config = {
            "method": "ssdh", "dataset": "cifar10", "code_length": 8, "out": str(tmp_path / out), "seed": seed,
            "arch": "efficientnet_lite0", "pretrained": True, "image_size": 32, "batch_size": 6, "max_iter": 1,
            "lr": 1e-3, "num_workers": 0, "metrics": "map", "topk": None, "alpha": 1.0, "beta": 1.0,
            "similarity_transform": transform, "train_transform": "resized_crop_flip",
        }  # fmt: skip
        run.train(config)
        return torch.load(tmp_path / out / "checkpoint.pt", weights_only=True)["method_state"]["fit"]

    a, b, c = fit("train", 0, "a"), fit("train", 0, "b"), fit("test", 0, "c")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)

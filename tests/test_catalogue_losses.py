"""The catalogue methods' losses on fixed small tensors against independent transcriptions of the reference
code (element by element, in plain Python floats), including the targets the references build: CSQ's hash
centers as DeepHash-pytorch's CSQ.py ``get_hash_targets`` (rows of scipy's Hadamard matrix and their negations,
Bernoulli rows beyond 2·bits redrawn up to 20 times), DPN's balanced random targets (DPN.py
``get_target_vectors``, p = 0.5) and the multi-label majority with its random tie-breaker (``label2center``:
``center_sum[center_sum == 0] = random_center`` with a fixed random 0/1 code, then ``2·(center_sum > 0) − 1``).
The targets are computed here from scipy and the labels, not taken from hashkit's helpers.

Mutations that fail here: CSQ's ``center_kind = "bernoulli"`` (test_csq_centers_are_the_references_hadamard_rows,
test_csq_loss); a tie-breaker that is always +1 (``tie_breaker`` returning ``torch.ones(bits)``:
test_the_tie_breaker_is_a_fixed_random_code); ``ce`` classifying tanh(u) (test_ce_baseline_loss).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard
from torch import nn

from hashkit.method_parts import centers as centers_module
from hashkit.method_parts.centers import class_centers, label_centers, tie_breaker
from hashkit.method_parts.relaxations import bihalf, sign_ste, stochastic_binary
from hashkit.errors import HashkitError
from hashkit.method import Batch, TrainingData
from hashkit.methods.bihalf_sup import BiHalfSupervised
from hashkit.methods.ce import CE
from hashkit.methods.ce_tanh import CETanh
from hashkit.methods.csq import CSQ
from hashkit.methods.dpn import DPN
from hashkit.methods.greedyhash import GreedyHash
from hashkit.methods.jmlh import JMLH
from hashkit.methods.orthoarc import OrthoArc
from hashkit.methods.orthocos import OrthoCos
from hashkit.methods.sdhc import SDHC

CPU = torch.device("cpu")
B, K, C = 6, 8, 4


def fixed(seed: int = 0, multi_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, K, generator=g, dtype=torch.float64) * 1.5
    labels = torch.zeros(B, C, dtype=torch.float64)
    labels[torch.arange(B), torch.arange(B) % C] = 1
    if multi_label:
        labels[0, 1] = labels[3, 2] = labels[4, 3] = 1
    return u, labels


def batch(labels: torch.Tensor) -> Batch:
    return Batch(inputs=torch.zeros(len(labels), 1), labels=labels, index=torch.arange(len(labels)))


def method(cls, labels: torch.Tensor, **hparams):
    m = cls(K, hparams, CPU)
    m.setup(TrainingData(num_items=len(labels), labels=labels))
    if m.module is not None:
        m.module.double().train()
    return m


def log_softmax_row(z: list[float], c: int) -> float:
    top = max(z)
    return z[c] - top - math.log(sum(math.exp(v - top) for v in z))


def soft_ce(rows: list[list[float]], labels: torch.Tensor) -> float:
    total = 0.0
    for i, z in enumerate(rows):
        y = [float(v) for v in labels[i]]
        total -= sum(y[c] / sum(y) * log_softmax_row(z, c) for c in range(len(z)) if y[c])
    return total / len(rows)


def linear(module: nn.Linear, x: list[float]) -> list[float]:
    w = module.weight.detach().tolist()
    bias = module.bias.detach().tolist() if module.bias is not None else [0.0] * len(w)
    return [sum(w[c][k] * x[k] for k in range(len(x))) + bias[c] for c in range(len(w))]


def val(t: torch.Tensor) -> float:
    return float(t.detach())


def sgn(x: float) -> float:
    return 1.0 if x >= 0 else -1.0


# ---------------------------------------------------------------------------------------------- centers


def reference_hadamard_targets(n_class: int, bit: int) -> torch.Tensor:
    """CSQ.py get_hash_targets for n_class ≤ 2·bit: H_2K = concatenate((H_K, −H_K))[:n_class]."""
    h_k = hadamard(bit)
    return torch.from_numpy(np.concatenate((h_k, -h_k), 0)[:n_class]).double()


def reference_label2center(y: torch.Tensor, hash_targets: torch.Tensor, random_center01: torch.Tensor) -> torch.Tensor:
    """CSQ.py / DPN.py label2center: the one-hot row's center; for several labels the sign of the sum, its zeros
    replaced by the fixed random 0/1 code, then 2·(sum > 0) − 1 — bit by bit in Python floats."""
    out = []
    for row in y.tolist():
        if sum(row) == 1:
            out.append(hash_targets[row.index(1.0)].tolist())
            continue
        total = [sum(row[c] * float(hash_targets[c, k]) for c in range(len(row))) for k in range(hash_targets.shape[1])]
        total = [float(random_center01[k]) if t == 0 else t for k, t in enumerate(total)]
        out.append([2.0 * (t > 0) - 1.0 for t in total])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(("classes", "bits"), [(C, K), (10, 32), (20, 16)])
def test_csq_centers_are_the_references_hadamard_rows(classes: int, bits: int) -> None:
    m = CSQ(bits, {}, CPU)
    m.setup(TrainingData(num_items=classes, labels=torch.eye(classes, dtype=torch.float64)))
    assert torch.equal(m.centers.double(), reference_hadamard_targets(classes, bits))


def test_csq_redraws_the_bernoulli_centers_as_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond 2·bits classes: up to 20 draws of the extra rows, the first whose pairwise Hamming distances over all
    centers have min > bits/4 and mean ≥ bits/2 kept, else the 20th (CSQ.py get_hash_targets' loop)."""
    bits, classes = 32, 65  # 64 Hadamard rows + 1 drawn
    bad = torch.ones(1, bits)  # the first Hadamard row again: min distance 0
    good = torch.tensor([[1.0 if ch == "+" else -1.0 for ch in "-+---+-+-+--++++-+-++-+-+--++--+"]])  # spread
    draws: list[torch.Tensor] = []

    def scripted(num: int, b: int, generator: torch.Generator) -> torch.Tensor:
        draws.append(bad if len(draws) < 2 else good)
        return draws[-1].clone()

    def reference_spread(rows: torch.Tensor) -> bool:
        d = [sum(float(a != b) for a, b in zip(rows[i], rows[j])) for i in range(len(rows)) for j in range(i + 1, len(rows))]
        return min(d) > bits / 4 and sum(d) / len(d) >= bits / 2

    monkeypatch.setattr(centers_module, "bernoulli_centers", scripted)
    got = class_centers(classes, bits)
    expected = torch.cat([reference_hadamard_targets(64, bits).float(), good])
    assert len(draws) == 3 and torch.equal(got, expected) and reference_spread(expected)
    draws.clear()
    monkeypatch.setattr(centers_module, "bernoulli_centers", lambda n, b, g: draws.append(bad) or bad.clone())
    assert torch.equal(class_centers(classes, bits)[64:], bad) and len(draws) == 20  # none spread: the 20th


def test_dpn_targets_are_balanced_random_codes() -> None:
    """DPN.py get_target_vectors: each class's code has int(bits · 0.5) bits at −1 at random positions — random
    codes, not CSQ's Hadamard rows."""
    dpn = DPN(32, {"margin": 1.0, "reg": 0.0}, CPU)
    dpn.setup(TrainingData(num_items=10, labels=torch.eye(10)))
    assert [int((row == -1).sum()) for row in dpn.centers] == [16] * 10
    assert not torch.equal(dpn.centers.double(), reference_hadamard_targets(10, 32))


def test_orthocos_seed_centers_keep_fires_minimum_distance() -> None:
    """FIRe's cent_init "M" (functions/loss/dpn.py get_centroid): every two codes at normalised Hamming distance
    0.5·(K − a·b)/K ≥ 0.61 while such codes are found; 3 codes of 2 bits cannot be (only c and −c are 1 apart), so
    the bound drops by 0.01 per 10,000 rejected draws until 0.5 admits them."""
    m = OrthoCos(K, {"s": 8.0, "m": 0.3, "quan": 0.0, "centers": "min_distance"}, CPU)
    m.setup(TrainingData(num_items=C, labels=torch.eye(C)))
    rows = m.centers.tolist()
    distances = [0.5 * (K - sum(a * b for a, b in zip(rows[i], rows[j]))) / K for i in range(C) for j in range(i + 1, C)]
    assert min(distances) >= 0.61
    assert not torch.equal(m.centers.double(), reference_hadamard_targets(C, K))
    tight = class_centers(3, 2, "min_distance").tolist()
    pairs = [0.5 * (2 - sum(a * b for a, b in zip(tight[i], tight[j]))) / 2 for i in range(3) for j in range(i + 1, 3)]
    assert min(pairs) == 0.5


def test_the_tie_breaker_is_a_fixed_random_code() -> None:
    """The references draw ``torch.randint(2, (bit,))`` once: a random code (both signs at 32 bits), the same for
    every batch, resume and rank (checkpointed)."""
    ties = tie_breaker(32)
    assert 0 < int((ties > 0).sum()) < 32
    assert torch.equal(ties, tie_breaker(32))
    m = method(CSQ, torch.eye(C, dtype=torch.float64))
    assert torch.equal(m.ties, tie_breaker(K)) and torch.equal(m.state_dict()["ties"], m.ties)


def test_label_centers_majority_and_ties() -> None:
    centers = torch.tensor([[1.0, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]])
    ties = torch.tensor([-1.0, 1, -1, 1])
    labels = torch.tensor([[0.0, 1, 0], [1, 1, 0], [1, 1, 1]])
    out = label_centers(labels, centers, ties)
    assert torch.equal(out, reference_label2center(labels.double(), centers.double(), (ties + 1) / 2).float())
    assert out[1].tolist() == [1.0, 1.0, -1.0, -1.0]  # bits 1 and 2 tie (0) → the tie-breaker's bits


# ---------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("multi_label", [False, True])
def test_csq_loss(multi_label: bool) -> None:
    u, labels = fixed(1, multi_label)
    m = method(CSQ, labels, lamda=0.3)
    losses = m.training_step(u, batch(labels))
    # the reference's targets: scipy's Hadamard rows, majority with the run's fixed random 0/1 tie code
    targets = reference_label2center(labels, reference_hadamard_targets(C, K), (m.ties + 1) / 2)
    center = quant = 0.0
    for i in range(B):
        for k in range(K):
            h = math.tanh(float(u[i, k]))
            p, t = (h + 1) / 2, (float(targets[i, k]) + 1) / 2
            center -= t * math.log(p) + (1 - t) * math.log(1 - p)  # central similarity: BCE of (h+1)/2 to (c+1)/2
            quant += (abs(h) - 1) ** 2  # quantisation
    assert val(losses["center"]) == pytest.approx(center / (B * K), abs=1e-6)
    assert val(losses["quantization"]) == pytest.approx(0.3 * quant / (B * K), abs=1e-6)


@pytest.mark.parametrize("multi_label", [False, True])
def test_dpn_loss(multi_label: bool) -> None:
    u, labels = fixed(2, multi_label)
    m = method(DPN, labels, margin=0.8, reg=0.05)
    losses = m.training_step(u, batch(labels))
    t = reference_label2center(labels, m.centers.double(), (m.ties + 1) / 2)  # DPN's centers are random draws
    hinge = sum(max(0.8 - float(u[i, k]) * float(t[i, k]), 0.0) for i in range(B) for k in range(K)) / (B * K)
    reg = sum(float(u[i, k]) ** 2 for i in range(B) for k in range(K)) / (B * K)
    assert val(losses["polarization"]) == pytest.approx(hinge, abs=1e-6)
    assert val(losses["regularization"]) == pytest.approx(0.05 * reg, abs=1e-6)
    assert torch.equal((m.centers == -1).sum(1), torch.full((C,), K // 2))  # p = 0.5 random assignment


def batchnorm_rows(u: torch.Tensor, eps: float = 1e-5) -> list[list[float]]:
    """Per-bit (x − batch mean) / sqrt(biased batch variance + eps)."""
    rows = u.tolist()
    out = [[0.0] * K for _ in rows]
    for k in range(K):
        col = [r[k] for r in rows]
        mean = sum(col) / len(col)
        var = sum((x - mean) ** 2 for x in col) / len(col)
        for i, x in enumerate(col):
            out[i][k] = (x - mean) / math.sqrt(var + eps)
    return out


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("cls", [OrthoCos, OrthoArc])
def test_orthohash_loss(cls, multi_label: bool) -> None:
    u, labels = fixed(3, multi_label)
    s, margin, quan = 7.0, 0.25, 0.5
    m = method(cls, labels, s=s, m=margin, quan=quan)
    losses = m.training_step(u, batch(labels))  # u: the bn head's outputs, read as they are
    v = u.tolist()
    centers = m.centers.tolist()
    rows = []
    for i in range(B):
        z = []
        for c in range(C):
            cos, y = cosine(v[i], centers[c]), float(labels[i, c])
            if cls is OrthoCos:
                z.append(s * (cos - margin * y))  # cosine margin (OrthoCos)
            else:
                z.append(s * math.cos(math.acos(max(min(cos, 0.99999), -0.99999)) + margin * y))  # angular margin (OrthoArc)
        rows.append(z)
    assert val(losses["ce"]) == pytest.approx(soft_ce(rows, labels), abs=1e-6)
    q = sum(1 - cosine(v[i], [sgn(x) for x in v[i]]) for i in range(B)) / B  # quantisation 1 − cos(v, sign v)
    assert val(losses["quantization"]) == pytest.approx(quan * q, abs=1e-6)


def test_orthohash_head_is_firs_bias_free_linear_and_affine_batchnorm() -> None:
    """OrthoHash's head as FIRe builds it: W x without bias, then an affine BatchNorm1d; in training the batch
    statistics, in evaluation (codes) the running ones — computed here by hand from the head's parameters.
    Fails if the head keeps a bias or drops the BN's affine part (γ, β)."""
    from hashkit.heads import build_head

    torch.manual_seed(0)
    head = build_head(OrthoCos.head, 5, K).double()
    assert head.linear.bias is None and head.bn.affine
    with torch.no_grad():
        head.bn.weight.copy_(torch.linspace(0.5, 1.5, K, dtype=torch.float64))
        head.bn.bias.copy_(torch.linspace(-0.3, 0.3, K, dtype=torch.float64))
    x = torch.randn(B, 5, dtype=torch.float64) + 3.0
    wx = (x @ head.linear.weight.t()).tolist()
    gamma, beta = head.bn.weight.tolist(), head.bn.bias.tolist()
    train_out = head(x).detach()
    normalised = batchnorm_rows(torch.tensor(wx, dtype=torch.float64), eps=head.bn.eps)
    for i in range(B):
        for k in range(K):
            assert float(train_out[i, k]) == pytest.approx(gamma[k] * normalised[i][k] + beta[k], abs=1e-9)
    head.eval()
    mean, var = head.bn.running_mean.tolist(), head.bn.running_var.tolist()
    eval_out = head(x).detach()
    for i in range(B):
        for k in range(K):
            expected = gamma[k] * (wx[i][k] - mean[k]) / math.sqrt(var[k] + head.bn.eps) + beta[k]
            assert float(eval_out[i, k]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("multi_label", [False, True])
def test_greedyhash_loss_and_straight_through_gradient(multi_label: bool) -> None:
    u, labels = fixed(5, multi_label)
    m = method(GreedyHash, labels, alpha=0.2)
    losses = m.training_step(u, batch(labels))
    rows = [linear(m.module, [sgn(float(x)) for x in u[i]]) for i in range(B)]
    penalty = sum(abs(abs(float(u[i, k])) - 1) ** 3 for i in range(B) for k in range(K)) / (B * K)  # penalty ‖|u| − 1‖₃³
    assert m.module.bias is None
    assert val(losses["ce"]) == pytest.approx(soft_ce(rows, labels), abs=1e-6)
    assert val(losses["penalty"]) == pytest.approx(0.2 * penalty, abs=1e-6)
    x = u.clone().requires_grad_(True)
    weights = torch.arange(B * K, dtype=torch.float64).reshape(B, K)
    (sign_ste(x) * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # ∂L/∂u = ∂L/∂b
    assert torch.equal(sign_ste(torch.tensor([0.0, -0.0, 2.0, -1.0])), torch.tensor([1.0, 1.0, 1.0, -1.0]))


@pytest.mark.parametrize("multi_label", [False, True])
def test_jmlh_loss_and_estimator(multi_label: bool) -> None:
    u, labels = fixed(6, multi_label)
    m = method(JMLH, labels, lamda=0.4)
    m.module.eval()  # ε = 0.5: deterministic codes 1[σ(u) > ½]
    losses = m.training_step(u, batch(labels))
    rows, kl = [], 0.0
    for i in range(B):
        q = [1 / (1 + math.exp(-float(x))) for x in u[i]]
        rows.append(linear(m.module, [1.0 if p > 0.5 else 0.0 for p in q]))
        kl += sum(p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5) for p in q)  # KL prior to Bern(1/2)
    assert val(losses["ce"]) == pytest.approx(soft_ce(rows, labels), abs=1e-6)
    assert val(losses["kl"]) == pytest.approx(0.4 * kl / B, abs=1e-6)
    x = u.clone().requires_grad_(True)
    eps = torch.full_like(u, 0.3)
    code, q = stochastic_binary(x, eps)
    assert torch.equal(code, (torch.sigmoid(u) > 0.3).double())
    wc, wq = torch.randn(B, K, dtype=torch.float64), torch.randn(B, K, dtype=torch.float64)
    ((code * wc).sum() + (q * wq).sum()).backward()
    p = torch.sigmoid(u)
    assert torch.allclose(x.grad, p * (1 - p) * (wc + wq), atol=1e-12)  # the gradient estimator


def test_sdhc_loss_and_single_label_only() -> None:
    u, labels = fixed(7)
    m = method(SDHC, labels, lmbd0=0.1, lmbd1=0.2, lmbd2=0.3, alpha=0.7)
    model = nn.Module()
    model.head = nn.Module()
    model.head.linear = nn.Linear(3, K).double()
    m.bind_model(model)
    losses = m.training_step(u, batch(labels))
    v = [[math.tanh(float(x)) for x in row] for row in u]
    j1 = sum((x - sgn(x)) ** 2 for row in v for x in row) / (B * K)
    j2 = sum(x * x for row in v for x in row) / K / 2
    w = model.head.linear.weight.tolist()
    j3 = sum((sum(a * b for a, b in zip(w[k], w[l])) - (1.0 if k == l else 0.0)) ** 2 for k in range(K) for l in range(K))
    assert val(losses["quantization"]) == pytest.approx(0.1 * j1, abs=1e-6)
    assert val(losses["variance"]) == pytest.approx(-0.2 * j2, abs=1e-6)
    assert val(losses["orthogonality"]) == pytest.approx(0.3 * j3 / (K * K), abs=1e-6)
    assert val(losses["ce"]) == pytest.approx(0.7 * soft_ce([linear(m.module, r) for r in v], labels), abs=1e-6)
    _, multi = fixed(7, multi_label=True)
    with pytest.raises(HashkitError, match="single-label"):
        method(SDHC, multi)


@pytest.mark.parametrize("multi_label", [False, True])
def test_bihalf_supervised_loss_and_layer(multi_label: bool) -> None:
    u, labels = fixed(8, multi_label)
    m = method(BiHalfSupervised, labels, gamma=6.0)
    losses = m.training_step(u, batch(labels))
    codes = []
    for i in range(B):
        row = []
        for k in range(K):
            col = sorted(float(x) for x in u[:, k])
            median = col[(B - 1) // 2]  # the lower median
            row.append(1.0 if float(u[i, k]) > median else -1.0)
        codes.append(row)
    assert val(losses["ce"]) == pytest.approx(soft_ce([linear(m.module, r) for r in codes], labels), abs=1e-6)
    x = u.clone().requires_grad_(True)
    b = bihalf(x, 6.0)
    assert torch.equal(b, torch.tensor(codes, dtype=torch.float64))
    assert torch.equal(b.sum(0), torch.zeros(K, dtype=torch.float64))  # every bit splits the batch in half
    g = torch.randn(B, K, dtype=torch.float64)
    (b * g).sum().backward()
    assert torch.allclose(x.grad, g + 6.0 / (B * K) * (u - b.detach()), atol=1e-12)  # arXiv v1 eq. 9


@pytest.mark.parametrize("multi_label", [False, True])
def test_ce_baseline_loss(multi_label: bool) -> None:
    u, labels = fixed(9, multi_label)
    m = method(CE, labels)
    losses = m.training_step(u, batch(labels))
    rows = [linear(m.module, [float(x) for x in u[i]]) for i in range(B)]  # FIRe's ce: the raw outputs u
    assert val(losses["ce"]) == pytest.approx(soft_ce(rows, labels), abs=1e-6)


@pytest.mark.parametrize("multi_label", [False, True])
def test_ce_tanh_variant_classifies_tanh_codes(multi_label: bool) -> None:
    u, labels = fixed(9, multi_label)
    m = method(CETanh, labels)
    losses = m.training_step(u, batch(labels))
    rows = [linear(m.module, [math.tanh(float(x)) for x in u[i]]) for i in range(B)]
    assert val(losses["ce"]) == pytest.approx(soft_ce(rows, labels), abs=1e-6)

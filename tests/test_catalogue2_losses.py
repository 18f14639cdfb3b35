"""Catalogue II (issue 30): DSH, DTSH, DCH, DFH against transcriptions of their reference code.

Each ``reference_*`` below transcribes swuxyj/DeepHash-pytorch's loss (``DSH.py``, ``DTSH.py``, ``DCH.py``,
``DFH.py``; FIRe's ``dtsh.py`` is the same DTSH code) in plain Python loops over floats — written here from
the reference's formulas, with its buffers, targets, margins and clamps, without hashkit's helpers. The
hashkit method is driven through its own hooks (``setup`` / ``observe`` / ``training_step``) on the same
fixed tensors, single- and multi-label; the loss value and its gradient with respect to the batch outputs
must agree (the reference's gradient by central differences, in float64).
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, TrainingData
from hashkit.methods.dch import DCH
from hashkit.methods.dfh import DFH
from hashkit.methods.dsh import DSH
from hashkit.methods.dtsh import DTSH

CPU = torch.device("cpu")
K, C, N = 8, 4, 12  # bits, classes, training items

Matrix = list[list[float]]


def labels_of(count: int, multi_label: bool) -> torch.Tensor:
    """Item i has class i % C; multi-label: a few items have a second class."""
    labels = torch.zeros(count, C, dtype=torch.float64)
    labels[torch.arange(count), torch.arange(count) % C] = 1
    if multi_label:
        labels[0, 2] = labels[3, 1] = labels[5, 0] = labels[count - 2, 3] = 1
    return labels


def outputs(rows: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    return scale * torch.randn(rows, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def batch(labels: torch.Tensor, index: list[int]) -> Batch:
    return Batch(inputs=torch.zeros(len(index), 1), labels=labels[index], index=torch.tensor(index))


def rows(t: torch.Tensor) -> Matrix:
    return [[float(v) for v in row] for row in t]


def sign(x: float) -> float:
    return (x > 0) - (x < 0)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def central_differences(f: Callable[[Matrix], float], u: Matrix, h: float = 1e-6) -> Matrix:
    grad = [[0.0] * len(u[0]) for _ in u]
    for i in range(len(u)):
        for k in range(len(u[0])):
            up = [r[:] for r in u]
            down = [r[:] for r in u]
            up[i][k] += h
            down[i][k] -= h
            grad[i][k] = (f(up) - f(down)) / (2 * h)
    return grad


def hashkit_step(method, u: torch.Tensor, b: Batch) -> tuple[float, torch.Tensor]:
    """The Trainer's calls for one step: observe (detached), then training_step; the summed loss and du."""
    method.observe(u.detach(), b.index)
    u = u.clone().requires_grad_(True)
    loss = sum(method.training_step(u, b).values())
    loss.backward()
    return float(loss.detach()), u.grad


def assert_close(value: float, grad: torch.Tensor, ref_value: float, ref_grad: Matrix, tol: float = 1e-5) -> None:
    assert value == pytest.approx(ref_value, rel=tol, abs=tol)
    assert torch.allclose(grad, torch.tensor(ref_grad, dtype=grad.dtype), rtol=1e-4, atol=tol)


# ---------------------------------------------------------------------------------------------- DSH


def reference_dsh(u: Matrix, y: Matrix, U: Matrix, Y: Matrix, alpha: float) -> float:
    """DSHLoss.forward after its buffer writes: m = 2·bits; y_ij = (y_i·Y_j == 0);
    mean of (1 − y)/2 · dist + y/2 · max(m − dist, 0) over batch × n, + α · mean |1 − |u||."""
    m = 2 * len(u[0])
    total = 0.0
    for i in range(len(u)):
        for j in range(len(U)):
            dist = sum((u[i][k] - U[j][k]) ** 2 for k in range(len(u[0])))
            dissimilar = 1.0 if dot(y[i], Y[j]) == 0 else 0.0
            total += (1 - dissimilar) / 2 * dist + dissimilar / 2 * max(m - dist, 0.0)
    regular = sum(abs(1 - abs(v)) for r in u for v in r) / (len(u) * len(u[0]))
    return total / (len(u) * len(U)) + alpha * regular


@pytest.mark.parametrize("multi_label", [False, True])
def test_dsh_loss_is_deephash_pytorchs(multi_label: bool) -> None:
    """Two steps against the memory, rows 8–11 never written (zero codes and zero labels in the reference's
    buffers). Fails if unwritten rows counted as similar by their labels (``memory.similarity`` instead of
    ``written_similarity``)."""
    labels = labels_of(N, multi_label)
    method = DSH(K, {"alpha": 0.1}, CPU)
    method.setup(TrainingData(num_items=N, labels=labels))
    first, second = [0, 1, 2, 3], [2, 3, 4, 5, 6, 7]
    u_first, u_second = outputs(4, seed=1), outputs(6, seed=2)
    hashkit_step(method, u_first, batch(labels, first))
    value, grad = hashkit_step(method, u_second, batch(labels, second))

    U = [[0.0] * K for _ in range(N)]
    Y = [[0.0] * C for _ in range(N)]
    for index, u in ((first, u_first), (second, u_second)):
        for row, i in enumerate(index):
            U[i], Y[i] = rows(u)[row], rows(labels)[i]
    y = rows(labels[second])
    f = lambda u: reference_dsh(u, y, U, Y, 0.1)  # noqa: E731
    assert_close(value, grad, f(rows(u_second)), central_differences(f, rows(u_second)))


# ---------------------------------------------------------------------------------------------- DTSH


def reference_dtsh(u: Matrix, y: Matrix, alpha: float, lamda: float) -> float:
    """DTSHLoss.forward: θ = u uᵀ; per anchor with both kinds, mean over (pos, neg) of
    −(t − log(1 + e^t)), t = clamp(θ_p − θ_n − α, −100, 50); the mean over such anchors; + λ · mean (u − sign u)²."""
    b = len(u)
    theta = [[dot(u[i], u[j]) for j in range(b)] for i in range(b)]
    loss1, count = 0.0, 0
    for row in range(b):
        s = [dot(y[row], y[j]) > 0 for j in range(b)]
        positives = [theta[row][j] for j in range(b) if s[j]]
        negatives = [theta[row][j] for j in range(b) if not s[j]]
        if positives and negatives:
            count += 1
            terms = []
            for p in positives:
                for n in negatives:
                    t = min(max(p - n - alpha, -100.0), 50.0)
                    terms.append(-(t - math.log(1 + math.exp(t))))
            loss1 += sum(terms) / len(terms)
    loss1 = loss1 / count if count else 0.0
    loss2 = sum((v - sign(v)) ** 2 for r in u for v in r) / (b * len(u[0]))
    return loss1 + lamda * loss2


@pytest.mark.parametrize("multi_label", [False, True])
def test_dtsh_loss_is_deephash_pytorchs(multi_label: bool) -> None:
    """In-batch triplets, the anchor among its own positives. Fails if the anchor were left out of its
    positives (or the per-anchor mean replaced by one mean over all triplets)."""
    labels = labels_of(7, multi_label)
    method = DTSH(K, {"alpha": 5.0, "lamda": 0.7}, CPU)
    method.setup(TrainingData(num_items=7, labels=labels))
    u = outputs(7, seed=3)
    value, grad = hashkit_step(method, u, batch(labels, list(range(7))))
    f = lambda v: reference_dtsh(v, rows(labels), 5.0, 0.7)  # noqa: E731
    assert_close(value, grad, f(rows(u)), central_differences(f, rows(u)))


def test_dtsh_batch_without_negatives_has_only_the_quantisation_term() -> None:
    """All items of one class: no anchor has a negative, so the triplet term is 0 (the reference's count 0)."""
    labels = torch.zeros(4, C, dtype=torch.float64)
    labels[:, 1] = 1
    method = DTSH(K, {}, CPU)
    method.setup(TrainingData(num_items=4, labels=labels))
    u = outputs(4, seed=4)
    terms = method.training_step(u, batch(labels, [0, 1, 2, 3]))
    assert float(terms["triplet"]) == 0.0
    assert float(terms["quantization"]) == pytest.approx(reference_dtsh(rows(u), rows(labels), 5.0, 1.0), rel=1e-12)


# ---------------------------------------------------------------------------------------------- DCH


def reference_dch(u: Matrix, y: Matrix, gamma: float, lamda: float) -> float:
    """DCHLoss.forward: s = (y yᵀ > 0); w from formula 2 (1 if a kind is missing); d = (1 − min(cos, 0.99))·K/2
    with the norm product clamped at 1e-4; mean w (s log(d/γ) + log(1 + γ/d)) + λ mean log(1 + d(|u|, 1)/γ)."""
    b, bits = len(u), len(u[0])

    def d(a: list[float], c: list[float]) -> float:
        norm = math.sqrt(dot(a, a)) * math.sqrt(dot(c, c))
        cos = dot(a, c) / max(norm, 1e-4)
        return (1 - min(cos, 0.99)) * bits / 2

    s = [[1.0 if dot(y[i], y[j]) > 0 else 0.0 for j in range(b)] for i in range(b)]
    similar = sum(map(sum, s))
    dissimilar = b * b - similar
    cauchy = 0.0
    for i in range(b):
        for j in range(b):
            w = (s[i][j] * b * b / similar + (1 - s[i][j]) * b * b / dissimilar) if similar and dissimilar else 1.0
            dij = d(u[i], u[j])
            cauchy += w * (s[i][j] * math.log(dij / gamma) + math.log(1 + gamma / dij))
    ones = [1.0] * bits
    quantization = sum(math.log(1 + d([abs(v) for v in u[i]], ones) / gamma) for i in range(b))
    return cauchy / (b * b) + lamda * quantization / b


@pytest.mark.parametrize("multi_label", [False, True])
def test_dch_loss_is_deephash_pytorchs(multi_label: bool) -> None:
    """Balanced Cauchy cross-entropy over every ordered pair (i = j at the clamped cosine) plus the Cauchy
    quantisation. Fails without the balance weights of formula 2 (w = 1 throughout)."""
    labels = labels_of(7, multi_label)
    method = DCH(K, {"gamma": 20.0, "lamda": 0.3}, CPU)
    method.setup(TrainingData(num_items=7, labels=labels))
    u = outputs(7, seed=5)
    value, grad = hashkit_step(method, u, batch(labels, list(range(7))))
    f = lambda v: reference_dch(v, rows(labels), 20.0, 0.3)  # noqa: E731
    assert_close(value, grad, f(rows(u)), central_differences(f, rows(u)))


def test_dch_batch_of_one_class_has_unit_weights() -> None:
    """Only similar pairs: w = 1 (the reference's fallback), no division by an empty dissimilar set."""
    labels = torch.zeros(3, C, dtype=torch.float64)
    labels[:, 2] = 1
    method = DCH(K, {}, CPU)
    method.setup(TrainingData(num_items=3, labels=labels))
    u = outputs(3, seed=6)
    value = float(sum(method.training_step(u, batch(labels, [0, 1, 2])).values()))
    assert value == pytest.approx(reference_dch(rows(u), rows(labels), 20.0, 0.1), rel=1e-10)


# ---------------------------------------------------------------------------------------------- DFH


class ReferenceDFH:
    """DFHLoss: buffers U (bits × n), Y (classes × n), relaxed centers V (bits × classes) from 0, C = sign V.
    The center update is the reference's own: torch autograd on V, 200 steps of 0.03 (× 0.1 at 149 and 179)."""

    def __init__(self, m: float, mu: float, vul: float, nta: float, eta: float, discrete: bool = False) -> None:
        self.m, self.mu, self.vul, self.nta, self.eta, self.discrete = m, mu, vul, nta, eta, discrete
        self.U = [[0.0] * N for _ in range(K)]
        self.Y = [[0.0] * N for _ in range(C)]
        self.V = torch.zeros(K, C, dtype=torch.float64)
        T = 2 * torch.eye(C, dtype=torch.float64) - torch.ones(C, dtype=torch.float64)
        self.TK = K * T

    def step(self, u: Matrix, y: Matrix, ind: list[int]) -> Callable[[Matrix], float]:
        """Write the buffers, compute b with the old centers, update the centers; the loss as a function of u."""
        for col, i in enumerate(ind):
            for k in range(K):
                self.U[k][i] = u[col][k]
            for c in range(C):
                self.Y[c][i] = y[col][c]
        Cs = [[sign(float(v)) for v in row] for row in self.V]
        b = [[sign(self.mu * dot(Cs[k], y[col]) + u[col][k]) for col in range(len(u))] for k in range(K)]
        if self.discrete:
            self.discrete_center(y, b)
        else:
            self.center_gradient(torch.tensor(y, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
        U, Y = [r[:] for r in self.U], [r[:] for r in self.Y]

        def loss(v: Matrix) -> float:
            metric = 0.0
            for i in range(len(v)):
                for j in range(N):
                    s = 1.0 if sum(y[i][c] * Y[c][j] for c in range(C)) > 0 else 0.0
                    theta = min(max(0.5 * sum(v[i][k] * U[k][j] for k in range(K)), -100.0), 50.0)
                    metric += (1 - s) * math.log(1 + math.exp(self.m + theta)) + s * math.log(1 + math.exp(self.m - theta))
            quantization = sum((b[k][i] - v[i][k]) ** 2 for i in range(len(v)) for k in range(K))
            return metric / (len(v) * N) + self.eta * quantization / (len(v) * K)

        return loss

    def discrete_center(self, y: Matrix, b: Matrix) -> None:
        """FIRe's DFHLoss.discrete_center on C (classes × bits) = sign Vᵀ, Y = yᵀ, B = b (bits × batch): for each
        class i in turn, C[i] = sign(q − C'ᵀ Y' v − vul · C'ᵀ 1) with q = (Y Bᵀ)[i], v = Y[i] and C', Y' without row i."""
        Cm = [[sign(float(self.V[k][c])) for k in range(K)] for c in range(C)]
        Y = [[y[j][c] for j in range(len(y))] for c in range(C)]
        for i in range(C):
            others = [j for j in range(C) if j != i]
            q = [dot(Y[i], b[k]) for k in range(K)]
            Yv = {j: dot(Y[j], Y[i]) for j in others}
            Cm[i] = [sign(q[k] - sum(Cm[j][k] * Yv[j] for j in others) - self.vul * sum(Cm[j][k] for j in others))
                     for k in range(K)]  # fmt: skip
        self.V = torch.tensor(Cm, dtype=torch.float64).t()

    def center_gradient(self, batchy: torch.Tensor, batchb: torch.Tensor) -> None:
        V = self.V.clone().requires_grad_(True)
        alpha = 0.03
        for i in range(200):
            intra = (V @ batchy.t() - batchb).pow(2).mean()
            inter = (V.t() @ V - self.TK).pow(2).mean()
            quantization = (V - V.sign()).pow(2).mean()
            (intra + self.vul * inter + self.nta * quantization).backward()
            if i in (149, 179):
                alpha *= 0.1
            V.data = V.data - alpha * V.grad.data
            V.grad.data.zero_()
        self.V = V.detach()


@pytest.mark.parametrize("multi_label", [False, True])
def test_dfh_loss_and_centers_are_deephash_pytorchs(multi_label: bool) -> None:
    """Two steps: the second step's codes b use the centers learned in the first (μ = 2 so that they flip
    bits). Fails if b ignored the centers (b = sign u) or were computed after the center update."""
    labels = labels_of(N, multi_label)
    hparams = {"margin": 3.0, "mu": 2.0, "nu": 1.0, "center_quantization": 1.0, "eta": 0.5}
    method = DFH(K, hparams, CPU)
    method.setup(TrainingData(num_items=N, labels=labels))
    reference = ReferenceDFH(3.0, 2.0, 1.0, 1.0, 0.5)
    first, second = [0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9]
    u_first, u_second = outputs(6, seed=7, scale=0.8), outputs(6, seed=8, scale=0.8)
    hashkit_step(method, u_first, batch(labels, first))
    reference.step(rows(u_first), rows(labels[first]), first)
    value, grad = hashkit_step(method, u_second, batch(labels, second))
    f = reference.step(rows(u_second), rows(labels[second]), second)
    assert torch.allclose(method.V.double(), reference.V, atol=1e-5)
    assert_close(value, grad, f(rows(u_second)), central_differences(f, rows(u_second)))
    # the centers do flip some of the second step's codes away from sign u
    targets = method.targets[torch.tensor(second)]
    assert (targets != torch.sign(u_second.float())).any()


@pytest.mark.parametrize("multi_label", [False, True])
def test_dfh_discrete_centers_are_fires(multi_label: bool) -> None:
    """``--center-update discrete`` with FIRe's m = 1, μ = 1: the centers after each step and the second step's
    loss. Fails if a class's update read the other classes' centers from before this step's sweep (Jacobi
    instead of cyclic coordinate descent)."""
    labels = labels_of(N, multi_label)
    hparams = {"margin": 1.0, "mu": 1.0, "nu": 1.0, "eta": 0.5, "center_update": "discrete"}
    method = DFH(K, hparams, CPU)
    method.setup(TrainingData(num_items=N, labels=labels))
    reference = ReferenceDFH(1.0, 1.0, 1.0, 1.0, 0.5, discrete=True)
    first, second = [0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9]
    u_first, u_second = outputs(6, seed=9, scale=0.8), outputs(6, seed=10, scale=0.8)
    hashkit_step(method, u_first, batch(labels, first))
    reference.step(rows(u_first), rows(labels[first]), first)
    assert torch.equal(method.V.double(), reference.V) and method.V.abs().sum() > 0
    value, grad = hashkit_step(method, u_second, batch(labels, second))
    f = reference.step(rows(u_second), rows(labels[second]), second)
    assert torch.equal(method.V.double(), reference.V)
    assert_close(value, grad, f(rows(u_second)), central_differences(f, rows(u_second)))


def test_dfh_unknown_center_update_is_one_line() -> None:
    method = DFH(K, {"center_update": "sgd"}, CPU)
    with pytest.raises(HashkitError, match="--center-update 'sgd' is unknown; valid: gradient, discrete"):
        method.setup(TrainingData(num_items=N, labels=labels_of(N, False)))

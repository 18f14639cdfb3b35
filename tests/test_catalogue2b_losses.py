"""Catalogue II, second part (issue 30): DSDH, IDHN (+ ISDH), DBDH, LCDSH, DSHSD against their reference code.

Each ``reference_*`` below transcribes the reference's loss in plain torch (float64, autograd for its gradient):
swuxyj/DeepHash-pytorch's ``DSDH.py``, ``IDHN.py``, ``ISDH.py``, ``DBDH.py``, ``LCDSH.py``, ``DSHSD.py``,
TreezzZ/DSDH_PyTorch's ``dsdh.py`` (the W-step, ``solve_dcc`` and its loss) and FIRe's ``dbdh.py`` — written
here from the references' formulas, with their buffers, targets, margins and clamps, without hashkit's helpers.
The hashkit method is driven through its own hooks (``setup`` / ``observe`` / ``training_step`` /
``on_epoch_end``) on the same fixed tensors, single- and multi-label; the loss value and its gradient with
respect to the batch outputs must agree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hashkit.errors import HashkitError
from hashkit.heads import build_head
from hashkit.method import Batch, TrainingData
from hashkit.methods.dbdh import DBDH
from hashkit.methods.dsdh import DSDH
from hashkit.methods.dshsd import DSHSD
from hashkit.methods.idhn import IDHN
from hashkit.methods.lcdsh import LCDSH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_helpers import F64, hashkit_step, labels_of, value_and_grad  # noqa: E402

CPU = torch.device("cpu")
K, C, N = 8, 4, 12  # bits, classes, training items


def outputs(rows: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    return scale * torch.randn(rows, K, generator=torch.Generator().manual_seed(seed), dtype=F64)


def batch(labels: torch.Tensor, index: list[int]) -> Batch:
    return Batch(inputs=torch.zeros(len(index), 1), labels=labels[index], index=torch.tensor(index))


def assert_close(value: float, grad: torch.Tensor, ref_value: float, ref_grad: torch.Tensor, tol: float = 1e-5) -> None:
    assert value == pytest.approx(ref_value, rel=tol, abs=tol)
    assert torch.allclose(grad, ref_grad.to(grad.dtype), rtol=1e-4, atol=tol)


# ---------------------------------------------------------------------------------------------- DSDH


def reference_w_step(B: torch.Tensor, Y: torch.Tensor, nu: float, mu: float) -> torch.Tensor:
    """TreezzZ dsdh.py's W-step: W = inverse(B Bᵀ + ν/μ I) B Yᵀ (B bits × n, Y classes × n)."""
    return torch.inverse(B @ B.t() + nu / mu * torch.eye(B.shape[0], dtype=B.dtype)) @ B @ Y.t()


def reference_solve_dcc(W: torch.Tensor, Y: torch.Tensor, U: torch.Tensor, B: torch.Tensor, eta: float, mu: float) -> torch.Tensor:
    """TreezzZ dsdh.py's solve_dcc: per bit i, P = W Y + η/μ U (recomputed each time, as there), then
    B[i] = sign(P[i] − B'ᵀ W' W[i]) with B', W' the rows other than i (B updated in place)."""
    B = B.clone()
    for i in range(B.shape[0]):
        P = W @ Y + eta / mu * U
        W_prime = torch.cat((W[:i], W[i + 1 :]))
        B_prime = torch.cat((B[:i], B[i + 1 :]))
        B[i] = (P[i] - B_prime.t() @ W_prime @ W[i]).sign()
    return B


def reference_dsdh(
    u: torch.Tensor, y: torch.Tensor, ind: list[int], U: torch.Tensor, Yall: torch.Tensor, B: torch.Tensor,
    W: torch.Tensor, hp: dict[str, Any],
) -> torch.Tensor:  # fmt: skip
    """The three references' network losses for the batch outputs ``u`` (b × bits), with U (bits × n, the batch's
    columns written with u), the labels Yall (classes × n), B (bits × n), W (bits × classes):

    * ``mean`` — TreezzZ dsdh.py DSDHLoss: θ = clamp(Uᵀu_batch / 2, −100, 50), mean(log(1 + e^θ) − S θ) +
      η mean (B_batch − u_batch)²;
    * ``none`` — DeepHash-pytorch DSDH.py: mean likelihood (its stable form) + μ mean (y − Wᵀ B_batch)² +
      ν mean W²;
    * ``sum`` — the paper's J over the batch's rows, divided by b·n: (Σ likelihood + η Σ ‖b − u‖²) / (b·n)."""
    U = U.clone()
    U[:, ind] = u.detach().t()  # the buffer write ``U[:, index] = U_batch.data``: no gradient through U
    S = (Yall.t() @ y.t() > 0).to(u.dtype)  # n × b, S[:, index] of the full S
    theta = (U.t() @ u.t() / 2).clamp(min=-100, max=50)
    likelihood = torch.log(1 + torch.exp(theta)) - S * theta
    Bb = B[:, ind].t()
    if hp["quantization"] == "mean":
        return likelihood.mean() + hp["eta"] * (Bb - u).pow(2).mean()
    if hp["quantization"] == "none":
        cl = (y.t() - W.t() @ B[:, ind]).pow(2).mean()
        return likelihood.mean() + hp["mu"] * cl + hp["nu"] * W.pow(2).mean()
    n = U.shape[1]
    return (likelihood.sum() + hp["eta"] * (Bb - u).pow(2).sum()) / (len(u) * n)


@pytest.mark.parametrize("quantization", ["sum", "mean", "none"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_dsdh_loss_and_discrete_step_are_the_references(multi_label: bool, quantization: str) -> None:
    """A step, the end of the epoch (two rounds of W-step + DCC B-step on the memory), another step. B and W
    after the epoch equal TreezzZ's W-step and ``solve_dcc`` applied to the method's initial random B; the
    second step's loss and gradient equal the reference loss of that ``--quantization``. Fails if the B-step
    read the other bits' rows from before the sweep (a Jacobi update instead of cyclic coordinate descent)."""
    labels = labels_of(N, multi_label)
    hp = {"mu": 0.5, "nu": 2.0, "eta": 3.0, "dcc_iter": 2, "quantization": quantization}
    method = DSDH(K, hp, CPU)
    method.setup(TrainingData(num_items=N, labels=labels.float()))
    B0 = method.B.t().double().clone()
    assert set(B0.unique().tolist()) == {-1.0, 1.0}
    first, second = list(range(0, 10)), [3, 4, 7, 8, 10, 11]
    u_first, u_second = outputs(10, seed=1, scale=0.6), outputs(6, seed=2, scale=0.6)
    hashkit_step(method, u_first, batch(labels, first))
    method.on_epoch_end(0)

    U = torch.zeros(K, N, dtype=F64)
    U[:, first] = u_first.t()
    Y = labels.t()
    B = B0
    for _ in range(2):
        W = reference_w_step(B, Y, 2.0, 0.5)
        B = reference_solve_dcc(W, Y, U, B, 3.0, 0.5)
    assert torch.equal(method.B.t().double(), B)
    assert torch.allclose(method.W.double(), W, atol=1e-5)
    assert not torch.equal(B, B0)  # the discrete step did move the codes

    terms = ("likelihood", "quantization", "classification", "regularization") if quantization == "none" else (
        "likelihood", "quantization")  # fmt: skip
    value, grad = hashkit_step(method, u_second, batch(labels, second), terms)
    f = lambda v: reference_dsdh(v, labels[second], second, U, Y, B, W, hp)  # noqa: E731
    assert_close(value, grad, *value_and_grad(f, u_second))


def test_dsdh_unknown_quantization_is_one_line() -> None:
    method = DSDH(K, {"quantization": "l1"}, CPU)
    with pytest.raises(HashkitError, match="--quantization 'l1' is unknown; valid: sum, mean, none"):
        method.setup(TrainingData(num_items=N, labels=labels_of(N, False).float()))


# ---------------------------------------------------------------------------------------------- IDHN / ISDH


class ReferenceIDHN:
    """DeepHash-pytorch IDHN.py / ISDH.py ``DPSHLoss``: buffers U (n × bits) and Y (n × classes) from zeros."""

    def __init__(self, alpha: float, gamma: float, lamda: float, variant: str) -> None:
        self.alpha, self.gamma, self.lamda, self.variant = alpha, gamma, lamda, variant
        self.U = torch.zeros(N, K, dtype=F64)
        self.Y = torch.zeros(N, C, dtype=F64)

    def forward(self, u: torch.Tensor, y: torch.Tensor, ind: list[int]) -> torch.Tensor:
        u = u / (u.abs() + 1)
        self.U[ind, :] = u.data
        self.Y[ind, :] = y
        s = y @ self.Y.t()
        norm = y.pow(2).sum(dim=1, keepdim=True).pow(0.5) @ self.Y.pow(2).sum(dim=1, keepdim=True).pow(0.5).t()
        s = s / (norm + 0.00001)
        M = (s > 0.99).to(F64) + (s < 0.01).to(F64)
        inner = self.alpha * u @ self.U.t()
        log_loss = torch.log(1 + torch.exp(-inner.abs())) + inner.clamp(min=0) - s * inner
        if self.variant == "isdh":
            loss1 = (self.gamma * M * log_loss + (1 - M) * (s - torch.sigmoid(inner)).pow(2)).mean()
        else:
            mse = (inner + K - 2 * s * K).pow(2)
            loss1 = (M * log_loss + self.gamma * (1 - M) * mse).mean()
        return loss1 + self.lamda * (u.abs() - 1).abs().mean()


@pytest.mark.parametrize("variant", ["idhn", "isdh"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_idhn_loss_is_deephash_pytorchs(multi_label: bool, variant: str) -> None:
    """Two steps against the memory (rows 10, 11 never written: zero labels in the reference's buffer); the
    multi-label batch has soft pairs (cosine 1/√2, 1/2, …) that take the squared term. Fails if the soft pairs
    took the likelihood too (M = 1 throughout) or unwritten rows counted by their labels."""
    labels = labels_of(N, multi_label)
    gamma = 0.1 if variant == "idhn" else 10.0
    method = IDHN(K, {"alpha": 0.5, "gamma": gamma, "lamda": 0.3, "variant": variant}, CPU)
    method.setup(TrainingData(num_items=N, labels=labels.float()))
    reference = ReferenceIDHN(0.5, gamma, 0.3, variant)
    first, second = [0, 1, 2, 3, 4, 5, 8], [2, 3, 5, 6, 7, 9]
    u_first, u_second = outputs(7, seed=11), outputs(6, seed=12)
    hashkit_step(method, u_first, batch(labels, first))
    reference.forward(u_first, labels[first], first)
    value, grad = hashkit_step(method, u_second, batch(labels, second))
    saved_U, saved_Y = reference.U.clone(), reference.Y.clone()

    def f(v: torch.Tensor) -> torch.Tensor:
        reference.U, reference.Y = saved_U.clone(), saved_Y.clone()
        return reference.forward(v, labels[second], second)

    assert_close(value, grad, *value_and_grad(f, u_second))
    cosine = torch.nn.functional.normalize(labels[second], dim=1) @ torch.nn.functional.normalize(labels, dim=1).t()
    assert multi_label == bool(((cosine > 0.01) & (cosine < 0.99)).any())  # soft pairs only in the multi-label batch


def test_idhn_unknown_variant_is_one_line() -> None:
    method = IDHN(K, {"variant": "dpsh"}, CPU)
    with pytest.raises(HashkitError, match="--variant 'dpsh' is unknown; valid: idhn, isdh"):
        method.setup(TrainingData(num_items=N, labels=labels_of(N, False).float()))


# ---------------------------------------------------------------------------------------------- DBDH


class ReferenceDBDH:
    """DeepHash-pytorch DBDH.py ``DPSHLoss`` (FIRe's dbdh.py is the same with ``ind`` given): buffers U (n × bits)
    and Y (n × classes) from zeros, u clamped to [−1, 1] before it is written."""

    def __init__(self, alpha: float, p: int) -> None:
        self.alpha, self.p = alpha, p
        self.U = torch.zeros(N, K, dtype=F64)
        self.Y = torch.zeros(N, C, dtype=F64)

    def forward(self, u: torch.Tensor, y: torch.Tensor, ind: list[int]) -> torch.Tensor:
        u = u.clamp(min=-1, max=1)
        self.U[ind, :] = u.data
        self.Y[ind, :] = y
        s = (y @ self.Y.t() > 0).to(F64)
        inner = u @ self.U.t() * 0.5
        likelihood = ((1 + (-(inner.abs())).exp()).log() + inner.clamp(min=0) - s * inner).mean()
        if self.p == 1:
            quantization = self.alpha * u.mean(dim=1).abs().mean()
        else:
            quantization = self.alpha * u.mean(dim=1).pow(2).mean()
        return likelihood + quantization


@pytest.mark.parametrize("power", [2, 1])
@pytest.mark.parametrize("multi_label", [False, True])
def test_dbdh_loss_is_deephash_pytorchs(multi_label: bool, power: int) -> None:
    """Two steps against the memory; outputs of scale 1.5, so many entries lie beyond the clamp (zero gradient
    there). Fails if the balance term averaged over the batch before the bits (a per-bit balance,
    ``u.mean(dim=0)``) or the clamp were left out."""
    labels = labels_of(N, multi_label)
    method = DBDH(K, {"alpha": 0.7, "power": power}, CPU)
    method.setup(TrainingData(num_items=N, labels=labels.float()))
    reference = ReferenceDBDH(0.7, power)
    first, second = [0, 1, 2, 3, 4], [3, 4, 5, 6, 7, 8]
    u_first, u_second = outputs(5, seed=21), outputs(6, seed=22)
    hashkit_step(method, u_first, batch(labels, first))
    reference.forward(u_first, labels[first], first)
    value, grad = hashkit_step(method, u_second, batch(labels, second))
    saved_U, saved_Y = reference.U.clone(), reference.Y.clone()

    def f(v: torch.Tensor) -> torch.Tensor:
        reference.U, reference.Y = saved_U.clone(), saved_Y.clone()
        return reference.forward(v, labels[second], second)

    assert_close(value, grad, *value_and_grad(f, u_second))
    assert (u_second.abs() > 1).any() and (grad[u_second.abs() > 1] == 0).all()


def train_dbdh_head(head_name: str, offset: float, n: int = 600, d: int = 64, bits: int = 16, classes: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A hash head alone on fixed clustered features (ReLU'd, like pooled CNN features, plus ``offset`` on every
    dimension), trained by DBDH's hooks with Adam (lr 2e-3, batch 60, 8 epochs, as the CPU recipe's head step).
    Returns the head's eval-mode outputs on the training features and their classes."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    classes_of = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=generator)
    features = torch.relu(centres[classes_of] + torch.randn(n, d, generator=generator)) + offset
    labels = torch.nn.functional.one_hot(classes_of, classes).float()
    head = build_head(head_name, d, bits)
    method = DBDH(bits, {}, CPU)
    method.setup(TrainingData(num_items=n, labels=labels))
    optimiser = torch.optim.Adam(head.parameters(), lr=2e-3)
    for _ in range(8):
        for index in torch.randperm(n, generator=generator).split(60):
            u = head(features[index])
            method.observe(u.detach(), index)
            loss = sum(method.training_step(u, Batch(inputs=features[index], labels=labels[index], index=index)).values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    head.eval()
    with torch.no_grad():
        return head(features), classes_of


def test_dbdh_on_features_with_a_common_offset_falls_into_one_code_beyond_its_clamp() -> None:
    """Why DBDH's CIFAR-10 cell on the linear head was far below the others (docs/results.md, note 12):
    features that share a large common component move every item's outputs together, and DBDH's clamp to
    [−1, 1] passes no gradient beyond ±1, so once every output lies beyond it (all items on one code) nothing
    moves them back — the likelihood is then (1 − p_similar) × bits / 2 for good. Centring the outputs over the batch (the ``bn``
    head, DBDH's CPU recipe) removes the common component. Fails if the clamp were dropped from the
    relaxation (no absorbing state) or if the ``bn`` head stopped centring."""
    collapsed, _ = train_dbdh_head("linear", offset=3.0)
    assert len({tuple(row) for row in torch.sign(collapsed).tolist()}) == 1
    assert (collapsed.abs() > 1).all()  # every output beyond the clamp: a zero gradient everywhere
    without_offset, _ = train_dbdh_head("linear", offset=0.0)
    assert len({tuple(row) for row in torch.sign(without_offset).tolist()}) > 6
    centred, classes_of = train_dbdh_head("bn", offset=3.0)
    codes = torch.sign(centred)
    same_code = (codes @ codes.t() == codes.shape[1])
    other_class = classes_of[:, None] != classes_of[None, :]
    assert same_code[other_class].float().mean() < 0.05  # classes apart
    assert (codes.mean(dim=0).abs() < 0.7).all()  # no bit constant over the items


def test_dbdh_unknown_power_is_one_line() -> None:
    method = DBDH(K, {"power": 3}, CPU)
    with pytest.raises(HashkitError, match="--power 3 is not supported; valid: 1, 2"):
        method.setup(TrainingData(num_items=N, labels=labels_of(N, False).float()))


# ---------------------------------------------------------------------------------------------- LCDSH


def reference_lcdsh(u: torch.Tensor, y: torch.Tensor, lamda: float) -> torch.Tensor:
    """DeepHash-pytorch LCDSH.py ``LCDSHLoss``: s = 2(y yᵀ > 0) − 1, θ = clamp(½ u uᵀ, −50, 50),
    L1 = mean log(1 + exp(−s θ)), b = sign u, L2 = mean (σ(θ) − σ(½ b bᵀ))²; L1 + λ L2."""
    s = 2 * (y @ y.t() > 0).to(F64) - 1
    inner = (u @ u.t() * 0.5).clamp(min=-50, max=50)
    L1 = torch.log(1 + torch.exp(-s * inner)).mean()
    b = u.sign()
    L2 = (inner.sigmoid() - (b @ b.t() * 0.5).sigmoid()).pow(2).mean()
    return L1 + lamda * L2


@pytest.mark.parametrize("multi_label", [False, True])
def test_lcdsh_loss_is_deephash_pytorchs(multi_label: bool) -> None:
    """In-batch pairs with ±1 similarities; one pair of outputs scaled up so that its θ passes the clamp at 50
    (zero gradient from that pair, as the reference). Fails if the similarities were 0/1 instead of ±1."""
    labels = labels_of(7, multi_label)
    method = LCDSH(K, {"lamda": 2.5}, CPU)
    method.setup(TrainingData(num_items=7, labels=labels.float()))
    u = outputs(7, seed=31, scale=0.7)
    u[5] = 4.0 * u[5].sign() + 0.1 * u[5]  # ½ ‖u_5‖² > 50: its diagonal θ is clamped
    value, grad = hashkit_step(method, u, batch(labels, list(range(7))))
    f = lambda v: reference_lcdsh(v, labels, 2.5)  # noqa: E731
    assert_close(value, grad, *value_and_grad(f, u))
    assert 0.5 * float(u[5] @ u[5]) > 50


# ---------------------------------------------------------------------------------------------- DSHSD


def reference_dshsd(u: torch.Tensor, y: torch.Tensor, W: torch.Tensor, alpha: float, nuswide: bool) -> torch.Tensor:
    """DeepHash-pytorch DSHSD.py ``DSHSDLoss``: u = tanh u, m = 2·bits, dist from the pairwise differences,
    s = (y yᵀ == 0), Ld = α mean((1 − s)/2 dist + s/2 max(m − dist, 0)), o = fc(u) (weight W, no bias);
    formula 8 (``"nuswide" in dataset``): mean Σ_c (o − y o + log(1 + e^{−o})), else formula 7:
    mean Σ_c −y log softmax(o); Lc + Ld."""
    u = torch.tanh(u)
    m = 2 * u.shape[1]
    dist = (u.unsqueeze(1) - u.unsqueeze(0)).pow(2).sum(dim=2)
    s = (y @ y.t() == 0).to(F64)
    Ld = alpha * ((1 - s) / 2 * dist + s / 2 * (m - dist).clamp(min=0)).mean()
    o = u @ W.t()
    if nuswide:
        Lc = (o - y * o + ((1 + (-o).exp()).log())).sum(dim=1).mean()
    else:
        Lc = (-o.softmax(dim=1).log() * y).sum(dim=1).mean()
    return Lc + Ld


@pytest.mark.parametrize("classifier", ["fixed", "trained"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_dshsd_loss_is_deephash_pytorchs(multi_label: bool, classifier: str) -> None:
    """In-batch contrastive term on tanh codes (outputs of scale 0.4, so that the margin 2·bits is active for
    dissimilar pairs) plus the classification of the codes by the classifier's weight; the multi-label training
    set takes formula 8 (``--classification auto``). Fails if the multi-label loss were the softmax one, or the
    fixed classifier changed between steps."""
    labels = labels_of(7, multi_label)
    method = DSHSD(K, {"alpha": 0.3, "classifier": classifier}, CPU)
    method.setup(TrainingData(num_items=7, labels=labels.float()))
    assert method.multi_label == multi_label
    W = method.classifier_weight.detach().double().clone()
    assert W.shape == (C, K) and float(W.abs().max()) <= 1 / K**0.5
    u = outputs(7, seed=41, scale=0.4)
    value, grad = hashkit_step(method, u, batch(labels, list(range(7))))
    f = lambda v: reference_dshsd(v, labels, W, 0.3, multi_label)  # noqa: E731
    assert_close(value, grad, *value_and_grad(f, u))
    if classifier == "trained":
        assert method.module is not None and method.module.weight.grad is not None
    else:
        assert method.module is None and torch.equal(method.classifier_weight.double(), W)


def test_dshsd_unknown_choices_are_one_line() -> None:
    labels = labels_of(7, False).float()
    with pytest.raises(HashkitError, match="--classifier 'linear' is unknown; valid: fixed, trained"):
        DSHSD(K, {"classifier": "linear"}, CPU).setup(TrainingData(num_items=7, labels=labels))
    with pytest.raises(HashkitError, match="--classification 'ce' is unknown; valid: auto, softmax, sigmoid"):
        DSHSD(K, {"classification": "ce"}, CPU).setup(TrainingData(num_items=7, labels=labels))

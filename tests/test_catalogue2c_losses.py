"""Catalogue II, third part (issue 30): MIHash against its reference code.

Each ``reference_*`` below transcribes a reference's loss in plain torch (float64), without hashkit's helpers:
fcakir/deep-mihash's ``mihash/mi_forward.m`` (value) and ``mihash/mi_backward.m`` (its hand-written gradient,
transcribed as well: no autograd on the reference side) and CISiPLab/cisip-FIRe's ``functions/loss/mihash.py``
(value, autograd for its gradient). The hashkit method is driven through its own hooks (``setup`` /
``training_step``) on the same fixed tensors, single- and multi-label; the loss value and its gradient with
respect to the batch outputs must agree.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, TrainingData
from hashkit.methods.mihash import MIHash

CPU = torch.device("cpu")
K, C = 8, 4  # bits, classes
F64 = torch.float64


def labels_of(count: int, multi_label: bool) -> torch.Tensor:
    """Item i has class i % C; multi-label: a few items have a second (or third) class."""
    labels = torch.zeros(count, C, dtype=F64)
    labels[torch.arange(count), torch.arange(count) % C] = 1
    if multi_label:
        labels[0, 2] = labels[3, 1] = labels[5, 0] = labels[count - 2, 3] = 1
        labels[6, 1] = labels[6, 3] = 1
    return labels


def outputs(rows: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    """Random outputs whose second half is about the negation of the first, so the distances spread over the
    whole range [0, bits], the top bin included."""
    u = scale * torch.randn(rows, K, generator=torch.Generator().manual_seed(seed), dtype=F64)
    half = rows // 2
    u[half : 2 * half] = -u[:half] + 0.5 * torch.randn(half, K, generator=torch.Generator().manual_seed(seed + 100), dtype=F64)
    return u


def batch(labels: torch.Tensor) -> Batch:
    return Batch(inputs=torch.zeros(len(labels), 1), labels=labels, index=torch.arange(len(labels)))


def hashkit_step(method: Any, u: torch.Tensor, b: Batch) -> tuple[float, torch.Tensor]:
    """The Trainer's calls for one step (observe, then training_step); the summed loss and du."""
    method.observe(u.detach(), b.index)
    u = u.clone().requires_grad_(True)
    loss = sum(method.training_step(u, b).values())
    loss.backward()
    return float(loss.detach()), u.grad


def autograd(f: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> tuple[float, torch.Tensor]:
    u = u.clone().requires_grad_(True)
    value = f(u)
    value.backward()
    return float(value.detach()), u.grad


# ---------------------------------------------------------------------------------------------- MIHash


def _log2_or_zero(p: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(p)
    out[p > 0] = torch.log2(p[p > 0])
    return out


def reference_mihash_authors(u: torch.Tensor, y: torch.Tensor, nbins: int) -> tuple[float, torch.Tensor]:
    """fcakir/deep-mihash mi_forward.m and mi_backward.m (sigmf_p 1), X = uᵀ (bits × N). Returns −top.x (the
    forward's comment: "maximize MI -> minimize -MI") and the backward's bot.dzdx (the gradient of −MI)."""
    X = u.t()
    nbits, N = X.shape
    Aff = (y @ y.t()) > 0
    Xp = (Aff.to(F64) - torch.diag(torch.diag(Aff.to(F64)))) > 0
    Xn = ~Aff
    phi = 2 * torch.sigmoid(X) - 1
    hdist = (nbits - phi.t() @ phi) / 2
    Delta = nbits / nbins
    Cntrs = [Delta * k for k in range(nbins + 1)]  # 0:Delta:nbits
    L = len(Cntrs)
    prCp = Xp.to(F64).sum(1) / (N - 1)
    prCn = 1 - prCp
    pDCp, pDCn = torch.zeros(N, L, dtype=F64), torch.zeros(N, L, dtype=F64)
    for l, mid in enumerate(Cntrs):  # triPulse
        ind = (mid - Delta < hdist) & (hdist <= mid + Delta)
        pulse = (1 - (hdist - mid).abs() / Delta) * ind
        pDCp[:, l] = (pulse * Xp).sum(1)
        pDCn[:, l] = (pulse * Xn).sum(1)
    pD = (pDCp + pDCn) / (N - 1)
    sum_p, sum_n = pDCp.sum(1), pDCn.sum(1)
    pDCp[sum_p > 0] = pDCp[sum_p > 0] / sum_p[sum_p > 0, None]
    pDCn[sum_n > 0] = pDCn[sum_n > 0] / sum_n[sum_n > 0, None]
    ent = lambda p: -(p * _log2_or_zero(p)).sum(1)  # noqa: E731
    mi = (ent(pD) - (prCp * ent(pDCp) + prCn * ent(pDCn))).sum()

    deriv_ent = lambda p: -1 - _log2_or_zero(p)  # noqa: E731  (−1 where p = 0)
    d_H_pD = deriv_ent(pD)
    d_L_pDCp = -(prCp[:, None] * d_H_pD - prCp[:, None] * deriv_ent(pDCp))
    d_L_pDCn = -(prCn[:, None] * d_H_pD - prCn[:, None] * deriv_ent(pDCn))
    d_L_phi = torch.zeros(nbits, N, dtype=F64)
    Np, Nn = Xp.to(F64).sum(1), Xn.to(F64).sum(1)
    invalid = (Np == 0) | (Nn == 0)
    for l, mid in enumerate(Cntrs):  # triPulseDeriv
        ind1 = (hdist > mid - Delta) & (hdist <= mid)
        ind2 = (hdist > mid) & (hdist <= mid + Delta)
        dpulse = (ind1.to(F64) - ind2.to(F64)) / Delta
        ddp, ddn = dpulse * Xp, dpulse * Xn
        alpha_p = torch.where(invalid, 0.0, d_L_pDCp[:, l] / Np)
        alpha_n = torch.where(invalid, 0.0, d_L_pDCn[:, l] / Nn)
        Ap = ddp @ torch.diag(alpha_p) + torch.diag(alpha_p) @ ddp
        An = ddn @ torch.diag(alpha_n) + torch.diag(alpha_n) @ ddn
        d_L_phi = d_L_phi - 0.5 * phi @ (Ap + An)
    sigmoid = (phi + 1) / 2
    d_L_x = d_L_phi * 2 * sigmoid * (1 - sigmoid)
    return -float(mi), d_L_x.t()


def reference_mihash_fire(u: torch.Tensor, y: torch.Tensor, nbins: int) -> torch.Tensor:
    """CISiPLab/cisip-FIRe functions/loss/mihash.py MIHashLoss.forward, negated (it returns +MI, see
    methods/mihash.py on the sign)."""
    N, nbits = u.shape
    aff = ((y @ y.t()) >= 1).to(F64)
    aff = aff - torch.diag(torch.diag(aff))
    xp, xn = aff, 1 - aff
    phi = 2 * torch.sigmoid(u) - 1
    dist = (u.shape[1] - phi @ phi.t()) / 2
    prCp = xp.sum(1) / (N - 1)
    prCn = 1 - prCp
    nbins = nbins or nbits // 2
    pDCp, pDCn = torch.zeros(N, nbins, dtype=F64), torch.zeros(N, nbins, dtype=F64)
    delta = nbits // nbins
    centers = torch.arange(0, nbits, delta)
    for b in range(nbins):
        mid = centers[b].item()
        ind = (mid - delta < dist) & (dist <= mid + delta)
        pulse = (1 - (dist - mid).abs() / delta) * ind.to(F64)
        pDCp[:, b] = (pulse * xp).sum(1)
        pDCn[:, b] = (pulse * xn).sum(1)
    pD = (pDCp + pDCn) / (N - 1)
    sum_p, sum_n = pDCp.sum(1), pDCn.sum(1)
    nz_p, nz_n = sum_p > 0, sum_n > 0
    pDCp[nz_p, :] /= sum_p[nz_p].unsqueeze(1)
    pDCn[nz_n, :] /= sum_n[nz_n].unsqueeze(1)
    ent = lambda p: -(p * torch.log(p + 1e-7)).sum(1)  # noqa: E731
    loss = ent(pD) - (prCp * ent(pDCp) + prCn * ent(pDCn))
    return -loss.sum()


def mihash(bins: int, estimator: str) -> MIHash:
    method = MIHash(K, {"bins": bins, "estimator": estimator}, CPU)
    method.setup(TrainingData(num_items=10, labels=labels_of(10, True).float()))
    return method


@pytest.mark.parametrize("bins", [4, 3, 0])
@pytest.mark.parametrize("multi_label", [False, True])
def test_mihash_is_the_authors_forward_and_backward(multi_label: bool, bins: int) -> None:
    """``--estimator authors``: the value is −(mi_forward.m's top.x) and the gradient is mi_backward.m's bot.dzdx,
    computed by its own formulas (not autograd). bins 3 does not divide 8 bits (Δ = 8/3); bins 0 is bits / 2.
    Fails if methods/mihash.py's authors branch took ``range(bins)`` centres (FIRe's, without the top one at bits)."""
    labels = labels_of(10, multi_label)
    u = outputs(10, seed=3)
    value, grad = hashkit_step(mihash(bins, "authors"), u, batch(labels))
    ref_value, ref_grad = reference_mihash_authors(u, labels, bins or K // 2)
    assert value < 0  # −I(D; C): a positive mutual information
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bins", [4, 3, 0])
@pytest.mark.parametrize("multi_label", [False, True])
def test_mihash_fire_estimator_is_fires(multi_label: bool, bins: int) -> None:
    """``--estimator fire``: value and autograd gradient of FIRe's forward (negated), with its integer Δ = bits //
    bins, its missing top centre, the anchor among the non-neighbours and log(p + 1e-7)."""
    labels = labels_of(10, multi_label)
    u = outputs(10, seed=4)
    value, grad = hashkit_step(mihash(bins, "fire"), u, batch(labels))
    ref_value, ref_grad = autograd(lambda v: reference_mihash_fire(v, labels, bins), u)
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-5, atol=1e-8)


def test_mihash_step_raises_the_mutual_information() -> None:
    """A small gradient step on −I raises I (the paper's sign; FIRe's +I would lower it)."""
    labels = labels_of(10, False)
    u = outputs(10, seed=5, scale=0.5)
    method = mihash(4, "authors")
    value, grad = hashkit_step(method, u, batch(labels))
    after, _ = hashkit_step(method, u - 0.05 * grad / grad.norm(), batch(labels))
    assert after < value


def test_mihash_bad_hyperparameters_are_one_line() -> None:
    for hp in ({"bins": 0, "estimator": "matlab"}, {"bins": 9, "estimator": "fire"}, {"bins": -1, "estimator": "fire"}):
        with pytest.raises(HashkitError) as error:
            MIHash(K, hp, CPU).setup(TrainingData(num_items=4, labels=labels_of(4, False).float()))
        assert "\n" not in str(error.value)

"""Catalogue II, third part (issue 30): MIHash, MDSH, HyP² and QSMIH against their reference code.

Each ``reference_*`` below transcribes a reference's loss in plain torch (float64), without hashkit's helpers:
fcakir/deep-mihash's ``mihash/mi_forward.m`` (value) and ``mihash/mi_backward.m`` (its hand-written gradient,
transcribed as well: no autograd on the reference side) and CISiPLab/cisip-FIRe's ``functions/loss/mihash.py``
(value, autograd for its gradient); Wangld5/Center-Hashing's ``optimizeAccel.py`` (MDSH's centers: get_margin,
Lp_box_one, Lp_box) and ``loss/ourLoss.py`` (its loss, autograd); JerryXu0129/HyP2-Loss's ``model.py`` (``HyP``,
autograd) with the threshold of its ``codetable.xlsx``; swuxyj/DeepHash-pytorch's ``QSMIH.py`` and passalis/qsmi's
``hashing/qmi_hashing.py`` (autograd). The hashkit method is driven through its own hooks (``setup`` /
``training_step``) on the same fixed tensors, single- and multi-label; the loss value and its gradient with
respect to the batch outputs must agree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import hadamard
from scipy.special import comb

from hashkit.errors import HashkitError
from hashkit.method import Batch, TrainingData
from hashkit.method_parts.centers import (
    hadamard_centers, lp_box_center, minimal_distance_bound, minimal_distance_separated_centers, optimise_min_distance,
    pairwise_hamming,
)
from hashkit.method_parts.proxies import code_bound_cosine
from hashkit.methods.hyp2 import HyP2
from hashkit.methods.mdsh import MDSH
from hashkit.methods.mihash import MIHash
from hashkit.methods.qsmih import QSMIH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_helpers import F64, hashkit_step, labels_of, value_and_grad  # noqa: E402

CPU = torch.device("cpu")
K, C = 8, 4  # bits, classes


def outputs(rows: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    """Random outputs whose second half is about the negation of the first, so the distances spread over the
    whole range [0, bits], the top bin included."""
    u = scale * torch.randn(rows, K, generator=torch.Generator().manual_seed(seed), dtype=F64)
    half = rows // 2
    u[half : 2 * half] = -u[:half] + 0.5 * torch.randn(half, K, generator=torch.Generator().manual_seed(seed + 100), dtype=F64)
    return u


def batch(labels: torch.Tensor) -> Batch:
    return Batch(inputs=torch.zeros(len(labels), 1), labels=labels, index=torch.arange(len(labels)))


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
    ref_value, ref_grad = value_and_grad(lambda v: reference_mihash_fire(v, labels, bins), u)
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


def test_merging_two_classes_costs_mihash_more_than_qsmih(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/probe_class_merging.py, cited by docs/results.md note 12: one merged pair of classes gives back
    ~0.1 of MIHash's ideal-to-one-code gap and ~0.015 of QSMIH's, so MIHash's objective is not what lets it merge."""
    import runpy

    runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "probe_class_merging.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    shares = {line.split(":")[0]: [float(part.split()[-1]) for part in line.split("—")[1].split(",")] for line in lines}
    assert shares["batch 64, 1 merged pair(s)"] == pytest.approx([0.106, 0.016], abs=1e-3)
    assert shares["batch 256, 5 merged pair(s)"] == pytest.approx([0.430, 0.118], abs=1e-3)


def test_mihash_bad_hyperparameters_are_one_line() -> None:
    for hp in ({"bins": 0, "estimator": "matlab"}, {"bins": 9, "estimator": "fire"}, {"bins": -1, "estimator": "fire"}):
        with pytest.raises(HashkitError) as error:
            MIHash(K, hp, CPU).setup(TrainingData(num_items=4, labels=labels_of(4, False).float()))
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------- MDSH


def reference_get_margin(bit: int, n_class: int) -> int:
    """Wangld5/Center-Hashing optimizeAccel.py get_margin's d_max (loss/ourLoss.py's is the same loop)."""
    L, right, d_max = bit, (2**bit) / n_class, 0
    for dim in range(2 * L + 4):
        sum_1 = sum(comb(L, j) for j in range(dim))
        sum_2 = sum(comb(L, j) for j in range(dim - 1))
        if sum_1 >= right and sum_2 < right:
            d_max = dim
            break
    return d_max


def reference_lp_box_one(b: torch.Tensor, H: torch.Tensor, d_max: int, generator: torch.Generator) -> torch.Tensor:
    """optimizeAccel.py Lp_box_one (rho 1e-5, gamma golden ratio, error 1e-6), its multipliers drawn with
    torch.rand from ``generator`` (y1, y2, y3 in that order) where the reference calls np.random.rand."""
    bit, n_other = b.shape[0], H.shape[0]
    rho, gamma, error = 1e-5, (1 + 5**0.5) / 2, 1e-6
    d = bit - 2 * d_max
    C = torch.ones(n_other, dtype=F64) @ H / n_other

    def cal_one_hamm(x: torch.Tensor) -> tuple[float, float]:
        temp = 0.5 * (bit - H @ x)
        return float(temp.mean() + temp.min() - temp.var(unbiased=False)), float(temp.min())

    count = 0
    best_eval, best_min = cal_one_hamm(torch.sign(b))
    best_B = b
    z1, z2, z3 = b.clone(), b.clone(), d - H @ torch.sign(b)
    y1 = torch.rand(bit, generator=generator, dtype=F64)
    y2 = torch.rand(bit, generator=generator, dtype=F64)
    y3 = torch.rand(n_other, generator=generator, dtype=F64)
    for _ in range(1000):
        for _ in range(10):
            left = (rho + rho) * torch.eye(bit, dtype=F64) + rho * H.t() @ H
            right = rho * z1 + rho * z2 + rho * H.t() @ (d - z3) - y1 - y2 - H.t() @ y3 - C
            b = torch.inverse(left) @ right
            z1 = b + 1 / rho * y1
            z2 = b + 1 / rho * y2
            z3 = d - H @ b - 1 / rho * y3
            in_range = not bool(((z1 < -1) & (z1 > 1)).any()) and not bool((z3 < 0).any()) and abs(float((z2**2).sum()) - bit) <= 0.001
            if in_range:
                y1 = y1 + gamma * rho * (b - z1)
                y2 = y2 + gamma * rho * (b - z2)
                y3 = y3 + gamma * rho * (H @ b + z3 - d)
                break
            z1 = z1.clamp(-1, 1)
            z2 = bit**0.5 * z2 / torch.linalg.norm(z2)
            z3 = z3.clamp(min=0)
            y1 = y1 + gamma * rho * (b - z1)
            y2 = y2 + gamma * rho * (b - z2)
            y3 = y3 + gamma * rho * (H @ b + z3 - d)
        rho = min(1.09 * rho, 1e7)
        if rho == 1e7:
            count += 1
            ev, mini = cal_one_hamm(torch.sign(b))
            if ev > best_eval or mini > best_min:
                best_eval, best_min, best_B = ev, mini, torch.sign(b)
        if max((b - z1).abs().max(), (b - z2).abs().max(), (H @ b + z3 - d).abs().max()) < error:
            break
        if count == 100:
            break
    return best_B


def reference_lp_box(B: torch.Tensor, d_max: int, generator: torch.Generator) -> torch.Tensor:
    """optimizeAccel.py Lp_box (50 sweeps; cal_hamm's mean + min − var; stop at min ≥ d_max), best_st 0."""
    B = B.clone()
    best_B, best_st = B.clone(), 0.0
    for _ in range(50):
        for i in range(B.shape[0]):
            H = torch.cat((B[:i], B[i + 1 :]))
            B[i] = reference_lp_box_one(B[i], H, d_max, generator)
        dist = torch.tensor([float((B[i] != B[j]).sum()) for i in range(len(B)) for j in range(i + 1, len(B))], dtype=F64)
        st = float(dist.mean() + dist.min() - dist.var(unbiased=False))
        if st > best_st:
            best_st, best_B = st, B.clone()
        if dist.min() >= d_max:
            break
    return best_B


def reference_mdsh_loss(
    u: torch.Tensor, y: torch.Tensor, ind: list[int], U: torch.Tensor, Y: torch.Tensor, centers: torch.Tensor,
    hp: dict[str, Any], epoch: int,
) -> torch.Tensor:  # fmt: skip
    """loss/ourLoss.py OurLoss.forward: U[ind] = u2 (here u itself, detached: no momentum encoder), then
    cos_eps_loss + beta × moco_pairloss (epoch ≥ epoch_change) + lambda × mean (|u| − 1)²; u is tanh'd already."""
    U = U.clone()
    U[ind] = u.detach()
    K = u.shape[1]
    u_norm = u / u.norm(dim=1, keepdim=True)
    centers_norm = centers / centers.norm(dim=1, keepdim=True)
    p = torch.softmax(K**0.5 * (u_norm @ centers_norm.t()), dim=1)
    s = y @ torch.eye(centers.shape[0], dtype=F64).t()
    cos_loss = -torch.mean(s * torch.log(p) + (1 - s) * torch.log(1 - p))
    pair_loss = 0.0
    if epoch >= hp["pair_from_epoch"]:
        last_u = U / U.norm(dim=1, keepdim=True)
        last_sim = ((y @ Y.t()) > 0).to(F64)
        last_cos = u_norm @ last_u.t()
        pair_loss = torch.sum(last_sim * torch.log(1 + torch.exp(0.5 * (1 - last_cos)))) / torch.sum(last_sim)
    return cos_loss + hp["beta"] * pair_loss + hp["lamda"] * (u.abs() - 1).pow(2).mean()


@pytest.mark.parametrize(("bits", "classes"), [(8, 4), (12, 10), (32, 10), (64, 100), (16, 21)])
def test_mdsh_distance_bound_is_get_margins(bits: int, classes: int) -> None:
    assert minimal_distance_bound(bits, classes) == reference_get_margin(bits, classes)


def test_mdsh_center_step_is_lp_box_one() -> None:
    """One center moved against the others, the same multipliers' draws: random ±1 codes of 12 classes at 4 bits
    (the bound is 2), the last center moved by the ADMM — one of the few small cases where the reference's solver
    runs until ρ = 1e7 and changes the center. Fails if ``lp_box_center`` in hashkit/method_parts/centers.py bounded
    the inner products by bits − distance instead of bits − 2·distance."""
    codes = torch.randint(0, 2, (12, 4), generator=torch.Generator().manual_seed(0)).to(F64) * 2 - 1
    bound = reference_get_margin(4, 12)
    got = lp_box_center(codes[-1].numpy(), codes[:-1].numpy(), bound, torch.Generator().manual_seed(0))
    expected = reference_lp_box_one(codes[-1], codes[:-1], bound, torch.Generator().manual_seed(0))
    assert torch.equal(torch.from_numpy(got), expected)
    assert not torch.equal(expected, codes[-1])  # the center moved


def test_mdsh_converged_solver_keeps_a_converged_center() -> None:
    """CSQ's 8-bit codes of 4 classes with the last replaced by the first with one bit flipped (distance 1, the
    bound 4): the reference's solver converges before ρ = 1e7 and returns the center unchanged; ``keep_converged``
    (``--center-solver converged``) takes the converged code, at least 4 from every other."""
    codes = torch.tensor(hadamard(8)[:4], dtype=F64)
    codes[3] = codes[0]
    codes[3, 3] *= -1
    expected = reference_lp_box_one(codes[3], codes[:3], 4, torch.Generator().manual_seed(7))
    assert torch.equal(expected, codes[3])
    assert torch.equal(torch.from_numpy(lp_box_center(codes[3].numpy(), codes[:3].numpy(), 4, torch.Generator().manual_seed(7))), expected)
    moved = torch.from_numpy(lp_box_center(codes[3].numpy(), codes[:3].numpy(), 4, torch.Generator().manual_seed(7), True))
    assert (0.5 * (8 - codes[:3] @ moved)).min() >= 4


def test_mdsh_center_sweeps_are_lp_box() -> None:
    """The sweeps from CSQ's codes (3 classes at 8 bits, already 4 apart: one sweep, then the stop) equal the
    reference's ``Lp_box``, and the method's centers are these."""
    start = torch.tensor(hadamard(8)[:3], dtype=F64)
    bound = reference_get_margin(8, 3)
    got = optimise_min_distance(start.float(), bound, torch.Generator().manual_seed(3))
    expected = reference_lp_box(start, bound, torch.Generator().manual_seed(3))
    assert torch.equal(got.double(), expected)
    assert pairwise_hamming(got).min() >= bound
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(minimal_distance_separated_centers(3, 8), optimise_min_distance(hadamard_centers(3, 8), bound, generator))


@pytest.mark.parametrize("epoch", [0, 9])
@pytest.mark.parametrize("multi_label", [False, True])
def test_mdsh_loss_is_the_references(multi_label: bool, epoch: int) -> None:
    """Center loss, quantisation and (epoch ≥ 9) pair term against a memory written by a previous pass, with the
    method's own centers; values and gradients with respect to the outputs before tanh. Fails if
    ``mdsh_center_loss`` dropped the √K scale of the cosines."""
    n = 12
    labels = labels_of(n, multi_label)
    hp = {"lamda": 0.3, "beta": 0.7, "pair_from_epoch": 9}
    method = MDSH(K, hp, CPU)
    method.setup(TrainingData(num_items=n, labels=labels.float()))
    centers = method.centers.double()
    assert pairwise_hamming(centers).min() >= minimal_distance_bound(K, C)
    previous = torch.tanh(outputs(n, seed=6, scale=1.0))
    method.observe(torch.atanh(previous).float(), torch.arange(n))
    method.on_epoch_start(epoch)
    ind = [1, 4, 5, 8, 11]
    u = outputs(len(ind), seed=7, scale=1.0)
    b = Batch(inputs=torch.zeros(len(ind), 1), labels=labels[ind], index=torch.tensor(ind))
    value, grad = hashkit_step(method, u, b)
    ref_value, ref_grad = value_and_grad(
        lambda v: reference_mdsh_loss(torch.tanh(v), labels[ind], ind, previous, labels, centers, hp, epoch), u
    )
    assert value == pytest.approx(ref_value, rel=1e-5, abs=1e-7)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- HyP²


def reference_hyp2(x: torch.Tensor, batch_y: torch.Tensor, proxies: torch.Tensor, threshold: float, beta: float) -> torch.Tensor:
    """JerryXu0129/HyP2-Loss model.py HyP.forward with ``self.proxies`` = ``proxies`` and config.py's threshold."""
    P_one_hot = batch_y
    cos = F.normalize(x, p=2, dim=1).mm(F.normalize(proxies, p=2, dim=1).T)
    pos = 1 - cos
    neg = F.relu(cos - threshold)
    P_num = len(P_one_hot.nonzero())
    N_num = len((P_one_hot == 0).nonzero())
    pos_term = torch.where(P_one_hot == 1, pos, torch.zeros_like(cos)).sum() / P_num
    neg_term = torch.where(P_one_hot == 0, neg, torch.zeros_like(cos)).sum() / N_num
    if beta > 0:
        index = batch_y.sum(dim=1) > 1
        y_ = batch_y[index].to(F64)
        x_ = x[index]
        cos_sim = y_.mm(y_.T)
        if len((cos_sim == 0).nonzero()) == 0:
            reg_term = 0
        else:
            x_sim = F.normalize(x_, p=2, dim=1).mm(F.normalize(x_, p=2, dim=1).T)
            neg = beta * F.relu(x_sim - threshold)
            reg_term = torch.where(cos_sim == 0, neg, torch.zeros_like(x_sim)).sum() / len((cos_sim == 0).nonzero())
    else:
        reg_term = 0
    return pos_term + neg_term + reg_term


# codetable.xlsx (JerryXu0129/HyP2-Loss), read as config.py does: sheet.row(bits)[ceil(log2(classes))].
CODE_TABLE_CELLS = [(32, 10, 0.0), (32, 100, 0.125), (48, 80, 0.08333333333333337), (8, 4, -0.25), (16, 3, -0.25),
                    (64, 21, 0.0), (12, 2, -1.0), (24, 38, 0.1666666666666666), (128, 1000, 0.0625)]  # fmt: skip


@pytest.mark.parametrize(("bits", "classes", "cell"), CODE_TABLE_CELLS)
def test_hyp2_threshold_is_the_code_tables(bits: int, classes: int, cell: float) -> None:
    """Fails if code_bound_cosine took ⌊log₂ classes⌋ instead of the reference's ⌈log₂ classes⌉."""
    assert code_bound_cosine(bits, classes) == pytest.approx(cell, abs=1e-12)


@pytest.mark.parametrize("beta", [0.5, 0.0])
@pytest.mark.parametrize("multi_label", [False, True])
def test_hyp2_loss_is_the_references(multi_label: bool, beta: float) -> None:
    """Value and gradients (outputs and proxies) against HyP.forward with the method's own proxies and ζ, at 8 bits
    and 4 classes (ζ = −0.25), and at a larger ζ so that the hinges are active on both sides."""
    n = 10
    labels = labels_of(n, multi_label)
    method = HyP2(K, {"beta": beta}, CPU)
    method.setup(TrainingData(num_items=n, labels=labels.float()))
    assert method.threshold == pytest.approx(-0.25)
    method.module.double()
    for threshold in (method.threshold, 0.2):
        method.threshold = threshold
        method.module.zero_grad()
        u = outputs(n, seed=8, scale=1.0)
        value, grad = hashkit_step(method, u, batch(labels))
        proxies = method.module.weight.detach().clone().requires_grad_(True)
        x = u.clone().requires_grad_(True)
        ref = reference_hyp2(x, labels, proxies, threshold, beta)
        ref.backward()
        assert value == pytest.approx(float(ref.detach()), rel=1e-6, abs=1e-9)
        assert torch.allclose(grad.double(), x.grad, rtol=1e-5, atol=1e-8)
        assert torch.allclose(method.module.weight.grad, proxies.grad, rtol=1e-5, atol=1e-8)
    terms = method.training_step(outputs(n, seed=8, scale=1.0), batch(labels))
    assert ("regularizer" in terms) == (multi_label and beta > 0)  # multi-label items sharing no label exist


# ---------------------------------------------------------------------------------------------- QSMIH


def reference_qsmih_deephash(u: torch.Tensor, y: torch.Tensor, alpha: float, use_square_clamp: bool) -> torch.Tensor:
    """swuxyj/DeepHash-pytorch QSMIH.py QSMIHLoss.forward (config alpha, use_square_clamp)."""
    u = u / (torch.sqrt(torch.sum(u**2, dim=1, keepdim=True)) + 1e-8)
    Y = torch.mm(u, u.t())
    Y = 0.5 * (Y + 1)
    D = (y @ y.t() > 0).to(F64)
    M = D.size(1) ** 2 / torch.sum(D)
    if use_square_clamp:
        L_QSMI = (D * Y - 1) ** 2 + (1.0 / M) * Y**2
    else:
        L_QSMI = (1.0 / M) * Y - D * Y
    return L_QSMI.mean() + alpha * (u.abs() - 1).abs().mean()


def reference_qsmih_passalis(documents: torch.Tensor, targets: torch.Tensor, alpha: float, use_square_clamp: bool) -> torch.Tensor:
    """passalis/qsmi hashing/qmi_hashing.py: qmi_loss(sigma 0, M 0, use_cosine) + alpha Σ | |documents| − 1 |
    (train_model_qmi), ``targets`` the class indices."""
    raw = documents
    documents = documents / (torch.sqrt(torch.sum(documents**2, dim=1, keepdim=True)) + 1e-8)
    Y = 0.5 * (torch.mm(documents, documents.t()) + 1)
    D = (targets.view(targets.shape[0], 1) == targets.view(1, targets.shape[0])).to(F64)
    M = D.size(1) ** 2 / torch.sum(D)
    if use_square_clamp:
        loss = torch.sum((D * Y - 1) ** 2 + (1.0 / M) * Y**2)
    else:
        loss = -torch.sum(D * Y - (1.0 / M) * Y)
    return loss + alpha * torch.sum(torch.abs(torch.abs(raw) - 1))


def qsmih(variant: str, objective: str, alpha: float = 0.05) -> QSMIH:
    method = QSMIH(K, {"alpha": alpha, "variant": variant, "objective": objective}, CPU)
    method.setup(TrainingData(num_items=10, labels=labels_of(10, True).float()))
    return method


@pytest.mark.parametrize("objective", ["clamped", "qsmi"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_qsmih_is_deephash_pytorchs(multi_label: bool, objective: str) -> None:
    """Fails if qsmih_loss's ``deephash`` regulariser read the raw outputs u instead of the normalised z (the
    reference overwrites u before its regulariser)."""
    labels = labels_of(10, multi_label)
    u = outputs(10, seed=9, scale=1.0)
    value, grad = hashkit_step(qsmih("deephash", objective), u, batch(labels))
    ref_value, ref_grad = value_and_grad(lambda v: reference_qsmih_deephash(v, labels, 0.05, objective == "clamped"), u)
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("objective", ["clamped", "qsmi"])
def test_qsmih_passalis_variant_is_the_authors(objective: str) -> None:
    labels = labels_of(10, False)
    u = outputs(10, seed=10, scale=1.0)
    value, grad = hashkit_step(qsmih("passalis", objective), u, batch(labels))
    ref_value, ref_grad = value_and_grad(
        lambda v: reference_qsmih_passalis(v, labels.argmax(dim=1), 0.05, objective == "clamped"), u
    )
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-5, atol=1e-8)


def test_qsmih_and_hyp2_bad_choices_are_one_line() -> None:
    for hp in ({"alpha": 0.01, "variant": "fire", "objective": "clamped"}, {"alpha": 0.01, "variant": "deephash", "objective": "qmi"}):
        with pytest.raises(HashkitError) as error:
            QSMIH(K, hp, CPU).setup(TrainingData(num_items=4, labels=labels_of(4, False).float()))
        assert "\n" not in str(error.value)
    with pytest.raises(HashkitError) as error:
        HyP2(300, {"beta": 0.5}, CPU).setup(TrainingData(num_items=4, labels=labels_of(4, False).float()))
    assert "\n" not in str(error.value)

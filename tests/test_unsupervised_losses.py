"""Catalogue III (issue 31), the unsupervised deep methods, against transcriptions of their reference code.

Each ``reference_*`` below re-states, in plain torch (no hashkit helper), what the reference's training step
computes from the backbone's features x and the hash layer's outputs u:

* ``greedyhash_unsup`` — ssppp/GreedyHash ``unsupervised_vgg.py`` (= DeepHash-pytorch
  ``Unsupervised_GreedyHash.py``): b = sign(u) with a straight-through backward, MSE between the cosines of
  the pairs (i, i + n/2) of codes and of features, plus 0.1 · mean | |u| − 1 |³.
* ``bihalf`` — liyunqianggyn/Deep-Unsupervised-Image-Hashing ``ImageHashing/Cifar10_I.py`` (its ``hash``
  Function: sort each bit descending, the first ⌊N/2⌋ get +1; backward g + γ (U − B) / B.numel()) and the same
  pair MSE; FIRe's ``bihalf.py`` for an odd batch (the layer on all N items, then the last one dropped).
* ``cibhash`` — qiuzx2/CIBHash ``model/CIBHash.py``: p = σ(encoder(x)) per view, z = sign(p − 0.5) straight
  through, NT-Xent with the reference's positive/negative masks (CrossEntropyLoss(sum) / 2b) plus weight · the
  symmetrised Bernoulli KL with the second argument detached.

The hashkit method is driven through its own hook (``training_step`` on a :class:`Batch` carrying
``features``; CIBHash's outputs (b, 2, K), one row per view) on the same fixed float64 tensors; loss values and
gradients with respect to u must agree, and x must receive no gradient (the references' backbone is frozen).

Mutation that fails here: in hashkit/method_parts/feature_similarity.py pair neighbours (rows 2i, 2i + 1)
instead of the halves (i, i + m) → the greedyhash_unsup and bihalf ``*_matches_reference`` tests fail on the
loss value; removing ``features.detach()`` there fails ``test_features_get_no_gradient``; in methods/cibhash.py
dropping ``q.detach()`` fails ``test_cibhash_matches_reference`` on the gradient.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from hashkit.method import Batch
from hashkit.methods.bihalf import BiHalf
from hashkit.methods.cibhash import CIBHash
from hashkit.methods.greedyhash_unsup import GreedyHashUnsupervised

CPU = torch.device("cpu")
K, D = 8, 12  # bits, feature width


def fixed(rows: int, cols: int, seed: int, scale: float = 1.0, relu: bool = False) -> torch.Tensor:
    t = scale * torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return t.clamp_min(0) if relu else t


def unsupervised_batch(x: torch.Tensor) -> Batch:
    n = x.shape[0]
    return Batch(inputs=torch.zeros(n, 1), labels=torch.full((n, 3), float("nan")), index=torch.arange(n), features=x)


def hashkit_loss(method: Any, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """The summed loss, its terms, du and dx of one training step."""
    u = u.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    terms = method.training_step(u, unsupervised_batch(x))
    loss = sum(terms.values())
    loss.backward()
    return loss.detach(), {k: v.detach() for k, v in terms.items()}, u.grad, x.grad


# ------------------------------------------------------------------------ the references, transcribed


class ReferenceSignSTE(torch.autograd.Function):
    """The references' ``hash`` Function: torch.sign forward, the gradient passed through unchanged."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        return torch.sign(h)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


def reference_pair_mse(b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """F.mse_loss(cos(b[:n/2], b[n/2:]), cos(x[:n/2], x[n/2:])); an odd batch drops its last row (FIRe)."""
    if b.shape[0] % 2:
        b, x = b[:-1], x[:-1]
    half = b.shape[0] // 2
    target_b = F.cosine_similarity(b[:half], b[half:])
    target_x = F.cosine_similarity(x[:half], x[half:])
    return F.mse_loss(target_b, target_x)


def reference_greedyhash_unsup(h: torch.Tensor, x: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """ssppp/GreedyHash unsupervised_vgg.py: loss1 + 0.1 · mean(|(|h| − 1)³|)."""
    b = ReferenceSignSTE.apply(h)
    loss1 = reference_pair_mse(b, x)
    loss2 = torch.mean(torch.abs(torch.pow(torch.abs(h) - torch.ones_like(h), 3)))
    return loss1 + alpha * loss2


class ReferenceBiHalf(torch.autograd.Function):
    """The authors' bi-half ``hash`` Function: per bit, the ⌊N/2⌋ largest of the batch +1, the others −1."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, gamma: float) -> torch.Tensor:
        _, index = u.sort(0, descending=True)
        n, d = u.shape
        created = torch.cat((torch.ones(n // 2, d, dtype=u.dtype), -torch.ones(n - n // 2, d, dtype=u.dtype)))
        b = torch.zeros_like(u).scatter_(0, index, created)
        ctx.save_for_backward(u, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        u, b = ctx.saved_tensors
        return g + ctx.gamma * (u - b) / b.numel(), None


def reference_bihalf(h: torch.Tensor, x: torch.Tensor, gamma: float = 6.0) -> torch.Tensor:
    """Cifar10_I.py's step: b = hash(h), F.mse_loss of the pairs' cosines (FIRe: odd batch drops its last)."""
    return reference_pair_mse(ReferenceBiHalf.apply(h, gamma), x)


def reference_kl(prob: torch.Tensor, prob_v: torch.Tensor) -> torch.Tensor:
    """CIBHash.compute_kl: prob_v detached; Σ over bits, mean over the batch, ε = 1e-8 in every log."""
    prob_v = prob_v.detach()
    kl = prob * (torch.log(prob + 1e-8) - torch.log(prob_v + 1e-8)) + (1 - prob) * (
        torch.log(1 - prob + 1e-8) - torch.log(1 - prob_v + 1e-8))
    return torch.mean(torch.sum(kl, dim=1))


def reference_nt_xent(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float) -> torch.Tensor:
    """CIBHash's NtXentLoss: cosine similarities / τ, positives on the ±b diagonals, negatives by mask,
    CrossEntropyLoss(reduction='sum') with the positive first, divided by 2b."""
    b = z_i.shape[0]
    n = 2 * b
    z = torch.cat((z_i, z_j), dim=0)
    sim = torch.nn.CosineSimilarity(dim=2)(z.unsqueeze(1), z.unsqueeze(0)) / temperature
    positives = torch.cat((torch.diag(sim, b), torch.diag(sim, -b)), dim=0).view(n, 1)
    mask = torch.ones((n, n), dtype=torch.bool).fill_diagonal_(0)
    for i in range(b):
        mask[i, b + i] = 0
        mask[b + i, i] = 0
    negatives = sim[mask].view(n, -1)
    logits = torch.cat((positives, negatives), dim=1)
    return torch.nn.CrossEntropyLoss(reduction="sum")(logits, torch.zeros(n, dtype=torch.long)) / n


def reference_cibhash(u: torch.Tensor, _x: torch.Tensor, temperature: float = 0.3, weight: float = 0.001) -> torch.Tensor:
    """CIBHash.forward from the encoder's outputs of the two views u[:, 0], u[:, 1]."""
    prob_i, prob_j = torch.sigmoid(u[:, 0]), torch.sigmoid(u[:, 1])
    z_i, z_j = ReferenceSignSTE.apply(prob_i - 0.5), ReferenceSignSTE.apply(prob_j - 0.5)
    kl_loss = (reference_kl(prob_i, prob_j) + reference_kl(prob_j, prob_i)) / 2
    return reference_nt_xent(z_i, z_j, temperature) + weight * kl_loss


def reference_step(fn: Any, u: torch.Tensor, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    u = u.clone().requires_grad_(True)
    loss = fn(u, x.clone(), **kwargs)  # x: the frozen backbone's output, no gradient
    loss.backward()
    return loss.detach(), u.grad


# ------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("n", [8, 7])
@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_greedyhash_unsup_matches_reference(n: int, alpha: float) -> None:
    u, x = fixed(n, K, 1, scale=1.5), fixed(n, D, 2, relu=True)
    method = GreedyHashUnsupervised(K, {"alpha": alpha}, CPU)
    loss, terms, du, dx = hashkit_loss(method, u, x)
    ref_loss, ref_du = reference_step(reference_greedyhash_unsup, u, x, alpha=alpha)
    assert set(terms) == {"similarity", "penalty"}
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
    assert float(loss) > 0.05  # the pairs' cosines disagree at random u: a real loss, not 0
    torch.testing.assert_close(du, ref_du, rtol=1e-10, atol=1e-12)
    assert du.abs().sum() > 0
    if n % 2:  # the odd last item is only in the penalty: its gradient is the penalty's alone
        pen = alpha * 3 * (u[-1].abs() - 1).abs().pow(2) * torch.sign(u[-1].abs() - 1) * torch.sign(u[-1]) / (n * K)
        torch.testing.assert_close(du[-1], pen, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [8, 7])
@pytest.mark.parametrize("gamma", [6.0, 20.0])
def test_bihalf_matches_reference(n: int, gamma: float) -> None:
    u, x = fixed(n, K, 5, scale=1.5), fixed(n, D, 6, relu=True)
    method = BiHalf(K, {"gamma": gamma}, CPU)
    loss, terms, du, _ = hashkit_loss(method, u, x)
    ref_loss, ref_du = reference_step(reference_bihalf, u, x, gamma=gamma)
    assert set(terms) == {"similarity"}
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
    assert float(loss) > 0.05
    torch.testing.assert_close(du, ref_du, rtol=1e-10, atol=1e-12)
    if n % 2:  # the odd last item: only the layer's γ term reaches it
        b_last = ReferenceBiHalf.apply(u, gamma)[-1]
        torch.testing.assert_close(du[-1], gamma * (u[-1] - b_last) / (n * K), rtol=1e-10, atol=1e-12)


def test_bihalf_codes_are_balanced_per_bit_in_training_and_sign_at_test() -> None:
    """Every bit of the layer's codes has ⌊N/2⌋ × +1 in the batch, whatever the outputs' offset."""
    u = fixed(9, K, 7) + 3.0  # all positive: sign would give all +1
    codes = ReferenceBiHalf.apply(u, 6.0)
    assert torch.equal((codes > 0).sum(0), torch.full((K,), 4))
    from hashkit.method_parts.relaxations import bihalf as product_bihalf

    torch.testing.assert_close(product_bihalf(u, 6.0), codes)


@pytest.mark.parametrize("method_cls", [GreedyHashUnsupervised, BiHalf])
def test_features_get_no_gradient(method_cls: Any) -> None:
    """x is the target of the similarity (the references freeze the backbone): no gradient reaches it."""
    u, x = fixed(6, K, 3), fixed(6, D, 4, relu=True)
    _, _, _, dx = hashkit_loss(method_cls(K, {}, CPU), u, x)
    assert dx is None


def test_greedyhash_unsup_fixed_value() -> None:
    """One hand-checked value: n = 2, codes (+,+,−,−) and (+,−,+,−) are orthogonal (cos 0), features with
    cos 0.8; u = ±2 makes the penalty (|2| − 1)³ = 1 per entry: 0.8² + α · 1."""
    u = torch.tensor([[2.0, 2.0, -2.0, -2.0], [2.0, -2.0, 2.0, -2.0]], dtype=torch.float64)
    x = torch.tensor([[3.0, 4.0], [0.0, 5.0]], dtype=torch.float64)  # cos = 20 / 25 = 0.8
    loss, terms, _, _ = hashkit_loss(GreedyHashUnsupervised(4, {"alpha": 0.1}, CPU), u, x)
    assert float(terms["similarity"]) == pytest.approx(0.64)
    assert float(terms["penalty"]) == pytest.approx(0.1)
    assert float(loss) == pytest.approx(0.74)


@pytest.mark.parametrize(("temperature", "beta"), [(0.3, 0.001), (0.5, 0.5)])
def test_cibhash_matches_reference(temperature: float, beta: float) -> None:
    n = 6
    u = fixed(n * 2, K, 8, scale=1.5).reshape(n, 2, K)
    u[:, 1] = u[:, 0] + 0.8 * fixed(n, K, 9)  # the second view near the first: some bits flip, most agree
    method = CIBHash(K, {"temperature": temperature, "beta": beta}, CPU)
    loss, terms, du, _ = hashkit_loss(method, u, torch.zeros(n, 2, 1, dtype=torch.float64))
    ref_loss, ref_du = reference_step(reference_cibhash, u, torch.zeros(1), temperature=temperature, weight=beta)
    assert set(terms) == {"contrastive", "kl"}
    assert float(terms["kl"]) > 0 and float(terms["contrastive"]) > 0.1
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
    torch.testing.assert_close(du, ref_du, rtol=1e-10, atol=1e-12)
    assert du.abs().sum() > 0


def test_cibhash_contrastive_term_prefers_matching_views() -> None:
    """Identical codes in both views, all items different: lower NT-Xent than the views shuffled across items."""
    n = 4
    base = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1], [1, -1, 1, -1, 1, -1, 1, -1],
                         [1, 1, -1, -1, 1, 1, -1, -1], [1, 1, 1, 1, -1, -1, -1, -1]], dtype=torch.float64)  # fmt: skip
    method = CIBHash(K, {}, CPU)
    same = torch.stack([3 * base, 3 * base], dim=1)
    shuffled = torch.stack([3 * base, 3 * base[[1, 2, 3, 0]]], dim=1)
    matched = method.training_step(same, unsupervised_batch(torch.zeros(n, 2, 1)))["contrastive"]
    crossed = method.training_step(shuffled, unsupervised_batch(torch.zeros(n, 2, 1)))["contrastive"]
    assert float(matched) < float(crossed)
    # orthogonal codes: s_pos = 1/τ, every negative 0 → −log(e^{1/τ} / (e^{1/τ} + 2n − 2))
    expected = -math.log(math.exp(1 / 0.3) / (math.exp(1 / 0.3) + 2 * n - 2))
    assert float(matched) == pytest.approx(expected, rel=1e-9)

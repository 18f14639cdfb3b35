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


# ------------------------------------------------------------------------------------------- TBH
#
# ``tbh`` — CISiPLab/cisip-FIRe ``functions/loss/tbh.py`` (TBHLoss: rec = ½ Σ (x̂ − x)², actor = rec − adv ·
# (adv_loss(D₁) + adv_loss(D₂)), critic = adv · (…)), ``models/architectures/arch_tbh.py`` (JMLHBinaryActivation
# with ε = 0.5, build_adjacency_hamming, GCNLayer.graph_laplacian, Encoder/Decoder, Linear-sigmoid discriminators
# fed D(bbn) as "real" and D(prior) as "fake"), with the continuous bottleneck through the sigmoid of the authors'
# ymcidence/TBH ``layer/encodec.py`` (FIRe leaves it out). The authors label the prior real and the bottlenecks
# fake: FIRe's loss with discriminator (w, c) equals hashkit's with (−w, −c), which the test uses.
#
# Mutation that fails here: in methods/tbh.py change ADJACENCY_POWER from 1.4 to 1.0 (or drop the sigmoid on the
# continuous bottleneck) → ``test_tbh_matches_fire`` fails on the actor loss value.

H, C = 6, 5  # TBH's hidden width and continuous-bottleneck width in the test


class ReferenceJMLHBinary(torch.autograd.Function):
    """FIRe's JMLHBinaryActivation: code = (sign(σ(logits) − ε) + 1) / 2; backward σ(1 − σ)(g_code + g_prob)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = 1.0 / (1 + torch.exp(-logits))
        ctx.save_for_backward(prob)
        return (torch.sign(prob - eps) + 1.0) / 2.0, prob

    @staticmethod
    def backward(ctx: Any, grad_code: torch.Tensor, grad_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (prob,) = ctx.saved_tensors
        return prob * (1 - prob) * (grad_code + grad_prob), grad_code


def reference_tbh(w: dict[str, torch.Tensor], x: torch.Tensor, prior_b: torch.Tensor, prior_c: torch.Tensor,
                  adv: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(actor, critic, rec) of FIRe's TBH forward + TBHLoss (rec_method 'element') on weights ``w``."""
    fc_1 = torch.relu(x @ w["W1"].t() + w["b1"])
    bbn, _ = ReferenceJMLHBinary.apply(fc_1 @ w["W2"].t() + w["b2"], torch.ones(x.shape[0], w["W2"].shape[0], dtype=x.dtype) * 0.5)
    cbn = torch.sigmoid(fc_1 @ w["W3"].t() + w["b3"])  # the authors' Dense(cbn_dim, activation='sigmoid')
    m1 = bbn - 1.0
    adj = torch.pow(1 - torch.abs(bbn @ m1.t() + m1 @ bbn.t()) / bbn.shape[1], 1.4)
    d = adj @ torch.ones(adj.shape[0], 1, dtype=x.dtype)
    d_inv_sqrt = torch.eye(adj.shape[0], dtype=x.dtype) * torch.pow(d + 1e-8, -0.5)
    gcn_cbn = torch.sigmoid((d_inv_sqrt @ adj @ d_inv_sqrt) @ (cbn @ w["W4"].t() + w["b4"]))
    rec_x = torch.relu(gcn_cbn @ w["W5"].t() + w["b5"]) @ w["W6"].t() + w["b6"]

    def disc(name: str, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ w[name + "_w"].t() + w[name + "_b"])

    def adv_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return torch.mean(F.binary_cross_entropy(real, torch.ones_like(real))) + \
            torch.mean(F.binary_cross_entropy(fake, torch.zeros_like(fake)))  # fmt: skip

    rec = torch.sum((rec_x - x).pow(2)) * 0.5
    gan = adv_loss(disc("D1", bbn), disc("D1", prior_b)) + adv_loss(disc("D2", gcn_cbn), disc("D2", prior_c))
    return rec - adv * gan, adv * gan, rec


def tbh_weights(seed: int) -> dict[str, torch.Tensor]:
    shapes = {"W1": (H, D), "b1": (H,), "W2": (K, H), "b2": (K,), "W3": (C, H), "b3": (C,), "W4": (C, C),
              "b4": (C,), "W5": (H, C), "b5": (H,), "W6": (D, H), "b6": (D,), "D1_w": (1, K), "D1_b": (1,),
              "D2_w": (1, C), "D2_b": (1,)}  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    return {k: (0.8 * torch.randn(*s, generator=g, dtype=torch.float64)) for k, s in shapes.items()}


def tbh_product(w: dict[str, torch.Tensor], adv: float) -> tuple[Any, torch.nn.Module]:
    """hashkit's TBH bound to an mlp head, all weights copied from ``w`` (the discriminators negated)."""
    from hashkit.heads import MLPHead
    from hashkit.method import TrainingData
    from hashkit.methods.tbh import TBH

    model = torch.nn.Module()
    model.head = MLPHead(D, K, hidden=H).double()
    method = TBH(K, {"adversarial": adv, "continuous_dim": C}, CPU)
    method.setup(TrainingData(num_items=8, labels=None))
    method.bind_model(model)
    method.module.double()
    method.own_modules.double()
    pairs = [(model.head.hidden, "W1", "b1"), (model.head.linear, "W2", "b2"), (method.module.continuous, "W3", "b3"),
             (method.module.graph, "W4", "b4"), (method.module.decoder[0], "W5", "b5"), (method.module.decoder[2], "W6", "b6")]  # fmt: skip
    with torch.no_grad():
        for layer, wk, bk in pairs:
            layer.weight.copy_(w[wk])
            layer.bias.copy_(w[bk])
        for name, key in (("binary_discriminator", "D1"), ("continuous_discriminator", "D2")):
            method.own_modules[name].weight.copy_(-w[key + "_w"])
            method.own_modules[name].bias.copy_(-w[key + "_b"])
    return method, model


ACTOR_PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4", "W5", "b5", "W6", "b6")


@pytest.mark.parametrize("adv", [1.0, 0.3])
def test_tbh_matches_fire(adv: float) -> None:
    n = 8
    x = fixed(n, D, 21, relu=True)
    w = tbh_weights(22)
    prior_b = (fixed(n, K, 23) > 0).double()
    prior_c = torch.rand(n, C, generator=torch.Generator().manual_seed(24), dtype=torch.float64)

    ref_w = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    actor, critic, rec = reference_tbh(ref_w, x, prior_b, prior_c, adv)
    actor_grads = torch.autograd.grad(actor, [ref_w[k] for k in ACTOR_PARAMS], retain_graph=True)
    critic_grads = torch.autograd.grad(critic, [ref_w[k] for k in ("D1_w", "D1_b", "D2_w", "D2_b")])

    method, model = tbh_product(w, adv)
    method.draw_priors = lambda codes, z: (prior_b, prior_c)
    terms = method.training_step(model.head(x), unsupervised_batch(x))
    assert set(terms) == {"reconstruction", "adversarial"}
    total = sum(terms.values())
    assert float(terms["reconstruction"].detach()) == pytest.approx(float(rec.detach()), rel=1e-12)
    assert float(total.detach()) == pytest.approx(float(actor.detach()), rel=1e-12)
    assert float(terms["adversarial"].detach()) < -0.5  # a real adversarial term, not 0
    total.backward()
    m = method.module
    product = [model.head.hidden.weight, model.head.hidden.bias, model.head.linear.weight, model.head.linear.bias,
               m.continuous.weight, m.continuous.bias, m.graph.weight, m.graph.bias, m.decoder[0].weight,
               m.decoder[0].bias, m.decoder[2].weight, m.decoder[2].bias]  # fmt: skip
    for key, param, ref_grad in zip(ACTOR_PARAMS, product, actor_grads):
        torch.testing.assert_close(param.grad, ref_grad, rtol=1e-9, atol=1e-12, msg=key)
    assert model.head.linear.weight.grad.abs().sum() > 0  # the codes' straight-through gradient reaches the head

    # The critic: same step's bottlenecks and priors, gradients of the negated discriminators are negated.
    d = method.own_modules
    for p in d.parameters():
        p.grad = None
    critic_loss = adv * method.adversarial_terms(*method._critic_inputs)
    assert float(critic_loss.detach()) == pytest.approx(float(critic.detach()), rel=1e-12)
    critic_loss.backward()
    got = [d["binary_discriminator"].weight.grad, d["binary_discriminator"].bias.grad,
           d["continuous_discriminator"].weight.grad, d["continuous_discriminator"].bias.grad]  # fmt: skip
    for g, ref_grad in zip(got, critic_grads):
        torch.testing.assert_close(g, -ref_grad, rtol=1e-9, atol=1e-12)


def test_tbh_critic_step_moves_only_the_discriminators() -> None:
    """own_step: one Adam step on the discriminators from the cached bottlenecks; the actor's layers stay."""
    n = 6
    x = fixed(n, D, 31, relu=True)
    method, model = tbh_product(tbh_weights(32), 1.0)
    method.own_optimizers()
    method.training_step(model.head(x), unsupervised_batch(x))
    actor_before = [p.detach().clone() for p in (*model.parameters(), *method.module.parameters())]
    critic_before = [p.detach().clone() for p in method.own_modules.parameters()]
    logged = method.own_step(torch.zeros(n, K), unsupervised_batch(x))
    assert set(logged) == {"critic"} and float(logged["critic"]) > 0
    assert all(torch.equal(a, p) for a, p in zip(actor_before, (*model.parameters(), *method.module.parameters())))
    assert all(not torch.equal(a, p) for a, p in zip(critic_before, method.own_modules.parameters()))
    with pytest.raises(RuntimeError):  # the cached inputs are used once
        method.own_step(torch.zeros(n, K), unsupervised_batch(x))


def test_tbh_adjacency_is_the_hamming_affinity() -> None:
    """A_ij = (1 − d_H / K)^1.4: identical codes 1, complementary codes 0, one bit apart (1 − 1/4)^1.4."""
    from hashkit.methods.tbh import hamming_adjacency

    codes = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.float64)
    a = hamming_adjacency(codes)
    assert torch.equal(torch.diag(a), torch.ones(3))
    assert float(a[0, 1]) == 0.0 and float(a[0, 2]) == pytest.approx(0.75**1.4, rel=1e-12)
    assert float(a[1, 2]) == pytest.approx(0.25**1.4, rel=1e-12)


def test_tbh_refuses_a_head_without_a_hidden_layer() -> None:
    from hashkit.errors import HashkitError
    from hashkit.heads import LinearHead
    from hashkit.methods.tbh import TBH

    model = torch.nn.Module()
    model.head = LinearHead(D, K)
    with pytest.raises(HashkitError, match="mlp head"):
        TBH(K, {}, CPU).bind_model(model)

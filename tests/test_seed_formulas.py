"""The contract of issue 17: each method's loss equals its seed's formula on fixed small tensors.

Every ``seed_*`` function below is an independent transcription of the loss in the seed's public code
(read for the formula, written here from scratch with plain tensor ops); each test drives the hashkit
method through its own hooks (``setup`` / ``epoch_indices`` / ``training_step``) on the same inputs and
requires the summed loss terms — and for some, the gradient — to agree to 1e-6.

Mutations that fail here: in methods/dhn.py ``DHN.loss`` pass ``codes.detach()`` as ``other_h`` (θ = ½ h h̄ᵀ,
one operand detached) — the values stay, the gradient halves, test_dhn_loss_is_the_seeds fails on its gradient;
in methods/ssdh.py ``h @ h.detach().t()`` fails test_ssdh_loss_is_the_seeds the same way.

Seeds: TreezzZ/DPSH_PyTorch ``models/dpsh_loss.py``; TreezzZ/DHN_PyTorch ``dhn.py`` (``DHNLoss``) with the
tanh of ``models/alexnet.py``; thuml/HashNet ``pytorch/src/loss.py`` (``pairwise_loss``) with the
continuation of ``network.py``; IIE-MR/DIHN ``models/adsh_loss.py`` / ``models/dihn_loss.py`` with the
soft similarity of ``adsh.py`` / ``dihn.py``; TreezzZ/SSDH_PyTorch ``ssdh.py`` (``SSDH_Loss``) with the
tanh head of ``model_loader.py``.
"""

from __future__ import annotations

import pytest
import torch

from hashkit.method import Batch, TrainingData
from hashkit.methods.adsh import ADSH
from hashkit.methods.dhn import DHN
from hashkit.methods.dihn import DIHN
from hashkit.methods.dpsh import DPSH
from hashkit.methods.hashnet import HashNet
from hashkit.methods.ssdh import SSDH

CPU = torch.device("cpu")
TOL = 1e-6


def one_hot(classes: list[int], num_classes: int) -> torch.Tensor:
    out = torch.zeros(len(classes), num_classes, dtype=torch.float64)
    out[torch.arange(len(classes)), torch.tensor(classes)] = 1
    return out


def fixed(rows: int, bits: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(rows, bits, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(terms.values())


# ---------------------------------------------------------------- DPSH

def seed_dpsh(u_cnn: torch.Tensor, u_all: torch.Tensor, s: torch.Tensor, eta: float) -> torch.Tensor:
    """DPSHLoss.forward: θ = U_cnn Uᵀ / 2 clamped to [−100, 50]; mean pair term + η · mean (U − sign U)²."""
    theta = torch.clamp(u_cnn @ u_all.t() / 2, min=-100, max=50)
    pair = (torch.log(1 + torch.exp(theta)) - s * theta).mean()
    regular = (u_cnn - u_cnn.sign()).pow(2).mean()
    return pair + eta * regular


def test_dpsh_loss_is_the_seeds() -> None:
    classes = [0, 1, 2, 0, 1, 2, 0, 1, 2, 1]
    labels = one_hot(classes, 3)
    memory = fixed(10, 8, seed=1, scale=2.0)
    method = DPSH(8, {"eta": 10.0}, CPU)
    method.setup(TrainingData(num_items=10, labels=labels))
    method.memory.U, method.memory.labels = method.memory.U.double(), labels  # compare in float64
    method.memory.update(torch.arange(10), memory)  # earlier steps wrote every row
    index = torch.tensor([2, 5, 7])
    u = fixed(3, 8, seed=2, scale=2.0).requires_grad_()
    loss = total(method.training_step(u, Batch(torch.zeros(3), labels[index], index)))
    # The seed writes U[index] = U_cnn.data before its loss, as the method does.
    u_all = memory.clone()
    u_all[index] = u.detach()
    s = (labels[index] @ labels.t() > 0).double()
    u_seed = u.detach().clone().requires_grad_()
    expected = seed_dpsh(u_seed, u_all, s, eta=10.0)
    assert loss.item() == pytest.approx(expected.item(), abs=TOL)
    (grad,) = torch.autograd.grad(loss, u)
    (grad_seed,) = torch.autograd.grad(expected, u_seed)
    assert torch.allclose(grad, grad_seed, atol=TOL)


# ---------------------------------------------------------------- DHN

def seed_dhn(outputs: torch.Tensor, s: torch.Tensor, lamda: float) -> torch.Tensor:
    """AlexNet's tanh, then DHNLoss.forward: θ = H Hᵀ / 2 within the batch; its stable log(1 + e^θ)
    written with λ as the seed writes it; mean log cosh(|H| − 1); loss = metric + λ · quantisation."""
    h = torch.tanh(outputs)
    theta = h @ h.t() / 2
    metric = (torch.log(1 + torch.exp(-(lamda * theta).abs())) + theta.clamp(min=0) - lamda * s * theta).mean()
    quantization = torch.log(torch.cosh(h.abs() - 1)).mean()
    return metric + lamda * quantization


@pytest.mark.parametrize("model_tanh", [False, True])
def test_dhn_loss_is_the_seeds(model_tanh: bool) -> None:
    """At the seed's λ = 1 (where the seed's λ-in-the-likelihood coincides with the paper's form); with
    the model's tanh (``--hash-activation tanh``) or without it, tanh is applied exactly once."""
    labels = one_hot([0, 1, 0, 2, 1, 0], 3)
    outputs = fixed(6, 12, seed=3, scale=1.5)
    method = DHN(12, {"lamda": 1.0}, CPU)
    method.hash_activation = "tanh" if model_tanh else "none"
    method.setup(TrainingData(num_items=6, labels=labels))
    method.memory.U, method.memory.labels = method.memory.U.double(), labels
    x = outputs.clone().requires_grad_()
    u = torch.tanh(x) if model_tanh else x
    loss = total(method.training_step(u, Batch(torch.zeros(6), labels, torch.arange(6))))
    s = (labels @ labels.t() > 0).double()
    x_seed = outputs.clone().requires_grad_()
    expected = seed_dhn(x_seed, s, lamda=1.0)
    assert loss.item() == pytest.approx(expected.item(), abs=TOL)
    # the gradients too: detaching one operand of θ = ½ h hᵀ (half of its gradient) keeps the value and fails here
    (grad,) = torch.autograd.grad(loss, x)
    (grad_seed,) = torch.autograd.grad(expected, x_seed)
    assert torch.allclose(grad, grad_seed, atol=TOL)


def test_dhn_lambda_weighs_only_the_quantisation() -> None:
    """Away from λ = 1 hashkit keeps the paper's C = L + λQ (the seed's λ also scales θ in L; see dhn.py)."""
    labels = one_hot([0, 1, 0, 2], 3)
    outputs = fixed(4, 8, seed=4)
    method = DHN(8, {"lamda": 0.1}, CPU)
    method.setup(TrainingData(num_items=4, labels=labels))
    method.memory.U, method.memory.labels = method.memory.U.double(), labels
    terms = method.training_step(outputs, Batch(torch.zeros(4), labels, torch.arange(4)))
    h = torch.tanh(outputs)
    expected_q = 0.1 * torch.log(torch.cosh(h.abs() - 1)).mean()
    assert terms["quantization"].item() == pytest.approx(expected_q.item(), abs=TOL)
    assert terms["likelihood"].item() == pytest.approx((seed_dhn(outputs, (labels @ labels.t() > 0).double(), 1.0)
                                                        - torch.log(torch.cosh(h.abs() - 1)).mean()).item(), abs=TOL)


# ---------------------------------------------------------------- HashNet

def seed_hashnet_pairwise(out1, out2, label1, label2, sigmoid_param, l_threshold=15.0, class_num=1.0):
    """pairwise_loss: masked sums of log(1 + e^{αh₁ᵀh₂}) − sθ (θ(1 − s) above the threshold), similar
    pairs × class_num, divided by class_num·|S₁| + |S₀|."""
    similarity = (label1 @ label2.t() > 0).double()
    dot = sigmoid_param * out1 @ out2.t()
    exp_loss = torch.log(1 + torch.exp(dot)) - similarity * dot
    dot_loss = dot * (1 - similarity)
    big = dot > l_threshold
    positive = similarity > 0
    per_pair = torch.where(big, dot_loss, exp_loss)
    numerator = per_pair[positive].sum() * class_num + per_pair[~positive].sum()
    return numerator / (positive.sum() * class_num + (~positive).sum())


def seed_hashnet_scale(iter_num: int, step_size=200, gamma=0.005, power=0.5, init_scale=1.0) -> float:
    """network.py: iter_num counts forwards in training; the scale is raised when iter_num % step_size == 0."""
    scale = init_scale
    for it in range(1, iter_num + 1):
        if it % step_size == 0:
            scale = init_scale * (1.0 + gamma * it) ** power
    return scale


def test_hashnet_loss_is_the_seeds() -> None:
    """Default flags = the seed: fixed class weights (class_num c), pairs across the two halves of the
    step's batch (its two loaders of 36), α = 10 / bits, h = tanh(scale · y) — over three steps with the
    continuation raising the scale every step (step_size 1), so the scale's clock is pinned too."""
    bits, c = 12, 2.5
    labels = one_hot([0, 1, 2, 0, 1, 1, 0, 2], 3)
    method = HashNet(bits, {"balance_weight": c, "beta_step": 1}, CPU)
    method.setup(TrainingData(num_items=8, labels=labels))
    method.memory.U, method.memory.labels = method.memory.U.double(), labels
    for step in range(1, 4):
        y = fixed(8, bits, seed=10 + step, scale=3.0).requires_grad_()
        loss = total(method.training_step(y, Batch(torch.zeros(8), labels, torch.arange(8))))
        scale = seed_hashnet_scale(step, step_size=1)
        y_seed = y.detach().clone().requires_grad_()
        h = torch.tanh(scale * y_seed)
        expected = seed_hashnet_pairwise(h[:4], h[4:], labels[:4], labels[4:], 10.0 / bits, class_num=c)
        assert loss.item() == pytest.approx(expected.item(), abs=TOL), step
        (grad,) = torch.autograd.grad(loss, y)
        (grad_seed,) = torch.autograd.grad(expected, y_seed)
        assert torch.allclose(grad, grad_seed, atol=TOL)


# ---------------------------------------------------------------- ADSH / DIHN

def seed_soft_similarity(sample_labels: torch.Tensor, database_labels: torch.Tensor) -> torch.Tensor:
    """adsh.py: S = ±1 by label sharing, r = ΣS / Σ(1 − S), S ← S(1 + r) − r (1 on similar pairs)."""
    s = (sample_labels @ database_labels.t() > 0).double()
    s = torch.where(s == 1, torch.ones_like(s), -torch.ones_like(s))
    r = s.sum() / (1 - s).sum()
    return s * (1 + r) - r


def seed_adsh(f, b, s_rows, omega, code_length, gamma, mu=None):
    """ADSH_Loss / DIHN_Loss.forward on the tanh outputs F: ((cS − FBᵀ)²).sum() + γ((F − B[ω])²).sum()
    (+ μ (F·1).sum() for DIHN), all over batch size × database size."""
    hash_loss = ((code_length * s_rows - f @ b.t()) ** 2).sum()
    quantization = ((f - b[omega, :]) ** 2).sum()
    loss = hash_loss + gamma * quantization
    if mu is not None:
        loss = loss + mu * (f @ torch.ones(f.shape[1], 1, dtype=f.dtype)).sum()
    return loss / (f.shape[0] * b.shape[0])


def _sampled_step(method: ADSH, labels: torch.Tensor, bits: int, seed: int):
    order = method.epoch_indices(0, torch.Generator().manual_seed(seed))
    index = order[:4]
    outputs = fixed(4, bits, seed=seed, scale=1.5)
    loss = total(method.training_step(outputs, Batch(torch.zeros(4), labels[index], index)))
    return loss, outputs, index


def test_adsh_loss_is_the_seeds() -> None:
    """ω is the batch's database rows: the seed indexes B with positions in the sample (``B[index]`` where
    ``index`` counts within the sampled subset), hashkit with the database rows — the fixed bug."""
    bits, gamma = 6, 200.0
    labels = one_hot([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 1], 3)
    method = ADSH(bits, {"gamma": gamma, "num_samples": 8, "max_epoch": 1}, CPU)
    method.setup(TrainingData(num_items=12, labels=labels))
    method.V = torch.sign(fixed(12, bits, seed=5))
    loss, outputs, index = _sampled_step(method, labels, bits, seed=6)
    s = seed_soft_similarity(labels[method.sample], labels)
    rows = method.slot[index]  # the batch's rows within the sample
    expected = seed_adsh(torch.tanh(outputs), method.V, s[rows], index, bits, gamma)
    assert loss.item() == pytest.approx(expected.item(), rel=TOL)


def test_dihn_loss_is_the_seeds() -> None:
    """Original codes fixed, new ones learned; the same terms over the whole database plus μ Σ F·1."""
    bits, gamma, mu = 6, 200.0, 50.0
    labels = one_hot([0, 1, 0, 1, 0, 1, 2, 2, 2, 2], 3)
    method = DIHN(bits, {"gamma": gamma, "mu": mu, "num_samples": 6, "max_epoch": 1}, CPU)
    method.labels = labels
    method.num_codes, method.num_frozen = 10, 6
    method.V = torch.sign(fixed(10, bits, seed=7))
    loss, outputs, index = _sampled_step(method, labels, bits, seed=8)
    s = seed_soft_similarity(labels[method.sample], labels)
    expected = seed_adsh(torch.tanh(outputs), method.V, s[method.slot[index]], index, bits, gamma, mu=mu)
    assert loss.item() == pytest.approx(expected.item(), rel=TOL)


def test_adsh_with_the_models_tanh_applies_it_once() -> None:
    bits = 6
    labels = one_hot([0, 1, 2, 0, 1, 2, 0, 0], 3)
    losses = []
    for model_tanh in (False, True):
        method = ADSH(bits, {"num_samples": 8, "max_epoch": 1}, CPU)
        method.hash_activation = "tanh" if model_tanh else "none"
        method.setup(TrainingData(num_items=8, labels=labels))
        method.V = torch.sign(fixed(8, bits, seed=9)).double()
        method.labels = labels
        order = method.epoch_indices(0, torch.Generator().manual_seed(0))
        index = order[:4]
        outputs = fixed(4, bits, seed=1)
        inputs = torch.tanh(outputs) if model_tanh else outputs
        losses.append(total(method.training_step(inputs, Batch(torch.zeros(4), labels[index], index))).item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-12)


# ---------------------------------------------------------------- SSDH

def seed_ssdh(v: torch.Tensor, s: torch.Tensor, code_length: int) -> torch.Tensor:
    """ssdh.py: v = the tanh head's output, H = v vᵀ / code_length, SSDH_Loss = Σ|S|(H − S)² / b²."""
    h = v @ v.t() / code_length
    return (s.abs() * (h - s).pow(2)).sum() / (h.shape[0] ** 2)


@pytest.mark.parametrize("model_tanh", [False, True])
def test_ssdh_loss_is_the_seeds(model_tanh: bool) -> None:
    bits = 12
    s_all = torch.tensor([[1, 1, -1, 0, -1], [1, 1, 0, -1, -1], [-1, 0, 1, 1, 0],
                          [0, -1, 1, 1, 1], [-1, -1, 0, 1, 1]], dtype=torch.int8)  # fmt: skip
    method = SSDH(bits, {}, CPU)
    method.hash_activation = "tanh" if model_tanh else "none"
    method.S = s_all
    index = torch.tensor([4, 0, 3, 1])
    y = fixed(4, bits, seed=11, scale=1.5).requires_grad_()
    inputs = torch.tanh(y) if model_tanh else y
    loss = total(method.training_step(inputs, Batch(torch.zeros(4), torch.zeros(4, 1), index)))
    y_seed = y.detach().clone().requires_grad_()
    expected = seed_ssdh(torch.tanh(y_seed), s_all[index][:, index].double(), bits)
    assert loss.item() == pytest.approx(expected.item(), abs=TOL)
    # the gradients too: detaching one operand of v vᵀ keeps the value and fails here
    (grad,) = torch.autograd.grad(loss, y)
    (grad_seed,) = torch.autograd.grad(expected, y_seed)
    assert torch.allclose(grad, grad_seed, atol=TOL)


# ---------------------------------------------------------------- learning rate per epoch / step

def seed_cosine(k: int, lr: float, t_max: int, eta_min: float) -> float:
    """CosineAnnealingLR's closed form, stepped after each epoch as the DPSH and DHN seeds do."""
    import math

    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * k / t_max)) / 2


SEED_LR = {
    # method: (per-interval lr of the backbone group as the seed computes it, intervals checked, hash lr ×)
    "dpsh": (lambda k: seed_cosine(k, 1e-5, 150, 1e-7), 6, 1.0),
    "dhn": (lambda k: seed_cosine(k, 1e-5, 500, 1e-5 / 100), 6, 1.0),
    # step_lr_scheduler(init_lr 3e-4, gamma 0.5, step 2000) set before step i: 3e-4 · 0.5^(i // 2000)
    "hashnet": (lambda i: 3e-4 * 0.5 ** (i // 2000), 4002, 10.0),
    # ExponentialLR stepped before each outer iteration k: 1e-4 · γ^(k+1)
    "adsh": (lambda k: 1e-4 * 0.9 ** (k + 1), 6, 1.0),
    "dihn": (lambda k: 1e-4 * 0.91 ** (k + 1), 6, 1.0),
    "ssdh": (lambda k: 1e-3, 6, 1.0),
}


@pytest.mark.parametrize("name", sorted(SEED_LR))
def test_seed_recipe_lr_schedule_is_the_seeds(name: str) -> None:
    """The seed recipe's optimiser and scheduler (torch's, built by the Trainer's functions) give the seed's
    learning rate in every interval checked (epochs; HashNet: steps across two halvings), for both groups."""
    from collections import OrderedDict

    from torch import nn

    from hashkit.backbones.base import Backbone, InputSpec
    from hashkit.model import HashModel
    from hashkit.registry import METHODS
    from hashkit.trainer import build_optimizer, build_scheduler

    recipe = dict(METHODS.get(name).recipes["seed"])
    seed_lr, intervals, head_mult = SEED_LR[name]
    spec = InputSpec(mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear", default_size=8)
    backbone = Backbone(OrderedDict(pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))), feature_dim=3,
                        input_spec=spec, arch="toy")
    model = HashModel(backbone, 4)
    model.backbone.register_parameter("w", nn.Parameter(torch.zeros(1)))  # a backbone group too
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=70)
    assert recipe["hash_lr_mult"] == head_mult
    for k in range(intervals):
        if k < 6 or k in (1999, 2000, 2001, 3999, 4000, 4001):
            body, head = (group["lr"] for group in optimizer.param_groups)
            assert body == pytest.approx(seed_lr(k), rel=1e-9), k
            assert head == pytest.approx(seed_lr(k) * head_mult, rel=1e-9), k
        optimizer.step()
        scheduler.step()


# ---------------------------------------------------------------- the seed recipes in the dry run

SEED_DRY_RUN = {
    # method: optimizer (name, weight decay, momentum, nesterov), scheduler, head activation
    "dpsh": (("rmsprop", 1e-5, 0.0, False), {"name": "cosine", "interval": "epoch", "T_max": 150, "eta_min": 1e-7}, None),
    "dhn": (("rmsprop", 5e-4, 0.0, False), {"name": "cosine", "interval": "epoch", "T_max": 500, "eta_min": 1e-7}, "tanh"),
    "hashnet": (("sgd", 5e-4, 0.9, True), {"name": "step", "interval": "step", "step_size": 2000, "gamma": 0.5}, None),
    "adsh": (("adam", 1e-5, None, False), {"name": "exponential", "interval": "outer_iteration", "gamma": 0.9}, "tanh"),
    "dihn": (("adam", 1e-5, None, False), {"name": "exponential", "interval": "outer_iteration", "gamma": 0.91}, "tanh"),
    "ssdh": (("sgd", 1e-5, 0.9, False), {"name": "constant", "interval": "epoch"}, "tanh"),
}


@pytest.mark.parametrize("name", sorted(SEED_DRY_RUN))
def test_seed_recipe_dry_run_shows_the_seeds_training(name: str, capsys) -> None:
    """``hashkit train --method M --dataset cifar10 --code-length 32 --recipe seed --dry-run --json``."""
    import json

    from hashkit.cli import main

    argv = ["train", "--method", name, "--dataset", "cifar10", "--code-length", "32", "--recipe", "seed",
            "--dry-run", "--json"]  # fmt: skip
    if name == "dihn":
        argv += ["--num-seen", "7"]
    assert main(argv) in (0, None)
    shown = json.loads(capsys.readouterr().out)
    (optimizer, weight_decay, momentum, nesterov), scheduler, activation = SEED_DRY_RUN[name]
    assert shown["recipe"] == "seed"
    got = shown["optimizer"]
    assert (got["name"], got["weight_decay"], got["momentum"], got["nesterov"]) == (optimizer, weight_decay, momentum, nesterov)
    assert shown["scheduler"] == pytest.approx(scheduler)
    assert shown["train_transform"][:2] == ["RandomResizedCrop(224)", "RandomHorizontalFlip()"]
    assert shown["test_transform"][:2] == ["Resize(256)", "CenterCrop(224)"]
    assert shown["hash_activation"] == activation
    assert shown["hash_init_std"] == (0.01 if name == "hashnet" else None)
    assert shown["hash_head"] == ("relu_linear" if name == "ssdh" else "linear")

"""HashNet — Deep Learning to Hash by Continuation (Cao, Long, Wang, Yu, ICCV 2017).

Weighted maximum likelihood over pairs (paper eq. 1) with the pairwise logistic model of an adaptive
sigmoid σ(α·) (eq. 3), i.e. the loss of eq. 4, over the pairs between the batch and a memory H of the
whole training split (hashkit.memory):

    loss = Σ_ij w_ij [ log(1 + e^{θ_ij}) − s_ij θ_ij ] / Σ_ij w_ij,     θ_ij = α h_iᵀ h_j,   h = tanh(β u)

* Balance weights (eq. 2, without the multi-label confidence c_ij, as in both public PyTorch codes):
  with ``--adaptive-weights 1`` (default) w_ij = c·|S|/|S₁| for similar and |S|/|S₀| for dissimilar
  pairs, counted within the step's pairs (DeepHash-pytorch's HashNet.py and thuml/HashNet issue #17);
  with ``--adaptive-weights 0`` w_ij = c for similar and 1 for dissimilar pairs — the released
  thuml/HashNet PyTorch ``pairwise_loss``, whose ``--class_num`` ("positive negative pairs balance
  weight", README) is c. c = ``--balance-weight`` (alias ``--class-num``), default 1 as the README's
  command; the Caffe release sets 100 on ImageNet and advises the ratio of dissimilar to similar pairs.
  Dividing by Σw makes the loss a weighted mean: with adaptive weights and c = 1 it is
  ½(mean over similar + mean over dissimilar pairs), half of DeepHash-pytorch's value.
* α (``--sigmoid-alpha``) = 10 / bits when 0 (default), the releases' ``sigmoid_param``. log(1+e^θ) is a
  softplus, exact for every θ, so the releases' ``l_threshold`` = 15 overflow guard is not needed.
* Continuation (§3.2: tanh(βz) → sign(z) as β → ∞): the step counter t counts training steps and
  β = β₀·(1 + γ·T·⌊t/T⌋)^p, i.e. raised every T steps exactly as thuml/HashNet's network.py (``iter_num``
  incremented before the forward pass; ``scale = init_scale·(1 + gamma·iter_num)^power`` whenever
  ``iter_num % step_size == 0``; step_size T 200, gamma γ 0.005, power p 0.5, init_scale β₀ 1).
  (DeepHash-pytorch instead raises β = (⌊epoch/20⌋ + 1)^0.5 per epoch.) The counter is in the method's
  state_dict, so a resumed run continues the schedule. Codes are sign(u) = sign(tanh(βu)).
* Pairs: thuml pairs two independent batches of 36; here the batch is paired with the memory of relaxed
  codes h of the whole training split; rows never written yet (first epoch) get weight 0.
* Multi-label: s_ij = 1 when the two items share at least one label.

Hyper-parameters (defaults): ``--balance-weight``/``--class-num`` c 1.0; ``--adaptive-weights`` 1;
``--sigmoid-alpha`` 0 (= 10/bits); ``--beta-init`` 1.0; ``--beta-step`` 200; ``--beta-gamma`` 0.005;
``--beta-power`` 0.5.
Training defaults (thuml/HashNet pytorch/README.md and src/train.py): ResNet50 with the hash layer at
10× the learning rate (``--hash-lr-mult 10``, the parameter groups lr 1 / 10), lr 3e-4 (README command),
SGD with momentum 0.9, 72 images a step (two batches of 36) and 10,000 steps = 72 epochs of the 10,000
training images of ImageNet100 / COCO (``--batch-size 72 --max-iter 72``). Not reproduced by the common
flags: Nesterov momentum, weight decay 5e-4 (pass ``--weight-decay 5e-4``) and the lr halving every
2,000 steps (``--lr-schedule cosine`` is the nearest).
"""

from __future__ import annotations

from typing import Any

import torch

from hashkit.memory import PairwiseMemoryMethod, pairwise_nll
from hashkit.method import Batch, Hyper
from hashkit.registry import METHODS


@METHODS.register("hashnet")
class HashNet(PairwiseMemoryMethod):
    name = "hashnet"
    paper = "Cao, Long, Wang, Yu. HashNet: Deep Learning to Hash by Continuation. ICCV 2017"
    hyperparameters = {
        "balance_weight": Hyper(
            1.0, "extra weight c of similar pairs (HashNet's class_num: 'positive negative pairs balance weight')",
            aliases=("class-num",),
        ),
        "adaptive_weights": Hyper(
            1, "1: weight similar/dissimilar pairs by |S|/|S1| and |S|/|S0| of the step (paper eq. 2); "
            "0: fixed weights c / 1 (thuml PyTorch code)", int,
        ),
        "sigmoid_alpha": Hyper(0.0, "α of the adaptive sigmoid σ(α hᵢᵀhⱼ) (paper eq. 3); 0 = 10 / code length"),
        "beta_init": Hyper(1.0, "continuation: initial β of tanh(βu)"),
        "beta_step": Hyper(200, "continuation: β is raised every N training steps", int),
        "beta_gamma": Hyper(0.005, "continuation: β = β0·(1 + γ·t)^power at step t"),
        "beta_power": Hyper(0.5, "continuation: the power of β's schedule"),
    }
    recipes = {
        "seed": {
            "arch": "resnet50",
            "hash_lr_mult": 10.0,
            "lr": 3e-4,
            "batch_size": 72,
            "max_iter": 72,
            "optimizer": "sgd",
        },
    }

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.step = 0  # training steps taken (the continuation's clock)

    @property
    def alpha(self) -> float:
        return float(self.hparams["sigmoid_alpha"]) or 10.0 / self.code_length

    @property
    def beta(self) -> float:
        """β of the current step under the continuation schedule."""
        return continuation_beta(
            self.step, self.hparams["beta_init"], int(self.hparams["beta_step"]),
            self.hparams["beta_gamma"], self.hparams["beta_power"],
        )

    def relax(self, outputs: torch.Tensor) -> torch.Tensor:
        """tanh(βu) with β of the step being taken (step + 1: thuml counts iter_num before the forward).
        Pure, so ``observe`` (torchrun) and ``training_step`` relax with the same β."""
        beta = continuation_beta(
            self.step + 1, self.hparams["beta_init"], int(self.hparams["beta_step"]),
            self.hparams["beta_gamma"], self.hparams["beta_power"],
        )
        return torch.tanh(beta * outputs)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        losses = super().training_step(outputs, batch)
        self.step += 1
        return losses

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {
            "likelihood": hashnet_loss(
                codes, self.memory.similarity(batch.labels), self.memory.U, self.alpha,
                self.hparams["balance_weight"], bool(self.hparams["adaptive_weights"]), valid=self.memory.filled,
            )
        }

    def state_dict(self) -> dict[str, Any]:
        return {**self.memory.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step = int(state.get("step", 0))


def continuation_beta(step: int, beta_init: float, step_size: int, gamma: float, power: float) -> float:
    """β after ``step`` training steps: β₀·(1 + γ·T·⌊step/T⌋)^power (raised every T = ``step_size`` steps)."""
    last_raise = (step // max(1, step_size)) * max(1, step_size)
    return float(beta_init) * (1.0 + gamma * last_raise) ** power


def pair_weights(
    s: torch.Tensor, balance_weight: float, adaptive: bool, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """w_ij (b, n): c·|S|/|S₁| on similar and |S|/|S₀| on dissimilar pairs (adaptive), or c / 1 (fixed);
    0 on memory columns not in ``valid``. |S₁|, |S₀| count the valid pairs of this step."""
    mask = torch.ones_like(s) if valid is None else valid.to(s.dtype)[None, :].expand_as(s)
    positive = s * mask
    negative = (1.0 - s) * mask
    if adaptive:
        total = mask.sum()
        w_pos = balance_weight * total / positive.sum().clamp(min=1.0)
        w_neg = total / negative.sum().clamp(min=1.0)
    else:
        w_pos, w_neg = float(balance_weight), 1.0
    return positive * w_pos + negative * w_neg


def hashnet_loss(
    h: torch.Tensor,
    s: torch.Tensor,
    memory_h: torch.Tensor,
    alpha: float,
    balance_weight: float = 1.0,
    adaptive: bool = True,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """HashNet's weighted pairwise negative log-likelihood (eq. 4) of batch codes ``h`` (b, bits) against
    ``memory_h`` (n, bits), as the weighted mean Σ w·ℓ / Σ w."""
    s = s.to(h.dtype)
    theta = alpha * h @ memory_h.t().to(h.dtype)
    w = pair_weights(s, balance_weight, adaptive, valid).to(h.dtype)
    return (w * pairwise_nll(theta, s)).sum() / w.sum().clamp(min=torch.finfo(h.dtype).tiny)

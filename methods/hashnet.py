"""HashNet — Deep Learning to Hash by Continuation (Cao, Long, Wang, Yu, ICCV 2017).

Weighted maximum likelihood over pairs (paper eq. 1) with the pairwise logistic model of an adaptive
sigmoid σ(α·) (eq. 3), i.e. the loss of eq. 4, over the step's pairs (``--pairs``: across the two halves
of the batch as the seed, or between the batch and a memory H of the whole training split):

    loss = Σ_ij w_ij [ log(1 + e^{θ_ij}) − s_ij θ_ij ] / Σ_ij w_ij,     θ_ij = α h_iᵀ h_j,   h = tanh(β u)

* Balance weights (eq. 2, without the multi-label confidence c_ij, as in both public PyTorch codes):
  with ``--adaptive-weights 0`` (default, the seed) w_ij = c for similar and 1 for dissimilar pairs — the
  released thuml/HashNet PyTorch ``pairwise_loss``, whose ``--class_num`` ("positive negative pairs
  balance weight", README) is c, and which divides by c·|S₁| + |S₀| = Σw; with ``--adaptive-weights 1``
  the paper's w_ij = c·|S|/|S₁| for similar and |S|/|S₀| for dissimilar pairs, counted within the step's
  pairs (DeepHash-pytorch's HashNet.py and thuml/HashNet issue #17). c = ``--balance-weight`` (alias
  ``--class-num``), default 1 as the README's command; the Caffe release sets 100 on ImageNet.
  Dividing by Σw makes the loss a weighted mean: with adaptive weights and c = 1 it is
  ½(mean over similar + mean over dissimilar pairs), half of DeepHash-pytorch's value.
* α (``--sigmoid-alpha``) = 10 / bits when 0 (default), the releases' ``sigmoid_param``. log(1+e^θ) is a
  softplus, exact for every θ; the seed replaces it by θ(1 − s) above ``l_threshold`` = 15, which differs
  from the softplus by log(1 + e^{−θ}) < 3.1e-7 there.
* Continuation (§3.2: tanh(βz) → sign(z) as β → ∞): the step counter t counts training steps and
  β = β₀·(1 + γ·T·⌊t/T⌋)^p, i.e. raised every T steps exactly as thuml/HashNet's network.py (``iter_num``
  incremented before the forward pass; ``scale = init_scale·(1 + gamma·iter_num)^power`` whenever
  ``iter_num % step_size == 0``; step_size T 200, gamma γ 0.005, power p 0.5, init_scale β₀ 1).
  (DeepHash-pytorch instead raises β = (⌊epoch/20⌋ + 1)^0.5 per epoch.) The counter is in the method's
  state_dict, so a resumed run continues the schedule. Codes are sign(u) = sign(tanh(βu)). The model's
  ``--hash-activation`` must stay ``none``: tanh(βu) is this method's own relaxation.
* Pairs (``--pairs``): ``split`` (default, the seed) — the step's batch of 72 is two halves of 36 and only
  the 36 × 36 pairs across them count, as thuml's two loaders of 36 (which draw the halves independently,
  so an image can meet itself; here the halves are disjoint parts of one shuffled epoch); ``memory`` —
  the batch against a memory of the relaxed codes h of the whole training split (rows never written yet
  get weight 0), hashkit's earlier default, which trains under torchrun.
* Multi-label: s_ij = 1 when the two items share at least one label.

Hyper-parameters (defaults): ``--balance-weight``/``--class-num`` c 1.0; ``--adaptive-weights`` 0;
``--sigmoid-alpha`` 0 (= 10/bits); ``--beta-init`` 1.0; ``--beta-step`` 200; ``--beta-gamma`` 0.005;
``--beta-power`` 0.5; ``--pairs`` split.
Seed recipe (thuml/HashNet pytorch/README.md, src/train.py, src/network.py, src/test.py): ResNet50, the
hash layer initialised N(0, 0.01) with bias 0 and trained at 10× the learning rate (parameter groups
lr 1 / 10), lr 3e-4 (README command), SGD momentum 0.9 Nesterov, weight decay 5e-4, lr halved every
2,000 steps (``step_lr_scheduler``: StepLR(step_size 2000, gamma 0.5) per step), 72 images a step and
10,000 steps (≈ 72 epochs of 10,000 training images: ``--batch-size 72 --max-iter 72``), training
transform Resize(256) + RandomResizedCrop(224) + flip; test.py encodes one centre crop 224 of the
256 × 256 resize (``test_10crop`` False there; train.py's ``test_10crop: True`` feeds only its unused
classification test), so ``--test-transform ten_crop`` is an option, not the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hashkit.errors import HashkitError
from hashkit.method_parts.memory import PairwiseMemoryMethod, pairwise_nll
from hashkit.method import Batch, Hyper, TrainingData, similarity
from hashkit.registry import METHODS

PAIRINGS = ("split", "memory")


@METHODS.register("hashnet")
class HashNet(PairwiseMemoryMethod):
    name = "hashnet"
    family = "pairwise"
    reference_code = ('thuml/HashNet',)
    relaxation = "own"
    # In-batch pairs couple the processes' parts of a torchrun batch; pairs against the memory (written in
    # observe) are exact. torchrun refuses other values (hashkit.run).
    distributed_flags = {"pairs": "memory"}
    paper = "Cao, Long, Wang, Yu. HashNet: Deep Learning to Hash by Continuation. ICCV 2017"
    hyperparameters = {
        "balance_weight": Hyper(
            1.0, "extra weight c of similar pairs (HashNet's class_num: 'positive negative pairs balance weight')",
            aliases=("class-num",),
        ),
        "adaptive_weights": Hyper(
            0, "0: fixed weights c / 1 (thuml PyTorch seed); 1: weight similar/dissimilar pairs by "
            "|S|/|S1| and |S|/|S0| of the step (paper eq. 2)", int,
        ),
        "sigmoid_alpha": Hyper(0.0, "α of the adaptive sigmoid σ(α hᵢᵀhⱼ) (paper eq. 3); 0 = 10 / code length"),
        "beta_init": Hyper(1.0, "continuation: initial β of tanh(βu)"),
        "beta_step": Hyper(200, "continuation: β is raised every N training steps", int),
        "beta_gamma": Hyper(0.005, "continuation: β = β0·(1 + γ·t)^power at step t"),
        "beta_power": Hyper(0.5, "continuation: the power of β's schedule"),
        "pairs": Hyper(
            "split", "split: pairs across the two halves of the batch (seed: two batches of 36); memory: the "
            "batch against a memory of the training split's codes (trains under torchrun)", str,
        ),
    }
    recipes = {
        # thuml/HashNet pytorch/README.md (command), src/train.py (config), src/network.py, src/test.py.
        "seed": {
            "arch": "resnet50",
            "optimizer": "sgd",
            "lr": 3e-4,
            "hash_lr_mult": 10.0,  # parameter groups: feature layers lr 1, hash layer lr 10 (× init_lr)
            "weight_decay": 5e-4,
            "momentum": 0.9,
            "nesterov": True,
            "lr_schedule": "step",  # step_lr_scheduler: init_lr · 0.5^(iter // 2000), set before each step
            "lr_gamma": 0.5,
            "lr_step_size": 2000,
            "lr_interval": "step",
            "batch_size": 72,  # two loaders of 36
            "max_iter": 72,  # 10,000 steps of 72 over the 10,000 training images of ImageNet100 / COCO
            "train_transform": "resized_crop_flip",
            "test_transform": "center_crop",
            "image_size": 224,
            "hash_activation": "none",  # its loss applies tanh(βu) (continuation)
            "hash_init_std": 0.01,  # hash_layer.weight.data.normal_(0, 0.01); bias 0
            "adaptive_weights": 0,
            "balance_weight": 1.0,
            "pairs": "split",
        },
        # The seed counts steps (train.py num_iterations 10,000), not epochs: on CIFAR-10's 5,000 training images
        # 10,000 steps of 72 are 144 epochs (69.4 steps each).
        "seed@cifar10": {"max_iter": 144},
        # The CPU table's HashNet row was measured with the paper's adaptive weights against the memory.
        "cpu": {"adaptive_weights": 1, "pairs": "memory"},
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

    def setup(self, data: TrainingData) -> None:
        pairs = self.hparams["pairs"]
        if pairs not in PAIRINGS:
            raise HashkitError(f"--pairs {pairs!r} is unknown; valid: {', '.join(PAIRINGS)}")
        if self.hash_activation != "none":
            raise HashkitError(
                f"hashnet relaxes with its own tanh(βu) (continuation); pass --hash-activation none, not {self.hash_activation!r}"
            )
        super().setup(data)

    def relax(self, outputs: torch.Tensor) -> torch.Tensor:
        """tanh(βu) with β of the step being taken (step + 1: thuml counts iter_num before the forward).
        Pure, so ``observe`` (torchrun) and ``training_step`` relax with the same β."""
        beta = continuation_beta(
            self.step + 1, self.hparams["beta_init"], int(self.hparams["beta_step"]),
            self.hparams["beta_gamma"], self.hparams["beta_power"],
        )
        return torch.tanh(beta * outputs)

    def observe(self, outputs: torch.Tensor, index: torch.Tensor) -> None:
        """Write the global batch into the memory and, for --pairs memory, weigh its pairs as one batch:
        (w₊, w₋) and Σ w count the whole global batch, so under torchrun every process's loss is its share
        of the one-process loss (a single process: the same numbers as computing them in ``loss``)."""
        super().observe(outputs, index)
        self._batch_weights = None
        if self.hparams["pairs"] == "memory" and self.memory.labels is not None:
            s = self.memory.similarity(self.memory.labels[index]).to(outputs.dtype)
            c, adaptive = self.hparams["balance_weight"], bool(self.hparams["adaptive_weights"])
            scalars = pair_weight_scalars(s, c, adaptive, self.memory.filled)
            total = pair_weights(s, c, adaptive, self.memory.filled, scalars=scalars).sum()
            self._batch_weights = BatchWeights(scalars, total, int(index.numel()))

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        losses = super().training_step(outputs, batch)
        self.step += 1
        return losses

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.hparams["pairs"] == "split":
            half = codes.shape[0] // 2
            if half == 0:  # a last batch of one image has no pair
                return {"likelihood": codes.sum() * 0.0}
            labels = batch.labels.to(codes.dtype)
            first, second = slice(0, half), slice(half, codes.shape[0])
            s = similarity(labels[first], labels[second])
            return {
                "likelihood": hashnet_loss(
                    codes[first], s, codes[second], self.alpha, self.hparams["balance_weight"],
                    bool(self.hparams["adaptive_weights"]),
                )
            }
        return {
            "likelihood": hashnet_loss(
                codes, self.memory.similarity(batch.labels), self.memory.U, self.alpha,
                self.hparams["balance_weight"], bool(self.hparams["adaptive_weights"]), valid=self.memory.filled,
                batch_weights=getattr(self, "_batch_weights", None),
            )
        }

    def state_dict(self) -> dict[str, Any]:
        return {**self.memory.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step = int(state.get("step", 0))


@dataclass(frozen=True)
class BatchWeights:
    """The pair weights of a whole (global) batch against the memory: (w₊, w₋), Σ w and the batch size."""

    scalars: tuple[torch.Tensor | float, torch.Tensor | float]
    total: torch.Tensor
    batch_size: int


def continuation_beta(step: int, beta_init: float, step_size: int, gamma: float, power: float) -> float:
    """β after ``step`` training steps: β₀·(1 + γ·T·⌊step/T⌋)^power (raised every T = ``step_size`` steps)."""
    last_raise = (step // max(1, step_size)) * max(1, step_size)
    return float(beta_init) * (1.0 + gamma * last_raise) ** power


def pair_weight_scalars(
    s: torch.Tensor, balance_weight: float, adaptive: bool, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(w₊, w₋): c·|S|/|S₁| and |S|/|S₀| over the valid pairs of ``s`` (adaptive), or c and 1 (fixed)."""
    if not adaptive:
        return float(balance_weight), 1.0
    mask = torch.ones_like(s) if valid is None else valid.to(s.dtype)[None, :].expand_as(s)
    total = mask.sum()
    return (
        balance_weight * total / (s * mask).sum().clamp(min=1.0),
        total / ((1.0 - s) * mask).sum().clamp(min=1.0),
    )


def pair_weights(
    s: torch.Tensor,
    balance_weight: float,
    adaptive: bool,
    valid: torch.Tensor | None = None,
    scalars: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
) -> torch.Tensor:
    """w_ij (b, n): c·|S|/|S₁| on similar and |S|/|S₀| on dissimilar pairs (adaptive), or c / 1 (fixed);
    0 on memory columns not in ``valid``. |S₁|, |S₀| count the valid pairs of this step, unless ``scalars``
    (w₊, w₋) counted over a larger batch are given (torchrun: the whole global batch)."""
    mask = torch.ones_like(s) if valid is None else valid.to(s.dtype)[None, :].expand_as(s)
    w_pos, w_neg = scalars if scalars is not None else pair_weight_scalars(s, balance_weight, adaptive, valid)
    return s * mask * w_pos + (1.0 - s) * mask * w_neg


def hashnet_loss(
    h: torch.Tensor,
    s: torch.Tensor,
    memory_h: torch.Tensor,
    alpha: float,
    balance_weight: float = 1.0,
    adaptive: bool = True,
    valid: torch.Tensor | None = None,
    batch_weights: "BatchWeights | None" = None,
) -> torch.Tensor:
    """HashNet's weighted pairwise negative log-likelihood (eq. 4) of batch codes ``h`` (b, bits) against
    ``memory_h`` (n, bits) — the memory, or the other half of the batch — as the weighted mean Σ w·ℓ / Σ w."""
    s = s.to(h.dtype)
    theta = alpha * h @ memory_h.t().to(h.dtype)
    if batch_weights is None:
        w = pair_weights(s, balance_weight, adaptive, valid).to(h.dtype)
        return (w * pairwise_nll(theta, s)).sum() / w.sum().clamp(min=torch.finfo(h.dtype).tiny)
    # This process holds part of a larger batch: its rows' Σ w·ℓ over the whole batch's Σ w, scaled to a
    # mean over its own rows (the Trainer's torchrun weighting then averages to the whole batch's loss).
    w = pair_weights(s, balance_weight, adaptive, valid, scalars=batch_weights.scalars).to(h.dtype)
    share = batch_weights.batch_size / h.shape[0]
    return (w * pairwise_nll(theta, s)).sum() / batch_weights.total.clamp(min=torch.finfo(h.dtype).tiny) * share

"""Shared pieces of the methods that train a classifier (or class codes) on their hash codes.

Used by GreedyHash, JMLH, SDH-C, BiHalf (supervised), the cross-entropy baseline (a linear classifier on
the codes, :class:`CodeClassifierMethod`) and OrthoHash (cosine similarity to fixed class codes):

* :func:`sign_ste` — sign in the forward pass, the identity in the backward pass (GreedyHash's
  straight-through estimator);
* :func:`bihalf` — Bi-half's layer: each bit splits the batch at its median, with the paper's
  straight-through backward pass;
* :func:`stochastic_binary` — JMLH's stochastic binary layer and its gradient estimator;
* :func:`soft_cross_entropy` — cross-entropy against the labels normalised to sum 1: the usual
  cross-entropy for single-label items, the "label smoothing" multi-label loss of FIRe for items with
  several labels (−Σ_c y_c/|y| · log softmax(z)_c);
* :func:`cosine_logits` — the cosine similarity of every code with every class code (OrthoHash);
* :func:`check_labels` — the training labels, refused with a one-line error for a single-label-only
  method on multi-label data.

Why hand-written: these are a few lines each, defined by the papers' equations; no maintained library
offers them (pytorch-metric-learning's ArcFace/CosFace losses learn their class weights, while
OrthoHash fixes them to ±1 codes and normalises by batch-norm first).
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.centers import class_centers, label_centers, tie_breaker
from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, TrainingData
from hashkit.model import binarize


# The training recipe of CISiPLab's FIRe (train.py defaults), the public code of OrthoHash, JMLH, SDH-C,
# BiHalf (supervised) and the cross-entropy baseline: AlexNet, Adam lr 1e-4 on the hash part and 0.1 × on
# the backbone, weight decay 5e-4, batch 64, 100 epochs, lr × 0.1 after 80 % of them; random crops and flips
# for training, resize 256 + center crop 224 for testing (the nearest of hashkit's transform recipes).
FIRE_SEED: dict[str, Any] = {
    "arch": "alexnet", "optimizer": "adam", "lr": 1e-5, "hash_lr_mult": 10.0, "weight_decay": 5e-4,
    "batch_size": 64, "max_iter": 100, "lr_schedule": "step", "lr_step_size": 80, "lr_gamma": 0.1,
    "lr_interval": "epoch", "train_transform": "resized_crop_flip", "test_transform": "center_crop",
}  # fmt: skip


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor) -> torch.Tensor:
        return binarize(u)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def sign_ste(u: torch.Tensor) -> torch.Tensor:
    """b = sign(u) (sign(0) = +1, as every code in hashkit) with ∂L/∂u = ∂L/∂b (GreedyHash's hash coding layer)."""
    return _SignSTE.apply(u)


class _BiHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, gamma: float) -> torch.Tensor:
        median = u.median(dim=0).values  # the lower median for an even batch: exactly half the items above it
        b = torch.where(u > median, 1.0, -1.0).to(u.dtype)
        ctx.save_for_backward(u, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        u, b = ctx.saved_tensors
        n, k = u.shape
        return grad + ctx.gamma / (n * k) * (u - b), None


def bihalf(u: torch.Tensor, gamma: float) -> torch.Tensor:
    """Bi-half layer (Li & van Gemert, AAAI 2021; arXiv 2012.12334v1 eq. 8, the half/half assignment, and
    eq. 9, its forward/backward pass): per bit, the items of the batch above the bit's median get +1, the
    others −1 (the optimal-transport half/half assignment); backward ∂L/∂u = ∂L/∂b + γ/(N·K) · (u − b),
    N the batch size and K the bits (the paper's γ is γ/(N·K) here; the authors' code, γ = 6)."""
    return _BiHalf.apply(u, gamma)


class _StochasticBinary(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = torch.sigmoid(logits)
        code = (torch.sign(prob - eps) + 1.0) / 2.0
        ctx.save_for_backward(prob)
        return code, prob

    @staticmethod
    def backward(ctx: Any, grad_code: torch.Tensor, grad_prob: torch.Tensor) -> tuple[torch.Tensor, None]:
        (prob,) = ctx.saved_tensors
        return prob * (1 - prob) * (grad_code + grad_prob), None


def stochastic_binary(logits: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JMLH's stochastic binary layer and its gradient estimator (Shen et al. 2019; the paper's equation
    numbers not verified):
    q = σ(logits), code = 1[q > ε] ∈ {0, 1} with ε ~ U(0, 1) in training (0.5 at test, i.e. sign of the
    logits); the backward pass treats the code as q: ∂L/∂logits = q(1 − q)(∂L/∂code + ∂L/∂q).
    Returns (code, q)."""
    return _StochasticBinary.apply(logits, eps)


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ_c (y_c / Σ_c' y_c') log softmax(logits)_c (single label: cross-entropy)."""
    target = labels / labels.sum(dim=1, keepdim=True).clamp_min(1.0)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def cosine_logits(codes: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """cos(code_i, center_c) for every item i and class c, (b, classes)."""
    return F.normalize(codes, dim=1) @ F.normalize(centers, dim=1).t()


def check_labels(name: str, labels: torch.Tensor | None, single_label: bool) -> torch.Tensor:
    """The training labels; a one-line error for multi-label data when the method is single-label only."""
    if labels is None:
        raise HashkitError(f"--method {name} is supervised: it needs the training labels")
    if single_label:
        counts = labels.sum(dim=1)
        if bool((counts != 1).any()):
            worst = int(counts.max().item()) if bool((counts > 1).any()) else 0
            raise HashkitError(
                f"--method {name} is defined for single-label data only, but training images here have {worst} labels; "
                "use a multi-label method (csq, dpn, orthocos, orthoarc, greedyhash, jmlh, bihalf_sup, ce) or a "
                "single-label dataset"
            )
    return labels


class CodeClassifierMethod(HashingMethod):
    """A method whose loss classifies the codes with a linear layer of its own (:attr:`module`, trained by
    the Trainer with the hash layer's learning rate). Subclasses write :meth:`training_step`."""

    single_label_only: ClassVar[bool] = False
    classifier_bias: ClassVar[bool] = True
    supports_distributed = False  # the classifier's gradients are not all-reduced (hashkit.method)

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, self.single_label_only)
        self.num_classes = int(labels.shape[1])
        self.module = nn.Linear(self.code_length, self.num_classes, bias=self.classifier_bias).to(self.device)

    @property
    def classifier(self) -> nn.Module:
        if self.module is None:
            raise RuntimeError(f"{self.name}.training_step before setup")
        return self.module


class ClassCodeMethod(HashingMethod):
    """A method whose loss pulls each item's output toward a fixed ±1 code of its classes: CSQ's hash centers
    (Hadamard rows), DPN's polarization targets (balanced random codes). The codes (``center_kind``, see
    hashkit.centers) are made in ``setup`` from the number of classes; a multi-label item's target is the
    bitwise majority of its labels' codes, ties settled by a fixed random code. Subclasses give the loss
    (:meth:`class_code_loss`); codes and tie-breaker are checkpointed."""

    center_kind: ClassVar[str] = "hadamard"
    supports_distributed = True  # a batch-mean loss against fixed codes; no state across steps

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.centers: torch.Tensor | None = None
        self.ties = tie_breaker(code_length).to(device)

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, single_label=False)
        self.centers = class_centers(int(labels.shape[1]), self.code_length, self.center_kind).to(self.device)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.centers is None:
            raise RuntimeError(f"{self.name}.training_step before setup")
        targets = label_centers(batch.labels, self.centers, self.ties).to(outputs.dtype)
        return self.class_code_loss(outputs, targets)

    @abc.abstractmethod
    def class_code_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms for outputs (b, K) and the items' ±1 targets (b, K)."""

    def state_dict(self) -> dict[str, Any]:
        return {} if self.centers is None else {"centers": self.centers, "ties": self.ties}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("centers") is not None:
            self.centers = state["centers"].to(self.device)
            self.ties = state["ties"].to(self.device)

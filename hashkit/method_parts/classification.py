"""Shared pieces of the methods that classify their codes or pull them to fixed class codes.

Used by GreedyHash, JMLH, SDH-C, BiHalf (supervised), the cross-entropy baseline (a linear classifier on
the codes, :class:`CodeClassifierMethod`), CSQ and DPN (:class:`ClassCodeMethod`) and OrthoHash (cosine
similarity to fixed class codes):

* :func:`soft_cross_entropy` — cross-entropy against the labels normalised to sum 1: the usual
  cross-entropy for single-label items, the "label smoothing" multi-label loss of FIRe for items with
  several labels (−Σ_c y_c/|y| · log softmax(z)_c);
* :func:`cosine_logits` — the cosine similarity of every code with every class code (OrthoHash);
* :func:`check_labels` — the training labels, refused with a one-line error for a single-label-only
  method on multi-label data.

Why hand-written: these are a few lines each, defined by the papers' equations; no maintained library
offers them (pytorch-metric-learning's ArcFace/CosFace losses learn their class weights, while
OrthoHash fixes them to ±1 codes). The binarisation layers the methods relax with live in
:mod:`hashkit.method_parts.relaxations`.
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.method_parts.centers import class_centers, label_centers, tie_breaker
from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, TrainingData




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
    hashkit.method_parts.centers) are made in ``setup`` from the number of classes; a multi-label item's target is the
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

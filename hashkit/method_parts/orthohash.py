"""The part OrthoCos and OrthoArc share (Hoe et al., One Loss for All: Deep Hashing with a Single
Cosine Similarity based Learning Objective, NeurIPS 2021): batch-norm on the codes, fixed ±1 class codes,
a margin softmax over cosine similarities; the two methods differ only in the margin (methods/orthocos.py,
methods/orthoarc.py).

Scheme (paper §3, the loss in Sec. 3.2; the authors' code in CISiPLab/cisip-FIRe read for facts):
v = BN(u), the continuous code u of the hash layer batch-normalised per bit; z_c = cos(v, C_c) against
the fixed class code C_c (Hadamard rows here, hashkit.method_parts.centers; the paper's codes are orthogonal ±1
vectors); loss = softmax cross-entropy of s·margin(z) (cosine or angular margin), multi-label items
against their labels normalised to sum 1 (the authors' "label smoothing" multi-label loss); optional
quantisation term q·mean(1 − cos(v, sign v)) (q = 0 by default, as in the authors' configs). The paper's
equation numbers were not verified against its text, so the terms are named here rather than numbered.

The batch-norm and the codes: the authors binarise sign(BN(u)) with BN in eval mode. Here codes come
from the network alone (hashkit.method), so the batch-norm has no affine part (reading: its role is to
centre and scale each bit; with γ, β the threshold would be learned and could flip sign with γ < 0), and
at every epoch end its running mean μ is folded into the hash layer: bias ← bias − μ, μ ← 0. Training is
unchanged by the fold (a train-mode batch-norm is invariant to a per-bit shift of its input), and
sign(u) of the network then equals sign(BN_eval(u)), also flip-averaged (BN_eval is a positive per-bit
scaling once μ = 0).
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.method_parts.centers import class_centers
from hashkit.method_parts.reference_recipes import FIRE_SEED
from hashkit.method_parts.classification import check_labels, cosine_logits, soft_cross_entropy
from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.model import binarize

ORTHOHASH_PAPER = (
    "Hoe, Ng, Chan, Chan, Chen, Gan. One Loss for All: Deep Hashing with a Single Cosine Similarity based "
    "Learning Objective. NeurIPS 2021"
)
ORTHOHASH_SEED: dict[str, Any] = dict(FIRE_SEED)  # the authors' templates keep FIRe's defaults


def orthohash_loss(margin_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the margin logits (single label), label-normalised for multi-label rows."""
    return soft_cross_entropy(margin_logits, labels)


def cosine_quantization(v: torch.Tensor) -> torch.Tensor:
    """The optional cosine quantisation term, mean over items of 1 − cos(v, sign(v)) (sign detached)."""
    return (1.0 - F.cosine_similarity(v, binarize(v.detach()), dim=1)).mean()


class OrthoHashMethod(HashingMethod):
    """Batch-norm on the codes, fixed class codes, margin softmax; subclasses give :meth:`margin_logits`."""

    hyperparameters: ClassVar[dict[str, Hyper]] = {}
    supports_distributed = False  # per-rank batch-norm statistics would fold differently on every rank

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.centers: torch.Tensor | None = None
        self.hash_layer: nn.Linear | None = None

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, single_label=False)
        self.centers = class_centers(int(labels.shape[1]), self.code_length, "hadamard").to(self.device)
        self.module = nn.BatchNorm1d(self.code_length, affine=False).to(self.device)

    def bind_model(self, model: nn.Module) -> None:
        layer = getattr(model, "hash_layer", None)
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            raise HashkitError(f"--method {self.name} folds its batch-norm into the hash layer's bias; this model has none")
        self.hash_layer = layer

    def normalise(self, u: torch.Tensor) -> torch.Tensor:
        """v = BN(u): batch statistics in training (running ones for a batch of one item)."""
        bn = self.module
        assert isinstance(bn, nn.BatchNorm1d)
        if bn.training and u.shape[0] > 1:
            return bn(u)
        return F.batch_norm(u, bn.running_mean, bn.running_var, training=False, eps=bn.eps)

    @abc.abstractmethod
    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits from the cosines (b, classes) with the method's margin on the labels' entries."""

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.centers is None:
            raise RuntimeError(f"{self.name}.training_step before setup")
        v = self.normalise(outputs)
        labels = batch.labels.to(v.dtype)
        losses = {"ce": orthohash_loss(self.margin_logits(cosine_logits(v, self.centers.to(v.dtype)), labels), labels)}
        if self.hparams["quan"]:
            losses["quantization"] = float(self.hparams["quan"]) * cosine_quantization(v)
        return losses

    def on_epoch_end(self, epoch: int) -> None:
        """Fold the batch-norm's running mean into the hash layer's bias (see the module docstring)."""
        bn = self.module
        if self.hash_layer is None or not isinstance(bn, nn.BatchNorm1d):
            return
        with torch.no_grad():
            shift = bn.running_mean.clone()
            self.hash_layer.bias.sub_(shift.to(self.hash_layer.bias))
            bn.running_mean.sub_(shift)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.centers is None else {"centers": self.centers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("centers") is not None:
            self.centers = state["centers"].to(self.device)


def orthohash_hyper(s: float, m: float) -> dict[str, Hyper]:
    return {
        "s": Hyper(s, "scale s of the cosine logits (the paper's scaled cosine similarity)"),
        "m": Hyper(m, "margin m subtracted from the true class's cosine (orthocos) or added to its angle (orthoarc)"),
        "quan": Hyper(0.0, "weight of the quantisation term 1 − cos(v, sign v) (0 = off, as the authors)"),
    }

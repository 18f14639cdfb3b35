"""The part OrthoCos and OrthoArc share (Hoe et al., One Loss for All: Deep Hashing with a Single
Cosine Similarity based Learning Objective, NeurIPS 2021): batch-norm on the codes, fixed ±1 class codes,
a margin softmax over cosine similarities; the two methods differ only in the margin (methods/orthocos.py,
methods/orthoarc.py).

Scheme (paper §3, the loss in Sec. 3.2; the authors' code in CISiPLab/cisip-FIRe read for facts):
v = BN(W x), the hash layer without bias followed by an affine batch-norm over the bits — the model's ``bn``
head (hashkit.heads), as FIRe builds it, so v is the network's output and the codes are sign(BN_eval(W x))
of the saved model; z_c = cos(v, C_c) against the fixed class code C_c (``--centers``, hashkit.method_parts.centers: under the seed
recipe FIRe's ``cent_init`` — OrthoCos "M", random codes at a minimum mutual distance, OrthoArc "B", independent
random bits; Hadamard rows by default and under the CPU recipe, where they were measured); loss = softmax cross-entropy of
s·margin(z) (cosine or angular margin), multi-label items against their labels normalised to sum 1 (the
authors' "label smoothing" multi-label loss); optional quantisation term q·mean(1 − cos(v, sign v)) (q = 0 by
default, as in the authors' configs). The paper's equation numbers were not verified against its text, so the
terms are named here rather than numbered. ``--hash-head`` may name another head (a variant, not the paper's).
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from hashkit.method_parts.centers import CENTER_KINDS, class_centers
from hashkit.method_parts.reference_recipes import FIRE_SEED, FIRE_SEED_CIFAR10
from hashkit.method_parts.classification import check_labels, cosine_logits, soft_cross_entropy
from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.model import binarize

ORTHOHASH_PAPER = (
    "Hoe, Ng, Chan, Chan, Chen, Gan. One Loss for All: Deep Hashing with a Single Cosine Similarity based "
    "Learning Objective. NeurIPS 2021"
)
ORTHOHASH_SEED: dict[str, Any] = dict(FIRE_SEED)  # the authors' templates keep FIRe's defaults (head: bn, the method's)
ORTHOHASH_SEED_CIFAR10: dict[str, Any] = dict(FIRE_SEED_CIFAR10)


def orthohash_loss(margin_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the margin logits (single label), label-normalised for multi-label rows."""
    return soft_cross_entropy(margin_logits, labels)


def cosine_quantization(v: torch.Tensor) -> torch.Tensor:
    """The optional cosine quantisation term, mean over items of 1 − cos(v, sign(v)) (sign detached)."""
    return (1.0 - F.cosine_similarity(v, binarize(v.detach()), dim=1)).mean()


class OrthoHashMethod(HashingMethod):
    """Fixed class codes and a margin softmax over the cosines of the ``bn`` head's outputs; subclasses give
    :meth:`margin_logits`."""

    hyperparameters: ClassVar[dict[str, Hyper]] = {}
    head = "bn"
    relaxation = "none"  # the loss reads v = BN(Wx) as it is
    supports_distributed = False  # the head's batch-norm statistics would differ between the processes' parts

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.centers: torch.Tensor | None = None

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, single_label=False)
        kind = str(self.hparams.get("centers", "hadamard"))
        if kind not in CENTER_KINDS:
            raise HashkitError(f"--centers {kind!r} is unknown; valid: {', '.join(CENTER_KINDS)}")
        self.centers = class_centers(int(labels.shape[1]), self.code_length, kind).to(self.device)

    @abc.abstractmethod
    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits from the cosines (b, classes) with the method's margin on the labels' entries."""

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.centers is None:
            raise RuntimeError(f"{self.name}.training_step before setup")
        v = outputs
        labels = batch.labels.to(v.dtype)
        losses = {"ce": orthohash_loss(self.margin_logits(cosine_logits(v, self.centers.to(v.dtype)), labels), labels)}
        if self.hparams["quan"]:
            losses["quantization"] = float(self.hparams["quan"]) * cosine_quantization(v)
        return losses

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
        "centers": Hyper(
            "hadamard", "the fixed class codes: hadamard (rows of a Hadamard matrix; the CPU recipe's, measured), "
            "min_distance (FIRe's cent_init M, OrthoCos's seed), iid (FIRe's cent_init B, OrthoArc's seed) or "
            "bernoulli (balanced random codes)", str,
        ),
    }

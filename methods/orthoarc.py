"""OrthoArc — OrthoHash with the additive angular margin (Hoe et al., One Loss for All, NeurIPS 2021).

Loss (the paper's cosine-similarity cross-entropy, Sec. 3.2, with an ArcFace-style angular margin;
shared scheme in hashkit/method_parts/orthohash.py; the paper's equation numbers not verified):

    L = −Σ_c ỹ_c log softmax_c( s · cos(θ_c + m · y_c) ),   θ_c = arccos(cos(v, C_c)),  v = BN(u),  ỹ = y / Σy

with fixed ±1 class codes C (seed: FIRe's cent_init B, independent random bits; cpu: Hadamard rows; --centers),
s = 8, m = 0.2 (the authors' orthoarc template). The
cosine is clamped to [−0.99999, 0.99999] before arccos (its gradient is infinite at ±1), as in the
authors' code. Multi-label: yes (the margin on every label of the item).
"""

from __future__ import annotations

import torch

from hashkit.method_parts.orthohash import ORTHOHASH_PAPER, ORTHOHASH_SEED, ORTHOHASH_SEED_CIFAR10, OrthoHashMethod, orthohash_hyper
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS

ARC_CLAMP = 0.99999


def arc_margin_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """s · cos(arccos(cos) + m · y) (the angular margin)."""
    return s * torch.cos(torch.acos(cos.clamp(-ARC_CLAMP, ARC_CLAMP)) + m * labels)


@METHODS.register("orthoarc")
class OrthoArc(OrthoHashMethod):
    name = "orthoarc"
    family = "class-codes"
    reference_code = ('CISiPLab/cisip-FIRe',)
    paper = ORTHOHASH_PAPER + " (angular margin)"
    hyperparameters = orthohash_hyper(s=8.0, m=0.2)
    recipes = {
        # seed: FIRe's (hashkit.method_parts.reference_recipes), CIFAR-10 transforms on CIFAR-10
        "seed": {**ORTHOHASH_SEED, "centers": "iid"},  # configs/templates/orthoarc.yaml cent_init: B
        "seed@cifar10": dict(ORTHOHASH_SEED_CIFAR10),
        # cpu: hashkit.recipes.REGULARISED_CPU (measured: results/cifar10-cpu/orthoarc-32.json).
        "cpu": dict(REGULARISED_CPU),
    }

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return arc_margin_logits(cos, labels, float(self.hparams["s"]), float(self.hparams["m"]))

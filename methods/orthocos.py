"""OrthoCos — OrthoHash with the cosine margin (Hoe et al., One Loss for All, NeurIPS 2021).

Loss (the paper's cosine-similarity cross-entropy, Sec. 3.2, with a CosFace-style cosine margin; shared
scheme in hashkit/method_parts/orthohash.py; the paper's equation numbers not verified):

    L = −Σ_c ỹ_c log softmax_c( s · (cos(v, C_c) − m · y_c) ),   v = BN(u),  ỹ = y / Σy

with fixed ±1 class codes C (seed: FIRe's cent_init M, random codes at a minimum mutual distance; cpu: Hadamard
rows; --centers), s = 8, m = 0.3 (the authors' orthocos template; the margin
is applied to every label of a multi-label item, as in their code). Multi-label: yes.
Head: ``bn`` (W x without bias, then an affine batch-norm, as FIRe); codes are sign of its output.
"""

from __future__ import annotations

import torch

from hashkit.method_parts.orthohash import ORTHOHASH_PAPER, ORTHOHASH_SEED, ORTHOHASH_SEED_CIFAR10, OrthoHashMethod, orthohash_hyper
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS


def cosine_margin_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m: float) -> torch.Tensor:
    """s · (cos − m · y) (the cosine margin)."""
    return s * (cos - m * labels)


@METHODS.register("orthocos")
class OrthoCos(OrthoHashMethod):
    name = "orthocos"
    family = "class-codes"
    reference_code = ('CISiPLab/cisip-FIRe',)
    paper = ORTHOHASH_PAPER + " (cosine margin)"
    hyperparameters = orthohash_hyper(s=8.0, m=0.3)
    recipes = {
        # seed: FIRe's (hashkit.method_parts.reference_recipes), CIFAR-10 transforms on CIFAR-10
        "seed": {**ORTHOHASH_SEED, "centers": "min_distance"},  # configs/templates/orthocos.yaml cent_init: M
        "seed@cifar10": dict(ORTHOHASH_SEED_CIFAR10),
        # cpu: hashkit.recipes.REGULARISED_CPU (measured: results/cifar10-cpu/orthocos-32.json).
        "cpu": dict(REGULARISED_CPU),
    }

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosine_margin_logits(cos, labels, float(self.hparams["s"]), float(self.hparams["m"]))

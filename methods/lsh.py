"""LSH — random-hyperplane locality-sensitive hashing (Charikar, Similarity Estimation Techniques from Rounding
Algorithms, STOC 2002), as FIRe's ``functions/loss/lsh.py`` runs it on frozen features.

Bit i of x is sgn(wᵢᵀ x) with wᵢ ~ N(0, I_d) drawn once: u = W x, W (bits, d) standard Gaussian, no bias (FIRe;
Charikar's hyperplanes pass through the origin, so that P[bit differs] = angle(x, y) / π). ``--center 1``
moves the hyperplanes through the training features' mean instead, u = W (x − μ) — what most benchmarks
(ITQ's paper among them) run as "LSH", and what matters on features that are all non-negative (post-ReLU
pooled features lie in one orthant, where hyperplanes through the origin split few pairs).

W is drawn from a generator seeded with the run's ``--seed`` (hashkit.method_parts.closed_form): the same
seed gives the same hyperplanes. Nothing is learned from the data but (with ``--center 1``) its mean.
"""

from __future__ import annotations

import torch

from hashkit.errors import HashkitError
from hashkit.method import Hyper
from hashkit.method_parts.closed_form import ClosedFormMethod, fitted_statistics, seeded_generator
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU, fire_shallow_recipes
from hashkit.registry import METHODS


def lsh_hyperplanes(bits: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """W (bits, d) with standard Gaussian entries, drawn in float32 from ``generator``."""
    return torch.randn(bits, dim, generator=generator, dtype=torch.float32, device=generator.device)


@METHODS.register("lsh")
class LSH(ClosedFormMethod):
    name = "lsh"
    paper = "Charikar. Similarity Estimation Techniques from Rounding Algorithms. STOC 2002 (random-hyperplane LSH)"
    hyperparameters = {
        "center": Hyper(0, "LSH: 1 = hyperplanes through the training features' mean, 0 = through the origin (Charikar, FIRe)", int),
    }
    recipes = {
        # FIRe: functions/loss/lsh.py on the frozen VGG16 fc7 descriptors of the training split (configs/templates/lsh.yaml).
        **fire_shallow_recipes(center=0),
        # The frozen EfficientNet-Lite0 pooled features (non-negative): hyperplanes through their mean.
        "cpu": {**FROZEN_LITE0_CPU, "center": 1},
    }

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        center = int(self.hparams["center"])
        if center not in (0, 1):
            raise HashkitError(f"--center must be 0 or 1 (hyperplanes through the origin or the mean), got {center}")
        weight = lsh_hyperplanes(self.code_length, features.shape[1], seeded_generator()).to(features.device)
        x = features.double()
        origin = x.mean(dim=0) if center else torch.zeros_like(x[0])  # a point every hyperplane goes through
        bias = -(weight.double() @ origin)
        self.head_module.set_projection(weight, bias.float())
        return fitted_statistics(x @ weight.double().t() + bias)

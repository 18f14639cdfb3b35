"""PCAH — PCA hashing: the sign of the top principal components (the baseline of Wang, Kumar & Chang,
Semi-Supervised Hashing for Scalable Image Retrieval, CVPR 2010, and of Gong & Lazebnik, ITQ, CVPR 2011), as
FIRe's ``functions/loss/pca.py`` runs it on frozen features.

u = C (x − μ): μ the training features' mean, C (bits, d) the covariance's top ``bits`` eigenvectors, largest
variance first (FIRe: sklearn ``PCA(n_components=bits)``, no whitening); bit i = sgn(uᵢ). Exact PCA here
(hashkit.method_parts.closed_form.fit_pca), each direction's sign fixed by its largest entry — a flipped
direction flips one bit everywhere and leaves every Hamming distance unchanged.
"""

from __future__ import annotations

import torch

from hashkit.method_parts.closed_form import ClosedFormMethod, fit_pca, fitted_statistics, pca_head_projection
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU, fire_shallow_recipes
from hashkit.registry import METHODS


@METHODS.register("pcah")
class PCAH(ClosedFormMethod):
    name = "pcah"
    paper = "PCA hashing (baseline of Wang, Kumar & Chang, CVPR 2010; Gong & Lazebnik, CVPR 2011)"
    recipes = {
        # FIRe: functions/loss/pca.py on the frozen VGG16 fc7 descriptors (configs/templates/pca.yaml).
        **fire_shallow_recipes(),
        "cpu": dict(FROZEN_LITE0_CPU),
    }

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.check_fit_size(features)
        pca = fit_pca(features, self.code_length)
        weight, bias = pca_head_projection(pca)
        self.head_module.set_projection(weight.to(features.device), bias.to(features.device))
        return fitted_statistics(pca.transform(features), explained_variance=pca.explained_ratio)

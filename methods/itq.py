"""ITQ — Iterative Quantization (Gong & Lazebnik, Iterative Quantization: A Procrustean Approach to Learning
Binary Codes, CVPR 2011), unsupervised PCA-ITQ, as FIRe's ``functions/loss/itq.py`` runs it on frozen features.

1. V = C (x − μ)ᵀ: the training features projected on their top ``bits`` principal directions (as PCAH;
   FIRe: sklearn ``PCA(n_components=bits)``, no whitening);
2. an orthogonal R (bits × bits) minimising the quantisation loss ‖B − V R‖²_F, alternating B = sgn(V R) and
   the Procrustes step R = Ŝ Sᵀ with Bᵀ V = S Ω Ŝᵀ, from R₀ = the left singular vectors of a Gaussian matrix,
   for ``--itq-iterations`` rounds (paper: 50; FIRe's template: 100);
3. codes sgn(Rᵀ C (x − μ)): one fixed linear head, weight Rᵀ C and bias −Rᵀ C μ.

Deviation from FIRe, on purpose: FIRe's rotation update is ``VT.t() @ U.t()`` with torch.svd's third output,
which is V (not Vᵀ) — Ŝᵀ Sᵀ instead of Ŝ Sᵀ — and does not decrease the loss; this file implements the
paper's (and the authors' MATLAB code's) update, whose loss never increases (logged as ``itq_loss``, ‖B − V R‖²/n).
R₀ is drawn from a generator seeded with ``--seed`` (hashkit.method_parts.closed_form).
"""

from __future__ import annotations

import torch

from hashkit.errors import HashkitError
from hashkit.method import Hyper
from hashkit.method_parts.closed_form import (
    ClosedFormMethod,
    fit_pca,
    fitted_statistics,
    itq_rotation,
    pca_head_projection,
    seeded_generator,
)
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU, fire_shallow_recipes
from hashkit.registry import METHODS


@METHODS.register("itq")
class ITQ(ClosedFormMethod):
    name = "itq"
    paper = "Gong & Lazebnik. Iterative Quantization: A Procrustean Approach to Learning Binary Codes. CVPR 2011 (PCA-ITQ)"
    hyperparameters = {
        "itq_iterations": Hyper(50, "ITQ: alternating rounds of B = sgn(VR) and the Procrustes rotation (paper: 50)", int),
    }
    recipes = {
        # FIRe: functions/loss/itq.py on the frozen VGG16 fc7 descriptors; configs/templates/itq.yaml max_iters 100.
        **fire_shallow_recipes(itq_iterations=100),
        "cpu": dict(FROZEN_LITE0_CPU),
    }

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        iterations = int(self.hparams["itq_iterations"])
        if iterations < 0:
            raise HashkitError(f"--itq-iterations must be 0 or more (paper: 50), got {iterations}")
        self.check_fit_size(features)
        pca = fit_pca(features, self.code_length)
        projected = pca.transform(features)
        rotation, losses = itq_rotation(projected, iterations, seeded_generator())
        weight, bias = pca_head_projection(pca, rotation)
        self.head_module.set_projection(weight.to(features.device), bias.to(features.device))
        return fitted_statistics(projected @ rotation, itq_loss=losses[-1], itq_loss_start=losses[0],
                                 explained_variance=pca.explained_ratio)  # fmt: skip

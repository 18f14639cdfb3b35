"""CE — the cross-entropy baseline: a linear classifier of the method's own on tanh codes.

    L = CE(W tanh(u) + c, y)

No hashing-specific term at all: what every hashing method should beat (FIRe's "ce" baseline, 0.434
mAP@1000 at 64 bits on ImageNet100 against ~0.70 for the best methods). Codes are sign(u). Multi-label:
the cross-entropy against the labels normalised to sum 1 (FIRe's reading).
"""

from __future__ import annotations

import torch

from hashkit.method_parts.reference_recipes import FIRE_SEED
from hashkit.method_parts.classification import CodeClassifierMethod, soft_cross_entropy
from hashkit.method import Batch
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS


@METHODS.register("ce")
class CE(CodeClassifierMethod):
    name = "ce"
    family = "classification (baseline)"
    relaxation = "own"
    paper = "cross-entropy baseline: a linear classifier on tanh codes (as CISiPLab's FIRe 'ce')"
    hyperparameters = {}
    # cpu: the recipe of the methods it baselines (hashkit.recipes.REGULARISED_CPU), measured (32 bits, seed 0):
    # 0.7779 against 0.7649 with 4 views in 32 epochs (README CPU results, note 11).
    recipes = {"seed": dict(FIRE_SEED), "cpu": dict(REGULARISED_CPU)}

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.classifier(torch.tanh(outputs))
        return {"ce": soft_cross_entropy(logits, batch.labels.to(logits.dtype))}

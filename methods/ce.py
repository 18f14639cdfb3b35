"""CE — the cross-entropy baseline: a linear classifier of the method's own on tanh codes.

    L = CE(W tanh(u) + c, y)

No hashing-specific term at all: what every hashing method should beat (FIRe's "ce" baseline, 0.434
mAP@1000 at 64 bits on ImageNet100 against ~0.70 for the best methods). Codes are sign(u). Multi-label:
the cross-entropy against the labels normalised to sum 1 (FIRe's reading).
"""

from __future__ import annotations

import torch

from hashkit.codeheads import FIRE_SEED, CodeClassifierMethod, soft_cross_entropy
from hashkit.method import Batch
from hashkit.registry import METHODS


@METHODS.register("ce")
class CE(CodeClassifierMethod):
    name = "ce"
    paper = "cross-entropy baseline: a linear classifier on tanh codes (as CISiPLab's FIRe 'ce')"
    hyperparameters = {}
    recipes = {"seed": dict(FIRE_SEED), "cpu": {"cached_views": 4}}  # the same views as the methods it baselines

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.classifier(torch.tanh(outputs))
        return {"ce": soft_cross_entropy(logits, batch.labels.to(logits.dtype))}

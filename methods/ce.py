"""CE — the cross-entropy baseline as CISiPLab's FIRe builds it ("ce"): a linear classifier of the method's own
on the raw hash outputs u.

    L = CE(W u + c, y)

FIRe's ``ce`` template leaves ``hash_fc_output`` unset, so its hash layer ends in the identity
(models/architectures/helper.py ``get_hash_activation('identity')``) and functions/loss/ce.py classifies u as it
is. No hashing-specific term at all: what every hashing method should beat (FIRe's "ce" baseline, 0.434
mAP@1000 at 64 bits on ImageNet100 against ~0.70 for the best methods). Codes are sign(u). Multi-label: the
cross-entropy against the labels normalised to sum 1 (FIRe's reading). The variant on tanh(u) that hashkit
had before is ``ce_tanh`` (methods/ce_tanh.py).
"""

from __future__ import annotations

import torch

from hashkit.method_parts.reference_recipes import FIRE_HEAD_WITHOUT_BIAS, FIRE_SEED, FIRE_SEED_CIFAR10
from hashkit.method_parts.classification import CodeClassifierMethod, soft_cross_entropy
from hashkit.method import Batch
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS


@METHODS.register("ce")
class CE(CodeClassifierMethod):
    name = "ce"
    family = "classifier"
    reference_code = ('CISiPLab/cisip-FIRe',)
    relaxation = "own"
    mixes_labels = True  # its loss is a cross-entropy against labels / Σ labels (--mixup)
    paper = "cross-entropy baseline: a linear classifier on the raw hash outputs (CISiPLab's FIRe 'ce')"
    hyperparameters = {}
    # seed: FIRe's (arch "ce": a hash layer without bias). cpu: the recipe of the methods it baselines
    # (hashkit.recipes.REGULARISED_CPU): 0.7401 at 32 bits, seed 0 (results/cifar10-cpu/ce-32.json; docs/results.md, note 6).
    recipes = {
        "seed": {**FIRE_SEED, **FIRE_HEAD_WITHOUT_BIAS},
        "seed@cifar10": dict(FIRE_SEED_CIFAR10),
        "cpu": dict(REGULARISED_CPU),
    }

    def classifier_inputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """What the classifier reads: u as it is (FIRe's identity hash activation)."""
        return outputs

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.classifier_inputs(outputs))
        return {"ce": soft_cross_entropy(logits, batch.labels.to(logits.dtype))}

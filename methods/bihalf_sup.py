"""BiHalf (supervised) — Li & van Gemert, Deep Unsupervised Image Hashing by Maximizing Bit Entropy,
AAAI 2021, in its supervised form as in CISiPLab's FIRe ("bihalf-supervised"): the bi-half layer on the
codes and a cross-entropy classifier of the method's own on them.

In training the bi-half layer (eq. 8–9 in the numbering of arXiv 2012.12334v1, hashkit.method_parts.classification.bihalf)
assigns, per bit, +1 to the half of the batch above the bit's median and −1 to the other half (eq. 8;
maximal bit entropy: every bit is balanced in every batch); its backward pass is
∂L/∂u = ∂L/∂b + γ/(N·K)·(u − b) (eq. 9, whose γ is γ/(N·K) here), γ = 6 (the authors' code). Loss:

    L = CE(W b, y)

At test the layer is the identity: codes are sign(u), as in the authors' code. Multi-label: the
cross-entropy against the labels normalised to sum 1 (FIRe's reading).
"""

from __future__ import annotations

import torch

from hashkit.method_parts.reference_recipes import FIRE_HEAD_WITHOUT_BIAS, FIRE_SEED, FIRE_SEED_CIFAR10
from hashkit.method_parts.classification import CodeClassifierMethod, soft_cross_entropy
from hashkit.method_parts.relaxations import bihalf
from hashkit.method import Batch, Hyper
from hashkit.registry import METHODS


@METHODS.register("bihalf_sup")
class BiHalfSupervised(CodeClassifierMethod):
    name = "bihalf_sup"
    family = "classifier"
    reference_code = ('CISiPLab/cisip-FIRe',)
    relaxation = "own"
    mixes_labels = True  # its loss is a cross-entropy against labels / Σ labels (--mixup)
    paper = "Li, van Gemert. Deep Unsupervised Image Hashing by Maximizing Bit Entropy (Bi-half). AAAI 2021 (supervised variant)"
    hyperparameters = {"gamma": Hyper(6.0, "γ of the bi-half layer's backward pass γ/(N·K)·(u − b) (paper eq. 9, arXiv v1)")}
    # cpu: 4 cached views in the shared 32 epochs (0.7561 at 32 bits, seed 0), not hashkit.recipes.REGULARISED_CPU
    # like the other catalogue I methods: measured 0.7440 with it (README CPU results, note 11).
    # seed: FIRe's (arch "ce": a hash layer without bias).
    recipes = {
        "seed": {**FIRE_SEED, **FIRE_HEAD_WITHOUT_BIAS},
        "seed@cifar10": dict(FIRE_SEED_CIFAR10),
        "cpu": {"cached_views": 4},
    }

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.classifier(bihalf(outputs, float(self.hparams["gamma"])))
        return {"ce": soft_cross_entropy(logits, batch.labels.to(logits.dtype))}

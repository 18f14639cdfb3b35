"""Unsupervised, with features: the codes' cosine similarities copy the backbone features' (as unsupervised
GreedyHash does), through a straight-through sign. Never reads labels.

    L = mean_ij ( cos(x_i, x_j) − cos(b_i, b_j) )²,   b = sign(u) (straight-through)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod
from hashkit.method_parts.relaxations import sign_ste


class UnsupervisedExample(HashingMethod):
    name = "unsupervised_example"
    family = "unsupervised"
    reference_code = ("none: an example",)
    paper = "example: feature-similarity preserving codes"
    supervised = False
    needs_features = True
    relaxation = "own"
    supports_distributed = False

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        x = F.normalize(batch.features.detach(), dim=1)
        b = F.normalize(sign_ste(outputs), dim=1)
        return {"similarity": (x @ x.t() - b @ b.t()).pow(2).mean()}

"""Pairwise: the pairwise likelihood of DPSH over the batch's own pairs (no memory).

    L = mean_ij [ log(1 + e^θ_ij) − s_ij θ_ij ] + η · mean ‖u − sign u‖²,   θ_ij = ½ u_iᵀ u_j
"""

from __future__ import annotations

import torch

from hashkit.method import Batch, HashingMethod, Hyper, similarity
from hashkit.method_parts.memory import pairwise_nll
from hashkit.model import binarize


class PairwiseExample(HashingMethod):
    name = "pairwise_example"
    family = "pairwise"
    reference_code = ("none: an example",)
    paper = "example: DPSH's likelihood on in-batch pairs"
    hyperparameters = {"eta": Hyper(0.1, "weight η of the quantisation term")}
    supports_distributed = False  # pairs are formed inside each process's part of the batch

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        theta = 0.5 * outputs @ outputs.t()
        s = similarity(batch.labels, batch.labels)
        quantization = (outputs - binarize(outputs.detach())).pow(2).mean()
        return {"likelihood": pairwise_nll(theta, s).mean(), "quantization": self.hparams["eta"] * quantization}

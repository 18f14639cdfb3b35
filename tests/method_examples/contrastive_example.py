"""Contrastive, two views and an MLP head: the two views of each item should get the same code and other
items other codes (a NT-Xent loss on tanh codes, as CIBHash's contrastive term). Never reads labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, Hyper


class ContrastiveExample(HashingMethod):
    name = "contrastive_example"
    family = "unsupervised"
    reference_code = ("none: an example",)
    paper = "example: NT-Xent between two views' tanh codes"
    hyperparameters = {"temperature": Hyper(0.5, "temperature of the NT-Xent loss")}
    supervised = False
    views = 2
    head = "mlp"
    relaxation = "tanh"

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        b = outputs.shape[0]
        z = F.normalize(self.tanh_outputs(outputs).transpose(0, 1).reshape(2 * b, -1), dim=1)  # view 1, then view 2
        logits = (z @ z.t() / self.hparams["temperature"]).fill_diagonal_(float("-inf"))
        partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
        return {"nt_xent": F.cross_entropy(logits, partner)}

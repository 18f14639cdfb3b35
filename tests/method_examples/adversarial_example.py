"""Adversarial, with an optimisation step of its own: a discriminator learns to tell the codes' tanh
relaxation from uniform ±1 codes (its own Adam step), and the network learns to fool it while keeping
labelled pairs together (as TBH's adversarial regulariser, much simplified)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.method import Batch, HashingMethod, Hyper, TrainingData, similarity


class AdversarialExample(HashingMethod):
    name = "adversarial_example"
    family = "pairwise"
    reference_code = ("none: an example",)
    paper = "example: codes indistinguishable from uniform ±1 codes"
    hyperparameters = {
        "adversarial": Hyper(0.1, "weight of the term that fools the discriminator"),
        "discriminator_lr": Hyper(1e-3, "learning rate of the discriminator's own Adam"),
    }
    relaxation = "tanh"

    def setup(self, data: TrainingData) -> None:
        self.own_modules = nn.ModuleDict({"discriminator": nn.Sequential(
            nn.Linear(self.code_length, 16), nn.ReLU(), nn.Linear(16, 1))})  # fmt: skip

    def own_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = self.own_modules["discriminator"].parameters()
        self.discriminator_optimizer = torch.optim.Adam(params, lr=self.hparams["discriminator_lr"])
        return {"discriminator": self.discriminator_optimizer}

    def critic(self, codes: torch.Tensor) -> torch.Tensor:
        return self.own_modules["discriminator"](codes).squeeze(1)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.tanh_outputs(outputs)
        s = 2 * similarity(batch.labels, batch.labels) - 1
        fool = F.binary_cross_entropy_with_logits(self.critic(h), torch.ones(len(h), device=h.device))
        return {"pairs": (h @ h.t() / h.shape[1] - s).pow(2).mean(), "adversarial": self.hparams["adversarial"] * fool}

    def own_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        fake = self.tanh_outputs(outputs)
        real = torch.randint(0, 2, fake.shape, device=fake.device).to(fake.dtype) * 2 - 1
        logits = self.critic(torch.cat([real, fake]))
        targets = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator_optimizer.step()
        return {"discriminator": loss}

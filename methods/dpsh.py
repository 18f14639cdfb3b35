"""DPSH — Deep Supervised Hashing with Pairwise Labels (Li, Wang, Kang, IJCAI 2016).

Loss (paper eq. 2 with the relaxation of eq. 3): over the pairs between the batch and a memory U of
the whole training split,

    L = −Σ_{s_ij} (s_ij θ_ij − log(1 + e^{θ_ij}))  +  η Σ_i ‖b_i − u_i‖²,   θ_ij = ½ u_iᵀ u_j,  b_i = sign(u_i)

with log(1+e^θ) evaluated stably as softplus. Normalisation follows the DPSH-pytorch seed: both terms
are divided by (batch size × training-set size), so ``--eta`` keeps the seed's meaning.

Hyper-parameters: ``--eta`` 10 (seed default). Training defaults (seed, AlexNet): lr 1e-5, batch 512,
150 epochs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, Hyper, TrainingData, similarity
from hashkit.model import binarize
from hashkit.registry import METHODS


@METHODS.register("dpsh")
class DPSH(HashingMethod):
    name = "dpsh"
    paper = "Li, Wang, Kang. Feature Learning based Deep Supervised Hashing with Pairwise Labels. IJCAI 2016"
    hyperparameters = {"eta": Hyper(10.0, "weight η of the quantization term η‖B−U‖² (paper eq. 3)")}
    training_defaults = {"lr": 1e-5, "batch_size": 512, "max_iter": 150, "arch": "alexnet"}

    def setup(self, data: TrainingData) -> None:
        assert data.labels is not None
        self.train_labels = data.labels
        self.U = torch.zeros(data.num_items, self.code_length, device=self.device)  # memory of relaxed codes
        self.B = torch.zeros(data.num_items, self.code_length, device=self.device)  # memory of binary codes

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        self.U[batch.index] = outputs.detach()
        self.B[batch.index] = binarize(outputs.detach())
        return dpsh_loss(outputs, batch.labels, self.U, self.train_labels, self.hparams["eta"])

    def state_dict(self) -> dict[str, Any]:
        return {"U": self.U, "B": self.B}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.U = state["U"].to(self.device)
        self.B = state["B"].to(self.device)


def dpsh_loss(
    u: torch.Tensor, labels: torch.Tensor, memory_u: torch.Tensor, memory_labels: torch.Tensor, eta: float
) -> dict[str, torch.Tensor]:
    """DPSH's likelihood and quantization terms for batch outputs ``u`` against the memory (eq. 3)."""
    s = similarity(labels, memory_labels)
    theta = 0.5 * u @ memory_u.t()
    pairs = s.numel()
    likelihood = (F.softplus(theta) - s * theta).sum() / pairs
    quantization = eta * (binarize(u.detach()) - u).pow(2).sum() / pairs
    return {"likelihood": likelihood, "quantization": quantization}

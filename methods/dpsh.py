"""DPSH — Deep Supervised Hashing with Pairwise Labels (Li, Wang, Kang, IJCAI 2016).

Loss (paper eq. 2 with the relaxation of eq. 3): over the pairs between the batch and a memory U of
the whole training split (hashkit.memory),

    L = −Σ_{s_ij} (s_ij θ_ij − log(1 + e^{θ_ij}))  +  η Σ_i ‖b_i − u_i‖²,   θ_ij = ½ u_iᵀ u_j,  b_i = sign(u_i)

with log(1+e^θ) evaluated stably as softplus. Normalisation follows the DPSH-pytorch seed: both terms
are divided by (batch size × training-set size), so ``--eta`` keeps the seed's meaning.

Hyper-parameters: ``--eta`` 10 (seed default). Training defaults (seed, AlexNet): lr 1e-5, batch 512,
150 epochs.
"""

from __future__ import annotations

from typing import Any

import torch

from hashkit.memory import PairwiseMemoryMethod, pairwise_nll
from hashkit.method import Batch, Hyper, similarity
from hashkit.model import binarize
from hashkit.registry import METHODS


@METHODS.register("dpsh")
class DPSH(PairwiseMemoryMethod):
    name = "dpsh"
    paper = "Li, Wang, Kang. Feature Learning based Deep Supervised Hashing with Pairwise Labels. IJCAI 2016"
    hyperparameters = {"eta": Hyper(10.0, "weight η of the quantization term η‖B−U‖² (paper eq. 3)")}
    recipes = {"seed": {"lr": 1e-5, "batch_size": 512, "max_iter": 150, "arch": "alexnet"}}

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        assert self.memory.labels is not None
        return dpsh_loss(codes, batch.labels, self.memory.U, self.memory.labels, self.hparams["eta"])

    @property
    def U(self) -> torch.Tensor:
        """The memory of relaxed codes (n, bits)."""
        return self.memory.U

    @property
    def B(self) -> torch.Tensor:
        """sign(U) of the rows written so far, 0 for rows not seen yet (the seed's B buffer)."""
        return torch.where(self.memory.filled[:, None], binarize(self.memory.U), torch.zeros_like(self.memory.U))

    def state_dict(self) -> dict[str, Any]:
        return {**self.memory.state_dict(), "B": self.B}


def dpsh_loss(
    u: torch.Tensor, labels: torch.Tensor, memory_u: torch.Tensor, memory_labels: torch.Tensor, eta: float
) -> dict[str, torch.Tensor]:
    """DPSH's likelihood and quantization terms for batch outputs ``u`` against the memory (eq. 3)."""
    s = similarity(labels, memory_labels)
    theta = 0.5 * u @ memory_u.t()
    pairs = s.numel()
    likelihood = pairwise_nll(theta, s).sum() / pairs
    quantization = eta * (binarize(u.detach()) - u).pow(2).sum() / pairs
    return {"likelihood": likelihood, "quantization": quantization}

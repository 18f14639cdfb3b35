"""LCDSH — Locality-Constrained Deep Supervised Hashing for Image Retrieval (Zhu, Gao; IJCAI 2017).

A pairwise likelihood over the pairs of the mini-batch with ±1 similarities, plus a locality constraint that
makes the likelihood of a pair under the relaxed codes u match the one under their binary codes b = sign u.
As DeepHash-pytorch's ``LCDSH.py`` (``LCDSHLoss``), with θ_ij = clamp(½ u_iᵀu_j, −50, 50), θ^b_ij = ½ b_iᵀb_j:

    s_ij = +1 if items i and j share a label else −1
    L = mean_ij log(1 + e^{−s_ij θ_ij})  +  λ · mean_ij (σ(θ_ij) − σ(θ^b_ij))²

Readings:

* Every ordered pair of the batch, i = j included (the reference's full b × b matrices).
* The clamp of θ to [−50, 50] is kept (the reference's; zero gradient beyond, where σ is flat anyway and the
  likelihood term's gradient is below e^{−50}); log(1 + e^x) is evaluated as softplus (exact).
* b = sign u carries no gradient (``torch.sign``; sign 0 = 0 as there).
* Relaxation "none" (the reference's AlexNet ends linearly). Multi-label: s_ij = +1 when the items share a
  label (the reference's ``y @ y.t() > 0``).
* Not exact under torchrun: the pairs are formed inside each process's part of the batch.

Hyper-parameters: λ = 3 (DeepHash-pytorch's ``lambda``). Seed recipe: DeepHash-pytorch
(hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 128 and 350 epochs; on CIFAR-10 its
resize-only transforms, on the other data sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, Hyper, similarity
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

THETA_CLAMP = 50.0


def lcdsh_loss(u: torch.Tensor, labels: torch.Tensor, lamda: float) -> dict[str, torch.Tensor]:
    """LCDSH's in-batch likelihood with ±1 similarities and λ × its locality term for outputs ``u`` (b, bits)."""
    labels = labels.to(u.dtype)
    s = 2.0 * similarity(labels, labels) - 1.0
    theta = (0.5 * u @ u.t()).clamp(min=-THETA_CLAMP, max=THETA_CLAMP)
    likelihood = F.softplus(-s * theta).mean()
    b = torch.sign(u.detach())
    locality = (torch.sigmoid(theta) - torch.sigmoid(0.5 * b @ b.t())).pow(2).mean()
    return {"likelihood": likelihood, "locality": lamda * locality}


@METHODS.register("lcdsh")
class LCDSH(HashingMethod):
    name = "lcdsh"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "none"
    paper = "Zhu, Gao. Locality-Constrained Deep Supervised Hashing for Image Retrieval. IJCAI 2017"
    hyperparameters = {
        "lamda": Hyper(3.0, "weight λ of LCDSH's locality term mean (σ(θ) − σ(θ_b))² (DeepHash-pytorch's 3)"),
    }
    recipes = {
        # DeepHash-pytorch LCDSH.py get_config: batch 128, 350 epochs (evaluated every 5).
        **deephash_pytorch_recipes(batch_size=128, max_iter=350, lamda=3.0),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    supports_distributed = False  # pairs are formed inside each process's part of the batch

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return lcdsh_loss(outputs, batch.labels, float(self.hparams["lamda"]))

"""DTSH — Deep Supervised Hashing with Triplet Labels (Wang, Shi, Kitani; ACCV 2016).

A triplet likelihood over the batch plus a quantisation term. As DeepHash-pytorch's ``DTSH.py`` (``DTSHLoss``;
FIRe's ``functions/loss/dtsh.py`` is the same code), with θ_ij = u_iᵀu_j on the real-valued outputs u:

    for every anchor i with at least one positive and one negative in the batch (hashkit.method_parts.pairs):
        L_i = mean_{p: s_ip = 1, n: s_in = 0} −log σ(θ_ip − θ_in − α)
    L = mean_i L_i  +  λ · mean_{i, k} (u_ik − sign u_ik)²

Readings:

* Triplets: every (anchor, positive, negative) of the batch, the anchor counted among its own positives
  (the reference's ``s[row] == 1`` includes the diagonal); per-anchor means, then the mean over anchors.
* θ_ij = u_iᵀu_j without a ½ factor, as the reference (its α = 5 goes with it).
* −log σ(t) = softplus(−t) exactly; the reference clamps t to [−100, 50] first, which only differs (a zero
  gradient there) for triplets ranked wrong by more than 95 or right by more than 55 — left out.
* sign(0) = 0 in the quantisation term, as ``torch.sign`` in the reference.
* Relaxation "none" (the reference's AlexNet ends in a linear layer). Multi-label: s_ij = 1 when the items
  share a label (the reference's ``y @ y.t() > 0``).
* Not exact under torchrun: the triplets are formed inside each process's part of the batch.

Seed recipe: DeepHash-pytorch (hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 128
and 150 epochs; on CIFAR-10 its resize-only
transforms, on the other data sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import torch

from hashkit.method import Batch, HashingMethod, Hyper, similarity
from hashkit.method_parts.pairs import anchor_triplet_nll
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU


def dtsh_loss(u: torch.Tensor, labels: torch.Tensor, alpha: float, lamda: float) -> dict[str, torch.Tensor]:
    """DTSH's triplet likelihood (in-batch triplets, margin α) and λ × quantisation for outputs ``u`` (b, bits)."""
    labels = labels.to(u.dtype)
    triplet = anchor_triplet_nll(u @ u.t(), similarity(labels, labels), alpha)
    quantization = (u - torch.sign(u.detach())).pow(2).mean()
    return {"triplet": triplet, "quantization": lamda * quantization}


@METHODS.register("dtsh")
class DTSH(HashingMethod):
    name = "dtsh"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch', 'CISiPLab/cisip-FIRe')
    relaxation = "none"
    paper = "Wang, Shi, Kitani. Deep Supervised Hashing with Triplet Labels. ACCV 2016"
    hyperparameters = {
        "alpha": Hyper(5.0, "DTSH's triplet margin α in −log σ(θ_ip − θ_in − α) (DeepHash-pytorch's 5)"),
        "lamda": Hyper(1.0, "weight λ of DTSH's quantisation term mean (u − sign u)² (DeepHash-pytorch's 1)"),
    }
    recipes = {
        # DeepHash-pytorch DTSH.py get_config: batch 128, 150 epochs (evaluated every 15).
        **deephash_pytorch_recipes(batch_size=128, max_iter=150, alpha=5.0, lamda=1.0),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    supports_distributed = False  # triplets are formed inside each process's part of the batch

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return dtsh_loss(outputs, batch.labels, float(self.hparams["alpha"]), float(self.hparams["lamda"]))

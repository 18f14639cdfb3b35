"""DCH — Deep Cauchy Hashing for Hamming Space Retrieval (Cao, Long, Liu, Wang; CVPR 2018).

A weighted Cauchy cross-entropy over the batch's pairs plus a Cauchy quantisation loss. As DeepHash-pytorch's
``DCH.py`` (``DCHLoss``; its comments give the paper's formula numbers), on the real-valued outputs u:

    d(h_i, h_j) = K/2 · (1 − min(cos(h_i, h_j), 0.99)),   cos = h_iᵀh_j / max(‖h_i‖‖h_j‖, 1e-4)   (formula 6)
    w_ij = |S|/|S₁| (similar) or |S|/|S₀| (dissimilar), 1 when the batch has one kind only            (formula 2)
    L = mean_{i, j ∈ batch} w_ij [ s_ij log(d_ij / γ) + log(1 + γ / d_ij) ]                            (formula 8)
      + λ · mean_{i, k} log(1 + d(|u_i|, 1) / γ)                                                        (formula 9)

(for a similar pair the bracket is log(1 + d/γ), for a dissimilar one log(1 + γ/d): the paper's −log of the
Cauchy probability γ/(γ + d) and of its complement).

Readings:

* d is the normalised Euclidean distance K/2 · (1 − cos) of the paper's formula 6 (the reference's comment);
  the reference clamps the cosine at 0.99 (d ≥ K/200, so log(d/γ) stays finite for i = j and for near-equal
  codes, with zero gradient there) and the norm product at 1e-4 — both kept, they shape the loss.
* Every ordered pair of the batch, i = j included, with the balance weights of formula 2 (hashkit's
  ``balanced_pair_weights``); the quantisation term's d compares |u_i| with the all-ones vector.
* Relaxation "none": the loss reads u as it is (cosine is scale-free; the reference's AlexNet ends linearly).
* Multi-label: s_ij = 1 when the items share a label (the reference's ``y @ y.t() > 0``; the paper's NUS-WIDE).
* Not exact under torchrun: pairs and weights are formed inside each process's part of the batch.

Hyper-parameters: γ = 20, λ = 0.1 (DeepHash-pytorch's). Seed recipe: DeepHash-pytorch
(hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 128 and 150 epochs; on CIFAR-10 its
resize-only transforms, on the other data sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import torch

from hashkit.method import Batch, HashingMethod, Hyper, similarity
from hashkit.method_parts.pairs import balanced_pair_weights
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

MAX_COSINE = 0.99  # the reference's clamp: d ≥ K/2 · 0.01
MIN_NORM_PRODUCT = 1e-4


def cauchy_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DCH's d(a_i, b_j) = K/2 · (1 − min(cos, 0.99)) (n, m), with the norm product clamped at 1e-4."""
    norms = a.norm(dim=1, keepdim=True) * b.norm(dim=1)[None, :]
    cosine = (a @ b.t()) / norms.clamp(min=MIN_NORM_PRODUCT)
    return (1.0 - cosine.clamp(max=MAX_COSINE)) * a.shape[1] / 2.0


def dch_loss(u: torch.Tensor, labels: torch.Tensor, gamma: float, lamda: float) -> dict[str, torch.Tensor]:
    """DCH's balanced Cauchy cross-entropy over the batch's pairs and λ × Cauchy quantisation for ``u`` (b, bits)."""
    labels = labels.to(u.dtype)
    s = similarity(labels, labels)
    d = cauchy_distance(u, u)
    cauchy = balanced_pair_weights(s) * (s * torch.log(d / gamma) + torch.log(1.0 + gamma / d))
    quantization = torch.log(1.0 + cauchy_distance(u.abs(), torch.ones_like(u)) / gamma)
    return {"cauchy": cauchy.mean(), "quantization": lamda * quantization.mean()}


@METHODS.register("dch")
class DCH(HashingMethod):
    name = "dch"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "none"
    paper = "Cao, Long, Liu, Wang. Deep Cauchy Hashing for Hamming Space Retrieval. CVPR 2018"
    hyperparameters = {
        "gamma": Hyper(20.0, "scale γ of DCH's Cauchy distribution γ / (γ + d) (DeepHash-pytorch's 20)"),
        "lamda": Hyper(0.1, "weight λ of DCH's Cauchy quantisation loss (DeepHash-pytorch's 0.1)"),
    }
    recipes = {
        # DeepHash-pytorch DCH.py get_config: batch 128, 150 epochs (evaluated every 5).
        **deephash_pytorch_recipes(batch_size=128, max_iter=150, gamma=20.0, lamda=0.1),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    supports_distributed = False  # pairs and their weights are formed inside each process's part of the batch

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return dch_loss(outputs, batch.labels, float(self.hparams["gamma"]), float(self.hparams["lamda"]))

"""CSQ — Central Similarity Quantization (Yuan, Wang, Tian, Lin, Huang, Shao, Feng; CVPR 2020).

Each class has a fixed ±1 hash center C_c (hashkit.method_parts.centers: rows of a Hadamard matrix, Algorithm 1;
Bernoulli codes when the code length is not a power of 2 or there are more than 2·bits classes); a
multi-label item's center is the bitwise majority of its labels' centers (the paper's multi-label
centers). With h = tanh(u):

    L = (1/(b·K)) Σ_i Σ_k BCE( (h_ik + 1)/2 , (c_ik + 1)/2 )  +  λ · (1/(b·K)) Σ_i Σ_k (|h_ik| − 1)²

(the paper's central similarity loss, a bitwise binary cross-entropy against the center, and its
quantisation loss, here in DeepHash-pytorch's (|h| − 1)² form; both as means over bits and items like
the public codes; the paper's equation and section numbers were not verified against its text).
Computed stably: (tanh(u) + 1)/2 = σ(2u), so the first term is the binary cross-entropy with logits 2u.
λ = 1e-4 (DeepHash-pytorch; FIRe 1e-3).
Multi-label: yes. No trainable state of its own; the centers are checkpointed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.method_parts.classification import ClassCodeMethod
from hashkit.method import Hyper
from hashkit.method_parts.reference_recipes import DEEPHASH_PYTORCH_SEED, DEEPHASH_PYTORCH_SEED_CIFAR10
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS


def csq_loss(u: torch.Tensor, centers: torch.Tensor, lamda: float) -> dict[str, torch.Tensor]:
    """Central similarity + λ · quantisation loss for outputs ``u`` (b, K) and ±1 ``centers`` (b, K)."""
    h = torch.tanh(u)
    center = F.binary_cross_entropy_with_logits(2.0 * u, (centers + 1.0) / 2.0)
    quantization = (h.abs() - 1.0).pow(2).mean()
    return {"center": center, "quantization": lamda * quantization}


@METHODS.register("csq")
class CSQ(ClassCodeMethod):
    name = "csq"
    family = "class-codes"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "own"
    paper = "Yuan et al. Central Similarity Quantization for Efficient Image and Video Retrieval. CVPR 2020"
    hyperparameters = {"lamda": Hyper(1e-4, "weight λ of the quantisation term (|tanh u| − 1)² (DeepHash-pytorch's form)")}
    recipes = {
        # DeepHash-pytorch's CSQ.py get_config: ResNet-50 (network.py ResNet: hash layer N(0, 0.01²), bias 0),
        # RMSprop lr 1e-5 (weight decay 1e-5) on every layer, batch 64, 150 epochs, no schedule; the transforms of
        # utils/tools.py (hashkit.method_parts.reference_recipes).
        "seed": {
            "arch": "resnet50", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr_mult": 1.0, "weight_decay": 1e-5,
            "batch_size": 64, "max_iter": 150, "lr_schedule": "constant", "hash_init_std": 0.01,
            **DEEPHASH_PYTORCH_SEED,
        },
        "seed@cifar10": dict(DEEPHASH_PYTORCH_SEED_CIFAR10),
        # cpu: hashkit.recipes.REGULARISED_CPU, measured (32 bits, seed 0): 0.6957 against 0.6930 with 4 views in
        # 32 epochs — the same mAP within noise in half the time (README CPU results, note 11).
        "cpu": dict(REGULARISED_CPU),
    }  # fmt: skip
    center_kind = "hadamard"

    def class_code_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return csq_loss(outputs, targets, float(self.hparams["lamda"]))

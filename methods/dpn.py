"""DPN — Deep Polarized Network (Fan, Lin, Zhang, Chen; IJCAI 2020).

Each class has a random ±1 target vector t_c with half its bits −1 ("random assignment", p = 0.5;
hashkit.method_parts.centers' Bernoulli codes); a multi-label item's target is the bitwise majority of its labels'
targets (the public code's reading, as CSQ). The bit-wise hinge "polarization" loss of the paper
(its equation number not verified against the paper text):

    L = (1/(b·K)) Σ_i Σ_k max(m − u_ik · t_ik, 0)   +   r · (1/(b·K)) Σ_i Σ_k u_ik²

on the raw outputs u, margin m = 1; the paper sums over bits, the public codes average (a constant
factor, taken into the learning rate); the second term is FIRe's optional weight regulariser (r = 0
here by default: not in the paper). Multi-label: yes. The targets are checkpointed.
"""

from __future__ import annotations

import torch

from hashkit.method_parts.classification import ClassCodeMethod
from hashkit.method import Hyper
from hashkit.method_parts.reference_recipes import DEEPHASH_PYTORCH_SEED, DEEPHASH_PYTORCH_SEED_CIFAR10
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS


def dpn_loss(u: torch.Tensor, targets: torch.Tensor, margin: float, reg: float) -> dict[str, torch.Tensor]:
    """The polarization loss (mean over bits and items) plus r·mean(u²)."""
    losses = {"polarization": torch.relu(margin - u * targets).mean()}
    if reg:
        losses["regularization"] = reg * u.pow(2).mean()
    return losses


@METHODS.register("dpn")
class DPN(ClassCodeMethod):
    name = "dpn"
    family = "class-codes"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    paper = "Fan, Lin, Zhang, Chen. Deep Polarized Network for Supervised Learning of Accurate Binary Hashing Codes. IJCAI 2020"
    hyperparameters = {
        "margin": Hyper(1.0, "margin m of the bit-wise hinge max(m − u·t, 0) (the paper's polarization loss)"),
        "reg": Hyper(0.0, "weight of mean(u²) (FIRe's regulariser, not in the paper; 0 = off)"),
    }
    recipes = {
        # DeepHash-pytorch's DPN.py get_config: AlexNet (network.py: torch's Linear init, dropout active), RMSprop
        # lr 1e-5 (weight decay 1e-5) on every layer, batch 32, 150 epochs, no schedule; the transforms of
        # utils/tools.py (hashkit.method_parts.reference_recipes).
        "seed": {
            "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr_mult": 1.0, "weight_decay": 1e-5,
            "batch_size": 32, "max_iter": 150, "lr_schedule": "constant", **DEEPHASH_PYTORCH_SEED,
        },
        "seed@cifar10": dict(DEEPHASH_PYTORCH_SEED_CIFAR10),
        # cpu: hashkit.recipes.REGULARISED_CPU, measured (32 bits, seed 0): 0.7064 against 0.6946 with 4 views in
        # 32 epochs (README CPU results, note 11).
        "cpu": dict(REGULARISED_CPU),
    }  # fmt: skip
    center_kind = "bernoulli"

    def class_code_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return dpn_loss(outputs, targets, float(self.hparams["margin"]), float(self.hparams["reg"]))

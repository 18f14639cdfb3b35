"""DPN — Deep Polarized Network (Fan, Lin, Zhang, Chen; IJCAI 2020).

Each class has a random ±1 target vector t_c with half its bits −1 ("random assignment", p = 0.5;
hashkit.centers' Bernoulli codes); a multi-label item's target is the bitwise majority of its labels'
targets (the public code's reading, as CSQ). The bit-wise hinge "polarization" loss (paper eq. 4):

    L = (1/(b·K)) Σ_i Σ_k max(m − u_ik · t_ik, 0)   +   r · (1/(b·K)) Σ_i Σ_k u_ik²

on the raw outputs u, margin m = 1; the paper sums over bits, the public codes average (a constant
factor, taken into the learning rate); the second term is FIRe's optional weight regulariser (r = 0
here by default: not in the paper). Multi-label: yes. The targets are checkpointed.
"""

from __future__ import annotations

from typing import Any

import torch

from hashkit.centers import class_centers, label_centers, tie_breaker
from hashkit.codeheads import check_labels
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.registry import METHODS


def dpn_loss(u: torch.Tensor, targets: torch.Tensor, margin: float, reg: float) -> dict[str, torch.Tensor]:
    """Eq. 4 (mean over bits and items) plus r·mean(u²)."""
    losses = {"polarization": torch.relu(margin - u * targets).mean()}
    if reg:
        losses["regularization"] = reg * u.pow(2).mean()
    return losses


@METHODS.register("dpn")
class DPN(HashingMethod):
    name = "dpn"
    paper = "Fan, Lin, Zhang, Chen. Deep Polarized Network for Supervised Learning of Accurate Binary Hashing Codes. IJCAI 2020"
    hyperparameters = {
        "margin": Hyper(1.0, "margin m of the bit-wise hinge max(m − u·t, 0) (paper eq. 4)"),
        "reg": Hyper(0.0, "weight of mean(u²) (FIRe's regulariser, not in the paper; 0 = off)"),
    }
    recipes = {
        # DeepHash-pytorch's DPN.py: AlexNet, RMSprop lr 1e-5 (weight decay 1e-5), batch 32, 150 epochs.
        "seed": {
            "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr_mult": 1.0, "weight_decay": 1e-5,
            "batch_size": 32, "max_iter": 150, "lr_schedule": "constant",
            "train_transform": "resized_crop_flip", "test_transform": "center_crop",
        },
        "cpu": {"cached_views": 4},
    }  # fmt: skip
    supports_distributed = True  # a batch-mean loss against fixed targets; no state across steps

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.targets: torch.Tensor | None = None
        self.ties = tie_breaker(code_length).to(device)

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, single_label=False)
        self.targets = class_centers(int(labels.shape[1]), self.code_length, "bernoulli").to(self.device)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.targets is None:
            raise RuntimeError("dpn.training_step before setup")
        targets = label_centers(batch.labels, self.targets, self.ties).to(outputs.dtype)
        return dpn_loss(outputs, targets, float(self.hparams["margin"]), float(self.hparams["reg"]))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.targets is None else {"targets": self.targets, "ties": self.ties}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("targets") is not None:
            self.targets = state["targets"].to(self.device)
            self.ties = state["ties"].to(self.device)

"""GreedyHash (Su, Zhang, Chen, Tian, Dai; Greedy Hash: Towards Fast Optimization for Accurate Hash
Coding in CNN, NeurIPS 2018), supervised.

The codes are b = sign(u) in the forward pass already, with the straight-through gradient
∂L/∂u = ∂L/∂b in the backward pass (the paper's hash coding layer; hashkit.method_parts.classification.sign_ste). A
linear classifier of the method's own (bits → classes, no bias, as the authors') is trained on b with
the network:

    L = CE(W b, y)  +  α · (1/(b·K)) Σ_i Σ_k | |u_ik| − 1 |³          (the paper's penalty ‖|u| − 1‖₃³)

The paper's equation numbers were not verified against its text, so the terms are named here.
α = 0.1 (the authors' CIFAR-10 value, DeepHash-pytorch; 1 for ImageNet). Multi-label: the
cross-entropy against the labels normalised to sum 1 (FIRe's reading; the paper is single-label).
"""

from __future__ import annotations

import torch

from hashkit.method_parts.classification import CodeClassifierMethod, soft_cross_entropy
from hashkit.method_parts.relaxations import greedyhash_penalty, sign_ste
from hashkit.method import Batch, Hyper
from hashkit.method_parts.reference_recipes import DEEPHASH_PYTORCH_SEED, DEEPHASH_PYTORCH_SEED_CIFAR10
from hashkit.recipes import REGULARISED_CPU
from hashkit.registry import METHODS


@METHODS.register("greedyhash")
class GreedyHash(CodeClassifierMethod):
    name = "greedyhash"
    family = "classifier"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "own"
    mixes_labels = True  # its loss is a cross-entropy against labels / Σ labels (--mixup)
    paper = "Su, Zhang, Chen, Tian, Dai. Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in CNN. NeurIPS 2018"
    hyperparameters = {"alpha": Hyper(0.1, "weight α of the penalty | |u| − 1 |³ (CIFAR-10 0.1, ImageNet 1)")}
    classifier_bias = False
    recipes = {
        # DeepHash-pytorch's GreedyHash.py get_config: AlexNet, SGD lr 1e-3 (momentum 0.9, weight decay 5e-4) on
        # every layer and the classifier, batch 64, 200 epochs, lr × 0.1 every 80 epochs and α = 1 on ImageNet,
        # every 30 epochs and α = 0.1 elsewhere (CIFAR-10); the transforms of utils/tools.py.
        "seed": {
            "arch": "alexnet", "optimizer": "sgd", "lr": 1e-3, "hash_lr_mult": 1.0, "weight_decay": 5e-4,
            "momentum": 0.9, "lr_schedule": "step", "lr_step_size": 80, "lr_gamma": 0.1, "lr_interval": "epoch",
            "batch_size": 64, "max_iter": 200, "alpha": 1.0, **DEEPHASH_PYTORCH_SEED,
        },
        "seed@cifar10": {"lr_step_size": 30, "alpha": 0.1, **DEEPHASH_PYTORCH_SEED_CIFAR10},
        # cpu: hashkit.recipes.REGULARISED_CPU, measured (32 bits, seed 0): 0.7695 against 0.7555 with 4 views in
        # 32 epochs (README CPU results, note 11).
        "cpu": dict(REGULARISED_CPU),
    }  # fmt: skip

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.classifier(sign_ste(outputs))
        return {
            "ce": soft_cross_entropy(logits, batch.labels.to(logits.dtype)),
            "penalty": float(self.hparams["alpha"]) * greedyhash_penalty(outputs),
        }

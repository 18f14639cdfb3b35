"""HyP² — HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval (Xu, Zhang, Wang, Huang,
Lu, Liu; ACM MM 2022).

A proxy loss with a pairwise regulariser. Each class has a learnable proxy p_c (hashkit.method_parts.proxies.Proxies,
trained with the network); with cos_ic = cos(x_i, p_c) on the network's outputs x and ζ the cosine bound of the
code table (hashkit.method_parts.proxies.code_bound_cosine: 1 − 2d/bits, d the best known minimum distance of
2^⌈log₂ classes⌉ codewords of ``bits`` bits — 0 for 10 classes at 16-64 bits), as the authors'
JerryXu0129/HyP2-Loss ``model.py`` (``HyP.forward``):

    L_pos = Σ_{y_ic = 1} (1 − cos_ic) / #{y_ic = 1}
    L_neg = Σ_{y_ic = 0} max(cos_ic − ζ, 0) / #{y_ic = 0}
    L_reg = β Σ_{(i, j) ∈ D} max(cos(x_i, x_j) − ζ, 0) / |D|,   D = the ordered pairs of items with more than one
            label that share none (0 when there is none)
    L = L_pos + L_neg + L_reg

Readings:

* The proxies are trained at the hash layer's learning rate (hashkit's rule for a method's module); the
  reference gives them 0.02 (``--rate``) against 0.01 for the whole AlexNet, its hash layer included — half of it
  here under the seed recipe.
* L_reg counts only items with several labels (the reference's ``batch_y.sum(dim=1) > 1``), so it is 0 on
  single-label data (CIFAR-10), where HyP² is the proxy loss alone.
* #{y = 0} is clamped at 1 (the reference divides by it; 0 only when every item carries every label).
* Relaxation "none": the loss reads the outputs as they are (the reference's linear hash layer); the codes are
  sign x. Not run under torchrun: the proxies are a module of the method's own.
* ζ is fixed at setup from the number of classes and bits; a data set beyond the table (over 256 bits or
  2^min(bits, 12) classes) is refused with a one-line error.

Hyper-parameters: β = 0.5 (``--beta``). Seed recipe (config.py, retrieval.py, the ``alexnet`` backbone — its
default ``googlenet``, Inception-v3 at 448 px, is not a hashkit backbone): AlexNet with torchvision's dropout,
SGD momentum 0.9, weight decay 5e-4, lr 0.01, StepLR × 0.5 every 10 epochs, 100 epochs, batch 100,
Resize((224, 224)) + flip / Resize((224, 224)) on every data set. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.method_parts.classification import check_labels
from hashkit.method_parts.proxies import Proxies, code_bound_cosine
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU


def hyp2_loss(
    x: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, threshold: float, beta: float
) -> dict[str, torch.Tensor]:
    """HyP²'s proxy terms (positive, negative) and β × its regulariser for outputs ``x`` (b, bits), multi-hot
    ``labels`` (b, classes) and ``proxies`` (classes, bits)."""
    cos = F.normalize(x, dim=1) @ F.normalize(proxies.to(x.dtype), dim=1).t()
    positive = (labels == 1).to(x.dtype)
    negative = (labels == 0).to(x.dtype)
    losses = {
        "positive": (positive * (1.0 - cos)).sum() / positive.sum().clamp_min(1.0),
        "negative": (negative * F.relu(cos - threshold)).sum() / negative.sum().clamp_min(1.0),
    }
    if beta > 0:
        several = labels.sum(dim=1) > 1
        y, z = labels[several].to(x.dtype), F.normalize(x[several], dim=1)
        disjoint = (y @ y.t() == 0).to(x.dtype)
        if bool(disjoint.any()):
            losses["regularizer"] = beta * (disjoint * F.relu(z @ z.t() - threshold)).sum() / disjoint.sum()
    return losses


@METHODS.register("hyp2")
class HyP2(HashingMethod):
    name = "hyp2"
    family = "pairwise"
    reference_code = ("JerryXu0129/HyP2-Loss",)
    relaxation = "none"
    paper = (
        "Xu, Zhang, Wang, Huang, Lu, Liu. HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval. "
        "ACM MM 2022"
    )
    hyperparameters = {
        "beta": Hyper(0.5, "weight β of HyP²'s regulariser on the pairs of multi-label items that share no label (0 = off)"),
    }
    recipes = {
        # JerryXu0129/HyP2-Loss config.py (batch 100, epochs 100, beta 0.5; backbone alexnet: lr 0.01, Resize((224,
        # 224)) + flip / Resize((224, 224))), retrieval.py (SGD momentum 0.9, weight decay 5e-4, StepLR(10, 0.5)),
        # model.py AlexNet (torchvision's dropout, a plain Linear(4096, bits)).
        "seed": {
            "arch": "alexnet", "optimizer": "sgd", "lr": 0.01, "hash_lr_mult": 1.0, "weight_decay": 5e-4,
            "momentum": 0.9, "lr_schedule": "step", "lr_interval": "epoch", "lr_step_size": 10, "lr_gamma": 0.5,
            "max_iter": 100, "batch_size": 100, "image_size": 224, "hash_activation": "none", "hash_init_std": None,
            "train_transform": "resize_flip", "test_transform": "resize", "beta": 0.5,
        },
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }  # fmt: skip
    supports_distributed = False  # the proxies are a module of the method's own

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, single_label=False)
        classes = int(labels.shape[1])
        self.threshold = code_bound_cosine(self.code_length, classes)
        self.module = Proxies(classes, self.code_length).to(self.device)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.module is None:
            raise RuntimeError(f"{self.name}.training_step before setup")
        return hyp2_loss(outputs, batch.labels, self.module.weight, self.threshold, float(self.hparams["beta"]))

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": getattr(self, "threshold", None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("threshold") is not None:
            self.threshold = float(state["threshold"])

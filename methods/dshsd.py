"""DSHSD — Deep Supervised Hashing Based on Stable Distribution (Wu et al.; IEEE Access 2019).

DSH's contrastive loss on the tanh codes of the mini-batch plus a classification loss of a linear layer on
the codes. As DeepHash-pytorch's ``DSHSD.py`` (``DSHSDLoss``), with u = tanh(outputs), m = 2·bits and a
linear layer W (classes × bits, no bias), o_i = W u_i:

    d_ij = ‖u_i − u_j‖²,   y_ij = 1 if i and j share no label else 0
    L_d = α · mean_ij [ ½ (1 − y_ij) d_ij + ½ y_ij max(m − d_ij, 0) ]
    L_c = mean_i −Σ_c y_ic log softmax(o_i)_c                              (single-label, the paper's formula 7)
    L_c = mean_i Σ_c [ o_ic − y_ic o_ic + log(1 + e^{−o_ic}) ]            (multi-label, formula 8)
    L = L_c + L_d

Readings:

* The classifier W is a linear layer of the loss module that the reference never hands to its optimiser
  (``optimizer(net.parameters())``): a fixed random projection, drawn once with torch's default init
  (uniform ±1/√bits). ``--classifier fixed`` (default) keeps that; ``--classifier trained`` trains it with the
  hash layer (a method module, checkpointed), the reading that the paper's joint training suggests.
* Formula 8 or 7: the reference picks by the data set's name (``"nuswide" in dataset``); here
  ``--classification auto`` picks formula 8 when any training item carries a number of labels other than
  one, else formula 7; ``softmax`` / ``sigmoid`` force one. Formula 8 is the binary cross-entropy with logits
  summed over the classes (written here as softplus(o) − y·o, exact).
* Every ordered pair of the batch, i = j included (the reference's b × b matrix); d from ‖u_i‖² + ‖u_j‖² −
  2u_iᵀu_j (hashkit.method_parts.pairs.squared_distances).
* Relaxation "tanh" (the reference applies tanh in the loss; ``--hash-activation tanh`` does it in the model).
* Not exact under torchrun: the pairs are formed inside each process's part of the batch.

Hyper-parameters: α = 0.05 (DeepHash-pytorch's), m = 2·bits (``--margin-per-bit`` 2). Seed recipe: DeepHash-pytorch
(hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) but Adam lr 1e-5 (betas 0.9, 0.999, no weight
decay), batch 64, 250 epochs; on CIFAR-10 its resize-only transforms, on the other data sets its 256 → 224
crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData, similarity
from hashkit.method_parts.pairs import squared_distances
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

CLASSIFIERS = ("fixed", "trained")
CLASSIFICATIONS = ("auto", "softmax", "sigmoid")


def dshsd_loss(
    u: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, alpha: float, margin: float, multi_label: bool
) -> dict[str, torch.Tensor]:
    """DSHSD's classification loss (formula 8 if ``multi_label`` else 7) of the logits u Wᵀ and α × its
    in-batch contrastive loss with margin ``margin``, for tanh codes ``u`` (b, bits)."""
    labels = labels.to(u.dtype)
    dissimilar = 1.0 - similarity(labels, labels)
    distance = squared_distances(u, u)
    contrastive = 0.5 * (1.0 - dissimilar) * distance + 0.5 * dissimilar * (margin - distance).clamp(min=0.0)
    logits = u @ weight.to(u.dtype).t()
    if multi_label:
        classification = (F.softplus(logits) - labels * logits).sum(dim=1).mean()
    else:
        classification = -(labels * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return {"classification": classification, "contrastive": alpha * contrastive.mean()}


def default_linear_weight(rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """A (rows, columns) weight drawn as torch's nn.Linear initialises one without bias (uniform ±1/√columns,
    kaiming_uniform with a = √5), from a generator seeded by the run's seed (the global stream is left alone)."""
    generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
    bound = 1.0 / math.sqrt(columns)
    return ((torch.rand(rows, columns, generator=generator) * 2.0 - 1.0) * bound).to(device)


@METHODS.register("dshsd")
class DSHSD(HashingMethod):
    name = "dshsd"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "tanh"
    paper = "Wu et al. Deep Supervised Hashing Based on Stable Distribution. IEEE Access 2019"
    hyperparameters = {
        "alpha": Hyper(0.05, "weight α of DSHSD's contrastive term (DeepHash-pytorch's 0.05)"),
        "margin_per_bit": Hyper(2.0, "DSHSD's contrastive margin m in units of the code length: m = this × bits (m = 2k)"),
        "classifier": Hyper(
            "fixed", "fixed: the classifier on the codes is a random linear layer never trained (DeepHash-pytorch); "
            "trained: trained with the hash layer", str,
        ),
        "classification": Hyper(
            "auto", "auto: the multi-label loss (formula 8) when training items have several labels, else softmax "
            "cross-entropy (formula 7); softmax / sigmoid: force one", str,
        ),
    }
    recipes = {
        # DeepHash-pytorch DSHSD.py get_config: Adam lr 1e-5 (betas 0.9, 0.999, no weight decay), batch 64, 250 epochs
        # (evaluated every 5).
        **{
            key: {k: v for k, v in table.items() if k != "momentum"}
            for key, table in deephash_pytorch_recipes(
                batch_size=64, max_iter=250, optimizer="adam", weight_decay=0.0, alpha=0.05, margin_per_bit=2.0,
                classifier="fixed", classification="auto",
            ).items()
        },
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    supports_distributed = False  # pairs are formed inside each process's part of the batch

    def setup(self, data: TrainingData) -> None:
        if self.hparams["classifier"] not in CLASSIFIERS:
            raise HashkitError(
                f"--classifier {self.hparams['classifier']!r} is unknown; valid: {', '.join(CLASSIFIERS)}"
            )
        if self.hparams["classification"] not in CLASSIFICATIONS:
            raise HashkitError(
                f"--classification {self.hparams['classification']!r} is unknown; valid: {', '.join(CLASSIFICATIONS)}"
            )
        if data.labels is None:
            raise HashkitError(f"--method {self.name} is supervised: it needs the training labels")
        num_classes = int(data.labels.shape[1])
        if self.hparams["classification"] == "auto":
            self.multi_label = bool((data.labels.sum(dim=1) != 1).any())
        else:
            self.multi_label = self.hparams["classification"] == "sigmoid"
        weight = default_linear_weight(num_classes, self.code_length, self.device)
        if self.hparams["classifier"] == "trained":
            self.module = nn.Linear(self.code_length, num_classes, bias=False).to(self.device)
            with torch.no_grad():
                self.module.weight.copy_(weight)
        else:
            self.weight = weight

    @property
    def classifier_weight(self) -> torch.Tensor:
        """W (classes, bits): the trained module's weight or the fixed random one."""
        return self.module.weight if self.module is not None else self.weight

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        u = self.tanh_outputs(outputs)
        margin = float(self.hparams["margin_per_bit"]) * self.code_length
        return dshsd_loss(
            u, batch.labels, self.classifier_weight, float(self.hparams["alpha"]), margin, self.multi_label
        )

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"multi_label": bool(getattr(self, "multi_label", False))}
        if self.module is None and hasattr(self, "weight"):
            state["weight"] = self.weight
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "multi_label" in state:
            self.multi_label = bool(state["multi_label"])
        if "weight" in state:
            self.weight = state["weight"].to(self.device)

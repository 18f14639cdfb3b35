"""MDSH — Deep Hashing with Minimal-Distance-Separated Hash Centers (Wang, Zhang, Wang, Zhang, Hu, Chen, Yu,
Zhao; CVPR 2023).

Hash centers by optimisation, then a center loss. The centers (hashkit.method_parts.centers
.minimal_distance_separated_centers, as the authors' Wangld5/Center-Hashing ``optimizeAccel.py``) start from CSQ's
Hadamard codes and are moved one at a time by an ADMM ℓp-box solver until every two are at least d apart, d the
bound of ``get_margin`` (13 for 10 classes at 32 bits). The network is trained as ``loss/ourLoss.py`` (``OurLoss``)
does, on u = tanh(BN(W x + b)):

    P_ic = softmax_c(√K · cos(u_i, C_c)),   s_ic = y_ic (the item's labels)
    L_center = −mean_{i, c} [ s_ic log P_ic + (1 − s_ic) log(1 − P_ic) ]
    L_pair   = Σ_{i, j} S_ij log(1 + e^{(1 − cos(u_i, U_j)) / 2}) / Σ_{i, j} S_ij        (epochs ≥ 9 only)
    L = L_center + β L_pair + λ mean (|u| − 1)²

with K bits, C the centers, U a memory of the training split's outputs and S_ij = 1 when item i and memory row j
share a label.

Readings:

* The pair term's memory. The reference fills U from a momentum (MoCo, m = 0.9) copy of the network, written
  before the loss; hashkit has no momentum encoder, so U holds the network's own detached outputs
  (hashkit.method_parts.memory, written in ``observe``). From epoch 9 on (``epoch_change``, epochs counted from
  0) every row has been written, as in the reference (whose U and Y start as random normals).
* Rows never written count as dissimilar (only reachable with ``--pair-from-epoch 0``).
* The center order: the reference shuffles its saved centers over the classes (``random.seed(80)``); the centers
  are exchangeable, so hashkit assigns them in order.
* When ``bits`` is not a power of 2 the reference's start is random ±1 bits (its 48 bits: ``init_hash``), as here.
* The solver as written scores its code only once its penalty ρ has grown to 1e7; an ADMM that converges earlier
  returns the center unchanged (hashkit.method_parts.centers.lp_box_center). CSQ's Hadamard codes already meet
  the bound for CIFAR-10's 10 classes at 16, 32 and 64 bits (bounds 6, 13, 28 against distances 8, 16, 32) and
  ImageNet-100's at 64 (24 against 32), so there MDSH's centers are CSQ's and the loss makes the difference. ``--center-solver converged`` also takes a converged code that scores
  better (hashkit's variant).
* ``log(1 − P)`` as log(−expm1(log P)) from log-softmax (the reference's ``torch.log(1 - p)``, exact until
  P rounds to 1); log(1 + e^x) as softplus.
* The reference clips the gradient norm at 5 (``max_norm``) — not reproduced (hashkit has no clipping).
* Multi-label: s = y (the reference's ``y @ eye(n_class)``: every label's center is a target of the softmax);
  the pair term's S_ij = 1 when the items share a label.
* Relaxation "tanh": the loss reads tanh(u) (``--hash-activation tanh`` applies it in the model, the seed's);
  the head is ``bn`` (Linear + BatchNorm1d; the reference's Linear bias is removed by the BatchNorm anyway).
* Not exact under torchrun: the pair term's normaliser Σ S is the local batch's, and the head's batch norm.

Hyper-parameters (``scripts/utils.py`` get_config): λ = 1e-4 (``lambda``), β = 1 (``beta``), the pair term
from epoch 9 (``epoch_change``). Seed recipe: ResNet-50 with its hash layer N(0, 0.01²) + BatchNorm1d + tanh
(model/Net.py), RMSprop lr 1e-5 and weight decay 1e-5 on every parameter, batch 64, 1000 epochs (the reference
stops early once its test mAP has not improved for 10 evaluations, every 3 epochs — hashkit has no early stop),
Resize(256) + RandomCrop(224) + flip / Resize(256) + CenterCrop(224) on every data set (it trains no CIFAR-10).
CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.method_parts.classification import check_labels
from hashkit.errors import HashkitError
from hashkit.method_parts.centers import MDSH_SOLVERS, minimal_distance_separated_centers
from hashkit.method_parts.memory import PairwiseMemory
from hashkit.method_parts.reference_recipes import DEEPHASH_PYTORCH_SEED
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU


def mdsh_center_loss(u: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """−mean_{i,c} [s log P + (1 − s) log(1 − P)], P = softmax(√K cos(u, C)) over the classes, s = the labels."""
    logits = math.sqrt(u.shape[1]) * F.normalize(u, dim=1) @ F.normalize(centers.to(u.dtype), dim=1).t()
    log_p = F.log_softmax(logits, dim=1)
    log_not_p = torch.log(-torch.expm1(log_p))
    s = labels.to(u.dtype)
    return -(s * log_p + (1.0 - s) * log_not_p).mean()


def mdsh_pair_loss(u: torch.Tensor, memory_u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Σ S log(1 + e^{(1 − cos(u_i, U_j))/2}) / Σ S over the similar pairs of the batch and the memory."""
    cos = F.normalize(u, dim=1) @ F.normalize(memory_u.to(u.dtype), dim=1).t()
    s = s.to(u.dtype)
    return (s * F.softplus(0.5 * (1.0 - cos))).sum() / s.sum().clamp_min(1.0)


@METHODS.register("mdsh")
class MDSH(HashingMethod):
    name = "mdsh"
    family = "class-codes"
    reference_code = ("Wangld5/Center-Hashing",)
    relaxation = "tanh"
    head = "bn"
    paper = (
        "Wang, Zhang, Wang, Zhang, Hu, Chen, Yu, Zhao. Deep Hashing with Minimal-Distance-Separated Hash Centers. "
        "CVPR 2023"
    )
    hyperparameters = {
        "lamda": Hyper(1e-4, "weight λ of MDSH's quantisation term mean (|u| − 1)² (the reference's lambda 1e-4)"),
        "beta": Hyper(1.0, "weight β of MDSH's pair term against the memory (the reference's beta 1; 0 = off)"),
        "pair_from_epoch": Hyper(9, "first epoch (from 0) of MDSH's pair term (the reference's epoch_change 9)", int),
        "center_solver": Hyper(
            "reference", "reference: optimizeAccel.py's ADMM as written (a center whose ADMM converges before ρ reaches "
            "1e7 is kept unchanged); converged: also take the converged code when it scores better", str,
        ),
    }
    recipes = {
        # Wangld5/Center-Hashing scripts/utils.py get_config (RMSprop lr 1e-5, weight decay 1e-5 on net.parameters(),
        # batch 64, epoch 1000, lambda 1e-4, beta 1, epoch_change 9), model/Net.py (ResNet-50, hash layer
        # N(0, 0.01²) bias 0 + BatchNorm1d + tanh), dataset/online_loader.py image_transform (Resize 256, RandomCrop
        # 224 + flip / CenterCrop 224) on every data set.
        "seed": {
            "arch": "resnet50", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr_mult": 1.0, "weight_decay": 1e-5,
            "momentum": 0.0, "lr_schedule": "constant", "image_size": 224, "batch_size": 64, "max_iter": 1000,
            "hash_init_std": 0.01, "hash_activation": "tanh", "lamda": 1e-4, "beta": 1.0, "pair_from_epoch": 9,
            "center_solver": "reference",
            **DEEPHASH_PYTORCH_SEED,
        },
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }  # fmt: skip
    supports_distributed = False  # the pair term's normaliser is the local batch's; the head's batch norm

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.centers: torch.Tensor | None = None  # (classes, bits) ±1, solved in setup; checkpointed
        self.memory: PairwiseMemory | None = None

    def setup(self, data: TrainingData) -> None:
        labels = check_labels(self.name, data.labels, single_label=False)
        if self.hparams["center_solver"] not in MDSH_SOLVERS:
            raise HashkitError(
                f"--center-solver {self.hparams['center_solver']!r} is unknown; valid: {', '.join(MDSH_SOLVERS)}"
            )
        centers = minimal_distance_separated_centers(
            int(labels.shape[1]), self.code_length, solver=str(self.hparams["center_solver"])
        )
        self.centers = centers.to(self.device)
        self.memory = PairwiseMemory(data.num_items, self.code_length, labels, self.device)

    def observe(self, outputs: torch.Tensor, index: torch.Tensor) -> None:
        if self.memory is not None:
            self.memory.update(index, self.tanh_outputs(outputs))

    def pair_active(self) -> bool:
        return float(self.hparams["beta"]) != 0 and getattr(self, "epoch", 0) >= int(self.hparams["pair_from_epoch"])

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.centers is None or self.memory is None:
            raise RuntimeError(f"{self.name}.training_step before setup")
        u = self.tanh_outputs(outputs)
        self.memory.update(batch.index, u)
        losses = {
            "center": mdsh_center_loss(u, batch.labels, self.centers),
            "quantization": float(self.hparams["lamda"]) * (u.abs() - 1.0).pow(2).mean(),
        }
        if self.pair_active():
            s = self.memory.written_similarity(batch.labels)
            losses["pair"] = float(self.hparams["beta"]) * mdsh_pair_loss(u, self.memory.U, s)
        return losses

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {} if self.centers is None else {"centers": self.centers}
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("centers") is not None:
            self.centers = state["centers"].to(self.device)
        if state.get("memory") is not None:
            if self.memory is None:
                self.memory = PairwiseMemory.from_state(state["memory"], self.device)
            else:
                self.memory.load_state_dict(state["memory"])

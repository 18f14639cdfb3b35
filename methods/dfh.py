"""DFH — Push for Quantization: Deep Fisher Hashing (Li, van Gemert; BMVC 2019).

A pairwise likelihood with a margin against a memory of the training split's outputs, plus a quantisation
term towards codes b that are pushed towards learned class centers. As DeepHash-pytorch's ``DFH.py``
(``DFHLoss``), on the real-valued outputs u, with a memory U of the training split (the batch written first)
and relaxed class centers V (bits × classes), C = sign V:

    b_i = sign(μ · C y_i + u_i)                                        (with the centers before this step's update)
    V  ← 200 gradient steps on  mean (V Yᵀ − Bᵀ)² + ν · mean (VᵀV − K(2I − 1))² + ν_q · mean (V − sign V)²
         (step 0.03, × 0.1 before steps 149 and 179; Y, B the batch's labels and codes)
    θ_ij = ½ u_iᵀU_j
    L = mean_{i ∈ batch, j ≤ n} [ (1 − s_ij) log(1 + e^{m + θ_ij}) + s_ij log(1 + e^{m − θ_ij}) ]  +  η · mean (b_i − u_i)²

Readings:

* The centers are updated as DeepHash-pytorch does (plain gradient steps on the relaxed V, whose gradient is
  written out in closed form here), the default. V starts at 0, so C = sign 0 = 0 and b = sign u
  on the first step, as the reference.
* ``--center-update discrete``: FIRe's ``dfh.py`` instead sets the ±1 centers C by discrete cyclic
  coordinate descent, class by class (c_i = sign(Y_i B − C'ᵀY'y_i − ν C'ᵀ1)), with m = 1 and μ = 1 as its
  defaults; V then holds C itself.
* The center update and b are computed in ``observe`` from the whole global batch (labels looked up in the
  memory): the same as the reference on one process, and identical on every torchrun process, so the loss
  (a batch mean against the memory) is exact under torchrun.
* Memory rows never written yet count as dissimilar (the reference's label buffer starts at zeros); their
  θ is 0, so they add a constant log(1 + e^m) and no gradient.
* log(1 + e^x) as softplus, exact; the reference clamps θ to [−100, 50] first (zero gradient beyond), which
  the quantisation term keeps out of reach (|θ| ≤ bits/2 for codes near ±1) — left out.
* Relaxation "none" (the reference's AlexNet ends linearly). Multi-label: s_ij = 1 when the items share a
  label; C y_i sums the centers of an item's labels (the reference's ``C @ y.t()``).

Hyper-parameters (DeepHash-pytorch's): m = 3 (``--margin``), μ = 0.1, ν = 1 (``--nu``, its ``vul``),
ν_q = 1 (``--center-quantization``, its ``nta``), η = 0.5. Seed recipe: DeepHash-pytorch
(hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 64 and 150 epochs; on CIFAR-10 its
resize-only transforms, on the other data sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hashkit.errors import HashkitError
from hashkit.method import Batch, Hyper, TrainingData
from hashkit.method_parts.memory import PairwiseMemoryMethod
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

CENTER_STEPS = 200
CENTER_STEP_SIZE = 0.03
CENTER_DECAY_AT = (149, 179)  # the step size × 0.1 from these steps on


def update_centers(
    V: torch.Tensor, labels: torch.Tensor, codes: torch.Tensor, nu: float, center_quantization: float
) -> torch.Tensor:
    """DFH's relaxed centers V (bits, classes) after DeepHash-pytorch's 200 gradient steps on
    mean (V Yᵀ − Bᵀ)² + ν mean (VᵀV − T)² + ν_q mean (V − sign V)², T = K(2I − 1), for the batch's labels
    Y (b, classes) and codes B (b, bits).

    The gradient is written out rather than taken by autograd (200 steps per batch): with R = V Yᵀ − Bᵀ and
    G = VᵀV − T (symmetric), it is 2RY/|R| + ν·4VG/|G| + ν_q·2(V − sign V)/|V| (sign contributing none, as
    under autograd), = V(k YᵀY + ν·4G/|G|) − k BᵀY + …, k = 2/|R|, so YᵀY and BᵀY are formed once. The
    steps run on one CPU thread: on a busy 2-core machine torch's second thread made these tiny products
    5-100 × slower (measured 23 ms against 0.6-2.5 s per batch at 32 bits, 10 classes, batch 64)."""
    bits, classes = V.shape
    target = bits * (2.0 * torch.eye(classes, dtype=V.dtype, device=V.device) - 1.0)
    labels, codes = labels.to(V.dtype), codes.to(V.dtype)
    k_intra = 2.0 / (bits * len(labels))
    k_inter = nu * 4.0 / (classes * classes)
    k_quantization = center_quantization * 2.0 / V.numel()
    label_gram = k_intra * labels.t() @ labels
    code_labels = k_intra * codes.t() @ labels
    step = CENTER_STEP_SIZE
    threads = torch.get_num_threads()
    if V.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        for i in range(CENTER_STEPS):
            gradient = (
                V @ (label_gram + k_inter * (V.t() @ V - target)) - code_labels + k_quantization * (V - torch.sign(V))
            )
            if i in CENTER_DECAY_AT:
                step *= 0.1
            V = V - step * gradient
    finally:
        torch.set_num_threads(threads)
    return V


def discrete_centers(C: torch.Tensor, labels: torch.Tensor, codes: torch.Tensor, nu: float) -> torch.Tensor:
    """FIRe's ``discrete_center`` (discrete cyclic coordinate descent): for each class i in turn, with C' and Y'
    the other classes' centers and label columns, c_i = sign(Y_i B − C'ᵀ Y' y_i − ν C'ᵀ 1), where Y (classes, b)
    are the batch's labels, B (b, bits) its codes and y_i the batch's column of class i; ``C`` (bits, classes)
    in and out, entries in {−1, 0, 1} (sign 0 = 0, as ``torch.sign``)."""
    C = C.t().clone()  # (classes, bits) as the reference
    Y = labels.to(C.dtype).t()
    B = codes.to(C.dtype).t()  # (bits, b)
    for i in range(C.shape[0]):
        others = [j for j in range(C.shape[0]) if j != i]
        q = (Y @ B.t())[i]
        C_other, Y_other = C[others], Y[others]
        C[i] = torch.sign(q - C_other.t() @ (Y_other @ Y[i]) - nu * C_other.sum(dim=0))
    return C.t()


CENTER_UPDATES = ("gradient", "discrete")


def dfh_loss(
    u: torch.Tensor, codes: torch.Tensor, memory_u: torch.Tensor, s: torch.Tensor, margin: float, eta: float
) -> dict[str, torch.Tensor]:
    """DFH's margin likelihood (mean over the b × n pairs with the memory) and η × mean (b − u)²."""
    theta = 0.5 * u @ memory_u.t().to(u.dtype)
    s = s.to(u.dtype)
    metric = (1.0 - s) * F.softplus(margin + theta) + s * F.softplus(margin - theta)
    quantization = (codes.to(u.dtype) - u).pow(2).mean()
    return {"metric": metric.mean(), "quantization": eta * quantization}


@METHODS.register("dfh")
class DFH(PairwiseMemoryMethod):
    name = "dfh"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch', 'CISiPLab/cisip-FIRe')
    relaxation = "none"
    paper = "Li, van Gemert. Push for Quantization: Deep Fisher Hashing. BMVC 2019"
    hyperparameters = {
        "margin": Hyper(3.0, "DFH's margin m in log(1 + e^{m ∓ θ}) (DeepHash-pytorch's 3; FIRe's 1)"),
        "mu": Hyper(0.1, "weight μ of the class centers in DFH's codes b = sign(μ C y + u) (DeepHash-pytorch's 0.1)"),
        "nu": Hyper(1.0, "weight ν of DFH's inter-class center term (DeepHash-pytorch's vul = 1)", aliases=("vul",)),
        "center_quantization": Hyper(
            1.0, "weight of DFH's center quantisation term mean (V − sign V)² (DeepHash-pytorch's nta = 1)", aliases=("nta",)
        ),
        "eta": Hyper(0.5, "weight η of DFH's quantisation term mean (b − u)² (DeepHash-pytorch's 0.5)"),
        "center_update": Hyper(
            "gradient", "gradient: DeepHash-pytorch's 200 gradient steps on relaxed centers; discrete: FIRe's "
            "discrete cyclic coordinate descent on the ±1 centers (FIRe uses --margin 1 --mu 1)", str,
        ),
    }
    recipes = {
        # DeepHash-pytorch DFH.py get_config: batch 64, 150 epochs (evaluated every 5).
        **deephash_pytorch_recipes(
            batch_size=64, max_iter=150, margin=3.0, mu=0.1, nu=1.0, center_quantization=1.0, eta=0.5,
            center_update="gradient",
        ),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }  # fmt: skip
    # supports_distributed: True (PairwiseMemoryMethod) — centers and codes b are computed in observe from the
    # global batch, the loss is a batch mean against the memory.

    def setup(self, data: TrainingData) -> None:
        if self.hparams["center_update"] not in CENTER_UPDATES:
            raise HashkitError(
                f"--center-update {self.hparams['center_update']!r} is unknown; valid: {', '.join(CENTER_UPDATES)}"
            )
        super().setup(data)
        assert data.labels is not None
        self.V = torch.zeros(self.code_length, data.labels.shape[1], device=self.device)
        self.targets = torch.zeros(data.num_items, self.code_length, device=self.device)  # b of the latest step

    def observe(self, outputs: torch.Tensor, index: torch.Tensor) -> None:
        """b = sign(μ C y + u) for the global batch with the current centers, then the centers' update."""
        assert self.memory.labels is not None
        index = index.to(self.device)
        u = outputs.detach().to(self.V.dtype)
        labels = self.memory.labels[index]
        codes = torch.sign(float(self.hparams["mu"]) * labels @ torch.sign(self.V).t() + u)
        self.targets[index] = codes
        if self.hparams["center_update"] == "discrete":  # V holds the ±1/0 centers themselves: sign V = V
            self.V = discrete_centers(self.V, labels, codes, float(self.hparams["nu"]))
        else:
            self.V = update_centers(
                self.V, labels, codes, float(self.hparams["nu"]), float(self.hparams["center_quantization"])
            )
        super().observe(outputs, index)

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        s = self.memory.written_similarity(batch.labels)
        targets = self.targets[batch.index.to(self.device)]
        return dfh_loss(codes, targets, self.memory.U, s, float(self.hparams["margin"]), float(self.hparams["eta"]))

    @property
    def centers(self) -> torch.Tensor:
        """C = sign V (bits, classes), the class centers the codes b are pushed towards."""
        return torch.sign(self.V)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "V": self.V}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "V" in state:
            self.V = state["V"].to(self.device)

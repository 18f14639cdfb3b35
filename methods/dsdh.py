"""DSDH — Deep Supervised Discrete Hashing (Li, Sun, He, Tan; NeurIPS 2017).

DPSH's pairwise likelihood on the relaxed codes u, plus discrete codes B ∈ {−1, +1}^{n×bits} of the training
split that are both close to u and linearly classifiable (Y ≈ WᵀB). The paper's objective over the training
split (θ_ij = ½ u_iᵀu_j):

    J = Σ_ij [log(1 + e^{θ_ij}) − s_ij θ_ij]  +  μ Σ_i ‖y_i − Wᵀb_i‖²  +  ν ‖W‖²  +  η Σ_i ‖b_i − u_i‖²

minimised alternately: the network by gradient steps with B, W fixed, then W in closed form and B by discrete
cyclic coordinate descent (DCC) with u fixed. As TreezzZ/DSDH_PyTorch (``dsdh.py``: the W and B steps once
per epoch, after the epoch's batches) and DeepHash-pytorch's ``DSDH.py`` (its ``updateBandW``: ``dcc_iter``
rounds of both steps), with a memory U of the training split's outputs (hashkit.method_parts.memory):

    W-step:  W = (B Bᵀ + ν/μ I)⁻¹ B Yᵀ                        (B bits × n, Y classes × n here)
    B-step:  for each bit k in turn, with P = W Y + η/μ U and B', W' the other bits' rows:
             B_k = sign(P_k − B'ᵀ W' w_k)
    network: L = mean_{i ∈ batch, j ≤ n} [log(1 + e^{θ_ij}) − s_ij θ_ij]  +  quantisation(b_i, u_i)

Readings:

* The discrete update runs in ``on_epoch_end`` (the brief's choice, as ADSH; TreezzZ's ``dsdh.py``), not after
  every batch (DeepHash-pytorch); ``--dcc-iter`` rounds of W-step + B-step each time (DeepHash-pytorch's 10,
  TreezzZ's 1). W is the last W-step's, computed before the last B-step, as both references.
* B starts with random signs (TreezzZ's ``torch.randn(...).sign()``, drawn from the run's seed), W from one
  W-step on it, so the network has codes to be pulled towards in its first epoch.
* ``--quantization``: ``sum`` (default) — η Σ_{i ∈ batch} ‖b_i − u_i‖² / (b·n), the paper's J divided by
  batch × training-set size, the normalisation of the likelihood's mean; ``mean`` — η · mean (b − u)² over the
  batch × bits entries (TreezzZ's ``dsdh.py`` loss, where it runs with η = 0.01); ``none`` — no gradient from
  B (DeepHash-pytorch's ``DSDH.py``, whose loss adds μ·classification + ν·regulariser but W and B carry no
  gradient there, so the network is trained by the likelihood alone).
* The terms ``classification`` (μ · mean (y − Wᵀb)² over the batch) and ``regularization`` (ν · mean W²) are
  returned as detached values (DeepHash-pytorch's loss value includes them): logged, no gradient.
* Similarity s_ij over the whole training split from the labels (TreezzZ's S); rows of U never written yet
  are 0, so θ = 0 there and they add log 2 whatever s is (DeepHash-pytorch's zero label buffer gives the same).
* log(1 + e^θ) as softplus, exact; the references clamp θ to [−100, 50] (zero gradient beyond), left out as
  in DPSH. sign(0) = 0 in the B-step, as ``torch.sign`` in both references.
* Relaxation "none" (the references' AlexNet ends linearly). Multi-label: s_ij = 1 when the items share a
  label; Y holds the multi-hot label vectors (the paper's classification term).

Hyper-parameters (DeepHash-pytorch's ``get_config``): μ = 1, ν = 1, η = 55,
``dcc_iter`` 10. Seed recipe: DeepHash-pytorch (hashkit.method_parts.reference_recipes.deephash_pytorch_recipes)
with batch 128 and 150 epochs; on CIFAR-10 its resize-only transforms, on the other data sets its 256 → 224
crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

from typing import Any

import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, Hyper, TrainingData
from hashkit.method_parts.memory import PairwiseMemoryMethod, pairwise_nll
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

QUANTIZATIONS = ("sum", "mean", "none")


def w_step(B: torch.Tensor, Y: torch.Tensor, nu: float, mu: float) -> torch.Tensor:
    """W = (B Bᵀ + ν/μ I)⁻¹ B Yᵀ (bits, classes) for codes B (bits, n) and labels Y (classes, n)."""
    eye = torch.eye(B.shape[0], dtype=B.dtype, device=B.device)
    return torch.linalg.solve(B @ B.t() + (nu / mu) * eye, B @ Y.t())


def b_step(B: torch.Tensor, W: torch.Tensor, Y: torch.Tensor, U: torch.Tensor, eta: float, mu: float) -> torch.Tensor:
    """One DCC sweep over the bits: B_k = sign(P_k − B'ᵀ W' w_k), P = W Y + η/μ U, B' and W' the other bits'
    rows (updated ones included). B (bits, n), W (bits, classes), Y (classes, n), U (bits, n); returns a new B."""
    B = B.clone()
    P = W @ Y + (eta / mu) * U
    gram = W @ W.t()  # W' w_k = gram[others, k]
    for k in range(B.shape[0]):
        column = gram[:, k].clone()
        column[k] = 0.0
        B[k] = torch.sign(P[k] - column @ B)
    return B


def dsdh_loss(
    u: torch.Tensor,
    s: torch.Tensor,
    memory_u: torch.Tensor,
    codes: torch.Tensor,
    labels: torch.Tensor,
    W: torch.Tensor,
    hparams: dict[str, Any],
    num_items: int,
) -> dict[str, torch.Tensor]:
    """DSDH's likelihood (mean over the b × n pairs), quantisation towards the batch's codes ``codes`` (b, bits)
    by ``hparams["quantization"]``, and the detached classification and regulariser values."""
    theta = 0.5 * u @ memory_u.t().to(u.dtype)
    likelihood = pairwise_nll(theta, s.to(u.dtype)).mean()
    codes = codes.to(u.dtype)
    mu, nu, eta = float(hparams["mu"]), float(hparams["nu"]), float(hparams["eta"])
    squared = (codes - u).pow(2)
    if hparams["quantization"] == "sum":
        quantization = eta * squared.sum() / (len(u) * num_items)
    elif hparams["quantization"] == "mean":
        quantization = eta * squared.mean()
    else:
        quantization = u.sum() * 0.0
    W = W.to(u.dtype)
    classification = mu * (labels.to(u.dtype) - codes @ W).pow(2).mean()
    return {
        "likelihood": likelihood,
        "quantization": quantization,
        "classification": classification.detach(),
        "regularization": (nu * W.pow(2).mean()).detach(),
    }


@METHODS.register("dsdh")
class DSDH(PairwiseMemoryMethod):
    name = "dsdh"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch', 'TreezzZ/DSDH_PyTorch')
    relaxation = "none"
    paper = "Li, Sun, He, Tan. Deep Supervised Discrete Hashing. NeurIPS 2017"
    hyperparameters = {
        "mu": Hyper(1.0, "weight μ of DSDH's classification term ‖y − Wᵀb‖² (DeepHash-pytorch's 1)"),
        "nu": Hyper(1.0, "weight ν of DSDH's regulariser ‖W‖² (DeepHash-pytorch's 1)"),
        "eta": Hyper(55.0, "weight η of DSDH's quantisation term ‖b − u‖², in the B-step and the loss (DeepHash-pytorch's 55)"),
        "dcc_iter": Hyper(10, "rounds of W-step + discrete B-step at the end of every epoch (DeepHash-pytorch's 10)", int),
        "quantization": Hyper(
            "sum", "sum: η Σ‖b − u‖² / (batch × n), the paper's objective over batch × n; mean: η · mean (b − u)² "
            "(TreezzZ/DSDH_PyTorch); none: no gradient from B (DeepHash-pytorch)", str,
        ),
    }
    recipes = {
        # DeepHash-pytorch DSDH.py get_config: batch 128, 150 epochs (evaluated every 15).
        **deephash_pytorch_recipes(
            batch_size=128, max_iter=150, mu=1.0, nu=1.0, eta=55.0, dcc_iter=10, quantization="sum"
        ),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    # supports_distributed: True (PairwiseMemoryMethod) — the loss is a batch mean against the memory written in
    # observe, and the discrete update reads only the memory (identical on every process).

    def setup(self, data: TrainingData) -> None:
        if self.hparams["quantization"] not in QUANTIZATIONS:
            raise HashkitError(
                f"--quantization {self.hparams['quantization']!r} is unknown; valid: {', '.join(QUANTIZATIONS)}"
            )
        super().setup(data)
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        signs = torch.randint(0, 2, (data.num_items, self.code_length), generator=generator) * 2 - 1
        self.B = signs.float().to(self.device)  # (n, bits)
        assert self.memory.labels is not None
        self.W = w_step(self.B.t(), self.memory.labels.t(), float(self.hparams["nu"]), float(self.hparams["mu"]))

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        index = batch.index.to(self.device)
        return dsdh_loss(
            codes, self.memory.similarity(batch.labels), self.memory.U, self.B[index], batch.labels, self.W,
            self.hparams, len(self.memory),
        )  # fmt: skip

    def on_epoch_end(self, epoch: int) -> None:
        """``dcc_iter`` rounds of the W-step and the discrete B-step on the memory U of this epoch's outputs."""
        assert self.memory.labels is not None
        mu, nu, eta = float(self.hparams["mu"]), float(self.hparams["nu"]), float(self.hparams["eta"])
        B, Y, U = self.B.t(), self.memory.labels.t(), self.memory.U.t()
        W = self.W
        for _ in range(int(self.hparams["dcc_iter"])):
            W = w_step(B, Y, nu, mu)
            B = b_step(B, W, Y, U, eta, mu)
        self.B, self.W = B.t().contiguous(), W

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "B": self.B.to(torch.int8).cpu(), "W": self.W}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "B" in state:
            self.B = state["B"].to(self.device, torch.float32)
            self.W = state["W"].to(self.device)

"""QSMIH — Deep supervised hashing using quadratic spherical mutual information for efficient image retrieval
(Passalis, Tefas; Signal Processing: Image Communication 2021).

The quadratic spherical mutual information between the codes and the labels, estimated on the batch with the
cosine kernel, in its "square clamped" form (both references' ``use_square_clamp``). With z_i = u_i / (‖u_i‖ + 1e-8),
Y_ij = (1 + z_iᵀz_j) / 2 ∈ [0, 1], Δ_ij = 1 when items i and j share a label and M = b² / Σ_ij Δ_ij (b the batch
size; the "number of information needs", all equiprobable):

    clamped:  Q_ij = (Δ_ij Y_ij − 1)² + Y_ij² / M          (minimised)
    qsmi:     Q_ij = Y_ij / M − Δ_ij Y_ij                   (= −QSMI, the unclamped objective)

References and ``--variant``:

* ``deephash`` (default): swuxyj/DeepHash-pytorch ``QSMIH.py`` (``QSMIHLoss``, "modify from" passalis/qsmi):
  L = mean_ij Q_ij + α mean_{i,k} | |z_ik| − 1 | — the regulariser reads the normalised z (the reference
  overwrites u with it before the regulariser), multi-label Δ = share a label.
* ``passalis``: the authors' passalis/qsmi ``hashing/qmi_hashing.py`` (``qmi_loss``, ``train_model_qmi``):
  L = Σ_ij Q_ij + α Σ_{i,k} | |u_ik| − 1 | — sums, the regulariser on the raw outputs; Δ from equal class indices
  (single-label data; here "share a label", the same there).

Readings:

* In-batch pairs, the diagonal included (both references); not exact under torchrun (M and the pairs are the
  local batch's).
* The regulariser of ``deephash`` on z can never reach 0 for more than one bit (‖z‖ = 1); taken as written. The
  references' other options (a Gaussian kernel with σ, a fixed M) are not offered: both defaults use the cosine
  and M from the batch.
* Relaxation "none": the loss reads u as it is (DeepHash-pytorch's AlexNet and the authors' network end linearly).

Hyper-parameters: α = 0.01 (DeepHash-pytorch's get_config; the authors' demo 0.01, their function's default 0.001),
``--objective clamped``. Seed recipe: DeepHash-pytorch (hashkit.method_parts.reference_recipes
.deephash_pytorch_recipes) with batch 64 and 150 epochs; on CIFAR-10 its resize-only transforms, on the other data
sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData, similarity
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

VARIANTS = ("deephash", "passalis")
OBJECTIVES = ("clamped", "qsmi")


def qsmih_loss(
    u: torch.Tensor, labels: torch.Tensor, alpha: float, variant: str = "deephash", objective: str = "clamped"
) -> dict[str, torch.Tensor]:
    """QSMIH's mutual-information term and α × its regulariser for outputs ``u`` (b, bits) and multi-hot
    ``labels`` (b, classes); see the module docstring for the variants and objectives."""
    z = u / (u.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8)
    Y = 0.5 * (z @ z.t() + 1.0)
    D = similarity(labels.to(u.dtype), labels.to(u.dtype))
    M = D.numel() / D.sum().clamp_min(1.0)
    if objective == "qsmi":
        Q = Y / M - D * Y
    else:
        Q = (D * Y - 1.0).pow(2) + Y.pow(2) / M
    if variant == "passalis":
        return {"qsmi": Q.sum(), "regularizer": alpha * (u.abs() - 1.0).abs().sum()}
    return {"qsmi": Q.mean(), "regularizer": alpha * (z.abs() - 1.0).abs().mean()}


@METHODS.register("qsmih")
class QSMIH(HashingMethod):
    name = "qsmih"
    family = "pairwise"
    reference_code = ("swuxyj/DeepHash-pytorch", "passalis/qsmi")
    relaxation = "none"
    paper = (
        "Passalis, Tefas. Deep supervised hashing using quadratic spherical mutual information for efficient image "
        "retrieval. Signal Processing: Image Communication 2021"
    )
    hyperparameters = {
        "alpha": Hyper(0.01, "weight α of QSMIH's regulariser | |u| − 1 | (DeepHash-pytorch's 0.01)"),
        "variant": Hyper(
            "deephash", "deephash: DeepHash-pytorch QSMIH.py (means, the regulariser on the normalised codes); "
            "passalis: the authors' qmi_hashing.py (sums, the regulariser on the raw outputs)", str,
        ),
        "objective": Hyper(
            "clamped", "clamped: (Δ Y − 1)² + Y²/M, the references' square clamping; qsmi: Y/M − Δ Y (−QSMI)", str,
        ),
    }
    recipes = {
        # DeepHash-pytorch QSMIH.py get_config: RMSprop lr 1e-5, weight decay 1e-5, batch 64, 150 epochs, alpha 0.01,
        # use_square_clamp True.
        **deephash_pytorch_recipes(batch_size=64, max_iter=150, alpha=0.01, variant="deephash", objective="clamped"),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    supports_distributed = False  # the pairs and M are the local batch's

    def setup(self, data: TrainingData) -> None:
        if self.hparams["variant"] not in VARIANTS:
            raise HashkitError(f"--variant {self.hparams['variant']!r} is unknown; valid: {', '.join(VARIANTS)}")
        if self.hparams["objective"] not in OBJECTIVES:
            raise HashkitError(f"--objective {self.hparams['objective']!r} is unknown; valid: {', '.join(OBJECTIVES)}")
        if data.labels is None:
            raise HashkitError("--method qsmih is supervised: it needs the training labels")

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return qsmih_loss(
            outputs, batch.labels, float(self.hparams["alpha"]), str(self.hparams["variant"]),
            str(self.hparams["objective"]),
        )  # fmt: skip

"""MIHash — Hashing with Mutual Information (Cakir, He, Bargal, Sclaroff; IEEE TPAMI 2019, arXiv 1803.00974).

For each anchor i of the batch, the Hamming distance D to the other items and whether an item is a neighbour
(C = +, it shares a label) or not (C = −) are random variables; the loss is minus their mutual information,
estimated from soft histograms of the relaxed distances (hashkit.method_parts.histograms, triangular kernels):

    φ = 2σ(u) − 1,   d_ij = (bits − φ_iᵀφ_j) / 2
    p(D | +)_i ∝ Σ_{j ∈ N⁺_i} δ(d_ij),   p(D | −)_i ∝ Σ_{j ∈ N⁻_i} δ(d_ij),   (rows normalised to 1)
    p(D)_i = (Σ_{j ∈ N⁺_i} δ(d_ij) + Σ_{j ∈ N⁻_i} δ(d_ij)) / (N − 1),   p⁺_i = |N⁺_i| / (N − 1),   p⁻_i = 1 − p⁺_i
    I_i = H(p(D)_i) − p⁺_i H(p(D | +)_i) − p⁻_i H(p(D | −)_i)
    L = − Σ_{i ∈ batch} I_i

with N the batch size, N⁺_i the items j ≠ i sharing a label with i and δ the vector of bin kernels.

References. The authors' code is MATLAB (fcakir/deep-mihash ``mihash/mi_forward.m``, ``mi_backward.m``,
``triPulse.m``); CISiPLab/cisip-FIRe's ``functions/loss/mihash.py`` ports its forward pass to torch. The two
differ, and ``--estimator`` picks one:

* ``authors`` (default): bin centres 0, Δ, …, bits with Δ = bits / bins (bins + 1 kernels, a partition of unity
  on [0, bits]); N⁻_i = the items not sharing a label with i (an item itself is in neither set); entropies in
  bits (log₂, 0 log 0 = 0).
* ``fire``: FIRe's estimator — centres 0, Δ, …, bits − Δ with the integer Δ = bits // bins (the top kernel is
  missing, so a distance above bits − Δ loses part of its weight); N⁻_i = every item outside N⁺_i, the anchor
  itself included (FIRe zeroes the affinity's diagonal before taking its complement); natural-log entropies
  of log(p + 1e-7).

Readings:

* The sign. The authors' forward reports I and its comment says "maximize MI -> minimize -MI"; their
  hand-written backward returns the gradient of −I. FIRe's ``forward`` returns +I to autograd, so minimising it
  would make the codes uninformative: both estimators here minimise −I (FIRe's formula, the paper's sign).
* A sum over the batch's anchors (both references' ``sum``), not a mean: the loss grows with the batch size.
* In-batch pairs only (both references); the estimate depends on the whole local batch, so the method is
  refused under torchrun.
* ``--bins 0`` is the authors' default bins = bits / 2 (get_opts.m ``nbits/2``; FIRe: ``nbins 0``); FIRe's
  template sets 16 (its seed recipe here). More bins than bits is fine for ``authors`` (Δ < 1) and refused for
  ``fire`` (its integer Δ would be 0). The sigmoid's sharpness is the authors' default 1 (``sigmf [1 0]``).
* Multi-label: neighbours share at least one label (the authors' ``Y1 * Y2' > 0``, FIRe's ``get_sim``).
* Relaxation "own": the loss applies 2σ(u) − 1 itself; the codes are sign u.

Seed recipe: FIRe's (hashkit.method_parts.reference_recipes.FIRE_SEED: AlexNet, Adam, 100 epochs, its transforms
per data set; arch ``single``: a hash layer without bias) with ``nbins 16`` from configs/templates/mihash.yaml.
CPU recipe: hashkit.recipes.REGULARISED_CPU on the
frozen backbone (``--freeze-backbone``: the hash layer alone on EfficientNet-Lite0's pooled features) with the
authors' batch of 256 (get_opts.m). Fine-tuning the top blocks as the other catalogue II methods do merges
classes onto shared codes, even at the authors' ``lrmult`` 0.01 (docs/results.md, note 12).
"""

from __future__ import annotations

import math

import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData, similarity
from hashkit.method_parts.histograms import entropy, normalise_rows, soft_histograms
from hashkit.method_parts.reference_recipes import FIRE_HEAD_WITHOUT_BIAS, FIRE_SEED, FIRE_SEED_CIFAR10
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

ESTIMATORS = ("authors", "fire")


def mihash_loss(u: torch.Tensor, labels: torch.Tensor, bins: int, estimator: str = "authors") -> dict[str, torch.Tensor]:
    """−Σ_i I(D; C)_i over the anchors of the batch outputs ``u`` (N, bits) with multi-hot ``labels`` (N, classes);
    ``bins`` 0 means bits // 2 (see the module docstring for the two estimators)."""
    n, bits = u.shape
    if n < 2:  # no pairs: nothing to estimate
        return {"mutual_information": u.sum() * 0.0}
    bins = bins or max(1, bits // 2)
    phi = 2.0 * torch.sigmoid(u) - 1.0
    distances = (bits - phi @ phi.t()) / 2.0
    neighbours = similarity(labels.to(u.dtype), labels.to(u.dtype)) > 0
    eye = torch.eye(n, dtype=torch.bool, device=u.device)
    positive = neighbours & ~eye
    if estimator == "fire":
        negative = ~positive
        width = float(bits // bins)
        centers = [width * k for k in range(bins)]
        base, eps = math.e, 1e-7
    else:
        negative = ~neighbours
        width = bits / bins
        centers = [width * k for k in range(bins + 1)]
        base, eps = 2.0, None
    p_positive = positive.to(u.dtype).sum(dim=1) / (n - 1)
    h_positive = soft_histograms(distances, positive, centers, width)
    h_negative = soft_histograms(distances, negative, centers, width)
    p_distance = (h_positive + h_negative) / (n - 1)
    h_distance = entropy(p_distance, base, eps)
    h_conditional = p_positive * entropy(normalise_rows(h_positive), base, eps) + (1.0 - p_positive) * entropy(
        normalise_rows(h_negative), base, eps
    )
    return {"mutual_information": -(h_distance - h_conditional).sum()}


@METHODS.register("mihash")
class MIHash(HashingMethod):
    name = "mihash"
    family = "pairwise"
    reference_code = ("CISiPLab/cisip-FIRe", "fcakir/deep-mihash")
    relaxation = "own"
    paper = "Cakir, He, Bargal, Sclaroff. Hashing with Mutual Information. IEEE TPAMI 2019"
    hyperparameters = {
        "bins": Hyper(0, "MIHash's histogram bins (0: bits / 2, the authors' default; FIRe's template 16)", int, ("nbins",)),
        "estimator": Hyper(
            "authors", "authors: fcakir/deep-mihash's histograms (bins + 1 centres up to bits, entropies in bits); "
            "fire: FIRe mihash.py's (bins centres below bits, the anchor counted as a non-neighbour, log(p + 1e-7))",
            str,
        ),
    }
    recipes = {
        # CISiPLab/cisip-FIRe train.py defaults (FIRE_SEED), arch single with --hash-bias off, configs/templates/
        # mihash.yaml: nbins 16.
        "seed": {**FIRE_SEED, **FIRE_HEAD_WITHOUT_BIAS, "bins": 16},
        "seed@cifar10": dict(FIRE_SEED_CIFAR10),
        # The catalogue I recipe on frozen pooled features with the authors' batch (get_opts.m): fine-tuned, even at
        # the authors' lrmult 0.01, it scored lower (docs/results.md note 12).
        "cpu": {**REGULARISED_CPU, "freeze_backbone": True, "batch_size": 256},
    }
    supports_distributed = False  # the histograms are estimated from each process's part of the batch

    def setup(self, data: TrainingData) -> None:
        if self.hparams["estimator"] not in ESTIMATORS:
            raise HashkitError(f"--estimator {self.hparams['estimator']!r} is unknown; valid: {', '.join(ESTIMATORS)}")
        bins = int(self.hparams["bins"])
        if bins < 0:
            raise HashkitError(f"--bins must be 0 (bits / 2) or more, got {bins}")
        if self.hparams["estimator"] == "fire" and bins > self.code_length:
            raise HashkitError(
                f"--estimator fire needs --bins at most the code length {self.code_length} (its bin width bits // bins "
                f"would be 0), got {bins}"
            )
        if data.labels is None:
            raise HashkitError("--method mihash is supervised: it needs the training labels")

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return mihash_loss(outputs, batch.labels, int(self.hparams["bins"]), str(self.hparams["estimator"]))

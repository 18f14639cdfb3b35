"""Solvers of the shallow methods (LSH, PCAH, ITQ, SH, IMH): fitted once on the frozen features of the training
split, without a training loop (``HashingMethod.closed_form``).

Conventions every number here depends on:

* features are (n, d) rows; every solver works in float64 and hands the head float32 parameters;
* PCA is exact: the eigenvectors of the sample covariance (n − 1 denominator) with the largest eigenvalues,
  largest first — what sklearn's ``PCA(n_components=bits)`` (FIRe's) computes up to each direction's sign and
  its randomised solver's approximation. The sign is fixed so that each direction's entry of largest magnitude
  is positive (deterministic whatever LAPACK returns; a flipped direction flips one bit of every code, which
  leaves every Hamming distance unchanged);
* random draws (LSH's hyperplanes, ITQ's initial rotation) come from a generator seeded with
  ``torch.initial_seed()`` — the run's ``--seed`` (hashkit.device.seed_everything) — so they depend on the seed
  alone, not on how many numbers building the model drew before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from hashkit.errors import HashkitError
from hashkit.heads import FixedLinearHead, HashHead
from hashkit.method import HashingMethod


class ClosedFormMethod(HashingMethod):
    """Base of the shallow methods: unsupervised, fitted in closed form, encoded by the head they set."""

    family = "shallow"
    reference_code: ClassVar[tuple[str, ...]] = ("CISiPLab/cisip-FIRe",)
    supervised = False
    closed_form = True
    head = "fixed_linear"
    # The head class ``fit`` sets (a user's --hash-head naming another head is refused in one line).
    head_class: ClassVar[type[HashHead]] = FixedLinearHead

    def bind_model(self, model: nn.Module) -> None:
        head = getattr(model, "head", None)
        if not isinstance(head, self.head_class):
            raise HashkitError(
                f"--method {self.name} fits its own {self.head!r} hash head, not {getattr(model, 'head_name', head)!r}: "
                f"drop --hash-head (or pass --hash-head {self.head})"
            )
        self.head_module = head

    def check_fit_size(self, features: torch.Tensor, needed: int | None = None) -> None:
        """Refuse a code length the training features cannot support (PCA-based methods need bits ≤ min(n, d))."""
        n, d = features.shape
        needed = self.code_length if needed is None else needed
        if needed > min(n, d):
            raise HashkitError(
                f"--method {self.name} projects on {needed} principal directions but the training split has "
                f"{n} items of {d} features: pass --code-length {min(n, d)} or fewer (or more training images)"
            )


@dataclass(frozen=True)
class PCAFit:
    """The top principal directions of a set of features."""

    mean: torch.Tensor  # (d,)
    components: torch.Tensor  # (k, d), unit rows, largest variance first
    variances: torch.Tensor  # (k,) eigenvalues of the covariance, descending
    explained_ratio: float  # variance kept / total variance

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """(n, k) coordinates of ``features`` on the directions, about the mean."""
        return (features.double() - self.mean) @ self.components.t()


def fit_pca(features: torch.Tensor, k: int) -> PCAFit:
    """Exact PCA of ``features`` (n, d): the k eigenvectors of the covariance with the largest eigenvalues."""
    x = features.double()
    mean = x.mean(dim=0)
    centred = x - mean
    covariance = centred.t() @ centred / max(len(x) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    components = eigenvectors[:, -k:].flip(1).t().contiguous()  # (k, d), largest first
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(k), largest])
    components = components * signs[:, None]
    variances = eigenvalues[-k:].flip(0).clamp_min(0.0)
    total = float(eigenvalues.clamp_min(0.0).sum())
    return PCAFit(mean, components, variances, float(variances.sum()) / total if total > 0 else 0.0)


def seeded_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with the run's seed (``torch.initial_seed()``, set from ``--seed``)."""
    return torch.Generator(device=device).manual_seed(torch.initial_seed())


def cosine_quantization_error(outputs: torch.Tensor) -> float:
    """FIRe's logged quantisation error of the shallow methods: mean over items of 1 − cos(u, sign(u))."""
    u = outputs.double()
    return float((1.0 - torch.nn.functional.cosine_similarity(u, torch.sign(u), dim=1)).mean())


def itq_rotation(projected: torch.Tensor, iterations: int, generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """ITQ's orthogonal rotation R (k, k) of the PCA-projected data V (n, k) (Gong & Lazebnik, CVPR 2011, §2.3).

    Minimises Q(B, R) = ‖B − V R‖²_F by alternating: B = sgn(V R) (0 ↦ +1, as the authors' code), then the
    orthogonal Procrustes solution R = Ŝ Sᵀ where Bᵀ V = S Ω Ŝᵀ. R starts as the left singular vectors of a
    k × k standard Gaussian matrix (the authors' initialisation; drawn in float32, each singular vector's
    largest entry made positive so that R₀ does not depend on the LAPACK build). Returns R and Q / n before each update and
    after the last one (non-increasing).

    FIRe's ``itq.py`` writes the update as ``VT.t() @ U.t()`` with torch.svd's V (not Vᵀ), i.e. Ŝᵀ Sᵀ, which is
    not the Procrustes solution and does not decrease Q; this is the paper's update."""
    v = projected.double()
    k = v.shape[1]
    start = torch.randn(k, k, generator=generator, dtype=torch.float32, device=generator.device)
    rotation = torch.linalg.svd(start.to(v.device, torch.float64))[0]
    largest = rotation.abs().argmax(dim=0)  # each column's largest entry positive: LAPACK-independent R₀
    rotation = rotation * torch.sign(rotation[largest, torch.arange(k, device=v.device)])[None, :]
    losses = []
    for _ in range(iterations):
        rotated = v @ rotation
        codes = torch.where(rotated >= 0, 1.0, -1.0).to(v.dtype)
        losses.append(float((codes - rotated).pow(2).sum()) / len(v))
        left, _, right_t = torch.linalg.svd(codes.t() @ v)  # Bᵀ V = S Ω Ŝᵀ
        rotation = right_t.t() @ left.t()
    rotated = v @ rotation
    losses.append(float((torch.where(rotated >= 0, 1.0, -1.0) - rotated).pow(2).sum()) / len(v))
    return rotation, losses


def pca_head_projection(pca: PCAFit, rotation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (k, d) and bias (k,) of u = Rᵀ C (x − μ) (R = identity when None), float32 for the head."""
    weight = pca.components if rotation is None else rotation.t() @ pca.components
    return weight.float(), (-(weight @ pca.mean)).float()


def fitted_statistics(outputs: torch.Tensor, **extra: Any) -> dict[str, float]:
    """What a shallow fit logs: FIRe's quantisation error of the training outputs, the share of +1 bits
    (0.5 = balanced bits), and the method's own values."""
    return {
        "quantization": cosine_quantization_error(outputs),
        "bit_balance": float((outputs >= 0).double().mean()),
        **{name: float(value) for name, value in extra.items()},
    }

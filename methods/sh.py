"""SH — Spectral Hashing (Weiss, Torralba & Fergus, NeurIPS 2008), as FIRe's ``functions/loss/sh.py`` (after
TreezzZ/SH_PyTorch, itself a port of the authors' MATLAB ``trainSH``/``compressSH``) runs it on frozen features.

Fit (training split, ``bits`` = code length):

1. PCA to k = bits dimensions: t = C (x − μ) (FIRe: sklearn ``PCA(n_components=bits)``);
2. a uniform distribution on the box of the training points: mn_j = min t_j − ε, R_j = max t_j + ε − mn_j
   (ε = 1e-7, as the seed);
3. the one-dimensional eigenfunctions of that box, Φ_{j,m}(t) = sin(π/2 + m π (t_j − mn_j) / R_j), m ≥ 1,
   with eigenvalues ∝ (m π / R_j)²: enumerated for m < ⌈(bits + 1) R_j / max R⌉ per dimension j (dimension by
   dimension, modes ascending), sorted by eigenvalue — ties kept in that order (a stable sort, as MATLAB's
   ``sort``) — and the ``bits`` smallest after the constant mode kept;
4. bit i of x is sgn(Π_j sin(π/2 + ω_ij (t_j − mn_j))) with ω_ij = m_ij π / R_j (one non-zero per bit).

The "spectral" head below holds this: a fixed linear map (the PCA projection shifted to the box corner,
t − mn, as ``head.linear``) and the frequencies ω (bits × bits) as a buffer; it computes u_i = Π_j cos(ω_ij t_j)
(= sin(π/2 + ·)). Both are in the model's state dict, so encoding needs the checkpoint alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hashkit.heads import HashHead
from hashkit.method_parts.closed_form import ClosedFormMethod, fit_pca, fitted_statistics
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU, fire_shallow_recipes
from hashkit.registry import HEADS, METHODS

BOX_MARGIN = 1e-7  # ε widening the box of the training points (seed: eps = 1e-7)


@HEADS.register("spectral")
class SpectralHead(HashHead):
    """u_i = Π_j cos(ω_ij (W x + b)_j): Spectral Hashing's sinusoids over a fixed linear projection."""

    def __init__(self, in_features: int, code_length: int, init_std: float | None = None, **_: Any) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, code_length)  # the PCA projection, shifted to the box corner
        self.linear.requires_grad_(False)
        self.register_buffer("frequencies", torch.zeros(code_length, code_length))  # ω (bits, PCA dims)

    @torch.no_grad()
    def set_spectral(self, weight: torch.Tensor, bias: torch.Tensor, frequencies: torch.Tensor) -> None:
        """The projection t = weight x + bias and the frequencies ω (bits, k)."""
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(bias)
        self.frequencies.copy_(frequencies)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return sinusoids(self.linear(features), self.frequencies)


def sinusoids(t: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """u_i = Π_j cos(ω_ij t_j) for t (b, k) and ω (bits, k): (b, bits)."""
    return torch.cos(t[:, None, :] * frequencies[None]).prod(dim=2)


def spectral_modes(ranges: torch.Tensor, bits: int) -> torch.Tensor:
    """The ``bits`` lowest non-constant modes (bits, k) of the box with side lengths ``ranges`` (k,): row i holds
    the mode number m of its one varying dimension, 0 elsewhere (Weiss et al.'s enumeration, stable order)."""
    k = len(ranges)
    most = torch.ceil((bits + 1) * ranges / ranges.max()).long()
    candidates = [torch.zeros(k, dtype=torch.float64)]  # the constant mode first, as the seed
    for dim in range(k):
        for mode in range(1, int(most[dim])):
            row = torch.zeros(k, dtype=torch.float64)
            row[dim] = mode
            candidates.append(row)
    modes = torch.stack(candidates)
    eigenvalues = ((modes * (math.pi / ranges.double())) ** 2).sum(dim=1)
    order = torch.sort(eigenvalues, stable=True).indices
    return modes[order[1 : bits + 1]]


@METHODS.register("sh")
class SpectralHashing(ClosedFormMethod):
    name = "sh"
    paper = "Weiss, Torralba & Fergus. Spectral Hashing. NeurIPS 2008"
    head = "spectral"
    head_class = SpectralHead
    recipes = {
        # FIRe: functions/loss/sh.py on the frozen VGG16 fc7 descriptors (configs/templates/sh.yaml: no parameters).
        **fire_shallow_recipes(),
        "cpu": dict(FROZEN_LITE0_CPU),
    }

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.check_fit_size(features)
        pca = fit_pca(features, self.code_length)
        t = pca.transform(features)
        low = t.min(dim=0).values - BOX_MARGIN
        ranges = t.max(dim=0).values + BOX_MARGIN - low
        modes = spectral_modes(ranges.cpu(), self.code_length).to(t.device)
        frequencies = modes * (math.pi / ranges)[None, :]
        weight = pca.components
        bias = -(weight @ pca.mean) - low
        self.head_module.set_spectral(weight.float(), bias.float(), frequencies.float())
        outputs = torch.cat([sinusoids(block - low, frequencies) for block in t.split(1024)])
        return fitted_statistics(outputs, explained_variance=pca.explained_ratio)

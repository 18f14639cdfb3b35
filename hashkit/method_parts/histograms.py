"""Differentiable histograms of pairwise distances and their entropies (MIHash; kept here for the other
mutual-information estimators of catalogue II).

MIHash (Cakir, He, Bargal, Sclaroff; TPAMI 2019) estimates the distribution of the Hamming distance between an
anchor's code and the others' by soft binning: each distance d adds to the bins centred at c_l the weight of a
triangular kernel of half-width Δ,

    δ_l(d) = 1 − |d − c_l| / Δ   for c_l − Δ < d ≤ c_l + Δ,   else 0,

so a histogram is a differentiable function of the distances (the authors' ``triPulse.m``; CISiPLab/cisip-FIRe's
``mihash.py`` loops over the same kernel). With centres 0, Δ, 2Δ, …, bits the kernels sum to 1 for every d in
[0, bits] (a partition of unity): an item's weights always total 1 and their derivatives 0.

* :func:`triangular_pulse` — δ_l(d) for one centre;
* :func:`soft_histograms` — (N, L) per-anchor histograms of the pairs picked out by a 0/1 mask;
* :func:`normalise_rows` — rows divided by their sum where it is positive (empty rows left at 0);
* :func:`entropy` — −Σ_l p_l log p_l per row, with 0 log 0 = 0 (natural log, or any base given) or with an
  ``eps`` inside the log (FIRe's ``log(p + 1e-7)``).
"""

from __future__ import annotations

import math

import torch


def triangular_pulse(distances: torch.Tensor, center: float, width: float) -> torch.Tensor:
    """δ(d) = (1 − |d − center| / width) on center − width < d ≤ center + width, 0 elsewhere (the kernel's
    support is half-open on the left, as the references')."""
    inside = (distances > center - width) & (distances <= center + width)
    return (1.0 - (distances - center).abs() / width) * inside.to(distances.dtype)


def soft_histograms(
    distances: torch.Tensor, mask: torch.Tensor, centers: torch.Tensor | list[float], width: float
) -> torch.Tensor:
    """h[i, l] = Σ_j mask[i, j] · δ_l(distances[i, j]) for every row i of the (N, M) ``distances`` and every
    bin centre c_l: the unnormalised soft histogram of row i's masked distances, (N, L)."""
    mask = mask.to(distances.dtype)
    columns = [(triangular_pulse(distances, float(c), width) * mask).sum(dim=1) for c in centers]
    return torch.stack(columns, dim=1)


def normalise_rows(h: torch.Tensor) -> torch.Tensor:
    """Each row of ``h`` divided by its sum where the sum is positive; rows summing to 0 stay 0."""
    total = h.sum(dim=1, keepdim=True)
    positive = total > 0
    return torch.where(positive, h / torch.where(positive, total, torch.ones_like(total)), h)


def entropy(p: torch.Tensor, base: float = math.e, eps: float | None = None) -> torch.Tensor:
    """H(p) = −Σ_l p_l log p_l per row of ``p`` (N, L). ``eps`` None: 0 log 0 = 0 (the term and its gradient
    are 0 where p = 0); otherwise log(p + eps) everywhere. ``base`` 2 gives bits."""
    if eps is None:
        positive = p > 0
        log_p = torch.where(positive, torch.log(torch.where(positive, p, torch.ones_like(p))), torch.zeros_like(p))
    else:
        log_p = torch.log(p + eps)
    return -(p * log_p).sum(dim=1) / math.log(base)

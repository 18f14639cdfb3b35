"""Pair and triplet parts of the in-batch and memory-based pairwise methods (catalogue II: DSH, DTSH, DCH, DFH).

* :func:`squared_distances` — ‖a_i − b_j‖² for every pair (DSH's contrastive loss);
* :func:`balanced_pair_weights` — DCH's weights that give the similar and the dissimilar pairs of a batch
  the same total weight (its paper's formula 2, as DeepHash-pytorch's ``DCH.py``);
* :func:`anchor_triplet_nll` — the triplet likelihood over every (anchor, positive, negative) of a batch
  (DTSH's triplet mining, as DeepHash-pytorch's ``DTSH.py``);
* :func:`cosine_label_similarity` — soft similarities of multi-label items, the cosine of their label vectors
  (IDHN / ISDH, as DeepHash-pytorch's ``IDHN.py``).

Hard similarities s_ij are 1/0 floats (hashkit.method.similarity: multi-label aware, "share a label").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² (n, m) for rows of ``a`` (n, d) and ``b`` (m, d), as ‖a‖² + ‖b‖² − 2 aᵀb clamped at 0
    (no (n, m, d) intermediate: a batch against a memory of the whole training split)."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.t()).clamp(min=0.0)


def balanced_pair_weights(s: torch.Tensor) -> torch.Tensor:
    """w_ij = |S| / |S₁| for similar and |S| / |S₀| for dissimilar pairs (|S| all pairs, S₁ the similar,
    S₀ the dissimilar ones), so that both kinds weigh the same in a mean over pairs; all 1 when the batch
    has pairs of only one kind (DeepHash-pytorch's DCH.py falls back to w = 1 there)."""
    similar = s.sum()
    dissimilar = s.numel() - similar
    if similar == 0 or dissimilar == 0:
        return torch.ones_like(s)
    return s * (s.numel() / similar) + (1.0 - s) * (s.numel() / dissimilar)


def anchor_triplet_nll(theta: torch.Tensor, s: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors of the mean over their (positive, negative) pairs of −log σ(θ_ip − θ_in − margin).

    ``theta`` (b, b) are the similarities of a batch with itself, ``s`` (b, b) its 0/1 similarity. Every
    item is an anchor; its positives are the items sharing a label with it (itself included, as the
    reference's ``s[row] == 1``), its negatives the others. Anchors without a positive or without a negative
    are skipped; 0 when no anchor is left. −log σ(t) = softplus(−t), exact for any t. Memory: b³ entries
    (2 M at the seed's batch of 128)."""
    positive = s > 0
    triple = theta[:, :, None] - theta[:, None, :] - margin  # [anchor, positive, negative]
    mask = (positive[:, :, None] & ~positive[:, None, :]).to(theta.dtype)
    per_anchor_count = mask.sum(dim=(1, 2))
    valid = per_anchor_count > 0
    if not bool(valid.any()):
        return theta.sum() * 0.0
    per_anchor = (F.softplus(-triple) * mask).sum(dim=(1, 2))[valid] / per_anchor_count[valid]
    return per_anchor.mean()


def cosine_label_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft similarity s_ij = y_iᵀy_j / (‖y_i‖ ‖y_j‖ + eps) of multi-hot label vectors (b, classes) and (n,
    classes), (b, n): 1 for identical label sets, 0 for disjoint ones, in between for partly shared labels
    (e.g. 1/√2 for {a, b} against {a}); 0 for an all-zero label row. ``eps`` is DeepHash-pytorch's 1e-5 (IDHN,
    ISDH), which also keeps an identical pair just below 1 (1 − ~1e-5)."""
    norms = labels_a.norm(dim=1, keepdim=True) * labels_b.norm(dim=1)[None, :]
    return (labels_a @ labels_b.t()) / (norms + eps)

"""Codes that copy the cosine similarities of the backbone's features (unsupervised GreedyHash, BiHalf).

The references (ssppp/GreedyHash ``unsupervised_vgg.py``, liyunqianggyn/Deep-Unsupervised-Image-Hashing
``ImageHashing/*.py``, DeepHash-pytorch's ``Unsupervised_*.py``, FIRe's ``bihalf.py``) pair the first half of
a batch with its second half — item i with item i + b/2 — and match the cosines of the pairs' codes to those of
their features x (VGG16 fc7 after its ReLU and dropout, the input of the hash layer):

    L = (1/m) Σ_{i<m} ( cos(b_i, b_{i+m}) − cos(x_i, x_{i+m}) )²,   m = ⌊b/2⌋

A batch of odd size leaves its last item out (FIRe's ``bihalf.py``; the authors' scripts would fail on it).
The features are a target: detached (FIRe's reading; the references freeze the backbone, so nothing flows
into x there either). ``torch.nn.functional.cosine_similarity``'s ε = 1e-8 keeps a zero vector at cos 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def paired_halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first half, second half) of the rows of ``t``; an odd last row is left out."""
    m = t.shape[0] // 2
    return t[:m], t[m : 2 * m]


def half_batch_cosine_loss(codes: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """mean over i < m of (cos(codes_i, codes_{i+m}) − cos(x_i, x_{i+m}))², x = ``features`` detached,
    m = ⌊b/2⌋ (0 for a batch of one item)."""
    if codes.shape[0] < 2:
        return codes.sum() * 0.0
    b1, b2 = paired_halves(codes)
    x1, x2 = paired_halves(features.detach().to(codes.dtype))
    return F.mse_loss(F.cosine_similarity(b1, b2), F.cosine_similarity(x1, x2))

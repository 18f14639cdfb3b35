"""Binarisation layers that methods relax their codes with (each a forward pass and the paper's backward).

* :func:`sign_ste` — sign in the forward pass, the identity in the backward pass (GreedyHash's
  straight-through estimator), and :func:`greedyhash_penalty`, GreedyHash's | |u| − 1 |³ that goes with it;
* :func:`bihalf` — Bi-half's layer: each bit splits the batch at its median, with the paper's
  straight-through backward pass;
* :func:`stochastic_binary` — JMLH's stochastic binary layer and its gradient estimator.

Why hand-written: custom autograd functions of a few lines each, defined by the papers' equations.
"""

from __future__ import annotations

from typing import Any

import torch

from hashkit.model import binarize


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor) -> torch.Tensor:
        return binarize(u)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def sign_ste(u: torch.Tensor) -> torch.Tensor:
    """b = sign(u) (sign(0) = +1, as every code in hashkit) with ∂L/∂u = ∂L/∂b (GreedyHash's hash coding layer)."""
    return _SignSTE.apply(u)


def greedyhash_penalty(u: torch.Tensor) -> torch.Tensor:
    """mean | |u| − 1 |³ over the batch and the bits: GreedyHash's penalty ‖|u| − 1‖₃³ pulling u towards ±1
    (supervised and unsupervised GreedyHash)."""
    return (u.abs() - 1.0).abs().pow(3).mean()


class _BiHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, gamma: float) -> torch.Tensor:
        median = u.median(dim=0).values  # the lower median for an even batch: exactly half the items above it
        b = torch.where(u > median, 1.0, -1.0).to(u.dtype)
        ctx.save_for_backward(u, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        u, b = ctx.saved_tensors
        n, k = u.shape
        return grad + ctx.gamma / (n * k) * (u - b), None


def bihalf(u: torch.Tensor, gamma: float) -> torch.Tensor:
    """Bi-half layer (Li & van Gemert, AAAI 2021; arXiv 2012.12334v1 eq. 8, the half/half assignment, and
    eq. 9, its forward/backward pass): per bit, the items of the batch above the bit's median get +1, the
    others −1 (the optimal-transport half/half assignment); backward ∂L/∂u = ∂L/∂b + γ/(N·K) · (u − b),
    N the batch size and K the bits (the paper's γ is γ/(N·K) here; the authors' code, γ = 6)."""
    return _BiHalf.apply(u, gamma)


class _StochasticBinary(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = torch.sigmoid(logits)
        code = (torch.sign(prob - eps) + 1.0) / 2.0
        ctx.save_for_backward(prob)
        return code, prob

    @staticmethod
    def backward(ctx: Any, grad_code: torch.Tensor, grad_prob: torch.Tensor) -> tuple[torch.Tensor, None]:
        (prob,) = ctx.saved_tensors
        return prob * (1 - prob) * (grad_code + grad_prob), None


def stochastic_binary(logits: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JMLH's stochastic binary layer and its gradient estimator (Shen et al. 2019; the paper's equation
    numbers not verified):
    q = σ(logits), code = 1[q > ε] ∈ {0, 1} with ε ~ U(0, 1) in training (0.5 at test, i.e. sign of the
    logits); the backward pass treats the code as q: ∂L/∂logits = q(1 − q)(∂L/∂code + ∂L/∂q).
    Returns (code, q)."""
    return _StochasticBinary.apply(logits, eps)

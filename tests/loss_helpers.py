"""Helpers the loss-transcription tests share: fixed labels, the Trainer's calls for one step, autograd of a
reference. Plain torch on purpose: the references in the test files must not lean on the product."""

from __future__ import annotations

from typing import Any, Callable

import torch

from hashkit.method import Batch

F64 = torch.float64


def labels_of(count: int, multi_label: bool, classes: int = 4) -> torch.Tensor:
    """Item i has class i % classes; multi-label: a few items have a second (or third) class."""
    labels = torch.zeros(count, classes, dtype=F64)
    labels[torch.arange(count), torch.arange(count) % classes] = 1
    if multi_label:
        labels[0, 2] = labels[3, 1] = labels[5, 0] = labels[count - 2, 3] = 1
        labels[6, 1] = labels[6, 3] = 1
    return labels


def hashkit_step(method: Any, u: torch.Tensor, b: Batch, terms: tuple[str, ...] | None = None) -> tuple[float, torch.Tensor]:
    """The Trainer's calls for one step: observe (detached), then training_step; the summed loss (of ``terms``,
    default all) and its gradient with respect to u."""
    method.observe(u.detach(), b.index)
    u = u.clone().requires_grad_(True)
    losses = method.training_step(u, b)
    loss = sum(v for k, v in losses.items() if terms is None or k in terms)
    loss.backward()
    return float(loss.detach()), u.grad


def value_and_grad(f: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> tuple[float, torch.Tensor]:
    """A reference's value at u and its gradient with respect to u (autograd)."""
    u = u.clone().requires_grad_(True)
    value = f(u)
    value.backward()
    return float(value.detach()), u.grad

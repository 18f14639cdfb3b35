"""Hash heads: the part of the model that turns the backbone's features x (b, d) into real-valued outputs
u (b, bits), whose signs are the codes. A method chooses its head by name (``HashingMethod.head``; the
``--hash-head`` flag overrides it); the head is a module of :class:`hashkit.model.HashModel`, so it is saved in
the checkpoint and every path that encodes — training's evaluation, ``hashkit evaluate``, ``encode``,
``search``, ``serve`` and ``hashkit.load`` — computes codes from the saved model alone.

Built-in heads (a method file may register its own with ``@HEADS.register(name)``, e.g. Spectral Hashing's
sinusoids; the registry loads the methods before looking a name up):

* ``linear`` (the default): u = W x + b;
* ``relu_linear``: u = W ReLU(x) + b on AlexNet/VGG16 fc7 taken before its ReLU (SSDH's seed);
* ``no_bias``: u = W x (thresholds fixed at 0);
* ``bn``: u = BN(W x), W without bias and an affine BatchNorm1d over the bits (FIRe's OrthoHash); in training
  the batch statistics, in evaluation the running ones;
* ``mlp``: u = W₂ ReLU(W₁ x + b₁) + b₂ with ``--head-hidden`` units (CIBHash's encoder: 1024);
* ``fixed_linear``: u = W x + b whose W and b are never trained by gradients: a closed-form method sets them
  (:meth:`FixedLinearHead.set_projection`), e.g. PCA directions and −Wμ for centring.

Every head keeps its last linear layer as ``head.linear`` (SDH-C's orthogonality term reads its weight);
``hash_init_std`` σ draws that layer's weights from N(0, σ²) with bias 0 (HashNet's seed).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.errors import HashkitError
from hashkit.registry import HEADS, METHODS

DEFAULT_HEAD = "linear"
DEFAULT_HIDDEN = 1024


class HashHead(nn.Module):
    """Base of the heads: ``forward(features) -> u``; ``linear`` is the last linear layer."""

    # The head wants the backbone's last stage without its trailing ReLU/Dropout (fc7 before its ReLU).
    strips_backbone_activation: ClassVar[bool] = False
    linear: nn.Linear

    def init_linear(self, init_std: float | None) -> None:
        if init_std is None:
            return
        if not float(init_std) > 0:
            raise HashkitError(f"--hash-init-std must be above 0 (HashNet's seed: 0.01), got {init_std}")
        nn.init.normal_(self.linear.weight, mean=0.0, std=float(init_std))
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)


@HEADS.register("linear")
class LinearHead(HashHead):
    def __init__(self, in_features: int, code_length: int, init_std: float | None = None, **_: Any) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, code_length)
        self.init_linear(init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


@HEADS.register("relu_linear")
class ReluLinearHead(LinearHead):
    strips_backbone_activation = True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(F.relu(features))


@HEADS.register("no_bias")
class NoBiasHead(HashHead):
    def __init__(self, in_features: int, code_length: int, init_std: float | None = None, **_: Any) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, code_length, bias=False)
        self.init_linear(init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


@HEADS.register("bn")
class BatchNormHead(NoBiasHead):
    """W x without bias, then an affine BatchNorm1d over the bits (a batch of one item in training uses the
    running statistics, as there are no batch statistics to take)."""

    def __init__(self, in_features: int, code_length: int, init_std: float | None = None, **_: Any) -> None:
        super().__init__(in_features, code_length, init_std)
        self.bn = nn.BatchNorm1d(code_length)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        u = self.linear(features)
        if self.training and u.shape[0] == 1:
            bn = self.bn
            return F.batch_norm(u, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.bn(u)


@HEADS.register("mlp")
class MLPHead(HashHead):
    def __init__(self, in_features: int, code_length: int, init_std: float | None = None,
                 hidden: int | None = None, **_: Any) -> None:  # fmt: skip
        super().__init__()
        width = int(hidden or DEFAULT_HIDDEN)
        if width < 1:
            raise HashkitError(f"--head-hidden must be at least 1 (CIBHash: 1024), got {hidden}")
        self.hidden = nn.Linear(in_features, width)
        self.linear = nn.Linear(width, code_length)
        self.init_linear(init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(F.relu(self.hidden(features)))


@HEADS.register("fixed_linear")
class FixedLinearHead(LinearHead):
    """A linear map that gradients never change: the closed-form methods' projection."""

    def __init__(self, in_features: int, code_length: int, init_std: float | None = None, **_: Any) -> None:
        super().__init__(in_features, code_length, init_std)
        self.linear.requires_grad_(False)

    @torch.no_grad()
    def set_projection(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """u = weight x + bias from now on (weight (bits, d), bias (bits,), default 0)."""
        if tuple(weight.shape) != tuple(self.linear.weight.shape):
            raise ValueError(f"projection of shape {tuple(weight.shape)}, the head needs {tuple(self.linear.weight.shape)}")
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(torch.zeros_like(self.linear.bias) if bias is None else bias)


def head_names() -> list[str]:
    """Every head: the built-in ones and those the method files register."""
    METHODS.names()  # method files may register heads of their own
    return HEADS.names()


def build_head(name: str | None, in_features: int, code_length: int, **options: Any) -> HashHead:
    """The head registered as ``name`` (default ``linear``) from ``in_features`` to ``code_length``."""
    key = name or DEFAULT_HEAD
    if key not in HEADS:
        METHODS.names()
    if key not in HEADS:
        raise HashkitError(f"--hash-head {key!r} is unknown; valid heads: {', '.join(head_names())}")
    return HEADS.get(key)(in_features, code_length, **options)

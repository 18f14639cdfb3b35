"""HashModel: a backbone (a Sequential of stages) followed by a linear hash layer to ``code_length``.

The model outputs real values u; the binary code is sign(u) with sign(0) = +1. Methods apply their
own relaxation (tanh, tanh(βu), …) to u in their losses; sign is unaffected by any odd, increasing one.
"""

from __future__ import annotations

import torch
from torch import nn

from hashkit.backbones import build_backbone
from hashkit.errors import HashkitError

MAX_CODE_LENGTH = 4096


class HashModel(nn.Module):
    """Backbone stages + hash layer; ``forward(x, start=k)`` runs stages k… (for cached inputs)."""

    def __init__(self, backbone: nn.Sequential, code_length: int) -> None:
        super().__init__()
        check_code_length(code_length)
        self.backbone = backbone
        self.code_length = code_length
        self.hash_layer = nn.Linear(backbone.feature_dim, code_length)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        features = self.backbone[start:](x) if start else self.backbone(x)
        return self.hash_layer(features)

    def encode_outputs(self, x: torch.Tensor, start: int = 0, flip: bool = False) -> torch.Tensor:
        """Outputs to binarize: ``forward(x, start)``, or with ``flip`` (``--encode-flip``) its mean over
        ``x`` and the left–right mirror of ``x`` (test-time flip averaging; on the CPU recipe +0.006 mAP@ALL)."""
        if not flip:
            return self(x, start=start)
        if x.dim() != 4:
            raise HashkitError(
                f"--encode-flip mirrors images or spatial activations, got inputs of shape {tuple(x.shape)} "
                "(--freeze-backbone caches pooled features); drop --encode-flip or use --train-from"
            )
        return 0.5 * (self(x, start=start) + self(x.flip(-1), start=start))

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new hash layer (trained with a larger learning rate by some methods)."""
        return list(self.hash_layer.parameters())


def build_model(arch: str, code_length: int, pretrained: bool = True, weights: str | None = None) -> HashModel:
    """Build backbone ``arch`` (ImageNet weights unless told otherwise) with a fresh hash layer."""
    return HashModel(build_backbone(arch, pretrained=pretrained, weights=weights), code_length)


def check_code_length(code_length: int) -> None:
    if not 1 <= int(code_length) <= MAX_CODE_LENGTH:
        raise HashkitError(f"--code-length {code_length} is out of range; use 1..{MAX_CODE_LENGTH} (typically 16–128)")


def binarize(outputs: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, as ±1 floats (the convention every method and the evaluator share)."""
    return torch.where(outputs >= 0, 1.0, -1.0).to(outputs.dtype if outputs.is_floating_point() else torch.float32)

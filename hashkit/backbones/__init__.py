"""Backbones: feature extractors split into named stages, registered in ``hashkit.registry.BACKBONES``.

Each entry is a factory ``build(pretrained=True, weights=None) -> Backbone``; ``build_backbone`` looks one up.
"""

from __future__ import annotations

from hashkit.backbones import efficientnet_lite, torchvision_nets  # noqa: F401  (registers the archs)
from hashkit.backbones.base import Backbone, InputSpec
from hashkit.registry import BACKBONES


def build_backbone(arch: str, pretrained: bool = True, weights: str | None = None) -> Backbone:
    """Build the registered backbone ``arch`` (ImageNet weights, a local state dict, or random init)."""
    return BACKBONES.get(arch)(pretrained=pretrained, weights=weights)


__all__ = ["Backbone", "InputSpec", "BACKBONES", "build_backbone"]

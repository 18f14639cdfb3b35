"""Backbones: feature extractors split into named stages, registered in ``hashkit.registry.BACKBONES``.

Each entry is a factory ``build(pretrained=True, weights=None) -> Backbone``; ``build_backbone`` looks one up.
``timm:NAME`` names any timm model (hashkit.backbones.timm_nets; its factories also take ``image_size``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from loguru import logger

from hashkit.backbones import efficientnet_lite, timm_nets, torchvision_nets  # noqa: F401  (registers the archs)
from hashkit.backbones.base import Backbone, InputSpec
from hashkit.errors import HashkitError
from hashkit.registry import BACKBONES

WEIGHT_CHOICES = ("imagenet", "none")  # besides a file path


def build_backbone(
    arch: str, pretrained: bool = True, weights: str | None = None, image_size: int | None = None
) -> Backbone:
    """Build the registered backbone ``arch`` (ImageNet weights, a local state dict, or random init).

    ``image_size``: the input size, for architectures built for one (timm's ViT and Swin); the others
    take any size and ignore it."""
    factory = BACKBONES.get(arch)
    if BACKBONES.is_family_name(arch):
        return factory(pretrained=pretrained, weights=weights, image_size=image_size)
    return factory(pretrained=pretrained, weights=weights)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(config: dict[str, Any], given: Mapping[str, Any]) -> None:
    """``--weights imagenet | none | FILE`` into the run config's ``pretrained`` and ``weights`` (in place).

    ``imagenet``: the arch's pretrained weights (``pretrained`` true, ``weights`` None); ``none``: random
    initialisation (``pretrained`` false); FILE: that state dict, its sha256 recorded as ``weights_sha256``
    so a checkpoint names the exact file it started from. Without ``--weights``, a timm model that has no
    pretrained weights starts from random initialisation (the other archs always have weights)."""
    choice = config.get("weights")
    if choice is None:
        if config.get("pretrained") and BACKBONES.is_family_name(str(config["arch"])):
            from hashkit.backbones.timm_nets import has_pretrained_weights

            name = BACKBONES.canonical(str(config["arch"])).split(":", 1)[1]
            if not has_pretrained_weights(name):
                logger.info(f"timm has no pretrained weights for {name}: random initialisation")
                config["pretrained"] = False
        return
    word = str(choice).strip().lower()
    if word in WEIGHT_CHOICES:
        pretrained = word == "imagenet"
        if given.get("pretrained") is not None and bool(given["pretrained"]) != pretrained:
            raise HashkitError(
                f"--weights {word} and --{'no-' if not given['pretrained'] else ''}pretrained contradict each "
                f"other; pass only --weights {word}"
            )
        config["pretrained"] = pretrained
        config["weights"] = None
        return
    file = Path(str(choice)).expanduser()
    if not file.is_file():
        raise HashkitError(
            f"--weights {choice}: no such file; pass a local .safetensors/.pth state dict, "
            f"or --weights {' or --weights '.join(WEIGHT_CHOICES)}"
        )
    config["weights"] = str(file)
    config["weights_sha256"] = file_sha256(file)


__all__ = ["Backbone", "InputSpec", "BACKBONES", "build_backbone", "resolve_weights", "file_sha256"]

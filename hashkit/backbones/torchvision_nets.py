"""AlexNet, VGG-16 and ResNet-50 from torchvision, cut into readable stages, without the ImageNet classifier.

AlexNet/VGG keep fc6 and fc7 (4096-d): the hash layer replaces the last fc, as in DPSH (Li et al.,
IJCAI 2016) and DHN (Zhu et al., AAAI 2016). ResNet-50 keeps everything up to the global pool (2048-d).
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from typing import Callable

import torchvision
from loguru import logger
from torch import nn

from hashkit.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    InputSpec,
    load_backbone_weights,
    read_state_dict,
)
from hashkit.errors import HashkitError
from hashkit.registry import BACKBONES

IMAGENET_SPEC = InputSpec(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", default_size=224)
# Per socket operation, not per download: a slow link still finishes, a silent one fails in this time.
DOWNLOAD_SOCKET_TIMEOUT_S = 20.0


def _alexnet_stages(m: torchvision.models.AlexNet) -> "OrderedDict[str, nn.Module]":
    f, c = m.features, m.classifier
    return OrderedDict(
        conv1=f[0:3], conv2=f[3:6], conv3=f[6:8], conv4=f[8:10], conv5=f[10:13],
        pool=nn.Sequential(m.avgpool, nn.Flatten(1)),
        fc6=c[0:3], fc7=c[3:6],  # Dropout, Linear, ReLU each; c[6] (fc8, 1000 classes) dropped
    )  # fmt: skip


def _vgg16_stages(m: torchvision.models.VGG) -> "OrderedDict[str, nn.Module]":
    f, c = m.features, m.classifier
    return OrderedDict(
        conv1=f[0:5], conv2=f[5:10], conv3=f[10:17], conv4=f[17:24], conv5=f[24:31],
        pool=nn.Sequential(m.avgpool, nn.Flatten(1)),
        fc6=c[0:3], fc7=c[3:6],  # Linear, ReLU, Dropout each; c[6] (fc8, 1000 classes) dropped
    )  # fmt: skip


def _resnet50_stages(m: torchvision.models.ResNet) -> "OrderedDict[str, nn.Module]":
    return OrderedDict(
        stem=nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool),
        layer1=m.layer1, layer2=m.layer2, layer3=m.layer3, layer4=m.layer4,
        pool=nn.Sequential(m.avgpool, nn.Flatten(1)),  # m.fc (1000 classes) dropped
    )  # fmt: skip


def fetch_imagenet_state_dict(arch: str, weights_enum: torchvision.models.WeightsEnum) -> dict:
    """torchvision's ImageNet state dict (cached under torch.hub's dir, else downloaded); fails fast offline."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        return weights_enum.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError, HTTPError, timeouts, hash mismatch, corrupt file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HashkitError(
            f"could not fetch the ImageNet weights for {arch} from {weights_enum.url} (no internet?): "
            f"{reason}; pass --weights FILE (a local state dict), use --arch efficientnet_lite0 "
            f"(its weights ship with pip, works offline), or --no-pretrained"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _build(
    arch: str,
    make_model: Callable[[], nn.Module],
    weights_enum: torchvision.models.WeightsEnum,
    make_stages: Callable[[nn.Module], "OrderedDict[str, nn.Module]"],
    feature_dim: int,
    pretrained: bool,
    weights: str | None,
) -> Backbone:
    """Build the torchvision model, optionally load weights, and wrap its kept modules as a Backbone."""
    model = make_model()  # torchvision's default random init
    if weights is None and pretrained:
        logger.info(f"loading torchvision ImageNet weights for {arch} ({weights_enum})")
        model.load_state_dict(fetch_imagenet_state_dict(arch, weights_enum))
    backbone = Backbone(make_stages(model), feature_dim=feature_dim, input_spec=IMAGENET_SPEC, arch=arch)
    if weights is not None:
        # Map torchvision's names to ours by tensor identity: the backbone shares the model's modules.
        ours = {id(t): k for k, t in backbone.state_dict(keep_vars=True).items()}
        theirs = {k: ours.get(id(t)) for k, t in model.state_dict(keep_vars=True).items()}
        load_backbone_weights(
            backbone,
            read_state_dict(weights),
            source=str(weights),
            foreign_key=lambda k: theirs.get(k),
            ignorable=lambda k: k in theirs and theirs[k] is None,  # the dropped ImageNet classifier
            foreign_name=f"torchvision {arch}",
        )
        logger.info(f"loaded {arch} weights from {weights}")
    return backbone


@BACKBONES.register("alexnet")
def build_alexnet(pretrained: bool = True, weights: str | None = None) -> Backbone:
    """AlexNet conv1..conv5, pool, fc6, fc7 -> 4096-d features (inputs >= 63 px)."""
    tv = torchvision.models
    return _build("alexnet", lambda: tv.alexnet(weights=None), tv.AlexNet_Weights.IMAGENET1K_V1,
                  _alexnet_stages, 4096, pretrained, weights)  # fmt: skip


@BACKBONES.register("vgg16")
def build_vgg16(pretrained: bool = True, weights: str | None = None) -> Backbone:
    """VGG-16 conv1..conv5 blocks, pool, fc6, fc7 -> 4096-d features (inputs >= 32 px)."""
    tv = torchvision.models
    return _build("vgg16", lambda: tv.vgg16(weights=None), tv.VGG16_Weights.IMAGENET1K_V1,
                  _vgg16_stages, 4096, pretrained, weights)  # fmt: skip


@BACKBONES.register("resnet50")
def build_resnet50(pretrained: bool = True, weights: str | None = None) -> Backbone:
    """ResNet-50 stem, layer1..layer4, global pool -> 2048-d features."""
    tv = torchvision.models
    return _build("resnet50", lambda: tv.resnet50(weights=None), tv.ResNet50_Weights.IMAGENET1K_V1,
                  _resnet50_stages, 2048, pretrained, weights)  # fmt: skip


__all__ = ["IMAGENET_SPEC", "build_alexnet", "build_vgg16", "build_resnet50", "fetch_imagenet_state_dict"]

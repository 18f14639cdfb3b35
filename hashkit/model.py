"""HashModel: a backbone (a Sequential of stages) followed by a linear hash layer to ``code_length``.

The model outputs real values u; the binary code is sign(u) with sign(0) = +1. Options that the seeds'
networks differ in (config keys, set by the methods' seed recipes):

* ``hash_activation`` "tanh": u = tanh(Wx + b), the seeds' tanh hash layer (DHN, ADSH, DIHN, SSDH);
  "none": u = Wx + b (DPSH; HashNet, whose loss applies its own tanh(βu)). Methods whose losses need
  tanh(u) apply it only when the model does not (``HashingMethod.tanh_outputs``); sign is unchanged.
* ``hash_head``: the head on the backbone's features, by name from :mod:`hashkit.heads` (the method's
  ``HashingMethod.head`` unless ``--hash-head`` says otherwise): ``linear`` (default), ``relu_linear`` (SSDH's
  seed: AlexNet/VGG16 fc7 taken *before* its ReLU, so the backbone's features — SSDH's pretrained features
  too — are fc7's pre-activation outputs, and no dropout precedes the head), ``bn``, ``mlp``, ``no_bias``,
  ``fixed_linear`` (closed-form methods) or one a method registers;
* ``hash_init_std`` σ: the head's last linear layer drawn from N(0, σ²) with bias 0 (HashNet's seed: 0.01);
  None: torch's default ``nn.Linear`` initialisation (the other seeds);
* ``head_hidden``: the hidden width of the ``mlp`` head;
* ``backbone_dropout`` False: the backbone's own dropout layers (AlexNet's fc6/fc7 Dropout(0.5)) stay in eval
  mode while the model trains, as FIRe's AlexNet (models/backbone/alexnet.py ``train()``: "all dropout set to
  eval"); True (default): they drop in training, as torchvision's and DeepHash-pytorch's AlexNet.

Checkpoints written before heads existed name the linear layer ``hash_layer``; they load into ``head.linear``.
"""

from __future__ import annotations

import torch
from loguru import logger
from torch import nn

from typing import Any


from hashkit.backbones import build_backbone
from hashkit.errors import HashkitError
from hashkit.heads import HashHead, build_head

MAX_CODE_LENGTH = 4096
HASH_ACTIVATIONS = ("none", "tanh")
LEGACY_HEAD_PREFIX = "hash_layer."  # the linear head's state-dict prefix before heads existed


class HashModel(nn.Module):
    """Backbone stages + hash layer; ``forward(x, start=k)`` runs stages k… (for cached inputs)."""

    def __init__(
        self,
        backbone: nn.Sequential,
        code_length: int,
        hash_activation: str | None = None,
        hash_init_std: float | None = None,
        hash_head: str | None = None,
        hash_dropout: float | None = None,
        head_hidden: int | None = None,
        backbone_dropout: bool | None = None,
    ) -> None:
        super().__init__()
        check_code_length(code_length)
        self.backbone_dropout = True if backbone_dropout is None else bool(backbone_dropout)
        self.hash_activation = hash_activation or "none"
        if self.hash_activation not in HASH_ACTIVATIONS:
            raise HashkitError(f"--hash-activation {hash_activation!r} is unknown; valid: {', '.join(HASH_ACTIVATIONS)}")
        self.head_name = hash_head or "linear"
        self.backbone = backbone
        self.code_length = code_length
        self.head: HashHead = build_head(self.head_name, backbone.feature_dim, code_length,
                                         init_std=hash_init_std, hidden=head_hidden)  # fmt: skip
        if self.head.strips_backbone_activation:
            strip_final_activation(backbone)
        dropout = float(hash_dropout or 0.0)
        if not 0.0 <= dropout < 1.0:
            raise HashkitError(f"--hash-dropout must be in [0, 1) (EfficientNet's classifier uses 0.2), got {hash_dropout}")
        # --hash-dropout: dropout on the backbone's features in training, as an ImageNet classifier head has
        # (EfficientNet 0.2); no module (and the plain features) at 0, so such runs are unchanged.
        self.feature_dropout = nn.Dropout(dropout) if dropout > 0 else None
        self._register_load_state_dict_pre_hook(_rename_legacy_head)

    def train(self, mode: bool = True) -> "HashModel":
        """nn.Module.train, then the backbone's dropout layers back to eval mode without ``backbone_dropout``."""
        super().train(mode)
        if not self.backbone_dropout:
            for module in self.backbone.modules():
                if isinstance(module, nn.Dropout):
                    module.eval()
        return self

    def forward(
        self, x: torch.Tensor, start: int = 0, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """u for inputs of stage ``start`` (0: images); with ``with_features`` also the backbone's features
        x (b, d) — pooled, before the feature dropout and the head — as ``(u, x)``."""
        features = self.backbone[start:](x) if start else self.backbone(x)
        kept = self.feature_dropout(features) if self.feature_dropout is not None else features
        u = self.head(kept)
        u = torch.tanh(u) if self.hash_activation == "tanh" else u
        return (u, features) if with_features else u

    def encode_outputs(self, x: torch.Tensor, start: int = 0, flip: bool = False) -> torch.Tensor:
        """Outputs to binarize: ``forward(x, start)``, or with ``flip`` (``--encode-flip``) its mean over
        ``x`` and the left–right mirror of ``x`` (test-time flip averaging; on the CPU recipe +0.006 mAP@ALL).
        Inputs of shape (n, k, C, H, W) — k views of each image, e.g. ``--test-transform ten_crop`` — give
        the mean of the outputs over the k views (thuml/HashNet's ``code_predict`` with 10 crops)."""
        if x.dim() == 5:
            n, k = x.shape[:2]
            views = self.encode_outputs(x.reshape(n * k, *x.shape[2:]), start=start, flip=flip)
            return views.reshape(n, k, -1).mean(dim=1)
        if not flip:
            return self(x, start=start)
        if x.dim() != 4:
            raise HashkitError(
                f"--encode-flip mirrors images or spatial activations, got inputs of shape {tuple(x.shape)} "
                "(--freeze-backbone caches pooled features); drop --encode-flip or use --train-from"
            )
        return 0.5 * (self(x, start=start) + self(x.flip(-1), start=start))

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new hash head (trained with a larger learning rate by some methods)."""
        return list(self.head.parameters())


def _rename_legacy_head(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load hook: a checkpoint from before heads existed names the linear head ``hash_layer``."""
    for key in [k for k in state_dict if k.startswith(prefix + LEGACY_HEAD_PREFIX)]:
        state_dict[prefix + "head.linear." + key[len(prefix + LEGACY_HEAD_PREFIX):]] = state_dict.pop(key)


def strip_final_activation(backbone: nn.Sequential) -> None:
    """Drop the trailing ReLU/Dropout modules of the backbone's last stage when that stage is a Sequential
    ending in a Linear layer plus them (AlexNet/VGG16 fc7), so its output is fc7 before its ReLU; other
    backbones (pooled convolutional features) are left as they are."""
    last = backbone[len(backbone) - 1]
    if not isinstance(last, nn.Sequential) or not any(isinstance(m, nn.Linear) for m in last):
        return
    stripped = False
    while len(last) and isinstance(last[len(last) - 1], (nn.ReLU, nn.Dropout)):
        del last[len(last) - 1]
        stripped = True
    if stripped:  # a marker in the state dict: cached features of this stage (keyed by it) are not reused
        last.register_buffer("before_activation", torch.ones(1))


def model_options(config: dict[str, Any]) -> dict[str, Any]:
    """The HashModel options of a run config (absent keys: the defaults)."""
    return {
        "hash_activation": config.get("hash_activation"),
        "hash_init_std": config.get("hash_init_std"),
        "hash_head": config.get("hash_head"),
        "hash_dropout": config.get("hash_dropout"),
        "head_hidden": config.get("head_hidden"),
        "image_size": config.get("image_size"),  # timm's ViT/Swin are built for their input size
        "backbone_dropout": config.get("backbone_dropout"),
    }


def build_model(
    arch: str,
    code_length: int,
    pretrained: bool = True,
    weights: str | None = None,
    hash_activation: str | None = None,
    hash_init_std: float | None = None,
    hash_head: str | None = None,
    hash_dropout: float | None = None,
    head_hidden: int | None = None,
    image_size: int | None = None,
    backbone_dropout: bool | None = None,
) -> HashModel:
    """Build backbone ``arch`` (ImageNet weights unless told otherwise) with a fresh hash head."""
    return HashModel(
        build_backbone(arch, pretrained=pretrained, weights=weights, image_size=image_size), code_length,
        hash_activation=hash_activation, hash_init_std=hash_init_std, hash_head=hash_head, hash_dropout=hash_dropout,
        head_hidden=head_hidden, backbone_dropout=backbone_dropout,
    )


def freeze_depthwise_convolutions(module: nn.Module) -> int:
    """Stop training the weights of every depthwise convolution in ``module`` (``groups`` equal to the
    input channels, > 1); returns how many were frozen.

    Why (``--freeze-depthwise``): oneDNN has no direct AVX2 kernel for a depthwise convolution's weight
    gradient and falls back to a GEMM that costs ~18× the forward pass (README, CPU results ⁹). Freezing
    the weights removes that gradient only; the gradient with respect to the input — needed by the layers
    below — is still computed, so everything else trains as before. The frozen weights are the pretrained
    ones, saved in checkpoints like any other.
    """
    frozen = 0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels:
            layer.weight.requires_grad_(False)
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
            frozen += 1
    return frozen


def set_drop_path(module: nn.Module, rate: float) -> int:
    """Stochastic depth (``--drop-path RATE``) on the residual blocks of ``module`` that support it (those
    with a ``drop_path`` attribute: EfficientNet-Lite's MBConv); returns how many blocks there are.

    Block i of n gets ``RATE × i / n`` — EfficientNet's "drop connect" schedule (Tan & Le 2019; the
    reference code scales ``drop_connect_rate`` by the block index over the block count; its ImageNet
    training used 0.2). Blocks without a residual connection ignore it; frozen (eval-mode) blocks never drop.
    """
    if not 0.0 <= float(rate) < 1.0:
        raise HashkitError(f"--drop-path must be in [0, 1) (EfficientNet trained with 0.2), got {rate}")
    # A float attribute: timm's blocks hold a DropPath *module* named drop_path (set by timm's drop_path_rate).
    blocks = [m for m in module.modules() if isinstance(getattr(m, "drop_path", None), float)]
    for index, block in enumerate(blocks):
        block.drop_path = float(rate) * index / len(blocks)
    return len(blocks)


def apply_backbone_training_options(model: HashModel, config: dict[str, Any]) -> None:
    """``--freeze-depthwise`` and ``--drop-path`` on ``model``'s backbone (training only: evaluation needs
    neither); a one-line error when the backbone has nothing for the flag to act on."""
    arch = config.get("arch")
    if config.get("freeze_depthwise"):
        frozen = freeze_depthwise_convolutions(model.backbone)
        if frozen == 0:
            raise HashkitError(f"--freeze-depthwise: backbone {arch} has no depthwise convolutions; drop the flag")
        logger.info(f"--freeze-depthwise: {frozen} depthwise convolutions keep their pretrained weights")
    rate = float(config.get("drop_path") or 0.0)
    if rate != 0.0 and set_drop_path(model.backbone, rate) == 0:
        raise HashkitError(f"--drop-path: backbone {arch} has no blocks with stochastic depth; drop the flag")


def check_code_length(code_length: int) -> None:
    if not 1 <= int(code_length) <= MAX_CODE_LENGTH:
        raise HashkitError(f"--code-length {code_length} is out of range; use 1..{MAX_CODE_LENGTH} (typically 16–128)")


def binarize(outputs: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, as ±1 floats (the convention every method and the evaluator share)."""
    return torch.where(outputs >= 0, 1.0, -1.0).to(outputs.dtype if outputs.is_floating_point() else torch.float32)

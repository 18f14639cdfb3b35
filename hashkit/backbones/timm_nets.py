"""Any timm model as a backbone: ``--arch timm:NAME`` (ViT, Swin, ConvNeXt, ResNet, EfficientNet, …).

timm (PyTorch Image Models) builds ~1,000 architectures by name, with ImageNet weights on the Hugging Face
hub. The model is created without its classifier (``num_classes=0``); the backbone's features are timm's
``forward_head(..., pre_logits=True)``: what the ImageNet classifier would see.

Stages (what ``--train-from`` names). For the families in :data:`FAMILIES` the model is cut into
``stem``/``embed``, one stage per block of its main sequence under timm's own module path with the dot
written ``_`` (``blocks_3`` = ``blocks.3`` for a ViT, ``stages_3`` for a ConvNeXt, ``layers_3`` for a Swin,
``layer3`` for a ResNet) and ``head`` (the final norm and pooling). Every parameter and buffer of the timm
model belongs to exactly one stage (checked when building); the stages share the timm model's modules, so
the staged backbone computes exactly timm's ``forward_features`` then ``forward_head(pre_logits=True)``.
Activations between stages are (n, C, H, W) maps for every family, so that a horizontal mirror is
``flip(-1)``, as the cache's flip augmentation and ``--encode-flip`` assume: Swin's blocks work on
(n, H, W, C), so its stages transpose at their borders; a ViT's blocks work on tokens (n, p + H·W, C)
(p prefix tokens: class, registers), so its stages hand on the map :class:`_TokensToMap` lays out.
Another architecture is one stage ``body`` (usable with ``--freeze-backbone``, not with ``--train-from``).

Weights (``--weights``): ``imagenet`` (the default where timm has pretrained weights: its default tag,
from the Hugging Face hub, or a copy saved as :func:`dropin_path`), a local ``.safetensors``/``.pth`` file
(timm's naming, e.g. the hub's ``model.safetensors``, passed through the model's own
``checkpoint_filter_fn`` so a ViT's position table is resampled to ``--image-size``; or a hashkit backbone
state dict), or ``none`` (timm's random initialisation). Loading is strict: every key but the ImageNet
classifier must fit.

Models with a fixed input size (ViT, Swin: ``fixed_input_size`` in timm's pretrained config) are built for
``--image-size`` (timm's ``img_size``), so a checkpoint rebuilds from its config alone.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from loguru import logger
from torch import nn

from hashkit.backbones.base import Backbone, InputSpec, load_backbone_weights, read_state_dict
from hashkit.errors import HashkitError
from hashkit.paths import cache_root
from hashkit.registry import BACKBONES, Family

PREFIX = "timm"
# FIRe's (and the hashing literature's) short names for the backbones it trains, as timm names.
PRESETS: dict[str, str] = {
    "vit_t16": "vit_tiny_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_b16": "vit_base_patch16_224",
    "vit_b32": "vit_base_patch32_224",
    "vit_l16": "vit_large_patch16_224",
    "deit_s": "deit_small_patch16_224",
    "deit_b": "deit_base_patch16_224",
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    "convnext_t": "convnext_tiny",
    "convnext_s": "convnext_small",
    "convnext_b": "convnext_base",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
}
# Per socket operation while probing and downloading: an unreachable hub fails in this time, not after
# huggingface_hub's own retries (~25 s).
HUB_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StageLayout:
    """Where a timm family's ``forward_features`` splits: ``stem`` modules run in order, then the stages
    (the children of the Sequential ``blocks``, or the listed top-level modules), then ``after`` modules
    before ``forward_head``. ``nhwc``: the stages exchange (n, H, W, C) tensors (Swin)."""

    stem_name: str
    stem: tuple[str, ...]
    blocks: str | tuple[str, ...]
    after: tuple[str, ...]
    nhwc: bool = False
    vit: bool = False  # the stem is a ViT's patch embedding + class/register tokens + positions; tokens


FAMILIES: dict[str, StageLayout] = {
    "VisionTransformer": StageLayout("embed", ("patch_embed", "pos_drop", "patch_drop", "norm_pre"), "blocks",
                                     ("norm",), vit=True),
    "SwinTransformer": StageLayout("embed", ("patch_embed",), "layers", ("norm",), nhwc=True),
    "ConvNeXt": StageLayout("stem", ("stem",), "stages", ("norm_pre",)),
    "ResNet": StageLayout("stem", ("conv1", "bn1", "act1", "maxpool"), ("layer1", "layer2", "layer3", "layer4"), ()),
    "EfficientNet": StageLayout("stem", ("conv_stem", "bn1"), "blocks", ("conv_head", "bn2")),
}


def _timm() -> Any:
    """The timm package (imported on first use: it takes seconds and only timm archs need it)."""
    try:
        import timm
    except ImportError as exc:
        raise HashkitError("--arch timm:NAME needs the package timm; run `pip install timm==1.0.31`") from exc
    return timm


def resolve_name(name: str) -> str:
    """NAME (``convnext_atto``, or with a pretrained tag ``vit_tiny_patch16_224.augreg_in21k``) checked
    against timm's registry; a one-line error with the closest names if timm has no such model."""
    timm = _timm()
    name = name.strip()
    if timm.is_model(name):
        arch, tag = timm.models.split_model_name_tag(name)
        tagged = timm.list_pretrained(f"{arch}.*")
        if not tag or name in tagged:
            return name
        tags = [t.split(".", 1)[1] for t in tagged]
        raise HashkitError(
            f"timm model {arch} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}"
        )
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    raise HashkitError(
        f"unknown timm model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
        + " (python -c \"import timm; print(timm.list_models('*vit*'))\" lists them)"
    )


def pretrained_cfg(name: str) -> Any:
    """timm's pretrained config of ``name`` (its default tag when none is given), or None."""
    return _timm().models.get_pretrained_cfg(name)


def has_pretrained_weights(name: str) -> bool:
    """Whether timm knows where ImageNet (or other) pretrained weights of ``name`` live."""
    cfg = pretrained_cfg(name)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url)


# --------------------------------------------------------------------------------------------------
# Stages


class _InOrder(nn.Sequential):
    """Stem modules (or a head's ``after`` modules) run in registration order; keeps timm's names."""


class _ToNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class _ToNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class _TokensToMap(nn.Module):
    """ViT tokens (n, p + H·W, C) -> a map (n, C, p + H, W): the patch tokens on their H×W grid, below p
    rows that each hold one prefix token (class, register) repeated across the width. A mirror of the
    patch grid is then ``flip(-1)`` of the map, which leaves the prefix rows as they are."""

    def __init__(self, prefix_tokens: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.prefix_tokens, self.grid = int(prefix_tokens), (int(grid[0]), int(grid[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, c = x.shape
        p, (h, w) = self.prefix_tokens, self.grid
        prefix = x[:, :p].transpose(1, 2).unsqueeze(-1).expand(n, c, p, w)
        return torch.cat([prefix, x[:, p:].transpose(1, 2).reshape(n, c, h, w)], dim=2)


class _MapToTokens(nn.Module):
    """The inverse of :class:`_TokensToMap` (each prefix token read from the first column)."""

    def __init__(self, prefix_tokens: int) -> None:
        super().__init__()
        self.prefix_tokens = int(prefix_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.prefix_tokens
        return torch.cat([x[:, :, :p, 0].transpose(1, 2), x[:, :, p:].flatten(2).transpose(1, 2)], dim=1)


def _owned_by(module: nn.Module, model: nn.Module) -> None:
    """Let ``module`` call methods of the timm ``model`` whose parts it holds, without registering the
    model as a submodule (its other stages' weights would then be counted twice).

    This relies on the stage's modules and parameters being the model's own objects: ``.to()``,
    ``load_state_dict`` and DDP update them in place, and ``copy.deepcopy`` keeps the sharing; a conversion
    that replaces parameter objects (``torch.__future__.set_overwrite_module_params_on_conversion(True)``)
    would break it."""
    object.__setattr__(module, "_timm_model", model)


class _ViTEmbed(nn.Module):
    """A ViT's patch embedding, class/register tokens and position embedding (timm's ``_pos_embed``),
    handing on the token map of :class:`_TokensToMap`."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        for name in names:
            self.add_module(name, getattr(model, name))
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.to_map = _TokensToMap(model.num_prefix_tokens, model.patch_embed.grid_size)
        _owned_by(self, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self._timm_model._pos_embed(x)  # uses this stage's cls/reg tokens, pos_embed and pos_drop
        return self.to_map(self.norm_pre(self.patch_drop(x)))


class _Head(nn.Module):
    """``enter`` (the family's layout from the stages' map), the ``after`` modules, then timm's
    ``forward_head(pre_logits=True)`` (pooling, head norm)."""

    def __init__(self, model: nn.Module, after: tuple[str, ...], rest: list[str], enter: nn.Module) -> None:
        super().__init__()
        self.after = tuple(after)
        self.enter = enter
        for name in (*after, *rest):
            self.add_module(name, getattr(model, name))
        _owned_by(self, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.enter(x)
        for name in self.after:
            x = self._modules[name](x)
        return self._timm_model.forward_head(x, pre_logits=True)


class _Whole(nn.Module):
    """A timm model of another family as one stage: ``forward_features`` then ``forward_head``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _tensor_ids(module: nn.Module) -> list[int]:
    return [id(t) for t in (*module.parameters(), *module.buffers())]


def split_stages(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """The stages of a timm model (see the module docstring); one ``body`` stage for other families or
    when the layout leaves a parameter out (a variant this file does not know)."""
    layout = FAMILIES.get(type(model).__name__)
    if layout is None or not type(model).__module__.startswith("timm."):
        return OrderedDict(body=_Whole(model))
    children = dict(model.named_children())
    if isinstance(layout.blocks, str):
        sequence = children.get(layout.blocks)
        blocks = [(f"{layout.blocks}_{i}", m) for i, m in enumerate(sequence or [])]
        block_names = {layout.blocks}
    else:
        blocks = [(name, children[name]) for name in layout.blocks if name in children]
        block_names = set(layout.blocks)
    stem_names = tuple(n for n in layout.stem if n in children)
    after = tuple(n for n in layout.after if n in children)
    rest = [n for n in children if n not in (*stem_names, *block_names, *after)]
    # How the family's blocks take and give activations, from and to the stages' (n, C, H, W) map.
    if layout.vit:
        enter: Callable[[], nn.Module] | None = lambda: _MapToTokens(model.num_prefix_tokens)  # noqa: E731
        leave: Callable[[], nn.Module] | None = lambda: _TokensToMap(model.num_prefix_tokens, model.patch_embed.grid_size)  # noqa: E731
    elif layout.nhwc:
        enter, leave = _ToNHWC, _ToNCHW
    else:
        enter = leave = None
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    if layout.vit:
        stages[layout.stem_name] = _ViTEmbed(model, stem_names)
    else:
        stem = _InOrder(OrderedDict((n, children[n]) for n in stem_names))
        stages[layout.stem_name] = _InOrder(OrderedDict(stem=stem, leave=leave())) if leave else stem
    for name, block in blocks:
        stages[name] = nn.Sequential(OrderedDict(enter=enter(), stage=block, leave=leave())) if enter and leave else block
    stages["head"] = _Head(model, after, rest, enter() if enter else nn.Identity())
    staged = [i for stage in stages.values() for i in _tensor_ids(stage)]
    if not blocks or sorted(staged) != sorted(_tensor_ids(model)):
        logger.warning(f"timm {type(model).__name__}: its layout is not the known one; using it as one stage")
        return OrderedDict(body=_Whole(model))
    return stages


def input_spec(model: nn.Module) -> InputSpec:
    """Normalisation and resize filter from timm's data config of ``model`` (its pretrained weights')."""
    data = _timm().data.resolve_model_data_config(model)
    interpolation = data.get("interpolation", "bicubic")
    return InputSpec(
        mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in ("bicubic", "bilinear") else "bicubic",
        default_size=int(data["input_size"][-1]),
    )


# --------------------------------------------------------------------------------------------------
# Weights


@dataclass(frozen=True)
class HubFile:
    """Where timm's pretrained weights of one model live: a Hugging Face hub file, or a plain URL."""

    repo_id: str | None
    filename: str
    url: str

    @property
    def local_name(self) -> str:
        """The file name under :func:`dropin_path` (``vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors``)."""
        if self.repo_id:
            return self.repo_id.split("/")[-1] + Path(self.filename).suffix
        return Path(urlparse(self.url).path).name


def hub_file(name: str) -> HubFile | None:
    """The weights file timm would load for ``name``, or None if timm has no pretrained weights for it."""
    cfg = pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        filename = cfg.hf_hub_filename or "model.safetensors"
        return HubFile(cfg.hf_hub_id, filename, f"{constants.ENDPOINT}/{cfg.hf_hub_id}/resolve/main/{filename}")
    if cfg.url:
        return HubFile(None, Path(urlparse(cfg.url).path).name, cfg.url)
    return None


def dropin_path(file: HubFile) -> Path:
    """Where a downloaded copy of ``file`` is picked up offline: ``$HASHKIT_CACHE/weights/timm/<name>``."""
    return cache_root() / "weights" / PREFIX / file.local_name


def _reachable(url: str) -> str | None:
    """None when ``url``'s host accepts a connection within HUB_PROBE_TIMEOUT_S, else the reason."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def fetch_pretrained(name: str) -> Path:
    """A local copy of timm's pretrained weights of ``name``: the drop-in file, the Hugging Face cache, or a
    download; offline, a one-line error naming the file to fetch and where to put it."""
    file = hub_file(name)
    if file is None:
        raise HashkitError(f"timm has no pretrained weights for {name}; pass --weights none or --weights FILE")
    local = dropin_path(file)
    if local.is_file():
        return local
    if file.repo_id:
        from huggingface_hub import hf_hub_download

        try:  # already downloaded by timm or huggingface_hub: no network needed
            return Path(hf_hub_download(file.repo_id, file.filename, local_files_only=True))
        except Exception:  # noqa: BLE001 (huggingface_hub raises several kinds for "not cached")
            pass
    reason = _reachable(file.url) if not os.environ.get("HF_HUB_OFFLINE") else "HF_HUB_OFFLINE is set"
    if reason is None:
        try:
            if file.repo_id:
                return Path(hf_hub_download(file.repo_id, file.filename, etag_timeout=HUB_PROBE_TIMEOUT_S))
            local.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(file.url, str(local), progress=True)
            return local
        except Exception as exc:  # noqa: BLE001 (HTTP errors, timeouts, disk full: all "could not download")
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    raise HashkitError(
        f"could not download the pretrained weights of timm:{name} ({reason}): fetch {file.url} and pass "
        f"--weights FILE, or save it as {local} (then --weights imagenet works offline), or pass --weights none"
    )


def _checkpoint_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """timm's ``checkpoint_filter_fn`` of the model's family (old formats, ViT position resampling)."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def load_weights(backbone: Backbone, model: nn.Module, path: str | Path, name: str) -> None:
    """Load a local state dict strictly: timm's naming (through its filter) or a hashkit backbone's."""
    state = read_state_dict(path)
    theirs_keys = model.state_dict(keep_vars=True)
    own_keys = backbone.state_dict()
    classifiers = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    is_classifier = lambda k: any(k in (f"{c}.weight", f"{c}.bias") for c in classifiers)  # noqa: E731
    if sum(k in own_keys for k in state) < sum(k in theirs_keys or is_classifier(k) for k in state):
        filter_fn = _checkpoint_filter(model)
        if filter_fn is not None:
            try:
                state = filter_fn(state, model)
            except Exception as exc:  # noqa: BLE001 (a filter meeting a foreign file fails in its own way)
                first = " ".join(str(exc).split())[:200] or type(exc).__name__
                raise HashkitError(f"weights file {str(path)!r} does not fit timm:{name} ({first})") from exc
    ours = {id(t): k for k, t in backbone.state_dict(keep_vars=True).items()}
    mapping = {k: ours.get(id(t)) for k, t in theirs_keys.items()}
    load_backbone_weights(
        backbone,
        state,
        source=str(path),
        foreign_key=lambda k: mapping.get(k),
        ignorable=is_classifier,  # the ImageNet classifier, which this backbone drops
        foreign_name=f"timm {name}",
    )


def _check_input_size(backbone: Backbone, image_size: int) -> None:
    """Run one blank image through the stages (eval mode, no gradients), so that a size the model cannot
    take (a ViT's patch larger than the image, too many downsamplings) fails here in one line, not in
    the middle of caching or training."""
    was_training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as exc:  # conv sizes; timm's torch._assert on shapes
        first = " ".join(str(exc).split())[:200]
        raise HashkitError(f"{backbone.arch} cannot take {image_size}-px images ({first}); use a larger --image-size") from exc
    finally:
        backbone.train(was_training)


def build_timm_backbone(
    name: str, pretrained: bool = True, weights: str | None = None, image_size: int | None = None
) -> Backbone:
    """timm model ``name`` without its classifier, cut into stages; pretrained weights unless told otherwise."""
    timm = _timm()
    cfg = pretrained_cfg(name)
    options: dict[str, Any] = {"num_classes": 0}
    if image_size and cfg is not None and cfg.fixed_input_size:
        options["img_size"] = int(image_size)
    try:
        model = timm.create_model(name, pretrained=False, **options)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:  # e.g. an image size it cannot take
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise HashkitError(f"timm could not build {name} with {options} ({first}); try another --image-size") from exc
    arch = f"{PREFIX}:{name}"
    backbone = Backbone(split_stages(model), feature_dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
                        input_spec=input_spec(model), arch=arch)  # fmt: skip
    if image_size:
        _check_input_size(backbone, int(image_size))
    source = weights if weights is not None else fetch_pretrained(name) if pretrained else None
    if source is not None:
        load_weights(backbone, model, source, name)
        logger.info(f"loaded {arch} weights from {source}")
    return backbone


BACKBONES.register_family(
    PREFIX,
    Family(
        resolve=resolve_name,
        build=lambda name: functools.partial(build_timm_backbone, name),
        hint=f"any timm model; presets {', '.join(sorted(PRESETS))}",
    ),
    aliases=PRESETS,
)

__all__ = ["PRESETS", "FAMILIES", "build_timm_backbone", "fetch_pretrained", "hub_file", "dropin_path", "split_stages"]

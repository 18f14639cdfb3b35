"""The Backbone contract: a feature extractor as an ordered list of named stages, plus weight loading.

A :class:`Backbone` is an ``nn.Sequential`` so the trainer can split it at any stage index:
``backbone[:k]`` (frozen, its outputs cacheable) and ``backbone[k:]`` (trained). Slicing keeps the
arch, input spec and stage names; ``feature_dim`` is only set on slices that end with the last stage.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from hashkit.errors import HashkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """How images must be prepared for a backbone: resize filter, size and per-channel normalisation."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bicubic" | "bilinear" (PIL resample name)
    default_size: int  # e.g. 224


class Backbone(nn.Sequential):
    """A feature extractor as an ordered list of stages: images (n,3,H,W) -> features (n, feature_dim).

    Being a Sequential lets the trainer split it at any stage index: backbone[:k] frozen/cached,
    backbone[k:] trained. Stage names are the Sequential's child names (so they also prefix the keys of
    ``state_dict()``).
    """

    def __init__(
        self,
        stages: "OrderedDict[str, nn.Module]",
        *,
        feature_dim: int | None,
        input_spec: InputSpec,
        arch: str,
    ) -> None:
        super().__init__(stages)
        self.feature_dim = feature_dim
        self.input_spec = input_spec
        self.arch = arch

    @property
    def stage_names(self) -> list[str]:
        """One readable name per stage, in order (e.g. ``stem``, ``block0`` .. ``block15``, ``head``)."""
        return list(self._modules)

    def __getitem__(self, idx: slice | int) -> "Backbone | nn.Module":
        """A stage (int) or a sub-Backbone (slice) that keeps arch, input spec and stage names."""
        if not isinstance(idx, slice):
            return super().__getitem__(idx)
        items = list(self._modules.items())
        positions = list(range(len(items)))[idx]
        ends_with_last = bool(positions) and positions[-1] == len(items) - 1
        return Backbone(
            OrderedDict(items[i] for i in positions),
            feature_dim=self.feature_dim if ends_with_last else None,
            input_spec=self.input_spec,
            arch=self.arch,
        )

    def stage_index(self, name_or_index: str | int) -> int:
        """Resolve a stage name (``"block11"``), an index (``12``, ``-1``) or a numeric string to an index.

        A dotted module path names the stage of that module (``blocks.3`` -> ``blocks_3``: timm's names;
        a module name cannot hold a dot)."""
        names = self.stage_names
        n = len(names)
        key = name_or_index
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key.strip())
        if isinstance(key, int) and not isinstance(key, bool):
            if -n <= key < n:
                return key % n
        elif isinstance(key, str) and key.strip().lower().replace(".", "_") in names:
            return names.index(key.strip().lower().replace(".", "_"))
        raise HashkitError(
            f"unknown stage {name_or_index!r} for arch {self.arch}; valid stages: "
            f"{', '.join(names)} (or an index 0..{n - 1})"
        )

    def extra_repr(self) -> str:
        return f"arch={self.arch}, feature_dim={self.feature_dim}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a local state dict (tensors only: ``.safetensors``, or ``torch.load(weights_only=True)``); a
    clear error if it is unusable."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise HashkitError(f"weights file {str(file)!r} does not exist; pass --weights FILE with a saved state dict")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(file, device="cpu")
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, disallowed globals: all "not a state dict"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HashkitError(f"weights file {str(file)!r} is not a loadable state dict ({first})") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise HashkitError(
            f"weights file {str(file)!r} does not hold a state dict (a mapping of names to tensors)"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _first(keys: list[str], k: int = 5) -> str:
    shown = ", ".join(keys[:k])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > k else "")


def load_backbone_weights(
    backbone: Backbone,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    foreign_key: Callable[[str], str | None],
    ignorable: Callable[[str], bool],
    foreign_name: str,
) -> None:
    """Load ``state`` (the backbone's own keys, or a foreign naming mapped by ``foreign_key``) strictly.

    Keys the backbone drops on purpose (``ignorable``, e.g. the ImageNet classifier) are skipped; any other
    unknown key, a missing key or a shape mismatch raises a HashkitError naming ``source`` and the keys.
    """
    own = backbone.state_dict()
    n_own = sum(k in own for k in state)
    n_foreign = sum(foreign_key(k) in own for k in state)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        target = key if n_own >= n_foreign else foreign_key(key)
        if target in own:
            mapped[target] = value
        elif not ignorable(key):
            unexpected.append(key)
    # BatchNorm fills a missing num_batches_tracked itself (old checkpoints lack it).
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    wrong_shape = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if unexpected or missing or wrong_shape:
        problems = []
        if unexpected:
            problems.append(f"unexpected keys: {_first(unexpected)}")
        if missing:
            problems.append(f"missing keys: {_first(missing)}")
        if wrong_shape:
            problems.append(f"wrong shapes: {_first(wrong_shape, 3)}")
        raise HashkitError(
            f"weights file {source!r} does not fit arch {backbone.arch} ({'; '.join(problems)}); "
            f"expected a {foreign_name} state dict or a hashkit {backbone.arch} backbone state dict"
        )
    backbone.load_state_dict(mapped, strict=True)

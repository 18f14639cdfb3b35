"""The one definition of image preprocessing: named transform recipes + the backbone's normalisation.

A recipe is a name for the geometric part of a transform (PIL image → PIL image: resize, crop, flip),
built by :data:`RECIPES` from the image size and the backbone's resize filter; the tensor part is always
ToTensor + Normalize with the backbone's :class:`~hashkit.backbones.base.InputSpec` mean/std.
Every path that prepares images uses it: the image pipeline's training and evaluation transforms, the
retrieval API, and the feature cache (which runs the geometric part per image and :func:`normalize_batch`,
the batched equal of ToTensor + Normalize, per batch). To add a recipe (e.g. the seeds' 10-crop test),
add one entry to :data:`RECIPES`.

Defaults (:data:`DEFAULT_TRAIN`, :data:`DEFAULT_TEST`): training resizes to ``image_size`` ×
``image_size`` then flips at random; evaluation resizes only. (The seeds' resize-256/crop-224 assumes
large photos; CIFAR-10's 32×32 images are upsampled.)
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from hashkit.errors import HashkitError

Steps = list[Callable[[Image.Image], Image.Image]]


def interpolation(name: str) -> InterpolationMode:
    """The torchvision resize filter called ``name`` (an InputSpec's ``interpolation``: "bicubic", …)."""
    try:
        return InterpolationMode(name)
    except ValueError:
        valid = ", ".join(m.value for m in InterpolationMode)
        raise HashkitError(f"unknown resize filter {name!r}; valid: {valid}") from None


def pil_resample(name: str) -> Image.Resampling:
    """The PIL filter of the same name (what torchvision's Resize uses on PIL images)."""
    return Image.Resampling[interpolation(name).name]


def _resize(size: int, filt: InterpolationMode) -> Steps:
    return [T.Resize((size, size), interpolation=filt)]


# name → geometric steps for (image_size, resize filter). Deterministic recipes can be cached
# (hashkit.cached_pipeline computes activations once); random ones are for training only.
RECIPES: dict[str, Callable[[int, InterpolationMode], Steps]] = {
    "resize": _resize,  # the evaluation default
    "resize_flip": lambda size, filt: _resize(size, filt) + [T.RandomHorizontalFlip()],  # the training default
    "resized_crop_flip": lambda size, filt: [T.RandomResizedCrop(size, interpolation=filt), T.RandomHorizontalFlip()],
    "center_crop": lambda size, filt: [T.Resize(round(size * 256 / 224), interpolation=filt), T.CenterCrop(size)],
}
DEFAULT_TRAIN = "resize_flip"
DEFAULT_TEST = "resize"


def geometric_steps(recipe: str, image_size: int, resample: str) -> Steps:
    """The PIL → PIL steps of ``recipe`` at ``image_size`` with the filter named ``resample``."""
    if recipe not in RECIPES:
        raise HashkitError(f"unknown transform recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[recipe](int(image_size), interpolation(resample))


def build_transform(input_spec, image_size: int, train: bool, recipe: str | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → normalised float tensor: ``recipe`` (default: :data:`DEFAULT_TRAIN` for ``train``,
    else :data:`DEFAULT_TEST`) at ``image_size`` pixels, then ToTensor + Normalize(``input_spec``)."""
    name = recipe or (DEFAULT_TRAIN if train else DEFAULT_TEST)
    steps: list[Callable] = list(geometric_steps(name, image_size, input_spec.interpolation))
    steps += [T.ToTensor(), T.Normalize(input_spec.mean, input_spec.std)]
    return T.Compose(steps)


def describe(input_spec, image_size: int, recipe: str = DEFAULT_TEST) -> str:
    """The transform as text, for cache keys (a different text = different cached activations)."""
    if recipe == "resize":  # the text feature caches were keyed by before recipes had names
        geometry = f"resize {input_spec.interpolation} {image_size}x{image_size} (PIL)"
    else:
        geometry = f"recipe {recipe} {input_spec.interpolation} {image_size}px (PIL)"
    return f"{geometry}, to [0,1], normalize mean {list(input_spec.mean)} std {list(input_spec.std)}"


def normalize_batch(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (n, H, W, 3) → float (n, 3, H, W), exactly ToTensor + Normalize of each image, batched
    (one float conversion per batch instead of per image: the feature cache's fast path)."""
    x = batch.permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)

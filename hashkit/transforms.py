"""The one definition of image preprocessing: named transforms + the backbone's normalisation.

A transform name stands for the geometric part (PIL image → PIL image: resize, crop, flip), built by
:data:`RECIPES` from the image size and the backbone's resize filter; the tensor part is always ToTensor +
Normalize with the backbone's :class:`~hashkit.backbones.base.InputSpec` mean/std. Every path that prepares
images uses it: the image pipeline's training and evaluation transforms, the retrieval API, and the feature
cache (which runs the geometric part per image and :func:`normalize_batch`, the batched equal of ToTensor +
Normalize, per batch).

Training (``--train-transform``):

* ``resize_flip`` (hashkit's default): Resize to ``image_size`` × ``image_size``, RandomHorizontalFlip;
* ``resized_crop_flip`` (the seeds'): RandomResizedCrop(``image_size``), RandomHorizontalFlip;
* ``resize`` (no augmentation; DeepHash-pytorch on CIFAR-10): Resize to ``image_size`` × ``image_size``;
* ``resize_flip_jitter`` (FIRe on CIFAR-10): Resize to ``image_size`` × ``image_size``, RandomHorizontalFlip,
  ColorJitter(brightness=0.05, contrast=0.05);
* ``resize256_randomcrop224_flip`` (DeepHash-pytorch elsewhere): Resize(``image_size`` · 256/224, the shorter
  side), RandomCrop(``image_size``), RandomHorizontalFlip.

Evaluation (``--test-transform``):

* ``resize`` (hashkit's default): Resize to ``image_size`` × ``image_size``;
* ``center_crop`` (the seeds'; alias ``resize256_centercrop224``): Resize(``image_size`` · 256/224, the
  shorter side) + CenterCrop(``image_size``);
* ``resize256x256_centercrop224`` (FIRe on ImageNet-100 and its other photo data sets, ``configs.py``
  ``compose_transform``): Resize to a square of ``image_size`` · 256/224 on both sides (aspect ratio not kept),
  CenterCrop(``image_size``);
* ``ten_crop``: the same Resize + TenCrop(``image_size``) — the four corners and the centre, and their
  mirrors — stacked to (10, C, H, W) per image; ``HashModel.encode_outputs`` averages the network's
  outputs over the ten crops before the sign (thuml/HashNet's ``image_test_10crop``).

The seeds resize to 256 and crop 224 (ImageNet photos); on CIFAR-10 (32 × 32) every transform upsamples.
torchvision's transforms are used as they are.
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


CROP_RATIO = 256 / 224  # the seeds' Resize(256) before a 224 crop


def crop_resize(image_size: int) -> int:
    """The shorter side to resize to before a centre/ten crop of ``image_size`` (256 for 224)."""
    return int(round(image_size * CROP_RATIO))


# name → geometric steps for (image_size, resize filter). Deterministic recipes can be cached
# (hashkit.cached_pipeline computes activations once); random ones are for training only. ten_crop ends in
# TenCrop, whose output is a tuple of 10 crops (build_transform stacks them).
RECIPES: dict[str, Callable[[int, InterpolationMode], Steps]] = {
    "resize": _resize,  # the evaluation default
    "resize_flip": lambda size, filt: _resize(size, filt) + [T.RandomHorizontalFlip()],  # the training default
    "resized_crop_flip": lambda size, filt: [T.RandomResizedCrop(size, interpolation=filt), T.RandomHorizontalFlip()],
    "resize_flip_jitter": lambda size, filt: _resize(size, filt) + [
        T.RandomHorizontalFlip(), T.ColorJitter(brightness=0.05, contrast=0.05)],
    "resize256_randomcrop224_flip": lambda size, filt: [
        T.Resize(crop_resize(size), interpolation=filt), T.RandomCrop(size), T.RandomHorizontalFlip()],
    "center_crop": lambda size, filt: [T.Resize(crop_resize(size), interpolation=filt), T.CenterCrop(size)],
    "resize256_centercrop224": lambda size, filt: RECIPES["center_crop"](size, filt),
    "resize256x256_centercrop224": lambda size, filt: _resize(crop_resize(size), filt) + [T.CenterCrop(size)],
    "ten_crop": lambda size, filt: [T.Resize(crop_resize(size), interpolation=filt), T.TenCrop(size)],
}
TRAIN_TRANSFORMS = ("resize_flip", "resized_crop_flip", "resize", "resize_flip_jitter", "resize256_randomcrop224_flip")
TEST_TRANSFORMS = ("resize", "center_crop", "resize256_centercrop224", "resize256x256_centercrop224", "ten_crop")
DEFAULT_TRAIN = "resize_flip"
DEFAULT_TEST = "resize"


def check_transform_name(name: str | None, train: bool) -> str:
    """``name`` (None: the default) if it is a known training/evaluation transform, else a HashkitError."""
    valid = TRAIN_TRANSFORMS if train else TEST_TRANSFORMS
    name = name or (DEFAULT_TRAIN if train else DEFAULT_TEST)
    if name not in valid:
        flag = "--train-transform" if train else "--test-transform"
        raise HashkitError(f"{flag} {name!r} is unknown; valid: {', '.join(valid)}")
    return name


def geometric_steps(recipe: str, image_size: int, resample: str) -> Steps:
    """The PIL → PIL steps of ``recipe`` at ``image_size`` with the filter named ``resample``."""
    if recipe not in RECIPES:
        raise HashkitError(f"unknown transform recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[recipe](int(image_size), interpolation(resample))


def build_transform(
    input_spec, image_size: int, train: bool, name: str | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → normalised float tensor: the transform ``name`` (None: :data:`DEFAULT_TRAIN` for
    ``train``, else :data:`DEFAULT_TEST`) at ``image_size`` pixels, then ToTensor + Normalize(``input_spec``).
    ``ten_crop`` gives a (10, C, H, W) tensor per image."""
    name = check_transform_name(name, train)
    steps: list[Callable] = list(geometric_steps(name, image_size, input_spec.interpolation))
    to_tensor = [T.ToTensor(), T.Normalize(input_spec.mean, input_spec.std)]
    if name == "ten_crop":
        return T.Compose([*steps, StackCrops(T.Compose(to_tensor))])
    return T.Compose(steps + to_tensor)


def step_names(name: str, image_size: int, train: bool, resample: str = "bilinear") -> list[str]:
    """The transform ``name`` as short step names, e.g. ``["RandomResizedCrop(224)", "RandomHorizontalFlip()",
    "ToTensor()", "Normalize(mean, std)"]`` (``hashkit train --dry-run``), read off the steps it builds."""
    name = check_transform_name(name, train)
    names = []
    for step in geometric_steps(name, image_size, resample):
        size = getattr(step, "size", None)
        if isinstance(size, (tuple, list)) and len(set(size)) == 1:
            size = size[0]
        names.append(f"{type(step).__name__}({'' if size is None else size})")
    names += ["ToTensor()", "Normalize(mean, std)"]
    return names + (["mean of the 10 crops' outputs"] if name == "ten_crop" else [])


class StackCrops:
    """Apply ``per_crop`` to each crop of a tuple (TenCrop's output) and stack them (picklable for workers)."""

    def __init__(self, per_crop: Callable[[Image.Image], torch.Tensor]) -> None:
        self.per_crop = per_crop

    def __call__(self, crops: tuple[Image.Image, ...]) -> torch.Tensor:
        return torch.stack([self.per_crop(crop) for crop in crops])


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

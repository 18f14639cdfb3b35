"""Image → tensor transforms by name, driven by the backbone's InputSpec (its normalisation and resampling).

Training (``--train-transform``):

* ``resize_flip`` (hashkit's default): Resize to ``image_size`` × ``image_size``, RandomHorizontalFlip;
* ``resized_crop_flip`` (the seeds'): RandomResizedCrop(``image_size``), RandomHorizontalFlip.

Evaluation (``--test-transform``):

* ``resize`` (hashkit's default): Resize to ``image_size`` × ``image_size``;
* ``center_crop`` (the seeds'): Resize(``image_size`` · 256/224, the shorter side) + CenterCrop(``image_size``);
* ``ten_crop``: the same Resize + TenCrop(``image_size``) — the four corners and the centre, and their
  mirrors — stacked to (10, C, H, W) per image; ``HashModel.encode_outputs`` averages the network's
  outputs over the ten crops before the sign (thuml/HashNet's ``image_test_10crop``, an option there).

Then ToTensor and the backbone's Normalize. The seeds resize to 256 and crop 224 (ImageNet photos); on
CIFAR-10 (32 × 32) every transform upsamples. torchvision's transforms are used as they are.
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision import transforms as T

from hashkit.errors import HashkitError

_RESAMPLE = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}
TRAIN_TRANSFORMS = ("resize_flip", "resized_crop_flip")
TEST_TRANSFORMS = ("resize", "center_crop", "ten_crop")
DEFAULT_TRAIN_TRANSFORM = "resize_flip"
DEFAULT_TEST_TRANSFORM = "resize"
CROP_RATIO = 256 / 224  # the seeds' Resize(256) before a 224 crop


def crop_resize(image_size: int) -> int:
    """The shorter side to resize to before a centre/ten crop of ``image_size`` (256 for 224)."""
    return int(round(image_size * CROP_RATIO))


def check_transform_name(name: str | None, train: bool) -> str:
    """``name`` (None: the default) if it is a known training/evaluation transform, else a HashkitError."""
    valid = TRAIN_TRANSFORMS if train else TEST_TRANSFORMS
    name = name or (DEFAULT_TRAIN_TRANSFORM if train else DEFAULT_TEST_TRANSFORM)
    if name not in valid:
        flag = "--train-transform" if train else "--test-transform"
        raise HashkitError(f"{flag} {name!r} is unknown; valid: {', '.join(valid)}")
    return name


def build_transform(
    input_spec, image_size: int, train: bool, name: str | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform ``name`` (None: ``resize_flip`` for ``train``, else ``resize``) at ``image_size`` pixels."""
    name = check_transform_name(name, train)
    size = int(image_size)
    interpolation = _RESAMPLE[input_spec.interpolation]
    to_tensor = [T.ToTensor(), T.Normalize(input_spec.mean, input_spec.std)]
    if name == "resize_flip":
        return T.Compose([T.Resize((size, size), interpolation=interpolation), T.RandomHorizontalFlip(), *to_tensor])
    if name == "resized_crop_flip":
        return T.Compose([T.RandomResizedCrop(size, interpolation=interpolation), T.RandomHorizontalFlip(), *to_tensor])
    if name == "resize":
        return T.Compose([T.Resize((size, size), interpolation=interpolation), *to_tensor])
    resize = T.Resize(crop_resize(size), interpolation=interpolation)
    if name == "center_crop":
        return T.Compose([resize, T.CenterCrop(size), *to_tensor])
    return T.Compose([resize, T.TenCrop(size), StackCrops(T.Compose(to_tensor))])


class StackCrops:
    """Apply ``per_crop`` to each crop of a tuple (TenCrop's output) and stack them (picklable for workers)."""

    def __init__(self, per_crop: Callable[[Image.Image], torch.Tensor]) -> None:
        self.per_crop = per_crop

    def __call__(self, crops: tuple[Image.Image, ...]) -> torch.Tensor:
        return torch.stack([self.per_crop(crop) for crop in crops])

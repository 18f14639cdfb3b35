"""Image → tensor transforms, driven by the backbone's InputSpec (its normalisation and resampling).

Training: resize to ``image_size`` × ``image_size`` then a random horizontal flip; evaluation: resize
only. (The seeds' resize-256/crop-224 assumes large photos; CIFAR-10's 32×32 images are upsampled.)
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision import transforms as T

_RESAMPLE = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def build_transform(input_spec, image_size: int, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The transform for ``train`` or evaluation images at ``image_size`` pixels."""
    steps: list[Callable] = [T.Resize((image_size, image_size), interpolation=_RESAMPLE[input_spec.interpolation])]
    if train:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(input_spec.mean, input_spec.std)]
    return T.Compose(steps)

"""The reference codes' training recipes that several methods share, as data (hashkit.recipes).

Each is a flat mapping of config keys, the values the reference repository's training script uses; a
method's ``recipes["seed"]`` starts from one and adds its own.
"""

from __future__ import annotations

from typing import Any

# The training recipe of CISiPLab's FIRe (train.py defaults), the public code of OrthoHash, JMLH, SDH-C,
# BiHalf (supervised) and the cross-entropy baseline: AlexNet, Adam lr 1e-4 on the hash part and 0.1 × on
# the backbone, weight decay 5e-4, batch 64, 100 epochs, lr × 0.1 after 80 % of them; random crops and flips
# for training, resize 256 + center crop 224 for testing (the nearest of hashkit's transform recipes).
FIRE_SEED: dict[str, Any] = {
    "arch": "alexnet", "optimizer": "adam", "lr": 1e-5, "hash_lr_mult": 10.0, "weight_decay": 5e-4,
    "batch_size": 64, "max_iter": 100, "lr_schedule": "step", "lr_step_size": 80, "lr_gamma": 0.1,
    "lr_interval": "epoch", "train_transform": "resized_crop_flip", "test_transform": "center_crop",
}  # fmt: skip

# The training recipe of swuxyj/DeepHash-pytorch (its utils/tools.py and the methods' get_config: DSH, DTSH,
# DCH, DFH): AlexNet with a linear hash layer (torch's default init, no tanh), RMSprop lr 1e-5 on every layer,
# weight decay 1e-5, a constant lr. Transforms: on CIFAR-10 (its cifar_dataset) the 32-px images are resized
# to 224 for training and testing alike, no crop, no flip — the "seed" table, since CIFAR-10 is the default
# data set and a "seed" value must be what the default run gets; on its image-list data sets (COCO, NUS-WIDE,
# ImageNet, MIRFlickr: image_transform) Resize(256) + RandomCrop(224) + flip for training, Resize(256) +
# CenterCrop(224) for testing — a "seed@DATASET" table for each of hashkit's other data sets.
DEEPHASH_PYTORCH_SEED: dict[str, Any] = {
    "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr_mult": 1.0, "weight_decay": 1e-5,
    "momentum": 0.0, "lr_schedule": "constant", "image_size": 224, "hash_activation": "none",
    "hash_init_std": None, "train_transform": "resize", "test_transform": "resize",
}  # fmt: skip
DEEPHASH_PYTORCH_IMAGE_LISTS: dict[str, Any] = {
    "train_transform": "resize256_randomcrop224_flip", "test_transform": "resize256_centercrop224",
}  # fmt: skip
IMAGE_LIST_DATASETS: tuple[str, ...] = ("coco", "flickr25k", "folder", "imagenet100", "list", "nuswide10", "nuswide21")


def deephash_pytorch_recipes(**method_values: Any) -> dict[str, dict[str, Any]]:
    """A method's ``seed`` table (DeepHash-pytorch's recipe plus the method's own ``method_values``: batch,
    epochs, hyper-parameters) and the ``seed@DATASET`` tables of its image-list transforms."""
    tables = {f"seed@{dataset}": dict(DEEPHASH_PYTORCH_IMAGE_LISTS) for dataset in IMAGE_LIST_DATASETS}
    return {"seed": {**DEEPHASH_PYTORCH_SEED, **method_values}, **tables}

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

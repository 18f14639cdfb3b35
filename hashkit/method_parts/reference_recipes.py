"""The reference codes' training recipes that several methods share, as data (hashkit.recipes).

Each is a flat mapping of config keys, the values the reference repository's training script uses; a
method's ``recipes["seed"]`` starts from one and adds its own. The references train CIFAR-10 (32 × 32 images
upsampled) differently from their photo data sets, so each comes in two tables: ``*_SEED`` for ImageNet-100
and the other photo data sets (a method's ``recipes["seed"]``) and ``*_SEED_CIFAR10`` on top of it on CIFAR-10
(``recipes["seed@cifar10"]``).
"""

from __future__ import annotations

from typing import Any

# CISiPLab/cisip-FIRe, the public code of OrthoHash, JMLH, SDH-C, BiHalf (supervised) and the cross-entropy
# baseline. train.py's defaults: AlexNet (--backbone), Adam (--optim) lr 1e-4 on the hash part and
# --backbone-lr-scale 0.1 × on the backbone, weight decay 5e-4 (--wd), batch 64 (--bs), 100 epochs, StepLR × 0.1
# (--lr-decay-rate) every max(1, int(epochs × 0.8)) epochs (--step-size 0.8, relative: it follows --max-iter);
# models/backbone/alexnet.py keeps every dropout in eval mode while training; ImageNet-100 (utils/augmentations.py
# get_train_transform, configs.py compose_transform): RandomResizedCrop(224) + flip for training, Resize((256,
# 256)) + CenterCrop(224) for testing.
FIRE_SEED: dict[str, Any] = {
    "arch": "alexnet", "optimizer": "adam", "lr": 1e-5, "hash_lr_mult": 10.0, "weight_decay": 5e-4,
    "batch_size": 64, "max_iter": 100, "lr_schedule": "step", "lr_step_fraction": 0.8, "lr_gamma": 0.1,
    "lr_interval": "epoch", "backbone_dropout": False,
    "train_transform": "resized_crop_flip", "test_transform": "resize256x256_centercrop224",
}  # fmt: skip
# FIRe on CIFAR-10 (configs.py dataset(): imagesize = cropsize = 224): Resize((224, 224)) + RandomHorizontalFlip +
# ColorJitter(brightness=0.05, contrast=0.05) for training, Resize((224, 224)) for testing.
FIRE_SEED_CIFAR10: dict[str, Any] = {"train_transform": "resize_flip_jitter", "test_transform": "resize"}
# FIRe's train.py --hash-bias defaults to off: the hash layer of its ce/orthohash architectures has no bias
# (models/architectures/helper.py get_hash_fc_with_normalizations(bias=False)); JMLH's own architecture keeps one.
FIRE_HEAD_WITHOUT_BIAS: dict[str, Any] = {"hash_head": "no_bias"}

# swuxyj/DeepHash-pytorch, the reference code of CSQ, DPN and GreedyHash here. utils/tools.py: CIFAR-10
# (cifar_dataset) trains and tests on Resize(224) alone, no augmentation; the other data sets (image_transform)
# train on Resize(256) + RandomHorizontalFlip + RandomCrop(224) and test on Resize(256) + CenterCrop(224).
# network.py's AlexNet keeps torchvision's dropout in fc6/fc7 active (backbone_dropout's default).
DEEPHASH_PYTORCH_SEED: dict[str, Any] = {
    "train_transform": "resize256_randomcrop224_flip", "test_transform": "resize256_centercrop224",
}  # fmt: skip
DEEPHASH_PYTORCH_SEED_CIFAR10: dict[str, Any] = {"train_transform": "resize", "test_transform": "resize"}

# The training part of swuxyj/DeepHash-pytorch's recipe for the methods that take it whole (its utils/tools.py and
# the methods' get_config: DSH, DTSH, DCH, DFH): AlexNet with a linear hash layer (torch's default init, no tanh),
# RMSprop lr 1e-5 on every layer, weight decay 1e-5, a constant lr, 224 px.
DEEPHASH_PYTORCH_TRAINING: dict[str, Any] = {
    "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr_mult": 1.0, "weight_decay": 1e-5,
    "momentum": 0.0, "lr_schedule": "constant", "image_size": 224, "hash_activation": "none",
    "hash_init_std": None,
}  # fmt: skip


def deephash_pytorch_recipes(**method_values: Any) -> dict[str, dict[str, Any]]:
    """A method's ``seed`` table (DeepHash-pytorch's training recipe and its image-list transforms, plus the
    method's own ``method_values``: batch, epochs, hyper-parameters) and its ``seed@cifar10`` table (resize only)."""
    return {
        "seed": {**DEEPHASH_PYTORCH_TRAINING, **DEEPHASH_PYTORCH_SEED, **method_values},
        "seed@cifar10": dict(DEEPHASH_PYTORCH_SEED_CIFAR10),
    }


def fire_shallow_recipes(**method_values: Any) -> dict[str, dict[str, Any]]:
    """The seed tables of FIRe's shallow methods (LSH, ITQ, PCAH, SH, IMH: functions/loss/{lsh,itq,pca,sh,imh}.py
    fitted on the frozen VGG16 fc7 descriptors of the training split): VGG16 frozen at 224 px, the features taken
    through the data set's FIRe test transform (ImageNet-100: Resize((256, 256)) + CenterCrop(224); CIFAR-10:
    Resize((224, 224))). Reading: the fit sees one deterministic view of each training image (hashkit caches the
    frozen features once, under the evaluation transform), not FIRe's augmented training loader."""
    return {
        "seed": {"arch": "vgg16", "freeze_backbone": True, "image_size": 224,
                 "test_transform": FIRE_SEED["test_transform"], **method_values},  # fmt: skip
        "seed@cifar10": {"test_transform": FIRE_SEED_CIFAR10["test_transform"]},
    }


# The CPU recipe of the methods that train on frozen features (the shallow baselines and the unsupervised deep
# methods): EfficientNet-Lite0's pooled features at 128 px, computed once into the feature cache.
FROZEN_LITE0_CPU: dict[str, Any] = {"arch": "efficientnet_lite0", "freeze_backbone": True, "image_size": 128}


def frozen_vgg16_sgd_recipe(*, lr: float, lr_step_size: int, batch_size: int, max_iter: int,
                            **method_values: Any) -> dict[str, Any]:  # fmt: skip
    """The unsupervised references' shared training (GreedyHash's and BiHalf's authors): VGG16 frozen at 224 px
    with a linear hash layer on its fc7, SGD (momentum 0.9, weight decay 5e-4, no Nesterov) at ``lr`` on the hash
    layer, × 0.1 every ``lr_step_size`` epochs; plus the method's own values (transforms, hyper-parameters)."""
    return {
        "arch": "vgg16", "freeze_backbone": True, "image_size": 224, "optimizer": "sgd", "lr": lr,
        "hash_lr_mult": 1.0, "weight_decay": 5e-4, "momentum": 0.9, "nesterov": False, "lr_schedule": "step",
        "lr_step_size": lr_step_size, "lr_gamma": 0.1, "lr_interval": "epoch", "batch_size": batch_size,
        "max_iter": max_iter, "hash_head": "linear", "hash_activation": "none", "hash_init_std": None,
        **method_values,
    }  # fmt: skip

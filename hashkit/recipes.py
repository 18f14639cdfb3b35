"""Training recipes as data: named sets of config values that a method's run starts from.

A recipe is a flat mapping of config keys (= ``hashkit train`` flags, common or the method's own
hyper-parameters) to values. Two recipes exist:

* ``seed`` — the method's seed code / paper experiment (optimiser, learning rate per layer group,
  schedule, weight decay, transforms, head, epochs, batch, backbone). Written for 224 px on a GPU. The
  default: ``hashkit train --method dpsh --dataset cifar10 --code-length 32 --gpu 0`` runs it.
* ``cpu`` — the measured preset for a 2-core CPU (:data:`SHARED_RECIPES` ``["cpu"]``: EfficientNet-Lite0
  at 128 px, blocks 0–10 frozen and cached, blocks 11–15 + hash layer fine-tuned), plus each method's
  own measured values on top (e.g. DHN's λ).

Per data set: a table named ``"seed@cifar10"`` (in :data:`SHARED_RECIPES` or a method's ``recipes``) adds its
values on top of ``"seed"`` when the run's ``--dataset`` is cifar10 — the references train CIFAR-10 differently
from their other data sets. ``hashkit train --dry-run --json`` lists the tables a run used (``recipe_layers``).

Resolution (``hashkit.config.resolve_config``, the one place): global defaults < the shared recipe (<
its per-data-set table) < the method's recipe (< its per-data-set table) < flags given on the command line.
"""

from __future__ import annotations

from typing import Any

RECIPE_NAMES: tuple[str, ...] = ("seed", "cpu")
# A recipe for one data set is named RECIPE@DATASET ("seed@cifar10") and wins over RECIPE on that data set.
DATASET_SEPARATOR = "@"

# --recipe cpu: EfficientNet-Lite0 at 128 px, blocks 0–10 frozen and cached, blocks 11–15 + hash layer
# fine-tuned 32 epochs with Adam (body lr 5e-4 cosine-decayed to 0, hash layer 1e-3), batch 64, weight
# decay 1e-5, random horizontal flips of the cached activations; evaluated once, after the last epoch
# (evaluate_interval 0), with flip-averaged encoding (codes = sign of the mean output on the activations
# and their mirror). Measured figures: docs/results.md and docs/cpu-recipe.md.
CPU_RECIPE: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "image_size": 128,
    "train_from": "block11",
    "max_iter": 32,
    "lr_schedule": "cosine",
    "lr_eta_min": 0.0,
    "lr": 5e-4,
    "hash_lr_mult": 2.0,
    "optimizer": "adam",
    "batch_size": 64,
    "weight_decay": 1e-5,
    "cached_flip": True,
    "evaluate_interval": 0,
    "encode_flip": True,
}

SHARED_RECIPES: dict[str, dict[str, Any]] = {"seed": {}, "cpu": CPU_RECIPE}

# What the catalogue I methods add to CPU_RECIPE (their ``recipes["cpu"]``): the fine-tuned blocks fit the
# 5,000 training images exactly under the shared recipe, so this regularises them (8 cached views, stochastic
# depth 0.4, feature dropout 0.6) and keeps the depthwise weights fixed (their gradient is slow on AVX2 CPUs),
# in 20 epochs. JMLH 0.7816 at 32 bits; the measurements: docs/results.md, notes 6 and 11.
# EfficientNet-only keys are left out under another --arch.
REGULARISED_CPU: dict[str, Any] = {
    "cached_views": 8,
    "max_iter": 20,
    "freeze_depthwise": True,
    "drop_path": 0.4,
    "hash_dropout": 0.6,
}

# --freeze-backbone keeps its meaning under the CPU recipe (pooled features, hash layer only), which rules
# out the recipe's --train-from and --encode-flip (there is nothing spatial to mirror).
FREEZE_BACKBONE_DROPS: tuple[str, ...] = ("train_from", "encode_flip")

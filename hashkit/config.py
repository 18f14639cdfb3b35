"""Training configuration: the common flags of ``hashkit train``, their defaults, and how they resolve.

Resolution order for every key: the flag the user gave > the method's seed default
(``HashingMethod.training_defaults``) > the global default below. The resolved dict is the run's
full config: it is written to result.json and the checkpoint, and rebuilds data and model on evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hashkit.registry import METHODS


@dataclass(frozen=True)
class Flag:
    """One common ``hashkit train`` flag: its default (None = per method) and help."""

    default: Any
    help: str
    type: Any = str
    choices: tuple[str, ...] | None = None


# Keys are config names; the CLI flag is --key-with-dashes.
COMMON_FLAGS: dict[str, Flag] = {
    "arch": Flag(None, "backbone: alexnet, vgg16, resnet50 (torchvision ImageNet weights) or efficientnet_lite0 (ImageNet weights shipped offline)"),
    "pretrained": Flag(True, "start from ImageNet weights (--no-pretrained: random init)", bool),
    "weights": Flag(None, "a local backbone state dict to load instead of downloading torchvision's weights"),
    "image_size": Flag(224, "input resolution in pixels (224 as the seeds; 64–128 makes CPU runs practical)", int),
    "batch_size": Flag(None, "training batch size", int),
    "lr": Flag(None, "learning rate of the backbone", float),
    "hash_lr_mult": Flag(None, "learning-rate multiplier of the new hash layer", float),
    "optimizer": Flag(None, "optimizer", str, ("adam", "sgd", "rmsprop")),
    "weight_decay": Flag(None, "weight decay", float),
    "lr_schedule": Flag(None, "learning-rate schedule over the epochs", str, ("constant", "cosine")),
    "max_iter": Flag(None, "number of training epochs (outer iterations for ADSH/DIHN), as the seeds name it", int),
    "evaluate_interval": Flag(10, "evaluate every N epochs (and always after the last)", int),
    "topk": Flag(None, "mAP@k cut-off; 0 or absent = the dataset's default (CIFAR-10: ALL)", int),
    "metrics": Flag("map,pr_curve,precision_at", "comma-separated metrics to compute: map, precision_radius, pr_curve, precision_at (the curves cost milliseconds and let `hashkit plot` and `hashkit serve --runs` draw any run)"),
    "num_workers": Flag(0, "DataLoader worker processes decoding images", int),
    "train_from": Flag(None, "fine-tune only the backbone stages from STAGE on (e.g. block11), on activations of the frozen stages before it computed once and cached on disk (--cache-dir); absent or 0 = full fine-tuning"),
    "freeze_backbone": Flag(False, "train only the hash layer on backbone features computed once and cached on disk (= --train-from after the last stage)", bool),
    "cached_flip": Flag(True, "with --train-from/--freeze-backbone: flip cached activations horizontally at random (augmentation)", bool),
    "cached_views": Flag(0, "with --train-from: also cache N randomly cropped and flipped views of each training image once and train on a random one of the N+1 (experimental, image-level augmentation)", int),
    "encode_flip": Flag(None, "encode each image as the mean of the network's outputs on its input and on the horizontal mirror of that input (the image; under --train-from the cached activations), then take the sign; default off, on under --cpu-recipe", bool),
    "cpu_recipe": Flag(False, "preset for a 2-core CPU: efficientnet_lite0 at 128 px, --train-from block11, 32 epochs, Adam lr 5e-4 cosine, hash layer lr 1e-3, batch 64, --encode-flip (DHN: --lamda 0.1); flags you set win", bool),
}

GLOBAL_DEFAULTS: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "batch_size": 64,
    "lr": 1e-4,
    "hash_lr_mult": 10.0,
    "optimizer": "adam",
    "max_iter": 50,
    "weight_decay": 1e-5,
    "lr_schedule": "constant",
    "encode_flip": False,
}


def resolve_config(given: dict[str, Any]) -> dict[str, Any]:
    """Fill every unset (None) key from the method's seed defaults, then the global defaults."""
    from hashkit.cached_pipeline import apply_cpu_recipe  # --cpu-recipe: its preset beats the method's defaults

    method_cls = METHODS.get(given["method"])
    config = apply_cpu_recipe(dict(given))
    config["method"] = METHODS.canonical(given["method"])
    for key, value in {**GLOBAL_DEFAULTS, **method_cls.training_defaults}.items():
        if config.get(key) is None:
            config[key] = value
    for key, flag in COMMON_FLAGS.items():
        if config.get(key) is None and flag.default is not None:
            config[key] = flag.default
    for name, spec in method_cls.hyperparameters.items():
        if config.get(name) is None:
            config[name] = spec.default
    others = {n for m in METHODS.names() for n in METHODS.get(m).hyperparameters} - set(method_cls.hyperparameters)
    for name in others:  # other methods' flags the user left unset
        if config.get(name) is None:
            config.pop(name, None)
    return config


def method_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The method-specific hyper-parameters of ``config``."""
    method_cls = METHODS.get(config["method"])
    return {name: config.get(name, spec.default) for name, spec in method_cls.hyperparameters.items()}


def parse_metrics(text: str) -> list[str]:
    from hashkit.errors import HashkitError
    from hashkit.evaluate import METRIC_NAMES

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise HashkitError(f"--metrics {text!r}: unknown {', '.join(unknown) or 'empty list'}; valid: {', '.join(METRIC_NAMES)}")
    return names

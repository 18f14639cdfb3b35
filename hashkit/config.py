"""The run configuration: every key's meaning, its default, and how a run's values are resolved (one place).

A run's configuration is a flat JSON-ready mapping (:class:`RunConfig`): it is written to result.json
and into the checkpoint, and rebuilds data and model on ``hashkit evaluate``. Every key is one
``hashkit train`` flag (``code_length`` ↔ ``--code-length``). Its meaning lives here: common training
flags in :data:`COMMON_FLAGS` (with their *kind*, see :class:`hashkit.flags.Flag`), run-level keys in
:data:`RUN_KEYS`, data keys in the dataset loaders' ``cli_flags``, method hyper-parameters in
``HashingMethod.hyperparameters``.

Resolution (:func:`resolve_config`), lowest to highest priority:

1. global defaults (:data:`GLOBAL_DEFAULTS`, each flag's default, each hyper-parameter's default);
2. the shared recipe (:data:`hashkit.recipes.SHARED_RECIPES` ``[--recipe]``, then ``[--recipe@DATASET]``);
3. the method's recipe (``HashingMethod.recipes[--recipe]``, then ``[--recipe@DATASET]``: a recipe per data
   set wins over the method's default on that data set) — less its momentum settings when ``--optimizer``
   names another optimiser than the recipe's;
4. values fixed by the ``--from`` checkpoint (``arch``, ``code_length`` and the method's
   ``init_fixed_keys``) — a flag given with another value is refused, naming both;
5. flags given on the command line (a value of None means "not given").
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict

from hashkit.errors import HashkitError
from hashkit.flags import Flag
from hashkit.recipes import DATASET_SEPARATOR, FREEZE_BACKBONE_DROPS, RECIPE_NAMES, SHARED_RECIPES
from hashkit.registry import DATASETS, METHODS
from hashkit.transforms import TEST_TRANSFORMS, TRAIN_TRANSFORMS

# Keys are config names; the CLI flag is --key-with-dashes. A default of None = set by the recipe/method.
COMMON_FLAGS: dict[str, Flag] = {
    "recipe": Flag(None, "training recipe: 'seed' (the method's seed code/paper experiment, for a GPU at 224 px; the default) or 'cpu' (the measured 2-core CPU preset: efficientnet_lite0 at 128 px, blocks 11–15 + hash layer fine-tuned on cached activations, 32 epochs, Adam 5e-4 cosine, flip-averaged encoding); flags you give win over the recipe", str, RECIPE_NAMES),
    "cpu_recipe": Flag(None, "alias of --recipe cpu", bool),
    "arch": Flag(None, "backbone: alexnet, vgg16, resnet50 (torchvision ImageNet weights), efficientnet_lite0 (ImageNet weights shipped offline), or timm:NAME (any timm model, e.g. timm:convnext_atto; presets vit_b16, vit_b32, swin_t, convnext_t, …; docs/backbones.md)", kind="protocol"),
    "pretrained": Flag(True, "start from ImageNet weights (--no-pretrained: random init)", bool, kind="protocol"),
    "weights": Flag(None, "imagenet (the arch's pretrained weights, the default), none (random init), or a local .safetensors/.pth state dict to load instead of downloading (its sha256 is recorded)", kind="runtime"),
    "image_size": Flag(224, "input resolution in pixels (224 as the seeds; 64–128 makes CPU runs practical)", int, kind="protocol"),
    "batch_size": Flag(None, "training batch size (the global batch under torchrun)", int),
    "optimizer": Flag(None, "optimizer (torch.optim)", str, ("adam", "sgd", "rmsprop")),
    "lr": Flag(None, "learning rate of the backbone", float),
    "hash_lr_mult": Flag(None, "learning-rate multiplier of the new hash layer", float),
    "weight_decay": Flag(None, "weight decay", float),
    "momentum": Flag(None, "momentum of sgd / rmsprop (default: sgd 0.9, rmsprop 0)", float),
    "nesterov": Flag(None, "Nesterov momentum (sgd)", bool),
    "lr_schedule": Flag(None, "learning-rate schedule (torch.optim.lr_scheduler): constant, cosine (CosineAnnealingLR to --lr-eta-min over the run), exponential (ExponentialLR, --lr-gamma), step (StepLR, --lr-step-size, --lr-gamma)", str, ("constant", "cosine", "exponential", "step")),
    "lr_interval": Flag(None, "when the schedule steps: every epoch (an outer iteration for ADSH/DIHN) or every optimisation step", str, ("epoch", "step")),
    "lr_eta_min": Flag(None, "cosine schedule: the final learning rate (CosineAnnealingLR eta_min)", float),
    "lr_gamma": Flag(None, "exponential / step schedule: the decay factor (gamma)", float),
    "lr_step_size": Flag(None, "step schedule: decay every N intervals (StepLR step_size)", int),
    "lr_step_fraction": Flag(None, "step schedule: decay after a fraction F of the run; follows --max-iter (FIRe's relative step 0.8: every max(1, int(F × the run's intervals)) intervals); a --lr-step-size given on the command line wins", float),
    "max_iter": Flag(None, "number of training epochs (outer iterations for ADSH/DIHN), as the seeds name it", int),
    "train_transform": Flag(None, "training image transform: resize_flip (resize to --image-size + random horizontal flip), resized_crop_flip (RandomResizedCrop(--image-size) + flip, the seeds'), resize (no augmentation), resize_flip_jitter (+ ColorJitter(0.05, 0.05), FIRe's CIFAR-10) or resize256_randomcrop224_flip (DeepHash-pytorch's)", str, TRAIN_TRANSFORMS),
    "test_transform": Flag(None, "evaluation image transform: resize (to --image-size), center_crop = resize256_centercrop224 (resize to 256/224 × --image-size, center crop) or ten_crop (outputs averaged over the 10 crops before the sign, HashNet's test_10crop)", str, TEST_TRANSFORMS),
    "hash_activation": Flag(None, "activation applied to the hash layer's output inside the network: none or tanh (DHN's seed)", str, ("none", "tanh")),
    "hash_head": Flag(None, "the hash head on the backbone's features (default: the method's): linear, relu_linear (SSDH's seed: AlexNet/VGG16 fc7 taken before its ReLU, then ReLU → hash layer), no_bias, bn (no-bias linear + affine BatchNorm, FIRe's OrthoHash), mlp (Linear-ReLU-Linear, CIBHash's), fixed_linear (closed-form methods) or a head a method registers", str),
    "head_hidden": Flag(None, "hidden units of the mlp head (default 1024)", int),
    "hash_init_std": Flag(None, "initialise the hash layer's weights from N(0, std²) and its bias to 0 (HashNet's seed: 0.01); default torch's Linear init", float),
    "evaluate_interval": Flag(None, "evaluate every N epochs and after the last (0: only after the last)", int, kind="runtime"),
    "topk": Flag(None, "mAP@k cut-off; 0 or absent = the dataset's default (CIFAR-10: ALL)", int, kind="protocol"),
    "metrics": Flag("map,pr_curve,precision_at", "comma-separated metrics to compute: map, precision_radius, pr_curve, precision_at (the curves cost milliseconds and let `hashkit plot` and `hashkit serve --runs` draw any run)", kind="runtime"),
    "num_workers": Flag(0, "DataLoader worker processes decoding images", int, kind="runtime"),
    "train_from": Flag(None, "fine-tune only the backbone stages from STAGE on (e.g. block11), on activations of the frozen stages before it computed once and cached on disk (--cache-dir); absent or 0 = full fine-tuning"),
    "freeze_backbone": Flag(False, "train only the hash layer on backbone features computed once and cached on disk (= --train-from after the last stage)", bool),
    "cached_flip": Flag(True, "with --train-from/--freeze-backbone: flip cached activations horizontally at random (augmentation)", bool),
    "freeze_depthwise": Flag(False, "keep the ImageNet weights of the backbone's depthwise convolutions fixed (the pointwise convolutions, batch-norms and hash layer still train): on CPUs without AVX-512 their weight gradient has no fast kernel and is about half of a training step (README, CPU results ⁹)", bool),
    "backbone_dropout": Flag(True, "keep the backbone's own dropout layers (AlexNet fc6/fc7, VGG16) active in training; --no-backbone-dropout keeps them in eval mode while training, as FIRe's AlexNet (models/backbone/alexnet.py)", bool),
    "hash_dropout": Flag(0.0, "feature dropout before the head, in training (EfficientNet's ImageNet classifier: 0.2); 0 = none", float),
    "drop_path": Flag(0.0, "stochastic depth of the backbone's residual blocks (EfficientNet-Lite: block i of 16 drops its residual branch with probability RATE × i/16 in training; EfficientNet's ImageNet training used 0.2); 0 = none", float),
    "mixup": Flag(0.0, "mixup (Zhang et al. 2018) of training inputs — the images, or under --train-from the cached activations (manifold mixup at that stage) — and of their labels: each batch is mixed with a shuffled copy of itself by one λ ~ Beta(α, α); α here, 0 = off. Only for methods whose loss reads labels as class distributions (a cross-entropy on the codes; any other method refuses it in one line that names those that take it)", float),
    "ema": Flag(0.0, "keep a moving average of the weights (decay a step, e.g. 0.998; 0 off); the evaluation, the checkpoint and the codes use it, the training the raw weights", float),
    "cached_views": Flag(0, "cache N cropped+flipped views per training image (--train-from); train on a random one of the N+1 (image-level augmentation)", int),
    "encode_flip": Flag(None, "encode each image as the mean of the network's outputs on its input and on the horizontal mirror of that input (the image; under --train-from the cached activations), then take the sign; default off, on under --recipe cpu", bool),
}

# Run-level keys that are not training flags (set by hashkit train's own arguments or by the data flags).
RUN_KEYS: dict[str, Flag] = {
    "method": Flag(None, "the hashing method", kind="protocol"),
    "dataset": Flag("cifar10", "the dataset", kind="protocol"),
    "code_length": Flag(32, "bits per code", int, kind="protocol"),
    "seed": Flag(0, "seed of the split, the initialisation and the batch order", int, kind="protocol"),
    "num_query": Flag(None, "number of queries", int, kind="protocol"),
    "num_train": Flag(None, "number of training images", int, kind="protocol"),
    "num_database": Flag(None, "database subsample size", int, kind="protocol"),
    "root": Flag(None, "where the dataset lives", kind="runtime"),
    "download": Flag(None, "fetch the dataset if missing", bool, kind="runtime"),
    "cache_dir": Flag(None, "cache folder", kind="runtime"),
    "out": Flag(None, "run folder", kind="runtime"),
    "overwrite": Flag(None, "replace a run already in --out", bool, kind="runtime"),
    "resume": Flag(None, "continue the run in --out", bool, kind="runtime"),
    "gpu": Flag(None, "train on cuda:N", int, kind="runtime"),
    "init_from": Flag(None, "start from this checkpoint's network (--from)", kind="training"),
    "dry_run": Flag(None, "print the resolved configuration and exit", bool, kind="runtime"),
    "json": Flag(None, "print JSON", bool, kind="runtime"),
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
    "lr_interval": "epoch",
    "lr_eta_min": 0.0,
    "lr_gamma": 0.1,
    "lr_step_size": 30,
    "nesterov": False,
    "train_transform": "resize_flip",
    "test_transform": "resize",
    "hash_activation": "none",
    "evaluate_interval": 10,
    "encode_flip": False,
}
DEFAULT_MOMENTUM = {"sgd": 0.9, "rmsprop": 0.0, "adam": None}
# Recipe keys that belong to the recipe's optimiser: left out when --optimizer names another one.
OPTIMIZER_SPECIFIC = ("momentum", "nesterov")
# Recipe keys that act on the recipe's backbone's own modules (EfficientNet-Lite's depthwise convolutions and
# residual blocks): left out when --arch names another backbone, where they would have nothing to act on.
ARCH_SPECIFIC = ("freeze_depthwise", "drop_path")


class RunConfig(TypedDict, total=False):
    """The resolved configuration of a run (keys and types; meanings in COMMON_FLAGS / RUN_KEYS).

    Method hyper-parameters (``eta``, ``lamda``, …) and dataset flags (``num_seen``, ``train_list``, …)
    are further keys of the same mapping."""

    method: str
    recipe: str
    cpu_recipe: bool
    dataset: str
    code_length: int
    seed: int
    num_query: int | None
    num_train: int | None
    num_database: int | None
    root: str | None
    download: bool | None
    cache_dir: str | None
    out: str
    overwrite: bool | None
    resume: bool | None
    gpu: int | None
    init_from: str | None
    arch: str
    pretrained: bool
    weights: str | None
    image_size: int
    batch_size: int
    optimizer: str
    lr: float
    hash_lr_mult: float
    weight_decay: float
    momentum: float | None
    nesterov: bool
    lr_schedule: str
    lr_interval: str
    lr_eta_min: float
    lr_gamma: float
    lr_step_size: int
    lr_step_fraction: float | None
    backbone_dropout: bool
    max_iter: int
    train_transform: str
    test_transform: str
    hash_activation: str
    hash_init_std: float | None
    hash_head: str
    evaluate_interval: int
    topk: int | None
    metrics: str
    num_workers: int
    train_from: str | None
    freeze_backbone: bool
    cached_flip: bool
    cached_views: int
    encode_flip: bool


def all_flags() -> dict[str, Flag]:
    """Every config key's Flag: common, run-level and every dataset's own flags."""
    flags = {**RUN_KEYS, **COMMON_FLAGS}
    for name in DATASETS.names():
        for key, flag in getattr(DATASETS.get(name), "cli_flags", {}).items():
            flags.setdefault(key, Flag(flag.default, flag.help, flag.type, flag.choices, "protocol"))
    return flags


def keys_of_kind(kind: str) -> frozenset[str]:
    """Config keys of one kind ("training", "protocol", "runtime")."""
    return frozenset(key for key, flag in all_flags().items() if flag.kind == kind)


def recipe_name(given: Mapping[str, Any]) -> str:
    """The recipe a run asks for: --recipe, or 'cpu' for --cpu-recipe, else 'seed'."""
    recipe = given.get("recipe")
    if given.get("cpu_recipe"):
        if recipe not in (None, "cpu"):
            raise HashkitError(f"--cpu-recipe is an alias of --recipe cpu but --recipe {recipe} was given; pass one of them")
        recipe = "cpu"
    recipe = recipe or "seed"
    if recipe not in RECIPE_NAMES:
        raise HashkitError(f"--recipe {recipe!r} is unknown; valid recipes: {', '.join(RECIPE_NAMES)}")
    return recipe


def recipe_layers(method: str, recipe: str, dataset: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The recipe tables a run of ``method`` on ``dataset`` starts from, lowest priority first, each named
    (``shared:cpu``, ``method:seed``, ``method:seed@cifar10``); absent and empty tables are left out."""
    method_cls = METHODS.get(method)
    data = None
    if dataset is not None:
        try:
            data = DATASETS.canonical(str(dataset))
        except HashkitError:
            data = str(dataset)
    names = [recipe] + ([f"{recipe}{DATASET_SEPARATOR}{data}"] if data else [])
    layers = []
    for owner, tables in (("shared", SHARED_RECIPES), ("method", method_cls.recipes)):
        for name in names:
            if tables.get(name):
                layers.append((f"{owner}:{name}", dict(tables[name])))
    return layers


def recipe_values(method: str, recipe: str, freeze_backbone: bool | None = None, dataset: str | None = None) -> dict[str, Any]:
    """What recipe ``recipe`` sets for ``method`` on ``dataset``: the shared recipe, then the method's own
    values, each with its per-data-set table on top. ``freeze_backbone``: the flag as given (None = not
    given: then the recipe's own value, e.g. the shallow methods' CPU recipe on the pooled features)."""
    values: dict[str, Any] = {}
    for _, table in recipe_layers(method, recipe, dataset):
        values.update(table)
    if freeze_backbone is None:
        freeze_backbone = bool(values.get("freeze_backbone"))
    if freeze_backbone and recipe == "cpu":
        for key in FREEZE_BACKBONE_DROPS:
            values.pop(key, None)
    return values


def default_values(method: str) -> dict[str, Any]:
    """Layer 1 of the resolution: global defaults, flag defaults and the method's hyper-parameter defaults."""
    method_cls = METHODS.get(method)
    values: dict[str, Any] = {k: f.default for k, f in all_flags().items() if f.default is not None}
    values.update(GLOBAL_DEFAULTS)
    values.update({name: spec.default for name, spec in method_cls.hyperparameters.items()})
    values["hash_head"] = method_cls.head
    return values


def init_fixed_keys(method: str) -> tuple[str, ...]:
    """Keys a ``--from`` checkpoint fixes for ``method``: the network's shape plus the method's own."""
    return ("arch", "code_length", *METHODS.get(method).init_fixed_keys)


def resolve_config(given: Mapping[str, Any], init_config: Mapping[str, Any] | None = None) -> RunConfig:
    """The full configuration of a run from the flags ``given`` (None = not given) and, with ``--from``,
    the configuration of that checkpoint (``init_config``). See the module docstring for the order."""
    skip = ("recipe", "cpu_recipe", "dry_run", "json")  # not part of a run's configuration
    given = {k: v for k, v in given.items() if v is not None and k not in skip} | {
        "recipe": recipe_name(given)
    }
    if "method" not in given:
        raise HashkitError("--method is required; valid methods: " + ", ".join(METHODS.names()))
    method = METHODS.canonical(str(given["method"]))
    recipe = given["recipe"]
    config: dict[str, Any] = default_values(method)
    dataset = given.get("dataset", all_flags()["dataset"].default)
    recipe_set = recipe_values(method, recipe, given.get("freeze_backbone"), dataset)
    if "optimizer" in given and given["optimizer"] != recipe_set.get("optimizer", config["optimizer"]):
        # Another optimiser than the recipe's: its momentum settings belong to the recipe's optimiser.
        recipe_set = {k: v for k, v in recipe_set.items() if k not in OPTIMIZER_SPECIFIC}
        config.pop("nesterov", None)
        config["nesterov"] = GLOBAL_DEFAULTS["nesterov"]
    if "arch" in given and "arch" in recipe_set and not same_setting("arch", recipe_set["arch"], given["arch"]):
        recipe_set = {k: v for k, v in recipe_set.items() if k not in ARCH_SPECIFIC}
    config.update(recipe_set)
    if init_config is not None:
        source = given.get("init_from", "the --from checkpoint")
        for key in init_fixed_keys(method):
            if init_config.get(key) is None:
                continue
            if key in given and not same_setting(key, given[key], init_config[key]):
                raise HashkitError(
                    f"--from {source} was trained with {flag_name(key)} {init_config[key]} but this command passes "
                    f"{flag_name(key)} {given[key]}; drop {flag_name(key)} (it is taken from the checkpoint) or pass "
                    f"{init_config[key]}"
                )
            config[key] = init_config[key]
    config.update(given)
    if "lr_step_size" in given and "lr_step_fraction" not in given:
        config["lr_step_fraction"] = None  # a step size given on the command line wins over the recipe's fraction
    config["method"] = method
    config["cpu_recipe"] = recipe == "cpu"
    if config.get("momentum") is None:
        config["momentum"] = DEFAULT_MOMENTUM.get(str(config["optimizer"]))
    own = set(METHODS.get(method).hyperparameters)
    others = {n for m in METHODS.names() for n in METHODS.get(m).hyperparameters} - own - set(all_flags())
    for name in others & set(config):
        from loguru import logger

        logger.warning(f"{flag_name(name)} is not a hyper-parameter of {method}; it is ignored")
        config.pop(name)
    return config  # type: ignore[return-value]


def method_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The method-specific hyper-parameters of ``config``."""
    method_cls = METHODS.get(config["method"])
    return {name: config.get(name, spec.default) for name, spec in method_cls.hyperparameters.items()}


def parse_metrics(text: str) -> list[str]:
    """``--metrics`` as a list of known metric names (a one-line error for unknown ones)."""
    from hashkit.evaluate import METRIC_NAMES

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise HashkitError(f"--metrics {text!r}: unknown {', '.join(unknown) or 'empty list'}; valid: {', '.join(METRIC_NAMES)}")
    return names


def flag_name(key: str) -> str:
    """Config key → CLI flag (``code_length`` → ``--code-length``)."""
    return "--" + key.replace("_", "-")


def same_setting(key: str, saved: Any, given: Any) -> bool:
    """Whether two values of ``key`` mean the same setting (registry aliases, 1 == 1.0)."""
    if key in ("arch", "dataset", "method") and saved is not None and given is not None:
        from hashkit.registry import BACKBONES

        registry = {"arch": BACKBONES, "dataset": DATASETS, "method": METHODS}[key]
        try:
            return registry.canonical(str(saved)) == registry.canonical(str(given))
        except HashkitError:
            return str(saved) == str(given)
    if isinstance(saved, (int, float)) and isinstance(given, (int, float)) and not isinstance(saved, bool):
        return float(saved) == float(given)
    return saved == given


# --- the dry-run view ------------------------------------------------------------------------------------

def describe_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved configuration as ``hashkit train --dry-run --json`` prints it: every flat key, plus
    ``optimizer`` and ``scheduler`` objects (torch's names and argument names), the transforms as step
    lists and the head activation."""
    from hashkit.method import HashingMethod

    method_cls = METHODS.get(config["method"])
    optimizer = {
        "name": config["optimizer"],
        "lr": float(config["lr"]),
        "hash_lr": float(config["lr"]) * float(config["hash_lr_mult"]),
        "weight_decay": float(config["weight_decay"]),
        "momentum": config.get("momentum"),
        "nesterov": bool(config.get("nesterov")),
    }
    name = config["lr_schedule"]
    interval = config["lr_interval"]
    if interval == "epoch" and method_cls.epoch_is_outer_iteration:
        interval = "outer_iteration"
    scheduler: dict[str, Any] = {"name": name, "interval": interval}
    if name == "cosine":
        scheduler.update(T_max=int(config["max_iter"]), eta_min=float(config["lr_eta_min"]))
    elif name == "exponential":
        scheduler.update(gamma=float(config["lr_gamma"]))
    elif name == "step":
        scheduler.update(step_size=step_size(config), gamma=float(config["lr_gamma"]))
    from hashkit.transforms import step_names

    size = int(config["image_size"])
    activation = config.get("hash_activation")
    cached = config.get("train_from") not in (None, "", 0, "0") or bool(config.get("freeze_backbone"))
    return {
        **{k: config[k] for k in sorted(config) if k not in ("optimizer",)},
        "recipe_layers": [name for name, _ in recipe_layers(config["method"], config["recipe"], config.get("dataset"))],
        "method_contract": {
            "head": config.get("hash_head") or method_cls.head,
            "relaxation": method_cls.relaxation,
            "needs_features": method_cls.needs_features,
            "views": method_cls.views,
            "closed_form": method_cls.closed_form,
            "own_optimisation": method_cls.own_optimizers is not HashingMethod.own_optimizers,
        },
        "optimizer": optimizer,
        "scheduler": scheduler,
        "train_transform": step_names(str(config["train_transform"]), size, train=True),
        "test_transform": step_names(str(config["test_transform"]), size, train=False),
        "train_transform_name": config["train_transform"],
        "test_transform_name": config["test_transform"],
        "cached_activations": cached,
        "hash_activation": None if activation in (None, "none") else activation,
    }


def scheduler_steps(config: dict[str, Any], steps_per_epoch: int | None = None) -> int:
    """How many times the scheduler steps over the run: epochs (outer iterations), or every optimiser
    step with ``lr_interval`` "step" (``steps_per_epoch`` × epochs)."""
    epochs = max(1, int(config["max_iter"]))
    if (config.get("lr_interval") or "epoch") == "step":
        return epochs * max(1, int(steps_per_epoch or 1))
    return epochs


def step_size(config: dict[str, Any], steps_per_epoch: int | None = None) -> int:
    """StepLR's step_size in scheduler intervals: ``max(1, int(lr_step_fraction × the run's intervals))`` when
    the fraction is set (FIRe's train.py: ``max(1, int(epochs × step_size))``, step_size 0.8), else
    ``lr_step_size``."""
    fraction = config.get("lr_step_fraction")
    if fraction is not None:
        if not 0 < float(fraction) <= 1:
            raise HashkitError(f"--lr-step-fraction must be in (0, 1] (FIRe: 0.8), got {fraction}")
        return max(1, int(scheduler_steps(config, steps_per_epoch) * float(fraction)))
    size = config.get("lr_step_size")
    if size is None or int(size) < 1:
        interval = config.get("lr_interval") or "epoch"
        raise HashkitError(f"--lr-schedule step needs --lr-step-size N ≥ 1 ({interval}s), got {size}")
    return int(size)

"""Build a run from its config (data, model, method, pipeline) and the train / evaluate commands."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from hashkit import distributed
from hashkit.atomic import json_safe
from hashkit.backbones import resolve_weights
from hashkit.checkpoint import load_checkpoint
from hashkit.config import (
    RunConfig,
    describe_config,
    flag_name,
    keys_of_kind,
    method_hparams,
    parse_metrics,
    resolve_config,
    same_setting,
)
from hashkit.data.base import DataConfig, DatasetSplits
from hashkit.device import resolve_device, seed_everything
from hashkit.distributed import DistContext
from hashkit.errors import HashkitError
from hashkit.method import HashingMethod, TrainingData
from hashkit.model import HashModel, apply_backbone_training_options, build_model, check_code_length, model_options
from hashkit.pipeline import ImagePipeline, InputPipeline
from hashkit.registry import BACKBONES, DATASETS, METHODS
from hashkit.trainer import Trainer, evaluate_run, unwrap_worker_error

DATA_KEYS = ("root", "seed", "num_query", "num_train", "num_database", "download", "cache_dir")


def build_splits(config: dict[str, Any]) -> DatasetSplits:
    """The dataset named in ``config`` under its protocol (every draw from ``config['seed']``)."""
    factory = DATASETS.get(config["dataset"])
    data_config = DataConfig(**{k: config.get(k) for k in DATA_KEYS if config.get(k) is not None}, options=config)
    splits = factory(data_config)
    for part in ("train", "query", "database"):
        if len(getattr(splits, part)) == 0:
            raise HashkitError(f"the {part} split of {config['dataset']} is empty; check --root and the split sizes")
    return splits


def check_labels(config: dict[str, Any], splits: DatasetSplits) -> None:
    """Unlabelled data (no label columns): refuse a supervised method; say that the run will have no mAP."""
    if splits.num_classes:
        return
    method = config["method"]
    if METHODS.get(method).supervised:
        unsupervised = [name for name in METHODS.names() if not METHODS.get(name).supervised]
        raise HashkitError(
            f"--method {method} is supervised but --dataset {config['dataset']} has no labels here (a flat folder or "
            f"--unlabelled); train an unsupervised method ({', '.join(unsupervised)}), or label the images: one "
            "subfolder per class under --root, without --unlabelled"
        )
    logger.warning(
        f"--dataset {config['dataset']} has no labels here, so there is no ground truth and no mAP: the run trains "
        "and saves its checkpoint, result.json records map null; use hashkit encode / search / serve with it"
    )


def build_pipeline(config: dict[str, Any], model: HashModel, device: torch.device) -> InputPipeline:
    """ImagePipeline (full fine-tuning), or the cached pipeline for --train-from / --freeze-backbone."""
    from hashkit.cached_pipeline import build_cached_pipeline

    cached = build_cached_pipeline(config, model, device)
    if cached is not None:
        return cached
    return ImagePipeline(
        model,
        image_size=int(config["image_size"]),
        batch_size=int(config["batch_size"]),
        num_workers=int(config["num_workers"]),
        device=device,
        encode_flip=bool(config.get("encode_flip")),
        train_transform=config.get("train_transform"),
        test_transform=config.get("test_transform"),
    )


def build_method(config: dict[str, Any], device: torch.device) -> HashingMethod:
    method_cls = METHODS.get(config["method"])
    method = method_cls(int(config["code_length"]), method_hparams(config), device)
    method.hash_activation = config.get("hash_activation") or "none"  # where tanh lives (model or loss)
    return method


def training_data(
    method: HashingMethod,
    splits: DatasetSplits,
    pipeline: InputPipeline,
    device: torch.device,
    init_checkpoint: dict[str, Any] | None = None,
    seed: int = 0,
) -> TrainingData:
    """What ``method.setup`` sees: labels only for supervised methods (SSDH never gets them); the training
    images' pretrained features under the test transform, or through a draw of the training transform seeded
    with ``seed``."""
    train_set = getattr(splits, method.training_split)
    labels = torch.from_numpy(train_set.labels).float().to(device) if method.supervised else None
    return TrainingData(
        num_items=len(train_set),
        labels=labels,
        pretrained_features=lambda: pipeline.features(train_set),
        augmented_features=lambda: pipeline.augmented_features(train_set, seed),
        splits=splits,
        init_checkpoint=init_checkpoint,
    )


def default_out_dir(config: dict[str, Any]) -> Path:
    return Path("runs") / f"{config['method']}-{config['dataset']}-{config['code_length']}bits-seed{config['seed']}"


# Config keys a resumed run may change: where results go, what is reported, and resources (the "runtime"
# kind of hashkit.config), and topk (only the evaluation). Every other key changes the training
# trajectory, so --resume refuses a checkpoint whose config differs in it.
RESUME_FREE_KEYS = keys_of_kind("runtime") | {"topk"}


def resolve_run_config(given: dict[str, Any]) -> RunConfig:
    """The run's full configuration from the flags given (None = not given), with ``--from``'s fixed keys."""
    init_config = load_checkpoint(given["init_from"]).get("config") if given.get("init_from") else None
    config = resolve_config(given, init_config)
    resolve_weights(config, given)  # --weights imagenet | none | FILE (its sha256 recorded)
    config["metrics"] = ",".join(parse_metrics(config["metrics"]))
    return config


def dry_run(given: dict[str, Any]) -> dict[str, Any]:
    """``hashkit train --dry-run``: the fully resolved configuration, checked, without data or weights."""
    config = resolve_run_config(given)
    _validate(config, distributed.context_from_environment())
    config["out"] = str(config.get("out") or default_out_dir(config))
    return describe_config(config)


def train(config: dict[str, Any]) -> dict[str, Any]:
    """``hashkit train``: resolve the config, train, evaluate, write checkpoint.pt and result.json.

    Under torchrun every process runs this; see hashkit.distributed for how the work is shared."""
    ctx = distributed.context_from_environment()
    config = resolve_run_config(config)
    _validate(config, ctx)
    out_dir = Path(config.get("out") or default_out_dir(config))
    config["out"] = str(out_dir)
    resume = bool(config.get("resume"))
    if ctx.is_distributed:
        device = distributed.resolve_distributed_device(ctx, config.get("gpu"))
    else:
        device = resolve_device(config.get("gpu"))
    distributed.init_process_group(ctx, device)
    try:
        return _train(config, ctx, device, out_dir, resume)
    except HashkitError as exc:  # e.g. a corrupt image met by a DataLoader worker in method.setup
        clean = unwrap_worker_error(exc)
        if clean is exc:
            raise
        raise clean from None
    finally:
        distributed.shutdown()


def _train(config: dict[str, Any], ctx: DistContext, device: torch.device, out_dir: Path, resume: bool) -> dict[str, Any]:
    overwrite = bool(config.get("overwrite"))
    created = distributed.main_only(ctx, lambda: _check_out_dir(out_dir, overwrite=overwrite, resume=resume))
    try:
        trainer = _build_trainer(config, ctx, device, out_dir, resume, overwrite)
    except BaseException:
        if created:  # a mistake found before training leaves no empty run folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    started = time.perf_counter()
    result = json_safe(trainer.fit())  # no mAP (unlabelled data) is NaN in the metrics: null from here on
    final = "n/a" if result.get("map") is None else f"{result['map']:.4f}"
    logger.info(f"finished in {time.perf_counter() - started:.1f}s: mAP {final} → {out_dir}")
    return result


def _build_trainer(
    config: dict[str, Any], ctx: DistContext, device: torch.device, out_dir: Path, resume: bool, overwrite: bool
) -> Trainer:
    """Data, network, method and pipeline of the run (from OUT/checkpoint.pt's state with --resume)."""
    checkpoint = distributed.everywhere(ctx, lambda: _resume_checkpoint(config, out_dir, ctx)) if resume else None
    seed_everything(int(config["seed"]))
    splits = distributed.local_main_first(ctx, lambda: build_splits(config))
    logger.info(f"{splits.name}: {splits.protocol}")
    check_labels(config, splits)
    init_checkpoint = distributed.everywhere(ctx, lambda: _init_checkpoint(config))
    model = distributed.local_main_first(
        ctx,
        lambda: build_model(
            config["arch"], int(config["code_length"]), bool(config["pretrained"]), config.get("weights"),
            **model_options(config),
        ),
    )
    if init_checkpoint is not None:
        model.load_state_dict(init_checkpoint["model"])
    apply_backbone_training_options(model, config)
    model.to(device)
    pipeline = build_pipeline(config, model, device)
    method = build_method(config, device)
    if ctx.is_distributed:
        # A cache the pipeline fills (cached activations) is filled by each node's first process alone.
        distributed.local_main_first(ctx, lambda: pipeline.prepare(getattr(splits, method.training_split)))
    # setup sees what the original run saw (the --from / pretrained network); a resumed state comes after.
    method.setup(training_data(method, splits, pipeline, device, init_checkpoint, seed=int(config["seed"])))
    trainer = Trainer(config, splits, model, method, pipeline, out_dir, device, dist=ctx)
    if checkpoint is not None:
        trainer.load_training_state(checkpoint)
        logger.info(f"resuming {out_dir} after epoch {trainer.start_epoch} of {config['max_iter']}")
    elif overwrite and ctx.is_main:
        # --overwrite: the old run's checkpoint must not be mistaken for this run's last good epoch.
        (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return trainer


def _validate(config: dict[str, Any], ctx: DistContext) -> None:
    """Refuse impossible settings before any data is read (each error names the flag and the fix)."""
    check_code_length(int(config["code_length"]))
    BACKBONES.canonical(str(config["arch"]))
    DATASETS.canonical(str(config["dataset"]))
    for key in ("batch_size", "max_iter"):
        if int(config[key]) < 1:
            raise HashkitError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    if int(config.get("num_workers") or 0) < 0:
        raise HashkitError(f"--num-workers must be 0 or more, got {config['num_workers']}")
    if config.get("encode_flip") and config.get("freeze_backbone"):
        raise HashkitError(
            "--encode-flip mirrors images or spatial activations but --freeze-backbone caches pooled features; "
            "pass --no-encode-flip, or --train-from STAGE instead of --freeze-backbone"
        )
    if config.get("resume") and config.get("overwrite"):
        raise HashkitError("--resume continues the run in --out and --overwrite replaces it; pass only one of them")
    method_cls = METHODS.get(config["method"])
    activation = config.get("hash_activation") or "none"
    if activation not in method_cls.hash_activations():
        raise HashkitError(
            f"--method {config['method']} relaxes its outputs itself (relaxation: {method_cls.relaxation}), so "
            f"--hash-activation {activation} would apply a second one; pass --hash-activation none"
        )
    from hashkit.heads import head_names

    if (config.get("hash_head") or method_cls.head) not in head_names():
        raise HashkitError(f"--hash-head {config.get('hash_head')!r} is unknown; valid heads: {', '.join(head_names())}")
    if ctx.is_distributed:
        obstacle = method_cls.torchrun_obstacle()
        if obstacle is not None:
            able = [name for name in METHODS.names() if METHODS.get(name).torchrun_obstacle() is None]
            raise HashkitError(
                f"--method {config['method']} cannot train under torchrun ({ctx.world_size} processes): {obstacle}; "
                f"run it as one process (hashkit train …, --gpu N for a GPU)"
                f"{'; methods that can: ' + ', '.join(able) if able else ''}"
            )
        for key, value in method_cls.distributed_flags.items():
            if not same_setting(key, config.get(key), value):
                raise HashkitError(
                    f"--method {config['method']} with {flag_name(key)} {config.get(key)} cannot train under torchrun "
                    f"({ctx.world_size} processes): its loss couples items across the processes' parts of the batch; "
                    f"pass {flag_name(key)} {value}, or run it as one process"
                )
        distributed.check_batch_size(ctx, int(config["batch_size"]))


def _resume_checkpoint(config: dict[str, Any], out_dir: Path, ctx: DistContext) -> dict[str, Any]:
    """OUT/checkpoint.pt, after checking it continues this very run (same method and trajectory keys)."""
    path = out_dir / "checkpoint.pt"
    checkpoint = load_checkpoint(path)
    saved = dict(checkpoint.get("config") or {})
    if METHODS.canonical(str(checkpoint.get("method"))) != config["method"]:
        raise HashkitError(
            f"--resume: {path} is a {checkpoint.get('method')} run but this command trains {config['method']}; "
            f"pass --method {checkpoint.get('method')} to continue it, or a new --out for a {config['method']} run"
        )
    differ = []
    for key in sorted(set(saved) & set(config)):
        if key in RESUME_FREE_KEYS or same_setting(key, saved[key], config[key]):
            continue
        if key == "max_iter" and config.get("lr_schedule", "constant") == "constant":
            continue  # a constant schedule does not depend on the number of epochs: the run may be extended
        differ.append(f"{flag_name(key)} {saved[key]!r} (this command: {config[key]!r})")
    if differ:
        raise HashkitError(
            f"--resume: {path} was trained with {', '.join(differ)}; pass the same flags as the run being "
            "continued, or a new --out to start another run"
        )
    if int(config.get("num_workers") or 0) != int(saved.get("num_workers") or 0):
        logger.warning("--resume with another --num-workers: the image augmentation stream differs, so the "
                       "continuation is not bit-identical to an uninterrupted run")
    if int(checkpoint.get("world_size", 1)) != ctx.world_size:
        logger.warning(f"--resume: {path} was trained by {checkpoint.get('world_size', 1)} process(es), this run uses "
                       f"{ctx.world_size}; the continuation is equivalent but not bit-identical")
    return checkpoint


def _init_checkpoint(config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint named by ``--from``: network weights to start from (of any method with the same
    arch and code length; DIHN also takes the ADSH codes it holds), checked for compatibility."""
    if not config.get("init_from"):
        return None
    checkpoint = load_checkpoint(config["init_from"])
    for key in ("arch", "code_length"):
        if not same_setting(key, checkpoint[key], config[key]):
            raise HashkitError(
                f"--from {config['init_from']} has {key} {checkpoint[key]} but this run uses {config[key]}; "
                f"pass --{key.replace('_', '-')} {checkpoint[key]}"
            )
    if checkpoint.get("method") != config["method"]:
        logger.info(f"--from: starting from the network of a {checkpoint.get('method')} run (its method state is not used"
                    f"{' except the ADSH codes DIHN builds on' if config['method'] == 'dihn' else ''})")
    return checkpoint


def _check_out_dir(out_dir: Path, overwrite: bool, resume: bool = False) -> bool:
    """Refuse to write over another run (unless --overwrite / --resume) or into an unwritable folder;
    True when the folder was created here."""
    result = out_dir / "result.json"
    created = not out_dir.exists()
    if resume:
        if not (out_dir / "checkpoint.pt").is_file():
            raise HashkitError(
                f"--resume: {out_dir} holds no checkpoint.pt (the run stopped before its first epoch finished, or "
                f"--out is wrong); start the run again without --resume{' and with --overwrite' if result.exists() else ''}"
            )
    elif result.exists() and not overwrite:
        try:
            status = json.loads(result.read_text()).get("status")
        except (OSError, ValueError):
            status = "unreadable"
        raise HashkitError(
            f"{out_dir} already holds a run (status {status}); pass --resume to continue it, another --out, or "
            "--overwrite to replace it"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HashkitError(f"results folder {out_dir} is not writable ({exc.strerror}); pass a writable --out") from exc
    return created


def load_run(checkpoint_path: str | Path, overrides: dict[str, Any], device: torch.device):
    """Rebuild (config, splits, model, method, pipeline) from a checkpoint alone (plus overrides)."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = dict(checkpoint["config"])
    config.update({k: v for k, v in overrides.items() if v is not None})
    splits = build_splits(config)
    model = build_model(config["arch"], int(config["code_length"]), pretrained=False, **model_options(config))
    model.load_state_dict(checkpoint["model"])
    model.to(device)
    method = build_method(config, device)
    method.load_state_dict(checkpoint["method_state"])
    pipeline = build_pipeline(config, model, device)
    return config, splits, model, method, pipeline, checkpoint


def evaluate(checkpoint_path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """``hashkit evaluate``: the metrics of a checkpoint on its own protocol (or the overridden one)."""
    device = resolve_device(overrides.pop("gpu", None))
    if overrides.get("metrics"):
        overrides["metrics"] = ",".join(parse_metrics(overrides["metrics"]))
    config, splits, _, method, pipeline, checkpoint = load_run(checkpoint_path, overrides, device)
    if not splits.num_classes:
        raise HashkitError(
            f"hashkit evaluate: --dataset {config['dataset']} has no labels here (a flat folder or --unlabelled), so "
            "there is no ground truth and no mAP; inspect retrievals with hashkit encode + search / serve, or evaluate "
            "on a labelled folder (one subfolder per class): --root DIR --no-unlabelled"
        )
    metrics, timings = evaluate_run(pipeline, method, splits, config, device)
    return {
        **metrics,
        "method": config["method"],
        "dataset": config["dataset"],
        "code_length": int(config["code_length"]),
        "checkpoint": str(checkpoint_path),
        "trained_map": (checkpoint.get("metrics") or {}).get("map"),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }

"""Build a run from its config (data, model, method, pipeline) and the train / evaluate commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from loguru import logger

from hashkit.checkpoint import load_checkpoint
from hashkit.config import method_hparams, parse_metrics, resolve_config
from hashkit.data.base import DataConfig, DatasetSplits
from hashkit.device import resolve_device, seed_everything
from hashkit.errors import HashkitError
from hashkit.method import HashingMethod, TrainingData
from hashkit.model import HashModel, build_model
from hashkit.pipeline import ImagePipeline
from hashkit.registry import DATASETS, METHODS
from hashkit.trainer import Trainer, evaluate_run

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


def build_pipeline(config: dict[str, Any], model: HashModel, device: torch.device) -> ImagePipeline:
    return ImagePipeline(
        model,
        image_size=int(config["image_size"]),
        batch_size=int(config["batch_size"]),
        num_workers=int(config["num_workers"]),
        device=device,
    )


def build_method(config: dict[str, Any], device: torch.device) -> HashingMethod:
    method_cls = METHODS.get(config["method"])
    return method_cls(int(config["code_length"]), method_hparams(config), device)


def training_data(
    method: HashingMethod,
    splits: DatasetSplits,
    pipeline: Any,
    device: torch.device,
    init_checkpoint: dict[str, Any] | None = None,
) -> TrainingData:
    """What ``method.setup`` sees: labels only for supervised methods (SSDH never gets them)."""
    train_set = getattr(splits, method.training_split)
    labels = torch.from_numpy(train_set.labels).float().to(device) if method.supervised else None
    features = getattr(pipeline, "features", None)
    return TrainingData(
        num_items=len(train_set),
        labels=labels,
        pretrained_features=(lambda: features(train_set)) if features else None,
        splits=splits,
        init_checkpoint=init_checkpoint,
    )


def default_out_dir(config: dict[str, Any]) -> Path:
    return Path("runs") / f"{config['method']}-{config['dataset']}-{config['code_length']}bits-seed{config['seed']}"


def train(config: dict[str, Any]) -> dict[str, Any]:
    """``hashkit train``: resolve the config, train, evaluate, write checkpoint.pt and result.json."""
    config = resolve_config(config)
    config["metrics"] = ",".join(parse_metrics(config["metrics"]))
    out_dir = Path(config.get("out") or default_out_dir(config))
    config["out"] = str(out_dir)
    _check_out_dir(out_dir, overwrite=bool(config.get("overwrite")))
    device = resolve_device(config.get("gpu"))
    seed_everything(int(config["seed"]))
    splits = build_splits(config)
    logger.info(f"{splits.name}: {splits.protocol}")
    init_checkpoint = _init_checkpoint(config)
    model = build_model(config["arch"], int(config["code_length"]), bool(config["pretrained"]), config.get("weights"))
    if init_checkpoint is not None:
        model.load_state_dict(init_checkpoint["model"])
    model.to(device)
    pipeline = build_pipeline(config, model, device)
    method = build_method(config, device)
    method.setup(training_data(method, splits, pipeline, device, init_checkpoint))
    trainer = Trainer(config, splits, model, method, pipeline, out_dir, device)
    started = time.perf_counter()
    result = trainer.fit()
    logger.info(f"finished in {time.perf_counter() - started:.1f}s: mAP {result['map']:.4f} → {out_dir}")
    return result


def _init_checkpoint(config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint named by ``--from`` (network weights to start from), checked for compatibility."""
    if not config.get("init_from"):
        return None
    checkpoint = load_checkpoint(config["init_from"])
    for key in ("arch", "code_length"):
        if str(checkpoint[key]) != str(config[key]):
            raise HashkitError(
                f"--from {config['init_from']} has {key} {checkpoint[key]} but this run uses {config[key]}; "
                f"pass --{key.replace('_', '-')} {checkpoint[key]}"
            )
    return checkpoint


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    result = out_dir / "result.json"
    if result.exists() and not overwrite:
        try:
            status = json.loads(result.read_text()).get("status")
        except (OSError, ValueError):
            status = "unreadable"
        raise HashkitError(
            f"{out_dir} already holds a run (status {status}); pass another --out, or --overwrite to replace it"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HashkitError(f"results folder {out_dir} is not writable ({exc.strerror}); pass a writable --out") from exc


def load_run(checkpoint_path: str | Path, overrides: dict[str, Any], device: torch.device):
    """Rebuild (config, splits, model, method, pipeline) from a checkpoint alone (plus overrides)."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = dict(checkpoint["config"])
    config.update({k: v for k, v in overrides.items() if v is not None})
    splits = build_splits(config)
    model = build_model(config["arch"], int(config["code_length"]), pretrained=False)
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

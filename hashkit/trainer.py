"""The one training loop every method shares (read it top to bottom).

The Trainer owns optimisation, evaluation, checkpoints and result.json; a method only turns network
outputs into named loss terms (see hashkit.method). Per epoch the global torch RNG is reseeded from
(seed, epoch), so a CPU run is bit-identical for a seed and resuming at an epoch boundary replays
exactly what an uninterrupted run does.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from tqdm import tqdm

from hashkit.atomic import atomic_write_json
from hashkit.checkpoint import save_checkpoint
from hashkit.data.base import DatasetSplits
from hashkit.errors import HashkitError
from hashkit.evaluate import evaluate_codes
from hashkit.method import HashingMethod
from hashkit.model import HashModel, binarize
from hashkit.runinfo import provenance


class Trainer:
    """Runs ``config['max_iter']`` epochs of ``method`` on ``model`` and writes checkpoint + results."""

    def __init__(
        self,
        config: dict[str, Any],
        splits: DatasetSplits,
        model: HashModel,
        method: HashingMethod,
        pipeline: Any,
        out_dir: Path,
        device: torch.device,
    ) -> None:
        self.config = config
        self.splits = splits
        self.model = model
        self.method = method
        self.pipeline = pipeline
        self.out_dir = Path(out_dir)
        self.device = device
        self.train_set = getattr(splits, method.training_split)
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.timings = {"train_s": 0.0, "encode_s": 0.0, "eval_s": 0.0}
        self.metrics: dict[str, Any] = {}

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def result_path(self) -> Path:
        return self.out_dir / "result.json"

    def fit(self) -> dict[str, Any]:
        """Train, evaluating every ``evaluate_interval`` epochs and after the last; return the result."""
        config = self.config
        max_iter = int(config["max_iter"])
        interval = max(1, int(config["evaluate_interval"]))
        self._write_result("running")
        try:
            for epoch in range(self.start_epoch, max_iter):
                record = {"epoch": epoch + 1, "losses": self._train_epoch(epoch)}
                if (epoch + 1) % interval == 0 or epoch + 1 == max_iter:
                    self.metrics = self.evaluate()
                    record["metrics"] = self.metrics
                    logger.info(f"epoch {epoch + 1}/{max_iter}: mAP {self.metrics['map']:.4f}")
                self.history.append(record)
                self._save(epoch + 1)
                self._write_result("running")
        except BaseException as exc:
            self._write_result("failed", error=str(exc) or type(exc).__name__)
            raise
        return self._write_result("finished")

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        seed = int(self.config["seed"])
        torch.manual_seed(seed * 100_003 + epoch)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        self.model.train()
        self.method.on_epoch_start(epoch)
        order = self.method.epoch_indices(epoch, generator)
        if order is None:
            order = torch.randperm(len(self.train_set), generator=generator)
        sums: dict[str, float] = defaultdict(float)
        steps = 0
        started = time.perf_counter()
        bar = tqdm(
            self.pipeline.train_batches(self.train_set, order, generator),
            total=math.ceil(len(order) / self.pipeline.batch_size),
            desc=f"epoch {epoch + 1}/{self.config['max_iter']}",
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            losses = self.method.training_step(self.pipeline.forward(batch.inputs), batch)
            total = sum(losses.values())
            if not torch.isfinite(total):
                raise HashkitError(
                    f"the loss became {total.item()} in epoch {epoch + 1} (terms: "
                    f"{ {k: float(v) for k, v in losses.items()} }); the learning rate {self.config['lr']} is likely "
                    f"too high: lower --lr; the last good checkpoint {self.checkpoint_path} is kept"
                )
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            for name, value in losses.items():
                sums[name] += float(value.detach())
            sums["total"] += float(total.detach())
            steps += 1
            bar.set_postfix(loss=f"{sums['total'] / steps:.4f}")
        bar.close()
        self.scheduler.step()
        self.method.on_epoch_end(epoch)
        self.timings["train_s"] += time.perf_counter() - started
        means = {name: value / max(steps, 1) for name, value in sums.items()}
        logger.info(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
        return means

    def evaluate(self) -> dict[str, Any]:
        """Encode query (and database unless the method learned its codes) and compute the metrics."""
        metrics, timings = evaluate_run(self.pipeline, self.method, self.splits, self.config, self.device)
        self.timings["encode_s"] += timings["encode_s"]
        self.timings["eval_s"] += timings["eval_s"]
        return metrics

    def _save(self, epochs_done: int) -> None:
        save_checkpoint(
            self.checkpoint_path,
            {
                **provenance(),
                "method": self.config["method"],
                "arch": self.config["arch"],
                "code_length": int(self.config["code_length"]),
                "config": self.config,
                "model": self.model.state_dict(),
                "method_state": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": epochs_done,
                "history": self.history,
                "metrics": self.metrics,
                "timings": dict(self.timings),
            },
        )

    def load_training_state(self, checkpoint: dict[str, Any]) -> None:
        """Continue from ``checkpoint`` (model, method, optimizer, scheduler, epoch, history)."""
        self.model.load_state_dict(checkpoint["model"])
        self.method.load_state_dict(checkpoint["method_state"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.start_epoch = int(checkpoint["epoch"])
        self.history = list(checkpoint["history"])
        self.metrics = dict(checkpoint["metrics"])
        self.timings.update(checkpoint.get("timings", {}))

    def _write_result(self, status: str, error: str | None = None) -> dict[str, Any]:
        maps = [r["metrics"]["map"] for r in self.history if "metrics" in r]
        result = {
            "status": status,
            **provenance(),
            "config": self.config,
            "dataset": self.splits.summary(),
            "metrics": self.metrics,
            "map": self.metrics.get("map"),
            "best_map": max(maps) if maps else None,
            "epochs_done": len(self.history) and self.history[-1]["epoch"],
            "history": self.history,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "checkpoint": str(self.checkpoint_path),
        }
        if error:
            result["error"] = error
        atomic_write_json(self.result_path, result)
        return result


def evaluate_run(
    pipeline: Any, method: HashingMethod, splits: DatasetSplits, config: dict[str, Any], device: torch.device
) -> tuple[dict[str, Any], dict[str, float]]:
    """Metrics of the model behind ``pipeline`` on ``splits`` — shared by training and ``hashkit evaluate``."""
    from hashkit.config import parse_metrics

    started = time.perf_counter()
    def encode(images: Any, desc: str = "encode database") -> torch.Tensor:
        return binarize(pipeline.encode(images, desc=desc))

    query_codes = encode(splits.query, desc="encode query")
    database_codes = method.database_codes(splits, encode)
    if database_codes is None:
        database_codes = encode(splits.database)
    encoded = time.perf_counter()
    topk = config.get("topk") or splits.default_topk
    metrics = evaluate_codes(
        query_codes,
        database_codes,
        splits.query.labels,
        splits.database.labels,
        metrics=parse_metrics(config.get("metrics") or "map"),
        topk=topk,
        device=device,
    )
    # Protocols may name groups of queries (e.g. incremental: seen vs new classes) to report separately.
    for group, mask in splits.extra.get("query_groups", {}).items():
        mask = torch.as_tensor(mask, dtype=torch.bool)
        metrics.setdefault("map_by_group", {})[group] = evaluate_codes(
            query_codes[mask], database_codes, splits.query.labels[mask.numpy()], splits.database.labels,
            metrics=["map"], topk=topk, device=device,
        )["map"]
    metrics.update({"topk": topk, "num_query": len(splits.query), "num_database": len(database_codes)})
    return metrics, {"encode_s": encoded - started, "eval_s": time.perf_counter() - encoded}


def build_optimizer(model: HashModel, config: dict[str, Any]) -> torch.optim.Optimizer:
    """Backbone parameters at ``lr``, the hash layer at ``lr × hash_lr_mult``; frozen ones skipped."""
    lr = float(config["lr"])
    head = {id(p) for p in model.head_parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = [{"params": [p for p in model.head_parameters() if p.requires_grad], "lr": lr * float(config["hash_lr_mult"])}]
    if body:
        groups.insert(0, {"params": body, "lr": lr})
    weight_decay = float(config["weight_decay"])
    name = config["optimizer"]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, weight_decay=weight_decay)
    raise HashkitError(f"--optimizer {name!r} is unknown; valid: adam, sgd, rmsprop")


def build_scheduler(optimizer: torch.optim.Optimizer, config: dict[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant, or cosine decay to 0 over ``max_iter`` epochs."""
    if config.get("lr_schedule", "constant") == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(config["max_iter"])))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

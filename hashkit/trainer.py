"""The one training loop every method shares (read it top to bottom).

The Trainer owns optimisation, evaluation, checkpoints and result.json; a method only turns network
outputs into named loss terms (see hashkit.method).

Determinism and resume: every epoch is a pure function of (state after the previous epoch, seed,
epoch). At its start the epoch order comes from a fresh generator seeded from (seed, epoch), and every
other source of randomness is reseeded from (seed, epoch, rank): torch's global RNG (CPU and CUDA:
dropout, image flips with ``--num-workers 0``), Python's ``random`` and NumPy's global RNG, and the
generator the DataLoader derives its workers' seeds from. The checkpoint written after every epoch holds
all other state (network, optimizer, scheduler, the method's memories, history, the --ema average), so ``--resume`` from
epoch k replays epochs k+1… exactly: a CPU run is bit-identical to an uninterrupted one. No RNG state
needs saving. (CUDA kernels may be non-deterministic, so GPU resumes match only approximately.)

Under torchrun (hashkit.distributed) rank r trains on its part of every global batch through
DistributedDataParallel (the pipeline's ``for_training`` view runs the DDP wrapper with the per-rank
batch size); only rank 0 evaluates and writes checkpoint.pt and result.json.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from loguru import logger
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hashkit import distributed
from hashkit.atomic import atomic_write_json
from hashkit.checkpoint import save_checkpoint
from hashkit.config import parse_metrics, scheduler_steps, step_size
from hashkit.data.base import DatasetSplits
from hashkit.distributed import SINGLE, DistContext
from hashkit.errors import HashkitError
from hashkit.evaluate import evaluate_codes
from hashkit.method import Batch, HashingMethod
from hashkit.model import HashModel, binarize
from hashkit.pipeline import InputPipeline
from hashkit.progress import progress
from hashkit.runinfo import provenance


RANK_SEED_STRIDE = 1_000_003  # rank r's augmentation / dropout streams: epoch seed + r × stride


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s order (the same on every rank)."""
    return seed * 100_003 + epoch


class Trainer:
    """Runs ``config['max_iter']`` epochs of ``method`` on ``model`` and writes checkpoint + results."""

    def __init__(
        self,
        config: dict[str, Any],
        splits: DatasetSplits,
        model: HashModel,
        method: HashingMethod,
        pipeline: InputPipeline,
        out_dir: Path,
        device: torch.device,
        dist: DistContext = SINGLE,
    ) -> None:
        self.config = config
        self.splits = splits
        self.model = model
        self.method = method
        self.pipeline = pipeline
        self.out_dir = Path(out_dir)
        self.device = device
        self.dist = dist
        self.global_batch = int(pipeline.batch_size)  # --batch-size: the global batch under torchrun too
        self.train_set = getattr(splits, method.training_split)
        method.bind_model(model)
        self.mixup_alpha = mixup_alpha(config, method)
        self.ema = build_ema(model, config, method)  # None unless --ema
        self.step_scheduler = schedule_steps_per_batch(config)  # else once per epoch
        # A closed-form method is fitted without optimiser or schedule (hashkit.method).
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.own_optimizers: dict[str, torch.optim.Optimizer] = {}
        if not method.closed_form:
            self.optimizer = build_optimizer(model, config)
            self._add_method_module(config)  # before the scheduler: it records every group's lr
            self.scheduler = build_scheduler(self.optimizer, config, self._steps_per_epoch())
            self.own_optimizers = self._own_optimizers()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.timings = {"train_s": 0.0, "encode_s": 0.0, "eval_s": 0.0}
        self.metrics: dict[str, Any] = {}
        self.epochs_saved = 0  # the epoch checkpoint.pt holds (the last good one)
        self._training_view: InputPipeline | None = None  # the pipeline driving the DDP wrapper (torchrun)
        self._epoch_running = 0
        self._dropped_warned = False

    def _steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch: the method's epoch size (ADSH/DIHN: samples × passes) over the batch."""
        items = self.method.epoch_size(len(self.train_set))
        return max(1, math.ceil(items / max(1, self.global_batch)))
    def _add_method_module(self, config: dict[str, Any]) -> None:
        """The method's own trainable module (hashkit.method): on the device, trained at the hash layer's
        learning rate in the same optimizer; refused under torchrun (DDP would not all-reduce it)."""
        module = self.method.module
        if module is None:
            return
        module.to(self.device)
        params = [p for p in module.parameters() if p.requires_grad]
        if params and self.dist.is_distributed:
            raise HashkitError(
                f"--method {config['method']} trains parameters of its own, which torchrun does not synchronise; "
                "run it as one process (hashkit train …, --gpu N for a GPU)"
            )
        if params:
            self.optimizer.add_param_group({"params": params, "lr": float(config["lr"]) * float(config["hash_lr_mult"])})

    def _own_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The method's own modules on the device and the optimisers it builds over them (hashkit.method)."""
        if self.method.own_modules is not None:
            self.method.own_modules.to(self.device)
        return dict(self.method.own_optimizers())

    def _modules_train(self) -> None:
        """Training mode for the network and every module of the method's."""
        self.model.train()
        for module in (self.method.module, self.method.own_modules):
            if module is not None:
                module.train()

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def result_path(self) -> Path:
        return self.out_dir / "result.json"

    def fit(self) -> dict[str, Any]:
        """Train, evaluating every ``evaluate_interval`` epochs and after the last; return the result.

        A crash, Ctrl-C or SIGTERM marks result.json ``failed`` (saying how to continue) and keeps the
        checkpoint of the last finished epoch; ``hashkit train … --resume`` continues from it."""
        config = self.config
        max_iter = int(config["max_iter"])
        interval = int(config["evaluate_interval"]) or max_iter  # 0: only after the last epoch
        main = self.dist.is_main
        if main:
            self._write_result("running")
        if self.method.closed_form:
            max_iter = 1  # one fit
        if self.start_epoch >= max_iter:
            logger.info(f"{self.checkpoint_path} already holds all {max_iter} epochs; nothing left to train")
        try:
            with _sigterm_raises():
                for epoch in range(self.start_epoch, max_iter):
                    self._epoch_running = epoch + 1
                    saved_metrics = self.metrics
                    losses = self._fit_closed_form() if self.method.closed_form else self._train_epoch(epoch)
                    record = {"epoch": epoch + 1, "losses": losses}
                    if (epoch + 1) % interval == 0 or epoch + 1 == max_iter:
                        if main:  # evaluated once, by rank 0; the other ranks wait
                            self.metrics = self.evaluate()
                            record["metrics"] = self.metrics
                            logger.info(f"epoch {epoch + 1}/{max_iter}: mAP {format_map(self.metrics.get('map'))}")
                        distributed.barrier(self.dist)
                    self.history.append(record)
                    if main:
                        try:
                            self._save(epoch + 1)
                        except BaseException:  # result.json then describes what checkpoint.pt holds
                            self.history.pop()
                            self.metrics = saved_metrics
                            raise
                        self._write_result("running")
                self._epoch_running = 0
        except BaseException as exc:
            clean = unwrap_worker_error(exc)
            if self.dist.is_distributed and distributed.is_peer_failure(exc):
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
                clean = HashkitError(
                    f"another process of this torchrun job stopped during epoch {self._epoch_running or self.epochs_saved} "
                    f"({first}…); its log names the cause; {self._kept_checkpoint()}: fix the cause and "
                    f"{self._how_to_continue()}"
                )
            if main:
                self._record_failure(clean)
            if clean is not exc:
                raise clean from None
            raise
        result = self._write_result("finished") if main else None
        return distributed.broadcast_from_main(self.dist, result)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        seed = epoch_seed(int(self.config["seed"]), epoch)
        rank_seed = seed + RANK_SEED_STRIDE * self.dist.rank
        torch.manual_seed(rank_seed)  # CPU and every CUDA device
        random.seed(rank_seed)
        np.random.seed(rank_seed % 2**32)
        generator = torch.Generator().manual_seed(seed)
        self._modules_train()
        self.method.on_epoch_start(epoch)
        order = self.method.epoch_indices(epoch, generator)
        if order is None:
            order = torch.randperm(len(self.train_set), generator=generator)
        order = torch.as_tensor(order, dtype=torch.long)
        local_order, plan = self._shard(order, epoch)
        # Rank 0 hands the pipeline the order's generator itself (a single process does the same).
        loader_generator = generator if self.dist.is_main else torch.Generator().manual_seed(rank_seed)
        sums: dict[str, float] = defaultdict(float)
        steps = 0
        started = time.perf_counter()
        pipeline = self._training_pipeline()
        desc = f"epoch {epoch + 1}/{self.config['max_iter']}"
        # A bar on a terminal (rank 0); in a log file only the epoch line below, with its img/s.
        with progress(len(local_order), desc, enabled=self.dist.is_main, summary="never") as bar:
            views = self.method.views
            for batch in pipeline.train_batches(self.train_set, local_order, loader_generator, views=views):
                if steps >= len(plan):
                    raise RuntimeError(f"{type(self.pipeline).__name__}.train_batches yielded more batches than planned")
                chunk, sizes = plan[steps]
                if self.mixup_alpha:
                    mix_batch(batch, self.mixup_alpha)
                if self.method.needs_features:
                    outputs, batch.features = pipeline.forward(batch.inputs, with_features=True, views=views)
                else:
                    outputs = pipeline.forward(batch.inputs, views=views)
                self._observe(outputs, batch, chunk, sizes)
                losses = self.method.training_step(outputs, batch)
                total = sum(losses.values())
                values = self._global_values(losses, total, sizes)
                if not math.isfinite(values["total"]):
                    raise HashkitError(
                        f"the loss became {values['total']} in epoch {epoch + 1} (terms: "
                        f"{ {k: v for k, v in values.items() if k != 'total'} }); the learning rate {self.config['lr']} "
                        f"is likely too high: lower --lr and rerun with --overwrite; {self._kept_checkpoint()}"
                    )
                weight = distributed.part_weight(sizes, self.dist.rank) if self.dist.is_distributed else 1.0
                self.optimizer.zero_grad(set_to_none=True)
                (total if weight == 1.0 else total * weight).backward()
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                if self.step_scheduler:
                    self.scheduler.step()
                if self.own_optimizers:
                    own = self.method.own_step(outputs.detach(), batch)
                    values.update({name: float(value.detach()) for name, value in own.items()})
                for name, value in values.items():
                    sums[name] += value
                steps += 1
                bar.update(len(batch.index))
                bar.set_postfix(loss=f"{sums['total'] / steps:.4f}")
        images_per_s = bar.rate
        if steps != len(plan):
            raise RuntimeError(f"{type(self.pipeline).__name__}.train_batches yielded {steps} batches, {len(plan)} planned")
        if not self.step_scheduler:
            self.scheduler.step()
        self.method.on_epoch_end(epoch)
        self.timings["train_s"] += time.perf_counter() - started
        means = {name: value / max(steps, 1) for name, value in sums.items()}
        logger.info(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
                    + f" ({images_per_s:.0f} img/s)")
        return means

    def _fit_closed_form(self) -> dict[str, float]:
        """A closed-form method's one fit: the frozen features of the training split (eval mode, the
        evaluation transform; cached under --freeze-backbone) and, if supervised, its labels."""
        started = time.perf_counter()
        self.model.eval()
        features = self.pipeline.features(self.train_set, desc="features of the training split").to(self.device)
        labels = None
        if self.method.supervised:
            labels = torch.from_numpy(self.train_set.labels).float().to(self.device)
        with torch.no_grad():
            stats = {name: float(value) for name, value in self.method.fit(features, labels).items()}
        self.timings["train_s"] += time.perf_counter() - started
        logger.info(f"fitted {self.config['method']} on {len(features)} items in {time.perf_counter() - started:.1f}s"
                    + "".join(f", {k} {v:.4f}" for k, v in stats.items()))
        return {**stats, "total": stats.get("total", 0.0)}

    def _shard(self, order: torch.Tensor, epoch: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, list[int]]]]:
        """This rank's order and the plan of steps: (global batch positions, every rank's part size)."""
        batch = self.global_batch
        if not self.dist.is_distributed:
            chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
            return order, [(chunk, [len(chunk)]) for chunk in chunks]
        local, sizes, dropped = distributed.shard_order(order, batch, self.dist)
        covered = sum(map(sum, sizes))
        chunks = [order[i : i + batch] for i in range(0, covered, batch)]
        if dropped and not self._dropped_warned:
            self._dropped_warned = True
            logger.info(
                f"epoch {epoch + 1}: the last {dropped} item(s) of the epoch are fewer than the {self.dist.world_size} "
                "processes and are skipped (as in every epoch where this happens; other epochs' orders visit them)"
            )
        return local, list(zip(chunks, sizes))

    def _observe(self, outputs: torch.Tensor, batch: Any, chunk: torch.Tensor, sizes: list[int]) -> None:
        """Hand the method the detached outputs and positions of the whole global batch."""
        if not self.dist.is_distributed:
            self.method.observe(outputs.detach(), batch.index)
            return
        mine = chunk[sum(sizes[: self.dist.rank]) :][: sizes[self.dist.rank]]
        if len(batch.index) != len(mine) or not torch.equal(batch.index.cpu(), mine):
            raise RuntimeError(
                f"{type(self.pipeline).__name__}.train_batches must batch the given order consecutively by its "
                f"batch_size; got {len(batch.index)} items where {len(mine)} were planned"
            )
        everything = distributed.gather_rows(outputs.detach(), sizes)
        self.method.observe(everything, chunk.to(outputs.device))

    def _global_values(self, losses: dict[str, torch.Tensor], total: torch.Tensor, sizes: list[int]) -> dict[str, float]:
        """The step's loss terms of the global batch: the ranks' batch means weighted by their part sizes."""
        names = list(losses)
        values = torch.stack([losses[n].detach().float().reshape(()) for n in names] + [total.detach().float().reshape(())])
        if self.dist.is_distributed:
            values = distributed.all_reduce_sum(values * (sizes[self.dist.rank] / sum(sizes)))
        return dict(zip(names + ["total"], values.tolist()))

    def _training_pipeline(self) -> InputPipeline:
        """The pipeline that trains: ``self.pipeline`` itself, or under torchrun its ``for_training``
        view running a DistributedDataParallel wrapper of the model on this rank's part of each batch
        (made once; evaluation keeps using ``self.pipeline`` and the bare model)."""
        if not self.dist.is_distributed:
            return self.pipeline
        if self._training_view is None:
            if self.pipeline.model is not self.model:
                raise RuntimeError(f"{type(self.pipeline).__name__}.model is not the model being trained")
            if self.pipeline.channels_last:  # gradients then match DDP's bucket layout
                self.model.to(memory_format=torch.channels_last)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
            self._training_view = self.pipeline.for_training(ddp, self.global_batch // self.dist.world_size)
        return self._training_view

    def evaluate(self) -> dict[str, Any]:
        """Encode query (and database unless the method learned its codes) and compute the metrics."""
        with self._averaged_weights():
            metrics, timings = evaluate_run(self.pipeline, self.method, self.splits, self.config, self.device)
        self.timings["encode_s"] += timings["encode_s"]
        self.timings["eval_s"] += timings["eval_s"]
        return metrics

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """With --ema, the network holds the averaged weights (and batch-norm statistics) inside the block and
        its training weights again after it, bit for bit; without, nothing changes."""
        if self.ema is None:
            yield
            return
        training = {name: value.clone() for name, value in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.module.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(training)

    def _save(self, epochs_done: int) -> None:
        # With --ema, "model" is the average (what evaluate, encode and serve use) and the training weights and
        # the average's step count travel beside it for --resume.
        ema_state = {} if self.ema is None else {
            "ema_training_model": self.model.state_dict(), "ema_steps": int(self.ema.n_averaged)
        }
        save_checkpoint(
            self.checkpoint_path,
            {
                **provenance(),
                "method": self.config["method"],
                "arch": self.config["arch"],
                "code_length": int(self.config["code_length"]),
                "config": self.config,
                "model": self.model.state_dict() if self.ema is None else self.ema.module.state_dict(),
                **ema_state,
                "method_state": self.method.state_dict(),
                "method_module": None if self.method.module is None else self.method.module.state_dict(),
                "method_own_modules": None if self.method.own_modules is None else self.method.own_modules.state_dict(),
                "method_own_optimizers": {name: opt.state_dict() for name, opt in self.own_optimizers.items()},
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "epoch": epochs_done,
                "history": self.history,
                "metrics": self.metrics,
                "timings": dict(self.timings),
                "world_size": self.dist.world_size,
            },
        )
        self.epochs_saved = epochs_done

    def load_training_state(self, checkpoint: dict[str, Any]) -> None:
        """Continue from ``checkpoint`` (model, method, optimizer, scheduler, epoch, history)."""
        if self.ema is None:
            self.model.load_state_dict(checkpoint["model"])
        else:  # a run with --ema (resume refuses a changed --ema, so the checkpoint has both)
            self.model.load_state_dict(checkpoint["ema_training_model"])
            self.ema.module.load_state_dict(checkpoint["model"])
            self.ema.n_averaged.fill_(int(checkpoint["ema_steps"]))
        self.method.load_state_dict(checkpoint["method_state"])
        if self.method.module is not None:
            self.method.module.load_state_dict(checkpoint["method_module"])
        if self.method.own_modules is not None:
            self.method.own_modules.load_state_dict(checkpoint["method_own_modules"])
        for name, optimizer in self.own_optimizers.items():
            optimizer.load_state_dict(checkpoint["method_own_optimizers"][name])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.start_epoch = self.epochs_saved = int(checkpoint["epoch"])
        self.history = list(checkpoint["history"])
        self.metrics = dict(checkpoint["metrics"])
        self.timings.update(checkpoint.get("timings", {}))

    def _kept_checkpoint(self) -> str:
        if self.epochs_saved:
            return f"the last good checkpoint {self.checkpoint_path} (epoch {self.epochs_saved}) is kept"
        return "no checkpoint was written (the first epoch did not finish)"

    def _how_to_continue(self) -> str:
        if self.epochs_saved:
            return "continue with the same command plus --resume"
        return "start again with the same command plus --overwrite"

    def _record_failure(self, exc: BaseException) -> None:
        """Mark result.json failed with a reason; never let that write hide the original error."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            how = "terminated (SIGTERM)" if isinstance(exc, SystemExit) else "interrupted (Ctrl-C)"
            error = (
                f"{how} in epoch {self._epoch_running or self.epochs_saved}; {self._kept_checkpoint()}: "
                f"{self._how_to_continue()}"
            )
            if isinstance(exc, SystemExit) and self.dist.is_distributed:
                error += " (under torchrun this usually means another rank failed: see its log)"
        else:
            error = str(exc) or type(exc).__name__
        try:
            self._write_result("failed", error=error)
        except Exception as write_error:  # noqa: BLE001 - report, then re-raise the original error
            logger.warning(f"could not record the failure in {self.result_path}: {write_error}")

    def _write_result(self, status: str, error: str | None = None) -> dict[str, Any]:
        maps = [r["metrics"].get("map") for r in self.history if "metrics" in r]
        maps = [m for m in maps if m is not None and math.isfinite(m)]  # unlabelled data: no mAP
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
            "world_size": self.dist.world_size,
        }
        if error:
            result["error"] = error
        atomic_write_json(self.result_path, result)
        return result


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (a scheduler's or torchrun's stop) into SystemExit(143) so the run records why it
    stopped; only the main thread can install handlers, elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def mixup_alpha(config: dict[str, Any], method: HashingMethod) -> float:
    """--mixup's α, checked: 0 (off) or > 0 for a method whose loss takes label distributions."""
    alpha = float(config.get("mixup") or 0.0)
    if alpha < 0 or not math.isfinite(alpha):
        raise HashkitError(f"--mixup must be ≥ 0 (α of Beta(α, α); 0 = off, 0.2–1 usual), got {config.get('mixup')}")
    if alpha and not method.mixes_labels:
        from hashkit.registry import METHODS  # here: the registry imports the methods, which import this package

        takers = ", ".join(name for name in METHODS.names() if METHODS.get(name).mixes_labels)
        raise HashkitError(
            f"--mixup: --method {method.name} reads labels as pairwise similarities or class indices, which mixed "
            f"labels do not define; drop --mixup, or use a method whose loss is a cross-entropy on the codes ({takers})"
        )
    return alpha


def build_ema(model: HashModel, config: dict[str, Any], method: HashingMethod) -> AveragedModel | None:
    """--ema's exponential moving average of the network's weights and batch-norm statistics, updated after
    every optimiser step (torch.optim.swa_utils: the first step copies, then e ← d·e + (1 − d)·w); None when off."""
    decay = float(config.get("ema") or 0.0)
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise HashkitError(f"--ema must be a decay in (0, 1) a step, e.g. 0.998, or 0 (off), got {config.get('ema')}")
    if method.closed_form:
        raise HashkitError(f"--ema: --method {method.name} is fitted in closed form, with no steps to average; drop --ema")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def mix_batch(batch: Batch, alpha: float) -> None:
    """Mixup in place (Zhang et al. 2018, one λ a batch as in their code): inputs and labels become
    λ·x + (1 − λ)·x[π], λ ~ Beta(α, α) and π a permutation of the batch, both drawn from torch's global
    generator (reseeded every epoch, so a run and its resume mix alike). Views (b, v, …) mix along b.
    Why not torchvision.transforms.v2.MixUp: it takes integer class indices, and labels here are multi-hot
    vectors (multi-label data: the mixture of the two label vectors, which the loss normalises to sum 1)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(batch.inputs.shape[0], device=batch.inputs.device)
    batch.inputs = lam * batch.inputs + (1.0 - lam) * batch.inputs[perm]
    batch.labels = lam * batch.labels + (1.0 - lam) * batch.labels[perm]


def format_map(value: float | None) -> str:
    """An mAP for the log: 4 decimals, or why there is none (unlabelled data, metrics without map)."""
    if value is None or not math.isfinite(value):
        return "n/a (no labels or not computed)"
    return f"{value:.4f}"


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """The user's one-line error behind a DataLoader worker's re-raise (a HashkitError such as a corrupt
    image, raised in a ``--num-workers`` process, comes back with the worker's whole traceback in its text)."""
    text = str(exc)
    if isinstance(exc, HashkitError) and text.startswith("Caught HashkitError in DataLoader worker"):
        original = text.rsplit("HashkitError: ", 1)[-1]
        if original and original != text:
            return HashkitError(original)
    return exc


def evaluate_run(
    pipeline: InputPipeline, method: HashingMethod, splits: DatasetSplits, config: dict[str, Any], device: torch.device
) -> tuple[dict[str, Any], dict[str, float]]:
    """Metrics of the model behind ``pipeline`` on ``splits`` — shared by training and ``hashkit evaluate``."""
    try:
        return _evaluate_run(pipeline, method, splits, config, device)
    except HashkitError as exc:
        clean = unwrap_worker_error(exc)
        if clean is exc:
            raise
        raise clean from None


def _evaluate_run(
    pipeline: InputPipeline, method: HashingMethod, splits: DatasetSplits, config: dict[str, Any], device: torch.device
) -> tuple[dict[str, Any], dict[str, float]]:

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


OPTIMIZERS = ("adam", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "exponential", "step")
LR_INTERVALS = ("epoch", "step")
DEFAULT_MOMENTUM = {"sgd": 0.9, "rmsprop": 0.0}  # --momentum left unset


def _float(config: dict[str, Any], key: str, default: float | None = None) -> float | None:
    value = config.get(key)
    return default if value is None else float(value)


def build_optimizer(model: HashModel, config: dict[str, Any]) -> torch.optim.Optimizer:
    """torch's Adam, SGD or RMSprop over two parameter groups: the backbone at ``lr``, the hash layer at
    ``lr × hash_lr_mult`` (frozen parameters skipped); ``weight_decay`` on both; ``momentum`` (SGD, RMSprop;
    unset: 0.9 for SGD as HashNet's and SSDH's seeds, 0 for RMSprop — torch's default, the DPSH/DHN seeds')
    and ``nesterov`` (SGD; HashNet's seed)."""
    lr = float(config["lr"])
    head = {id(p) for p in model.head_parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = [{"params": [p for p in model.head_parameters() if p.requires_grad], "lr": lr * float(config["hash_lr_mult"])}]
    if body:
        groups.insert(0, {"params": body, "lr": lr})
    weight_decay = float(config["weight_decay"])
    name = config["optimizer"]
    if name not in OPTIMIZERS:
        raise HashkitError(f"--optimizer {name!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    momentum = _float(config, "momentum", DEFAULT_MOMENTUM.get(name, 0.0))
    nesterov = bool(config.get("nesterov"))
    if nesterov and (name != "sgd" or not momentum):
        raise HashkitError(
            f"--nesterov needs --optimizer sgd with a --momentum above 0 (got --optimizer {name}, momentum {momentum}); "
            "drop --nesterov or pass --optimizer sgd --momentum 0.9"
        )
    if name == "adam":
        if config.get("momentum") not in (None, 0, 0.0):
            raise HashkitError("--momentum applies to --optimizer sgd or rmsprop; Adam has its own betas: drop --momentum")
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: dict[str, Any], steps_per_epoch: int | None = None
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, always one of ``torch.optim.lr_scheduler``'s, stepped once per
    ``lr_interval`` (the Trainer steps it after every epoch — an outer iteration for ADSH/DIHN — or after
    every optimiser step):

    * ``constant``: ConstantLR(factor 1) — every group keeps its lr;
    * ``cosine``: CosineAnnealingLR(T_max = the run's steps of that interval, eta_min = ``lr_eta_min``);
    * ``exponential``: ExponentialLR(gamma = ``lr_gamma``);
    * ``step``: StepLR(step_size = ``lr_step_size`` intervals, or ``lr_step_fraction`` of the run's intervals,
      gamma = ``lr_gamma``; :func:`step_size`).

    The lr of the k-th interval (k = 0, 1, …) is therefore the seeds' value whenever the seed steps its
    scheduler after each epoch (DPSH, DHN) or before each step (HashNet's ``step_lr_scheduler``)."""
    schedule = config.get("lr_schedule") or "constant"
    interval = config.get("lr_interval") or "epoch"
    if schedule not in LR_SCHEDULES:
        raise HashkitError(f"--lr-schedule {schedule!r} is unknown; valid: {', '.join(LR_SCHEDULES)}")
    if interval not in LR_INTERVALS:
        raise HashkitError(f"--lr-interval {interval!r} is unknown; valid: {', '.join(LR_INTERVALS)}")
    schedulers = torch.optim.lr_scheduler
    if schedule == "cosine":
        return schedulers.CosineAnnealingLR(
            optimizer, T_max=scheduler_steps(config, steps_per_epoch), eta_min=_float(config, "lr_eta_min", 0.0)
        )
    if schedule in ("exponential", "step"):
        gamma = _float(config, "lr_gamma")
        if gamma is None or not 0 < gamma <= 1:
            raise HashkitError(f"--lr-schedule {schedule} needs --lr-gamma in (0, 1] (e.g. 0.9), got {gamma}")
        if schedule == "exponential":
            return schedulers.ExponentialLR(optimizer, gamma=gamma)
        return schedulers.StepLR(optimizer, step_size=step_size(config, steps_per_epoch), gamma=gamma)
    return schedulers.ConstantLR(optimizer, factor=1.0, total_iters=0)


def schedule_steps_per_batch(config: dict[str, Any]) -> bool:
    """True when the scheduler steps after every optimisation step (``--lr-interval step``), else per epoch."""
    return (config.get("lr_interval") or "epoch") == "step"

"""Data-parallel training under ``torchrun``: one process per device, gradients all-reduced by DDP.

``torchrun --nproc-per-node N -m hashkit train …`` (multi-node: add torchrun's ``--nnodes``,
``--node-rank``, ``--rdzv-endpoint``/``--master-addr``) starts N copies of ``hashkit train``; each one
finds RANK, WORLD_SIZE and LOCAL_RANK in its environment (:func:`context_from_environment`) and joins a
process group (gloo on the CPU, nccl with ``--gpu``, where rank r uses ``cuda:LOCAL_RANK``).

How one epoch is shared (see :meth:`hashkit.trainer.Trainer._train_epoch`): every rank draws the same
epoch order from the same per-epoch generator and cuts it into global batches of ``--batch-size`` B
items; global batch k is split into WORLD_SIZE contiguous parts (B / WORLD_SIZE items each; the last,
partial batch as evenly as possible) and rank r trains on part r (:func:`shard_order`). The network's
outputs of the whole global batch are all-gathered (:func:`gather_rows`) and handed to
``method.observe`` before the loss, so memories of codes stay identical on every rank.

Why the gradient equals the single-process gradient of the global batch: the methods' losses are means
over their batch (e.g. DPSH divides by b × n pairs), the memory a loss reads is the same on every rank,
and DDP averages the ranks' gradients: (1/W) Σ_r ∇L_r with L_r a mean over b = B/W items is the mean
over all B items, i.e. ∇L of the global batch. A partial last batch (parts of sizes b_r summing to L)
is weighted exactly by scaling rank r's loss by W·b_r/L (:func:`part_weight`). A last batch with fewer
items than ranks is skipped (see :func:`shard_order`). Measured on the CPU (tests/test_distributed.py,
2 gloo processes vs one, BN-free network, flip-invariant images): per-epoch losses agree to ~1e-7
relative, weights to ~1e-6 after 12 Adam steps (float32 summation order).

What differs from one process, by design: BatchNorm layers normalise by each rank's part of the batch
(standard DDP; rank 0's running statistics are broadcast at every forward), and random augmentation
and dropout draw from per-rank streams, so a run is reproducible for a given number of processes but
not bit-identical to a single-process run.

Only rank 0 evaluates and writes checkpoint.pt and result.json; the others wait at a barrier (set
``HASHKIT_DIST_TIMEOUT_MIN``, default 120, if an evaluation takes longer). ``--resume`` reads
OUT/checkpoint.pt on every rank, so multi-node runs need --out on a filesystem every node sees.
Per-node setup that fills a cache (unpacking a dataset tar, downloading weights, cached activations)
runs on each node's local rank 0 first (:func:`local_main_first`).

Methods opt in with ``HashingMethod.supports_distributed`` (their loss is a batch mean and their state is
written in ``observe``); the others are refused under torchrun with a one-line error:

* DPSH: supported (its memory of codes is written from the all-gathered outputs in ``observe``).
* DHN, HashNet: same memory as DPSH (hashkit.method_parts.memory); refused until they implement ``observe``.
* ADSH, DIHN: refused — each step writes the tanh outputs of the sample Ω into U and the epoch-end DCC
  update of the database codes V reads all of U, so every rank would need every rank's outputs; with
  U written in ``observe`` and a batch-mean loss they could opt in.
* SSDH: refused — its loss uses the pairs inside the batch (S[i, j] for i, j in the batch), so per-rank
  parts would lose the pairs across ranks and the gradient would not be the global batch's (exact
  support would all-gather the outputs with their gradients).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from loguru import logger

from hashkit.errors import HashkitError

T = TypeVar("T")
# Rank 0 evaluates alone while the other ranks wait; collectives must not time out meanwhile.
DEFAULT_TIMEOUT_MIN = 120.0
TIMEOUT_ENV = "HASHKIT_DIST_TIMEOUT_MIN"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a torchrun job (the defaults describe a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that evaluates and writes checkpoint.pt and result.json."""
        return self.rank == 0


SINGLE = DistContext()


def context_from_environment(environ: dict[str, str] | None = None) -> DistContext:
    """The torchrun context from RANK / WORLD_SIZE / LOCAL_RANK (a single process when absent)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return SINGLE
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise HashkitError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); start distributed runs with torchrun"
        ) from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise HashkitError(
            f"inconsistent torchrun environment (RANK {rank}, WORLD_SIZE {world}, LOCAL_RANK {local}); "
            "start distributed runs with torchrun, or unset these variables for a single process"
        )
    return DistContext(rank=rank, world_size=world, local_rank=local)


def resolve_distributed_device(ctx: DistContext, gpu: int | None) -> torch.device:
    """The device of this rank: the CPU, or ``cuda:LOCAL_RANK`` when ``--gpu`` is given (any value)."""
    if gpu is None or gpu < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise HashkitError(f"--gpu {gpu} was given but this machine has no usable CUDA GPU; drop --gpu to run on the CPU")
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise HashkitError(
            f"under torchrun, --gpu puts local rank {ctx.local_rank} on cuda:{ctx.local_rank}, but this node has "
            f"{count} GPU(s); start at most {count} processes per node (--nproc-per-node)"
        )
    return torch.device(f"cuda:{ctx.local_rank}")


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join torchrun's process group (gloo on the CPU, nccl on CUDA) and quieten ranks other than 0."""
    if not ctx.is_distributed or dist.is_initialized():
        return
    if not dist.is_available():
        raise HashkitError("this PyTorch build has no torch.distributed; install a standard PyTorch wheel")
    minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))
    except (RuntimeError, ValueError) as exc:
        raise HashkitError(
            f"could not join the torchrun process group ({backend}): {str(exc).splitlines()[0] if str(exc) else exc}; "
            "check --master-addr/--master-port (or --rdzv-endpoint) and that every node reaches it"
        ) from exc
    if not ctx.is_main:
        logger.remove()
        logger.add(sys.stderr, level="WARNING", format=f"{{time:HH:mm:ss}} | rank {ctx.rank} | {{level: <7}} | {{message}}")
    logger.info(f"distributed: {ctx.world_size} processes ({backend}), this is rank {ctx.rank} on {device}")


def shutdown() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch_size(ctx: DistContext, batch_size: int) -> None:
    """The global batch must split evenly: ``--batch-size`` is a multiple of the number of processes."""
    if ctx.is_distributed and batch_size % ctx.world_size:
        lower = batch_size - batch_size % ctx.world_size
        raise HashkitError(
            f"--batch-size {batch_size} is the global batch and must be a multiple of the {ctx.world_size} processes "
            f"(each trains on batch-size / processes items); pass --batch-size {lower or ctx.world_size} or "
            f"{lower + ctx.world_size}"
        )


def shard_order(order: torch.Tensor, batch_size: int, ctx: DistContext) -> tuple[torch.Tensor, list[list[int]], int]:
    """This rank's positions of an epoch ``order`` cut into global batches of ``batch_size``.

    Returns (local order, sizes of every rank's part per global batch, items dropped). Full batches
    give every rank ``batch_size / world_size`` items; the last, partial batch is split as evenly as
    possible. When that last batch has fewer items than there are ranks it is dropped (a rank without
    items could not take part in the step; the next epochs' orders visit those items).
    """
    world = ctx.world_size
    local: list[torch.Tensor] = []
    sizes: list[list[int]] = []
    dropped = 0
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        if len(chunk) < world:
            dropped = len(chunk)
            break
        parts = torch.tensor_split(chunk, world)
        local.append(parts[ctx.rank])
        sizes.append([len(p) for p in parts])
    empty = order[:0]
    return (torch.cat(local) if local else empty), sizes, dropped


def part_weight(sizes: list[int], rank: int) -> float:
    """W·b_r/L: the factor on rank r's batch-mean loss that makes DDP's gradient average exact."""
    return len(sizes) * sizes[rank] / sum(sizes)


def gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All ranks' ``local`` rows (rank r holds ``sizes[r]``), concatenated in rank order."""
    width = max(sizes)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over all ranks."""
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the job went away."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        mark in text for mark in ("Connection closed by peer", "remote worker", "Connection reset by peer", "NCCL")
    )


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def broadcast_from_main(ctx: DistContext, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable plain values only)."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _agree_on_error(ctx: DistContext, error: str | None) -> None:
    """Raise on every rank the first user error any rank met (so all ranks stop with the same line)."""
    errors: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e), None)
    if first:
        raise HashkitError(first)


def everywhere(ctx: DistContext, fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; a user error on any rank stops every rank with the same message."""
    if not ctx.is_distributed:
        return fn()
    result, error = _attempt(fn)
    _agree_on_error(ctx, error)
    return result


def _attempt(fn: Callable[[], T]) -> tuple[T | None, str | None]:
    """``(fn(), None)``, or ``(None, message)`` for a user error, so that every rank can agree on it."""
    try:
        return fn(), None
    except HashkitError as exc:
        return None, str(exc)


def local_main_first(ctx: DistContext, fn: Callable[[], T]) -> T:
    """``fn()`` on each node's local rank 0 first, then on the other ranks (caches it fills, such as an
    unpacked dataset or downloaded weights, are then only read by the others). A user error on one
    rank stops every rank with the same message."""
    if not ctx.is_distributed:
        return fn()
    result, error = _attempt(fn) if ctx.local_rank == 0 else (None, None)
    _agree_on_error(ctx, error)
    if ctx.local_rank != 0:
        result, error = _attempt(fn)
    _agree_on_error(ctx, error)
    return result


def main_only(ctx: DistContext, fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 only (e.g. preparing the output folder); its user error stops every rank."""
    if not ctx.is_distributed:
        return fn()
    result, error = _attempt(fn) if ctx.is_main else (None, None)
    _agree_on_error(ctx, error)
    return result

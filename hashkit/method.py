"""The contract every hashing method fulfils; the Trainer owns the loop, a method owns its losses.

A method is one file in ``methods/`` holding a subclass of :class:`HashingMethod` registered with
``@METHODS.register(name)``. The Trainer calls, in order::

    method.setup(TrainingData)                       # once: labels, sizes, optional pretrained features
    for epoch:
        method.on_epoch_start(epoch)
        for batch in method's epoch (epoch_indices):
            outputs = model(batch.inputs)            # real-valued u, (b, code_length)
            method.observe(all_outputs, all_index)   # detached outputs of the whole global batch
            losses = method.training_step(outputs, batch)   # named terms; the Trainer sums them
        method.on_epoch_end(epoch)                   # e.g. ADSH/DIHN update their database codes here
    method.database_codes(splits, encode)            # codes the method learned directly (ADSH, DIHN)

``state_dict``/``load_state_dict`` carry the method's own state (memories, learned codes) in checkpoints.

Trainable parameters of a method's own (a classifier on the codes, OrthoHash's batch-norm on the codes):
``setup`` may set :attr:`HashingMethod.module` to an ``nn.Module``. The Trainer then moves it to the
device, trains its parameters with the hash layer's learning rate (``lr × hash_lr_mult``, in the same
optimizer), switches it to train mode with the network, and checkpoints its ``state_dict`` beside the
network's (``method_module``), so ``--resume`` restores it. Encoding never uses it: codes come from the
network alone (``hashkit evaluate``, ``hashkit.load`` and ``hashkit encode`` need no method), so a module
that changes the codes must be folded into the network (see :meth:`HashingMethod.bind_model`). Under
torchrun a method with a module is refused (its gradients are not all-reduced by DDP).
``bind_model`` hands the method the network being trained, once, before the optimizer is built: a loss
may read the hash layer (SDH-C's orthogonality term) and ``on_epoch_end`` may rewrite it (OrthoHash folds
its batch-norm's threshold into the hash layer's bias).

Under torchrun (hashkit.distributed) each process trains on its part of every global batch; ``observe``
sees the outputs of the whole global batch (every rank's part, in order), so a memory of codes written
there stays identical on every rank. A method that is correct this way sets ``supports_distributed``:
its loss is a mean over its batch and everything it keeps across steps is written in ``observe``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class Hyper:
    """A method hyper-parameter exposed as ``--<name>`` on ``hashkit train``."""

    default: Any
    help: str
    type: type = float
    aliases: tuple[str, ...] = ()


@dataclass
class Batch:
    """One training mini-batch: network inputs, label vectors and positions in the training split."""

    inputs: torch.Tensor
    labels: torch.Tensor  # (b, classes) float, multi-hot; never read by unsupervised methods
    index: torch.Tensor  # (b,) long positions into the training split


@dataclass
class TrainingData:
    """What a method may precompute from: the training split's labels and size, and optionally the
    frozen pretrained features of its images (computed on first call, for SSDH's similarity)."""

    num_items: int
    labels: torch.Tensor | None  # (n, classes) float on the method's device; None for unsupervised methods
    pretrained_features: Callable[[], torch.Tensor] | None = None
    splits: Any = None  # the DatasetSplits (protocol-specific parts live in splits.extra)
    init_checkpoint: dict[str, Any] | None = None  # the checkpoint given with --from (DIHN starts from ADSH's)


class HashingMethod(abc.ABC):
    """Base class: defaults that suit pairwise methods trained on the training split."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    hyperparameters: ClassVar[dict[str, Hyper]] = {}
    # Training recipes as data (see hashkit.recipes): "seed" = the values of common flags (optimizer, lr,
    # schedule, transforms, arch, epochs, …) and hyper-parameters that the method's seed code/paper uses;
    # "cpu" = what the method sets on top of the shared 2-core CPU preset (measured). Flags given win.
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}
    # Config keys (besides arch and code_length) that a --from checkpoint fixes for this method: taken from
    # it when not given, refused when given with another value (DIHN: the incremental protocol's split).
    init_fixed_keys: ClassVar[tuple[str, ...]] = ()
    # True when one "epoch" (--max-iter) of this method is an outer iteration of an alternating scheme
    # (ADSH, DIHN): schedules stepping per epoch then step per outer iteration.
    epoch_is_outer_iteration: ClassVar[bool] = False
    # The method whose checkpoint this one starts from (--from), e.g. DIHN from ADSH; None = from ImageNet.
    starts_from: ClassVar[str | None] = None
    # Flags a minimal run of this method needs beyond the common ones (the registry-wide tests pass them),
    # e.g. DIHN's incremental protocol: {"num_seen": 3}.
    test_flags: ClassVar[dict[str, Any]] = {}
    supervised: ClassVar[bool] = True
    training_split: ClassVar[str] = "train"  # which split the method trains on ("train" or "database")
    # True when training under torchrun gives the single-process gradient of the global batch: the loss is
    # a mean over the batch and state kept across steps is updated in ``observe`` (see hashkit.distributed).
    supports_distributed: ClassVar[bool] = False
    # Hyper-parameter values under which the distributed gradient is exact, when only some are (e.g. a memory
    # of codes written in ``observe`` rather than pairs formed inside each process's part of the batch):
    # torchrun refuses other values, naming the flag; the registry-wide tests train with them.
    distributed_flags: ClassVar[dict[str, Any]] = {}
    # The activation the model applies after its hash layer (``--hash-activation``; set by the run from the
    # config). Methods whose seed loss works on tanh(u) use :meth:`tanh_outputs`, which applies tanh exactly
    # once whether the model already did or not (sign(tanh u) = sign u, so codes are the same either way).
    hash_activation: str = "none"

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        self.code_length = code_length
        self.hparams = {name: hparams.get(name, spec.default) for name, spec in self.hyperparameters.items()}
        self.device = device
        self.epoch = 0
        self.module: nn.Module | None = None  # trainable parameters of the method's own (set in setup)

    def bind_model(self, model: nn.Module) -> None:
        """The network being trained (the Trainer calls this once, before building the optimizer);
        default: not needed."""

    def setup(self, data: TrainingData) -> None:
        """Precompute whatever the method needs over the training split (default: nothing)."""

    def tanh_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """tanh(u) of the hash layer's output u: ``outputs`` itself when the model applies tanh already
        (``hash_activation`` "tanh"), else ``torch.tanh(outputs)``."""
        return outputs if self.hash_activation == "tanh" else torch.tanh(outputs)

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor | None:
        """Positions in the training split to visit this epoch, in order; None = all, shuffled."""
        return None

    def epoch_size(self, num_items: int) -> int:
        """Items one epoch visits (what :meth:`epoch_indices` returns), for schedules counted in steps;
        default: every item of the training split once."""
        return num_items

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def observe(self, outputs: torch.Tensor, index: torch.Tensor) -> None:
        """See the detached outputs (B, code_length) and training positions (B,) of the whole global batch
        before :meth:`training_step` (a single process: its own batch; under torchrun: every rank's part,
        in rank order). Memory-based methods write their memory here so it stays the same on every rank."""

    @abc.abstractmethod
    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms for one batch; their sum is minimised (every method defines it)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch's last step (alternating schemes update codes here)."""

    def database_codes(self, splits: Any, encode: Callable[[Any], torch.Tensor]) -> torch.Tensor | None:
        """±1 database codes when the method learns them directly (ADSH, DIHN), else None (the database
        images are encoded by the network). ``encode(collection)`` returns ±1 codes of any ImageCollection,
        for methods that learned codes for only part of ``splits.database``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values to checkpoint (loadable with ``torch.load(weights_only=True)``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @classmethod
    def describe(cls) -> str:
        return f"{cls.name}: {cls.paper}"


def similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 if items i and j share at least one label else 0 (multi-label aware), as float."""
    return (labels_a @ labels_b.t() > 0).to(labels_a.dtype)

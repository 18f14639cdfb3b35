"""The contract every hashing method fulfils; the Trainer owns the loop, a method owns its losses.

A method is one file in ``methods/`` holding a subclass of :class:`HashingMethod` registered with
``@METHODS.register(name)``. It declares, as class attributes, what it needs; the Trainer and the pipelines
provide exactly that, so the same loop holds pairwise, center, unsupervised, contrastive, adversarial and
closed-form methods (examples of each kind: tests/method_examples/, the docs' "Adding a method"):

* ``head`` — the hash head by name (hashkit.heads: ``linear``, ``bn``, ``mlp``, ``no_bias``,
  ``fixed_linear``, or one the method file registers). It is a module of the model, saved in the checkpoint,
  so codes always come from the saved model alone (``evaluate``, ``encode``, ``search``, ``serve``, ``load``).
* ``relaxation`` — what the loss reads from the model's outputs u: ``"none"`` (u as it is), ``"tanh"``
  (tanh(u), applied once by :meth:`tanh_outputs`, so ``--hash-activation tanh`` is allowed), ``"sigmoid"`` or
  ``"own"`` (the loss applies its own relaxation: continuation, straight-through sign, …). Only ``"tanh"``
  methods accept ``--hash-activation tanh``; the others refuse it in one line naming the method.
* ``needs_features`` — the batch carries the backbone's features x (before dropout and head) in
  :attr:`Batch.features`, with gradients where the backbone trains (BiHalf/GreedyHash unsupervised, TBH, CIBHash).
* ``views`` — N > 1 augmented views of every item per step: ``outputs`` is then (b, N, bits) and
  ``batch.features`` (b, N, d) (contrastive methods). Images get N independent draws of the training
  transform; the cached path N independent draws among each item's cached views, each flipped at random.
* own optimisation steps — :attr:`own_modules` (an ``nn.ModuleDict`` set in ``setup``) trained only by the
  optimisers :meth:`own_optimizers` returns, in :meth:`own_step` after every main step (adversarial parts).
  Both are checkpointed and restored by ``--resume``.
* ``closed_form`` — no training loop: :meth:`fit` gets the frozen features of the training split (and its
  labels if supervised) once and sets the head (``fixed_linear``'s projection); the Trainer then evaluates and
  writes the same checkpoint and result.json as any run.
* ``recipes`` — training recipes as data: ``"seed"``, ``"cpu"`` and per data set ``"seed@cifar10"`` (which
  wins over ``"seed"`` on that data set); see hashkit.config.

The Trainer calls, in order::

    method.setup(TrainingData)                       # once: labels, sizes, optional pretrained features
    method.bind_model(model)                         # once: the network (a loss may read or fit the head)
    method.own_optimizers()                          # once: optimisers over own_modules, if any
    if method.closed_form:
        method.fit(features of the training split, labels)
    else, for each epoch:
        method.on_epoch_start(epoch)
        for batch in method's epoch (epoch_indices):
            outputs = model(batch.inputs)            # real-valued u, (b, bits) or (b, views, bits)
            method.observe(all_outputs, all_index)   # detached outputs of the whole global batch
            losses = method.training_step(outputs, batch)   # named terms; the Trainer sums them
            (main optimiser step)
            method.own_step(outputs.detach(), batch) # the method's own optimisers, if any
        method.on_epoch_end(epoch)                   # e.g. ADSH/DIHN update their database codes here
    method.database_codes(splits, encode)            # codes the method learned directly (ADSH, DIHN)

``state_dict``/``load_state_dict`` carry the method's own state (memories, learned codes) in checkpoints.

Trainable parameters of a method's own that the main loss trains (a classifier on the codes): ``setup`` may
set :attr:`HashingMethod.module` to an ``nn.Module``. The Trainer then moves it to the device, trains its
parameters with the hash layer's learning rate (``lr × hash_lr_mult``, in the same optimizer), switches it to
train mode with the network, and checkpoints its ``state_dict`` beside the network's (``method_module``), so
``--resume`` restores it. Encoding never uses it: whatever changes the codes belongs in the head.

Under torchrun (hashkit.distributed) each process trains on its part of every global batch; ``observe``
sees the outputs of the whole global batch (every rank's part, in order), so a memory of codes written
there stays identical on every rank. A method that is correct this way sets ``supports_distributed``:
its loss is a mean over its batch and everything it keeps across steps is written in ``observe``. Methods
with a module of their own, own optimisation steps, several views or a closed-form fit are refused under
torchrun, each naming the reason (hashkit.run).
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

    inputs: torch.Tensor  # (b, ...) or (b, views, ...) for a method with views > 1
    labels: torch.Tensor  # (b, classes) float, multi-hot; never read by unsupervised methods
    index: torch.Tensor  # (b,) long positions into the training split
    # The backbone's features before dropout and head, (b, d) or (b, views, d): set by the Trainer for a
    # method with ``needs_features``, else None.
    features: torch.Tensor | None = None


@dataclass
class TrainingData:
    """What a method may precompute from: the training split's labels and size, and optionally the
    frozen pretrained features of its images (computed on first call, for SSDH's similarity)."""

    num_items: int
    labels: torch.Tensor | None  # (n, classes) float on the method's device; None for unsupervised methods
    pretrained_features: Callable[[], torch.Tensor] | None = None
    # The same features through one draw of the training transform per image (seeded by the run's --seed;
    # the image pipeline only: the cached path refuses it in one line), for SSDH's seed recipe.
    augmented_features: Callable[[], torch.Tensor] | None = None
    splits: Any = None  # the DatasetSplits (protocol-specific parts live in splits.extra)
    init_checkpoint: dict[str, Any] | None = None  # the checkpoint given with --from (DIHN starts from ADSH's)


RELAXATIONS = ("none", "tanh", "sigmoid", "own")


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
    # True for a supervised method its paper defines for single-label data only (SDH-C): multi-label training
    # data is refused in one line (hashkit.method_parts.classification.check_labels).
    single_label_only: ClassVar[bool] = False
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
    # The hash head (hashkit.heads) the method's codes come from; --hash-head overrides it.
    head: ClassVar[str] = "linear"
    # What the loss reads from the outputs u (see the module docstring): "none", "tanh", "sigmoid" or "own".
    relaxation: ClassVar[str] = "none"
    # True when the loss reads batch.labels only as class distributions (a cross-entropy against labels / Σ labels),
    # so that --mixup may hand it convex mixtures of label vectors; pairwise and center losses read labels as
    # similarities or class indices, which mixtures do not define.
    mixes_labels: ClassVar[bool] = False
    # The batch carries the backbone's features (Batch.features).
    needs_features: ClassVar[bool] = False
    # Augmented views of every item per step (outputs (b, views, bits) when > 1).
    views: ClassVar[int] = 1
    # Fitted once on the training split's frozen features (:meth:`fit`), without epochs or optimiser.
    closed_form: ClassVar[bool] = False
    # The method's family, a key of hashkit.catalogue.FAMILIES (one documentation page each: pairwise,
    # asymmetric, unsupervised, class-codes, classifier, shallow, …), and the public code it was read from.
    family: ClassVar[str] = ""
    reference_code: ClassVar[tuple[str, ...]] = ()

    # The hook a method trains by, exactly one of the two (declared here, defined by the method or a shared
    # base of method_parts; :meth:`__init__` refuses a class without the one its ``closed_form`` needs):
    # training_step(outputs, batch) -> named loss terms of one batch, whose sum is minimised (gradient-trained
    # methods); fit(features, labels) -> named statistics to log, after setting the head (bound by
    # :meth:`bind_model`) from the training split's frozen features (n, d) and labels (n, classes) or None.
    training_step: Callable[[torch.Tensor, Batch], dict[str, torch.Tensor]]
    fit: Callable[[torch.Tensor, torch.Tensor | None], dict[str, float]]

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        hook = "fit" if self.closed_form else "training_step"
        if not callable(getattr(type(self), hook, None)):
            kind = "a closed-form method (closed_form = True)" if self.closed_form else "trained by gradients"
            raise TypeError(f"method {self.name or type(self).__name__!r} is {kind} but defines no {hook}")
        self.code_length = code_length
        self.hparams = {name: hparams.get(name, spec.default) for name, spec in self.hyperparameters.items()}
        self.device = device
        self.epoch = 0
        self.module: nn.Module | None = None  # trainable parameters of the method's own (set in setup)
        self.own_modules: nn.ModuleDict | None = None  # trained only by own_optimizers (set in setup)

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

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch's last step (alternating schemes update codes here)."""

    def own_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The method's own optimisers over :attr:`own_modules` (called once, after ``setup`` and after the
        Trainer moved the modules to the device); default: none."""
        return {}

    def own_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The method's own optimisation steps after each main step (``outputs`` detached); it zeroes,
        backpropagates and steps its optimisers itself. Returns named values to log (not minimised by the
        main optimiser); default: nothing."""
        return {}

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

    @classmethod
    def hash_activations(cls) -> tuple[str, ...]:
        """The ``--hash-activation`` values the loss can work with (tanh only for a "tanh" relaxation)."""
        return ("none", "tanh") if cls.relaxation == "tanh" else ("none",)

    @classmethod
    def torchrun_obstacle(cls) -> str | None:
        """Why this method cannot train under torchrun, or None (capabilities whose state or batches
        would differ between the processes are refused by name)."""
        if not cls.supports_distributed:
            return "its training state would differ between processes"
        if cls.closed_form:
            return "it is fitted in closed form by one process"
        if cls.views > 1:
            return f"it draws {cls.views} views of every item, which are not split between processes"
        if cls.own_optimizers is not HashingMethod.own_optimizers:
            return "it runs optimisation steps of its own, which torchrun does not synchronise"
        return None


def similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 if items i and j share at least one label else 0 (multi-label aware), as float."""
    return (labels_a @ labels_b.t() > 0).to(labels_a.dtype)

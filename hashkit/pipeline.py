"""Input pipelines: how images reach the network for training and encoding.

:class:`InputPipeline` is the seam between the Trainer / evaluation and the data: batches for training,
the training forward, outputs (and backbone features) for a collection, and an explicit hook to fill
caches. It has two implementations:

- :class:`ImagePipeline` (here): decode → transform (hashkit.transforms) → the whole HashModel (full
  fine-tuning, the default as in the seeds);
- :class:`hashkit.cached_pipeline.CachedPipeline`: cached activations of a frozen prefix → the rest
  (``--train-from`` / ``--freeze-backbone``).

Every collection is encoded by the one loop :func:`encode_batches` (also used by ``hashkit.load``).
Under torchrun the Trainer asks for :meth:`InputPipeline.for_training` — the same pipeline training a
DistributedDataParallel wrapper of the model with the per-rank batch size — instead of patching it.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader

from hashkit.data.base import ImageCollection, ImageDataset
from hashkit.errors import HashkitError
from hashkit.method import Batch
from hashkit.model import HashModel
from hashkit.progress import progress
from hashkit.transforms import build_transform


@runtime_checkable  # for tests and type checkers; hashkit itself never probes a pipeline
class InputPipeline(Protocol):
    """What the Trainer, evaluation and ``hashkit evaluate`` need from an input pipeline."""

    model: HashModel  # the network it runs (evaluation always runs this one)
    batch_size: int  # training batch size (--batch-size; the global batch under torchrun)
    channels_last: bool  # inputs are channels_last (DDP then wants the model's weights alike)

    def prepare(self, images: ImageCollection) -> None:
        """Compute whatever the pipeline caches for ``images`` (nothing for images read directly).
        Under torchrun each node's first process calls this alone, before the others."""
        ...

    def train_batches(
        self, train: ImageCollection, order: torch.Tensor, generator: torch.Generator, views: int = 1
    ) -> Iterator[Batch]:
        """Batches of ``batch_size`` consecutive items of ``order`` (positions in ``train``), augmented,
        with random draws from ``generator`` (and the global RNGs the Trainer seeds per epoch); with
        ``views`` > 1 the inputs are (b, views, ...): independent augmentations of each item."""
        ...

    def forward(
        self, inputs: torch.Tensor, with_features: bool = False, views: int = 1
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The trained network's real-valued outputs (b, code_length) for a training batch's inputs —
        (b, views, code_length) for inputs of ``views`` > 1 views per item —, with ``with_features`` also
        the backbone's features (b, [views,] d) as ``(outputs, features)``."""
        ...

    def encode(self, images: ImageCollection, desc: str = "encode") -> torch.Tensor:
        """Real-valued outputs (n, code_length) for ``images`` in order, on the CPU (eval mode)."""
        ...

    def features(self, images: ImageCollection, desc: str = "features") -> torch.Tensor:
        """The backbone's features (n, feature_dim) for ``images`` (before the hash layer; eval mode),
        e.g. SSDH's pretrained-feature similarity."""
        ...

    def augmented_features(self, images: ImageCollection, seed: int, desc: str = "features") -> torch.Tensor:
        """The backbone's features (n, feature_dim) of one draw of the *training* transform per image, in
        order (eval mode; random crops and flips drawn from ``seed`` alone, the global RNG left as it was),
        e.g. SSDH's seed, which extracts its similarity features through its training loader."""
        ...

    def for_training(self, network: nn.Module, batch_size: int) -> "InputPipeline":
        """This pipeline with ``forward`` running ``network`` (a DistributedDataParallel wrapper of
        ``model``) and ``train_batches`` cutting batches of ``batch_size`` (one rank's part); ``self``
        is unchanged."""
        ...


def train_from_index(config: dict[str, Any], model: HashModel) -> int:
    """The index of the first trained backbone stage (``--train-from`` / ``--freeze-backbone``):
    0 = full fine-tuning (the default), ``len(backbone)`` = only the hash layer trains."""
    backbone = model.backbone
    stage = config.get("train_from")
    freeze = bool(config.get("freeze_backbone"))
    if stage in (None, "", 0, "0"):
        return len(backbone) if freeze else 0
    if isinstance(stage, str) and stage.strip().lower() in ("end", "none", "hash", "hash_layer"):
        index = len(backbone)
    else:
        index = backbone.stage_index(stage)
    if freeze and index != len(backbone):
        raise HashkitError(
            f"--freeze-backbone trains only the hash layer but --train-from {stage} fine-tunes stages from "
            f"{backbone.stage_names[index]}; pass one of the two"
        )
    return index


@torch.no_grad()
def encode_batches(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    network: Callable[[torch.Tensor], torch.Tensor],
    *,
    total: int,
    width: int,
    desc: str = "encode",
    show_progress: bool = True,
) -> torch.Tensor:
    """The one encoding loop: ``network`` over ``batches`` (inputs ready for it) with ``model`` in eval
    mode (its mode restored after), outputs as float32 on the CPU, concatenated: (total, width)."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with progress(total, desc, enabled=show_progress) as bar:
            for inputs in batches:
                outputs.append(network(inputs).float().cpu())
                bar.update(len(inputs))
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.zeros(0, width)


def image_batches(
    images: ImageCollection,
    transform: Callable,
    batch_size: int,
    num_workers: int,
    to_device: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Transformed images of ``images`` in order, ``batch_size`` at a time, through ``to_device`` (``generator``
    seeds the loader's workers)."""
    loader = DataLoader(ImageDataset(images, transform), batch_size=batch_size, num_workers=num_workers,
                        generator=generator)  # fmt: skip
    for batch, _, _ in loader:
        yield to_device(batch)


def forward_views(
    network: Callable[..., Any], inputs: torch.Tensor, views: int, with_features: bool, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``network`` on a training batch; with ``views`` > 1 the inputs (b, views, ...) run as one batch of
    b·views and the results come back as (b, views, ...)."""
    flat = inputs.flatten(0, 1) if views > 1 else inputs
    result = network(flat, with_features=True, **kwargs) if with_features else network(flat, **kwargs)
    if views == 1:
        return result
    unflatten = lambda t: t.reshape(inputs.shape[0], views, *t.shape[1:])  # noqa: E731
    return tuple(unflatten(t) for t in result) if with_features else unflatten(result)


class MultiView:
    """A training transform applied ``views`` times to each image, stacked (views, C, H, W) (picklable)."""

    def __init__(self, transform: Callable, views: int) -> None:
        self.transform = transform
        self.views = views

    def __call__(self, image: Any) -> torch.Tensor:
        return torch.stack([self.transform(image) for _ in range(self.views)])


def mirrored_outputs(model: HashModel, mirror_at: int, flip: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images → the outputs to binarize: ``model(images)``, or with ``flip`` (``--encode-flip``) the mean
    over the input of stage ``mirror_at`` and its mirror (0 = the image itself; under ``--train-from``
    the frozen stages' activations, where the run's own evaluation mirrored)."""
    if not flip or not mirror_at:
        return lambda x: model.encode_outputs(x, flip=flip)
    prefix = model.backbone[:mirror_at]
    return lambda x: model.encode_outputs(prefix(x), start=mirror_at, flip=True)


class ImagePipeline:
    """Images → transforms → the whole HashModel (an :class:`InputPipeline`)."""

    def __init__(
        self,
        model: HashModel,
        image_size: int,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        encode_batch_size: int | None = None,
        encode_flip: bool = False,
        train_transform: str | None = None,
        test_transform: str | None = None,
    ) -> None:
        spec = model.backbone.input_spec
        self.model = model
        self.network: nn.Module = model  # what ``forward`` runs (a DDP wrapper in a for_training view)
        self.train_transform = build_transform(spec, image_size, train=True, name=train_transform)
        self.eval_transform = build_transform(spec, image_size, train=False, name=test_transform)
        self.batch_size = batch_size
        self.encode_batch_size = encode_batch_size or max(batch_size, 128)
        self.num_workers = num_workers
        self.device = device
        self.channels_last = model.backbone.arch.startswith("efficientnet")
        self.encode_flip = encode_flip  # codes = sign(mean of the outputs on the image and its mirror)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.dim() == 4 else images

    def prepare(self, images: ImageCollection) -> None:
        """Nothing to prepare: images are decoded as they are read."""

    def train_batches(
        self, train: ImageCollection, order: torch.Tensor, generator: torch.Generator, views: int = 1
    ) -> Iterator[Batch]:
        """Batches of the training items at positions ``order``, in that order (augmented; ``views`` > 1:
        that many independent augmentations of each item, (b, views, C, H, W))."""
        transform = self.train_transform if views == 1 else MultiView(self.train_transform, views)
        dataset = ImageDataset(train, transform)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            generator=generator,
            persistent_workers=False,
        )
        for images, labels, index in loader:
            yield Batch(self._to_device(images), labels.to(self.device), index.to(self.device))

    def forward(
        self, inputs: torch.Tensor, with_features: bool = False, views: int = 1
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The network's real-valued outputs (and features) for a training batch's inputs (see InputPipeline)."""
        return forward_views(self.network, inputs, views, with_features)

    def for_training(self, network: nn.Module, batch_size: int) -> "ImagePipeline":
        view = copy.copy(self)
        view.network, view.batch_size = network, batch_size
        return view

    def encode(self, images: ImageCollection, desc: str = "encode") -> torch.Tensor:
        """Real-valued outputs (n, code_length) for ``images`` in order, on the CPU (eval mode)."""
        return self._run(images, mirrored_outputs(self.model, 0, self.encode_flip), self.model.code_length, desc)

    def features(self, images: ImageCollection, desc: str = "features") -> torch.Tensor:
        """The backbone's features (n, feature_dim) for ``images`` (before the hash layer; eval mode)."""
        return self._run(images, self.model.backbone, self.model.backbone.feature_dim, desc)

    def augmented_features(self, images: ImageCollection, seed: int, desc: str = "features") -> torch.Tensor:
        """The backbone's features through one draw of the training transform per image (see InputPipeline):
        the draws come from a torch RNG seeded with ``seed`` (forked: the global state is restored after), and
        the loader's workers from a generator with the same seed, so the same seed gives the same features."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            batches = image_batches(images, self.train_transform, self.encode_batch_size, self.num_workers,
                                    self._to_device, generator=torch.Generator().manual_seed(seed))  # fmt: skip
            return encode_batches(self.model, batches, self.model.backbone, total=len(images),
                                  width=self.model.backbone.feature_dim, desc=desc)  # fmt: skip

    def _run(self, images: ImageCollection, network: Callable[[torch.Tensor], torch.Tensor], width: int, desc: str) -> torch.Tensor:
        batches = image_batches(images, self.eval_transform, self.encode_batch_size, self.num_workers, self._to_device)
        return encode_batches(self.model, batches, network, total=len(images), width=width, desc=desc)

"""The fast CPU path: freeze the backbone's first stages, cache their outputs once, train the rest.

``--train-from STAGE`` freezes the stages before STAGE, caches their output for every image once (see
hashkit.feature_cache) and fine-tunes STAGE… plus the hash layer on the cached activations;
``--freeze-backbone`` caches the pooled features and trains only the hash layer. :class:`CachedPipeline`
is the second implementation of :class:`hashkit.pipeline.InputPipeline` (beside ``ImagePipeline``), so
the Trainer, evaluation, ``hashkit evaluate`` and every method run unchanged. ``--recipe cpu`` is the measured preset for a 2-core CPU
(see :data:`hashkit.recipes.CPU_RECIPE` and docs/cpu-recipe.md).
"""

from __future__ import annotations

import copy
import types
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from hashkit.data.base import ImageCollection
from hashkit.errors import HashkitError
from hashkit.feature_cache import (
    AugmentedViews,
    CacheKey,
    FeatureStore,
    compute_activations,
    ensure_cached,
    item_keys,
    state_dict_hash,
    view_keys,
)
from hashkit.method import Batch
from hashkit.model import HashModel
from hashkit.paths import cache_root
from hashkit.pipeline import encode_batches, forward_views, train_from_index
from hashkit.transforms import DEFAULT_TEST, describe

class CachedPipeline:
    """Cached activations of the frozen stages [0, start) → stages start… + hash layer.

    The frozen stages get ``requires_grad=False`` (the optimizer skips them) and stay in eval mode
    even when the Trainer calls ``model.train()``, so their BatchNorm statistics never change.
    ``views=N`` also caches N augmented views (random crop + flip, see feature_cache.AugmentedViews) of
    each training image and trains on one of the N+1 drawn at random per item and step.
    ``precision="bf16"`` computes the cache under bfloat16 autocast (2× faster per core here, but up
    to ~10% error on single activations; not a flag until its effect on mAP is measured).
    """

    def __init__(
        self,
        model: HashModel,
        start: int,
        *,
        dataset: str,
        image_size: int,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        cache_dir: str | None = None,
        flip: bool = True,
        views: int = 0,
        encode_batch_size: int = 128,
        cache_batch_size: int | None = None,
        precision: str = "fp32",
        encode_flip: bool = False,
        test_recipe: str = DEFAULT_TEST,
    ) -> None:
        backbone = model.backbone
        if not 0 < start <= len(backbone):
            raise HashkitError(f"cannot cache before stage {start}: {backbone.arch} has stages 0..{len(backbone) - 1}")
        self.model = model
        self.network: nn.Module = model  # what ``forward`` runs (a DDP wrapper in a for_training view)
        self.start = start
        self.batch_size = batch_size
        self.encode_batch_size = encode_batch_size  # small batches run faster per image on a CPU (measured)
        # Batches of 32 ran 1.5× faster per CPU core than 250 (cache-friendly); GPUs want large ones.
        self.cache_batch_size = cache_batch_size or (32 if device.type == "cpu" else 256)
        self.num_workers = num_workers
        self.device = device
        self.flip = flip
        self.views = int(views)
        self.precision = precision
        self.encode_flip = encode_flip  # codes from the mean of the outputs on the activations and their mirror
        self.image_size = image_size
        self.channels_last = backbone.arch.startswith("efficientnet") or backbone.arch == "resnet50"
        self.prefix = backbone[:start]
        freeze_stages(self.prefix)
        spec = backbone.input_spec
        stage = backbone.stage_names[start] if start < len(backbone) else "end"
        # The transform (hashkit.transforms) whose outputs are cached, once: a deterministic evaluation
        # recipe; training batches are these activations, flipped (and cached views with ``views``).
        self.recipe = test_recipe
        transform = f"{describe(spec, image_size, self.recipe)}; compute {precision}"
        self.key = CacheKey(
            dataset=dataset, arch=backbone.arch, stage=stage, stage_index=start,
            weights=state_dict_hash(self.prefix), image_size=image_size, transform=transform,
        )  # fmt: skip
        self.store = FeatureStore(self.key.folder(cache_root(cache_dir)), self.key)
        self.input_spec = spec
        self._located: dict[int, tuple[ImageCollection, np.ndarray]] = {}
        self.computed = 0  # images whose activations this pipeline computed (0 when all came from the cache)

    # ---- the cache ----------------------------------------------------------------------------------

    def locate(self, images: ImageCollection) -> np.ndarray:
        """(n, 2) positions of ``images``' rows in the store, computing missing rows first (once)."""
        hit = self._located.get(id(images))
        if hit is not None and hit[0] is images:
            return hit[1]
        keys = item_keys(images)
        self.computed += ensure_cached(self.store, images, keys, self._compute)
        where = self.store.locate(keys)
        self._located[id(images)] = (images, where)
        return where

    def locate_views(self, train: ImageCollection) -> np.ndarray:
        """(n, 1 + views, 2) store positions: each training image, then its augmented views (computed once)."""
        where = self.locate(train)
        if not self.views:
            return where[:, None, :]
        hit = self._located.get(-id(train))
        if hit is not None and hit[0] is train:
            return hit[1]
        keys = item_keys(train)
        spec = self.input_spec
        augmented = AugmentedViews(train, keys, self.views, self.image_size, spec.interpolation)
        extra = view_keys(keys, self.views)
        self.computed += ensure_cached(self.store, augmented, extra, self._compute)
        views = self.store.locate(extra).reshape(len(train), self.views, 2)
        where = np.concatenate([where[:, None, :], views], axis=1)
        self._located[-id(train)] = (train, where)
        return where

    def prepare(self, images: ImageCollection) -> None:
        """Compute and cache the activations of ``images`` that the cache lacks."""
        self.locate(images)

    def _compute(self, images: Any) -> Iterator[tuple[int, np.ndarray]]:
        return compute_activations(
            self.prefix, images, image_size=self.image_size, interpolation=self.input_spec.interpolation,
            recipe=self.recipe,
            mean=self.input_spec.mean, std=self.input_spec.std, batch_size=self.cache_batch_size,
            num_workers=self.num_workers, device=self.device, channels_last=self.channels_last,
            precision=self.precision, desc=f"caching {self.key.stage} inputs",
        )  # fmt: skip

    def activations(self, images: ImageCollection) -> torch.Tensor:
        """float16 cached activations (n, ...) of ``images`` on the CPU."""
        return self.store.gather(self.locate(images))

    def _inputs(self, rows: torch.Tensor) -> torch.Tensor:
        x = rows.to(self.device, non_blocking=True).float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    # ---- the InputPipeline interface ----------------------------------------------------------------

    def train_batches(
        self, train: ImageCollection, order: torch.Tensor, generator: torch.Generator, views: int = 1
    ) -> Iterator[Batch]:
        """Batches of cached activations of the training items at ``order`` (randomly flipped; a random
        one of each item's cached views when there are views). ``views`` > 1 (a method's views per item):
        that many independent draws per item, each flipped at random, as (b, views, ...)."""
        where = self.locate_views(train)
        order = torch.as_tensor(order, dtype=torch.long)
        labels = torch.from_numpy(train.labels.astype(np.float32))
        for begin in range(0, len(order), self.batch_size):
            index = order[begin : begin + self.batch_size]
            rows = self._draw_views(where, index, generator, views)
            yield Batch(self._inputs(rows), labels[index].to(self.device), index.to(self.device))

    def _draw_views(self, where: np.ndarray, index: torch.Tensor, generator: torch.Generator, views: int) -> torch.Tensor:
        """Rows for the items at ``index``: one (b, ...) or ``views`` (b, views, ...) random draws among their
        cached views, each flipped at random. One view draws exactly as training always has (the same
        generator calls), so single-view runs are unchanged."""
        items = index.numpy()
        if views == 1:
            view = torch.randint(0, where.shape[1], (len(index),), generator=generator) if self.views else None
            rows = self.store.gather(where[items, 0 if view is None else view.numpy()])
        else:
            shape = (len(index), views)
            view = torch.randint(0, where.shape[1], shape, generator=generator) if self.views else torch.zeros(shape, dtype=torch.long)
            rows = self.store.gather(where[items[:, None], view.numpy()].reshape(-1, 2))
        if self.flip and rows.dim() == 4:
            mask = torch.rand(rows.shape[0], generator=generator) < 0.5
            rows[mask] = rows[mask].flip(-1)
        return rows if views == 1 else rows.reshape(len(index), views, *rows.shape[1:])

    def forward(
        self, inputs: torch.Tensor, with_features: bool = False, views: int = 1
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The network's real-valued outputs (and features) for cached inputs: stages start… + head."""
        return forward_views(self.network, inputs, views, with_features, start=self.start)

    def for_training(self, network: nn.Module, batch_size: int) -> "CachedPipeline":
        view = copy.copy(self)  # shares the store and what it located
        view.network, view.batch_size = network, batch_size
        return view

    def encode(self, images: ImageCollection, desc: str = "encode") -> torch.Tensor:
        """Real-valued outputs (n, code_length) for ``images`` in order, on the CPU (eval mode)."""
        network = lambda x: self.model.encode_outputs(x, start=self.start, flip=self.encode_flip)  # noqa: E731
        return self._run(images, network, self.model.code_length, desc)

    def features(self, images: ImageCollection, desc: str = "features") -> torch.Tensor:
        """The backbone's features (n, feature_dim) for ``images`` (before the hash layer; eval mode)."""
        suffix = self.model.backbone[self.start :]
        return self._run(images, suffix, self.model.backbone.feature_dim, desc)

    def augmented_features(self, images: ImageCollection, seed: int, desc: str = "features") -> torch.Tensor:
        """Refused: the cache holds the frozen stages' activations of the test transform (and its own cached
        views), not fresh draws of the training transform through the whole backbone."""
        raise HashkitError(
            "features of the training transform need the image pipeline; under --freeze-backbone / --train-from "
            "(cached activations) pass --similarity-transform test"
        )

    def _run(self, images: ImageCollection, network: Any, width: int, desc: str) -> torch.Tensor:
        where = self.locate(images)
        step = self.encode_batch_size
        batches = (self._inputs(self.store.gather(where[i : i + step])) for i in range(0, len(where), step))
        return encode_batches(self.model, batches, network, total=len(images), width=width, desc=desc)


def freeze_stages(stages: torch.nn.Module) -> None:
    """No gradients for ``stages`` and eval mode that ``train()`` cannot undo (BN statistics frozen)."""
    for p in stages.parameters():
        p.requires_grad_(False)
    for module in stages.children():
        module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
        module.eval()


def _stay_in_eval(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    """``train()`` replacement of a frozen stage: it and its children stay in eval mode."""
    return torch.nn.Module.train(self, False)


def build_cached_pipeline(config: dict[str, Any], model: HashModel, device: torch.device) -> CachedPipeline | None:
    """The cached pipeline ``config`` asks for (``--train-from`` / ``--freeze-backbone``), or None for
    full fine-tuning."""
    start = train_from_index(config, model)
    if start == 0:
        return None
    from hashkit.registry import DATASETS

    # The evaluation transform is what gets cached (and encoded): a seed recipe's Resize(256) + CenterCrop(224)
    # reaches the frozen features too. Ten crops per image have no single cached row.
    test_recipe = str(config.get("test_transform") or DEFAULT_TEST)
    if test_recipe == "ten_crop":
        raise HashkitError(
            "--test-transform ten_crop cannot be cached (ten rows per image): with --train-from / --freeze-backbone "
            "pass --test-transform resize, center_crop or resize256_centercrop224"
        )
    return CachedPipeline(
        model,
        start,
        dataset=DATASETS.canonical(str(config["dataset"])),
        image_size=int(config["image_size"]),
        batch_size=int(config["batch_size"]),
        num_workers=int(config.get("num_workers") or 0),
        device=device,
        cache_dir=config.get("cache_dir"),
        flip=bool(config.get("cached_flip", True)),
        views=int(config.get("cached_views") or 0),
        encode_flip=bool(config.get("encode_flip")),
        test_recipe=test_recipe,
    )

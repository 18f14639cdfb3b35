"""Issue 35: a run's trajectory depends on its configuration and --seed alone, never on what the feature
cache held before it. The same tiny command against an empty cache folder (the run computes every
activation) and again against the filled one (it reads them) gives bit-identical checkpoints (every
tensor: weights, BatchNorm statistics, optimizer and method state) and metrics; the same for a cache
filled by another run whose split differs (part of the rows cached, part computed), per recipe feature of
the cached path and for every registered method's ``--recipe cpu``.

The data: ``pool``, 96 smooth random 32×32 images of 4 classes held in memory, split query | train |
database in that order with the --num-query / --num-train / --num-database sizes, so another run's sizes
shift every split against this run's (its query and training images are part of this run's training set,
and so on). EfficientNet-Lite0 (the recipe's backbone, pretrained) at 32 px, one torch thread.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from loguru import logger
from PIL import Image

from hashkit.checkpoint import load_checkpoint
from hashkit.registry import DATASETS, METHODS

POOL_SIZE = 96
NUM_CLASSES = 4
SIZES = ("--num-query", "4", "--num-train", "16", "--num-database", "12")  # this run's split
# The run that filled the cache: its query | train | database = this run's query + 2 training images | 8
# training images (and their views) | 6 training + 8 database images; the rest is computed.
OTHER_SIZES = ("--num-query", "6", "--num-train", "8", "--num-database", "14")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: fast on 2 shared cores, and at one thread the oneDNN kernels change with the batch size
    for small batches, so the partial-cache case also checks that the cache runs every batch at full size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def pool_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``pool`` dataset, for this module's tests only (with the incremental ``--num-seen`` option)."""
    from hashkit.data.base import DatasetSplits, ImageCollection, one_hot
    from hashkit.data.incremental import incremental_option

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(POOL_SIZE, 8, 8, 3), dtype=np.uint8)
    pixels = np.stack([np.asarray(Image.fromarray(c).resize((32, 32), Image.BILINEAR)) for c in coarse])
    labels = one_hot(np.arange(POOL_SIZE) % NUM_CLASSES, NUM_CLASSES)

    def splits(config: Any) -> DatasetSplits:
        q, t, d = config.num_query, config.num_train, config.num_database
        part = lambda lo, hi: ImageCollection(labels[lo:hi], pixels=pixels[lo:hi], source="pool")  # noqa: E731
        return DatasetSplits(
            name="pool", query=part(0, q), train=part(q, q + t), database=part(q + t, q + t + d),
            class_names=[f"c{i}" for i in range(NUM_CLASSES)], default_topk=None,
            protocol=f"pool: {q} query / {t} train / {d} database, in that order",
        )  # fmt: skip

    DATASETS.names()  # load the real entries first
    monkeypatch.setitem(DATASETS._entries, "pool", incremental_option(splits))


@pytest.fixture(autouse=True)
def restore_logging():
    """hashkit.cli.main points loguru at the test's captured stderr; put the default sink back after."""
    yield
    logger.remove()
    logger.add(sys.stderr)


def argv(method: str, out: Path, cache: Path, *extra: str, sizes: tuple[str, ...] = SIZES) -> list[str]:
    """A tiny ``--recipe cpu`` run of ``method``: 32 px, 8 bits, one epoch of batches of 8 (2 steps)."""
    needs = [token for key, value in METHODS.get(method).test_flags.items() for token in (flag(key), str(value))]
    return [
        "train", "--method", method, "--dataset", "pool", "--recipe", "cpu", "--image-size", "32",
        "--code-length", "8", "--batch-size", "8", "--max-iter", "1", "--seed", "3", "--metrics", "map",
        "--cache-dir", str(cache), "--out", str(out), *sizes, *needs, *extra,
    ]  # fmt: skip


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def train(args: list[str]) -> dict[str, Any]:
    """Run ``hashkit train`` in this process; its result.json."""
    from hashkit.cli import main

    assert main(args) == 0, args
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "result.json").read_text())


def features_computed(cache: Path) -> int:
    """Rows in the cache's shards (each row the runs computed: a shard is never rewritten). A shard starts
    with 8 magic bytes, the header's length (8 bytes, little-endian) and the JSON header."""
    total = 0
    for shard in cache.glob("features/pool/*/shard-*.hkfc"):
        data = shard.read_bytes()
        total += len(json.loads(data[16 : 16 + int.from_bytes(data[8:16], "little")])["ids"])
    return total


def tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a checkpoint (nested dicts / lists), by path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    out: dict[str, torch.Tensor] = {}
    for key, item in items:
        out.update(tensors(item, f"{prefix}/{key}"))
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical checkpoints (all tensors) and the same losses and metrics."""
    ra, rb = (json.loads((run / "result.json").read_text()) for run in (a, b))
    assert ra["status"] == rb["status"] == "finished"
    assert [(h["epoch"], h["losses"], h.get("metrics")) for h in ra["history"]] == [
        (h["epoch"], h["losses"], h.get("metrics")) for h in rb["history"]
    ]
    assert ra["map"] == rb["map"]
    ta, tb = (tensors(load_checkpoint(run / "checkpoint.pt")) for run in (a, b))
    assert ta.keys() == tb.keys() and len(ta) > 100
    differ = [key for key in ta if not torch.equal(ta[key], tb[key])]
    assert not differ, f"{len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"


def cold_warm_partial(method: str, tmp_path: Path, *extra: str, partial: bool = True) -> None:
    """The run against an empty cache, again against the cache it filled, and (``partial``) against a cache
    another run with other split sizes filled: the same run each time."""
    cache = tmp_path / "cache"
    prerequisite = from_flags(method, tmp_path, *extra)
    cold = tmp_path / "cold"
    train(argv(method, cold, cache, *prerequisite, *extra))
    filled = features_computed(cache)
    assert filled > 0
    warm = tmp_path / "warm"
    train(argv(method, warm, cache, *prerequisite, *extra))
    assert features_computed(cache) == filled  # the second run computed nothing
    assert_same_run(cold, warm)
    if not partial:
        return
    other_cache = tmp_path / "other-cache"
    train(argv(method, tmp_path / "other", other_cache, *prerequisite, *extra, sizes=OTHER_SIZES))
    before = features_computed(other_cache)
    mixed = tmp_path / "mixed"
    train(argv(method, mixed, other_cache, *prerequisite, *extra))
    assert 0 < features_computed(other_cache) - before < filled  # part read, part computed
    assert_same_run(cold, mixed)


def from_flags(method: str, tmp_path: Path, *extra: str) -> list[str]:
    """``--from CHECKPOINT`` for a method that starts from another method's run (DIHN from ADSH), else []."""
    source = METHODS.get(method).starts_from
    if not source:
        return []
    out = tmp_path / f"prerequisite-{source}"
    needs = [token for key, value in METHODS.get(method).test_flags.items() for token in (flag(key), str(value))]
    train(argv(source, out, tmp_path / "prerequisite-cache", *needs, *extra))
    return ["--from", str(out / "checkpoint.pt")]


# Each recipe feature of the cached path alone (the recipe's others off); all of them together: the registry test.
NONE = ("--cached-views", "0", "--drop-path", "0", "--hash-dropout", "0", "--no-freeze-depthwise", "--no-cached-flip")
FEATURES = {
    "cached views": ("--cached-views", "2"),
    "stochastic depth": ("--drop-path", "0.4"),
    "feature dropout": ("--hash-dropout", "0.6"),
    "fixed depthwise weights": ("--freeze-depthwise",),
    "flips": ("--cached-flip",),
    "mixup": ("--mixup", "0.4"),
    "weight average": ("--ema", "0.9"),
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_each_recipe_feature_trains_the_same_from_an_empty_a_full_and_a_partial_cache(feature: str, tmp_path: Path) -> None:
    cold_warm_partial("ce", tmp_path, *NONE, *FEATURES[feature])


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_cpu_recipe_trains_the_same_from_an_empty_and_a_full_cache(method: str, tmp_path: Path) -> None:
    """Each method's own CPU recipe (the catalogue's: 8 views, drop path, feature dropout, fixed depthwise,
    flips); JMLH, the README's headline, also against a partial cache."""
    cold_warm_partial(method, tmp_path, partial=method == "jmlh")


def test_caching_leaves_every_global_random_state_alone(tmp_path: Path) -> None:
    """The root of issue 35: filling the cache drew from torch's global RNG (the DataLoader's base seed),
    which stochastic depth and dropout then drew from. Caching now moves none of torch / numpy / random."""
    from hashkit.cached_pipeline import CachedPipeline
    from hashkit.data.base import ImageCollection, one_hot
    from hashkit.model import build_model

    model = build_model("efficientnet_lite0", 8, pretrained=True)
    pixels = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    images = ImageCollection(one_hot(np.arange(5) % 2, 2), pixels=pixels, source="toy")
    pipeline = CachedPipeline(model, 12, dataset="toy", image_size=32, batch_size=4, num_workers=0,
                              device=torch.device("cpu"), cache_dir=str(tmp_path), views=2)  # fmt: skip
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    pipeline.locate_views(images)
    assert pipeline.computed == 5 + 10
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


def test_a_row_does_not_depend_on_the_batch_it_was_computed_in(tmp_path: Path) -> None:
    """Rows of images computed with different neighbours, at different positions, in a short last batch
    or alone: the same bits (every batch runs at the full batch size, 32 on a CPU; oneDNN picks its
    kernels by batch size and threads, and an image alone in a batch of 1 came out different)."""
    from hashkit.cached_pipeline import CachedPipeline
    from hashkit.data.base import ImageCollection, one_hot
    from hashkit.model import build_model

    model = build_model("efficientnet_lite0", 8, pretrained=True)
    pixels = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    images = ImageCollection(one_hot(np.arange(40) % 2, 2), pixels=pixels, source="toy")

    def rows(folder: str, subset: list[int]) -> torch.Tensor:
        pipeline = CachedPipeline(model, 12, dataset="toy", image_size=32, batch_size=4, num_workers=0,
                                  device=torch.device("cpu"), cache_dir=str(tmp_path / folder))  # fmt: skip
        assert pipeline.cache_batch_size == 32
        return pipeline.activations(images.subset(subset))

    everything = rows("all", list(range(40)))  # batches of 32 and 8
    alone = torch.cat([rows(f"alone{i}", [i]) for i in (0, 39)])  # the obvious reference: one image a run
    assert torch.equal(alone, everything[[0, 39]])
    shifted = list(range(39, 2, -1))  # other neighbours and positions, another short last batch
    assert torch.equal(rows("shifted", shifted), everything[shifted])

"""The feature cache and the cached pipeline (--train-from / --freeze-backbone / --cpu-recipe):
cache keys, reuse without recomputation, corrupt shards, equality with the full network, frozen
BatchNorm statistics, and a real CIFAR-10 train → evaluate round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import hashkit.cached_pipeline as cached_pipeline
import hashkit.feature_cache as feature_cache
from hashkit.cached_pipeline import CachedPipeline
from hashkit.pipeline import train_from_index
from hashkit.config import resolve_config
from hashkit.data.base import ImageCollection, one_hot
from hashkit.errors import HashkitError
from hashkit.feature_cache import CacheKey, fold_batchnorm, item_keys, read_shard, state_dict_hash
from hashkit.model import build_model, freeze_depthwise_convolutions
from hashkit.pipeline import ImagePipeline
from hashkit.trainer import build_optimizer

CPU = torch.device("cpu")
SIZE = 32  # input pixels: small, yet every EfficientNet stage still has at least 1×1 outputs


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def pretrained_state() -> dict[str, torch.Tensor]:
    return build_model("efficientnet_lite0", 16, pretrained=True).state_dict()


def make_model(state: dict[str, torch.Tensor], bits: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("efficientnet_lite0", bits, pretrained=False)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=False)
    return model


def pixel_images(n: int, seed: int = 0) -> ImageCollection:
    """Smooth random 32×32 images (upsampled noise, so they look like images to the network)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    pixels = np.stack([np.asarray(Image.fromarray(c).resize((32, 32), Image.BILINEAR)) for c in coarse])
    return ImageCollection(one_hot(np.arange(n) % 4, 4), pixels=pixels, source="toy")


def pipeline(model, start, cache: Path, **kw) -> CachedPipeline:
    options = dict(dataset="toy", image_size=SIZE, batch_size=8, num_workers=0, device=CPU, cache_dir=str(cache))
    options.update(kw)
    return CachedPipeline(model, start, **options)


def count_prefix_runs(model) -> list[int]:
    """A counter of forward calls of the backbone's stem (the cache's inference copy shares the hook)."""
    calls = [0]
    model.backbone[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# ---------------------------------------------------------------- keys


def test_cache_key_changes_with_each_keyed_input_and_only_then(pretrained_state, tmp_path) -> None:
    base = CacheKey("cifar10", "efficientnet_lite0", "block11", 12, "w" * 64, 128, "bicubic")
    assert CacheKey(**dataclasses.asdict(base)).digest() == base.digest()
    changes = {"dataset": "nus", "arch": "resnet50", "stage": "block7", "stage_index": 8, "weights": "v" * 64,
               "image_size": 160, "transform": "bilinear", "dtype": "float32", "format": 99}  # fmt: skip
    digests = {base.digest()}
    for field, value in changes.items():
        other = dataclasses.replace(base, **{field: value})
        digests.add(other.digest())
        assert other.folder(tmp_path) != base.folder(tmp_path), field
    assert len(digests) == len(changes) + 1

    # The pipeline's key: the prefix weights (incl. BN statistics), the stage and the size count; the
    # trained stages, the hash layer and the bit length do not (another method/bit length reuses it).
    key = lambda model, start=12, **kw: pipeline(model, start, tmp_path, **kw).key  # noqa: E731
    reference = key(make_model(pretrained_state))
    assert key(make_model(pretrained_state, bits=64, seed=5)) == reference
    suffix_changed = make_model(pretrained_state)
    with torch.no_grad():
        suffix_changed.backbone[14].dw_conv.weight.add_(1.0)
    assert key(suffix_changed) == reference
    for mutate in (lambda m: m.backbone[3].dw_conv.weight.add_(1e-3), lambda m: m.backbone[0].bn.running_var.mul_(2)):
        changed = make_model(pretrained_state)
        with torch.no_grad():
            mutate(changed)
        assert key(changed).weights != reference.weights
    assert key(make_model(pretrained_state), start=8) != reference
    assert key(make_model(pretrained_state), image_size=2 * SIZE) != reference
    assert key(make_model(pretrained_state), precision="bf16") != reference
    assert state_dict_hash(make_model(pretrained_state).backbone[:12]) == reference.weights


def test_item_keys_follow_file_identity_and_pixels(tmp_path) -> None:
    root = tmp_path / "tree"
    paths = []
    for i in range(3):
        path = root / "a" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), i * 40, np.uint8)).save(path)
        paths.append(str(path))
    images = ImageCollection(one_hot(np.zeros(3, int), 1), paths=paths, source=str(root))
    keys = item_keys(images)
    assert keys == item_keys(images) and len(set(keys)) == 3
    assert keys[0].startswith("a/0.png|")  # relative to the dataset root: a moved cache folder still hits
    Image.fromarray(np.full((5, 4, 3), 7, np.uint8)).save(paths[1])  # the file is replaced
    changed = item_keys(images)
    assert changed[0] == keys[0] and changed[2] == keys[2] and changed[1] != keys[1]
    # In-memory images are keyed by content: a subset's keys are the pool's keys at those positions.
    pool = pixel_images(6)
    assert item_keys(pool.subset([4, 1])) == [item_keys(pool)[4], item_keys(pool)[1]]
    assert len(set(item_keys(pool))) == 6


def test_train_from_and_the_cpu_recipe(pretrained_state) -> None:
    model = make_model(pretrained_state)
    n = len(model.backbone)
    assert train_from_index({}, model) == 0
    assert train_from_index({"train_from": "0"}, model) == 0
    assert train_from_index({"train_from": "block11"}, model) == 12
    assert train_from_index({"train_from": "12"}, model) == 12
    assert train_from_index({"freeze_backbone": True}, model) == n
    assert train_from_index({"train_from": "end", "freeze_backbone": True}, model) == n
    with pytest.raises(HashkitError, match="valid stages"):
        train_from_index({"train_from": "block99"}, model)
    with pytest.raises(HashkitError, match="--freeze-backbone"):
        train_from_index({"train_from": "block11", "freeze_backbone": True}, model)

    # The recipe beats the method's seed defaults; what the user changed beats the recipe.
    config = resolve_config({"method": "dpsh", "cpu_recipe": True, "weight_decay": None})  # None = not given
    expected = {"arch": "efficientnet_lite0", "image_size": 128, "train_from": "block11", "max_iter": 32, "lr": 5e-4,
                "hash_lr_mult": 2.0, "lr_schedule": "cosine", "batch_size": 64, "evaluate_interval": 0,
                "weight_decay": 1e-5, "recipe": "cpu"}  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    mine = resolve_config({"method": "dpsh", "recipe": "cpu", "lr": 3e-4, "max_iter": 8, "image_size": 224})
    assert (mine["lr"], mine["max_iter"], mine["evaluate_interval"], mine["image_size"]) == (3e-4, 8, 0, 224)
    assert resolve_config({"method": "dpsh"})["arch"] == "alexnet"  # no recipe: the seed recipe
    assert config["encode_flip"] is True and resolve_config({"method": "dpsh"})["encode_flip"] is False
    # --freeze-backbone under the recipe: pooled features, so neither --train-from nor --encode-flip.
    frozen = resolve_config({"method": "dpsh", "cpu_recipe": True, "freeze_backbone": True})
    assert (frozen.get("train_from"), frozen["encode_flip"], frozen["image_size"]) == (None, False, 128)
    assert train_from_index(frozen, model) == n


# ---------------------------------------------------------------- reuse and corruption


def test_second_run_reads_the_cache_and_computes_only_new_images(pretrained_state, tmp_path) -> None:
    images = pixel_images(12)
    model = make_model(pretrained_state)
    calls = count_prefix_runs(model)
    first = pipeline(model, 12, tmp_path, cache_batch_size=5)
    codes = first.encode(images.subset(range(8)))
    assert first.computed == 8 and calls[0] > 0
    # Another pipeline (a new run, another bit length): no prefix call for cached images ...
    other = make_model(pretrained_state, bits=48, seed=3)
    other_calls = count_prefix_runs(other)
    second = pipeline(other, 12, tmp_path)
    second.encode(images.subset(range(8)))
    assert second.computed == 0 and other_calls[0] == 0
    # ... and a superset computes only the images not cached yet (each image once: the union).
    second.encode(images)
    assert second.computed == 4 and other_calls[0] > 0
    third = pipeline(make_model(pretrained_state), 12, tmp_path)
    assert torch.equal(third.encode(images.subset(range(8))), codes)
    assert third.computed == 0 and len(third.store) == 12


def test_a_run_reads_the_rows_a_run_beside_it_cached_since_instead_of_computing_them(pretrained_state, tmp_path) -> None:
    """Two runs of a sweep side by side: the one that reaches the database later finds the rows the other
    cached after it started (its store had read the folder before they existed) and computes none of them."""
    images = pixel_images(10)
    early = pipeline(make_model(pretrained_state), 12, tmp_path)
    early.encode(images.subset(range(2)))  # reads the folder now, when it holds 2 images
    assert early.computed == 2
    beside = pipeline(make_model(pretrained_state, bits=48, seed=3), 12, tmp_path)
    beside.encode(images)  # the run beside it caches all 10
    assert beside.computed == 8
    calls = count_prefix_runs(early.model)
    rows = early.activations(images)
    assert early.computed == 2 and calls[0] == 0  # nothing computed again
    assert torch.equal(rows, beside.activations(images))
    assert len(list(early.store.folder.glob("shard-*"))) == 2


def test_half_written_or_corrupt_shards_are_never_read(pretrained_state, tmp_path, monkeypatch) -> None:
    images = pixel_images(6)
    reference = pipeline(make_model(pretrained_state), 12, tmp_path / "ok").activations(images)

    # A write that dies half-way leaves no shard (atomic: temporary file, then rename).
    real_write = feature_cache.write_shard

    def half_write(path, key, ids, rows):
        with feature_cache.atomic_open(path) as handle:
            handle.write(feature_cache.MAGIC + b"\x00" * 100)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_cache, "write_shard", half_write)
    with pytest.raises(HashkitError, match="No space left"):
        pipeline(make_model(pretrained_state), 12, tmp_path / "c").activations(images)
    monkeypatch.setattr(feature_cache, "write_shard", real_write)
    folder = pipeline(make_model(pretrained_state), 12, tmp_path / "c").store.folder
    assert not list(folder.glob("shard-*"))  # nothing under a shard name; the temporary file is gone

    # A complete shard that was truncated or altered afterwards: deleted, recomputed, same values.
    fresh = pipeline(make_model(pretrained_state), 12, tmp_path / "c")
    assert torch.equal(fresh.activations(images), reference) and fresh.computed == 6
    (shard,) = folder.glob("shard-*")
    data = shard.read_bytes()
    for damaged in (data[:-1000], data[:-1] + bytes([data[-1] ^ 1]), data[:40]):
        shard.write_bytes(damaged)
        with pytest.raises(ValueError):
            read_shard(shard, fresh.key)
        again = pipeline(make_model(pretrained_state), 12, tmp_path / "c")
        assert torch.equal(again.activations(images), reference)
        assert again.computed == 6
        (shard,) = folder.glob("shard-*")
    # A shard of another key (e.g. copied by hand) is refused too.
    foreign = dataclasses.replace(fresh.key, image_size=99)
    with pytest.raises(ValueError, match="key"):
        read_shard(shard, foreign)


# ---------------------------------------------------------------- equality with the full network


def test_fold_batchnorm_keeps_outputs() -> None:
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.tail = nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x):
            return self.tail(torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))))

    block = Block()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()
    block.eval()
    folded = fold_batchnorm(block)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(folded(x), block(x), rtol=1e-5, atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in block.modules())  # the original is untouched


@pytest.mark.parametrize("stage", ["block5", "block11", "end"])
def test_cached_outputs_equal_the_full_network(pretrained_state, tmp_path, stage: str) -> None:
    images = pixel_images(10, seed=1)
    model = make_model(pretrained_state).eval()
    start = train_from_index({"train_from": stage}, model)
    full = ImagePipeline(model, image_size=SIZE, batch_size=8, num_workers=0, device=CPU)
    cached = pipeline(model, start, tmp_path, flip=False)

    x = torch.stack([full.eval_transform(images.load(i)) for i in range(len(images))])
    with torch.no_grad():
        want_acts = model.backbone[:start](x)
    acts = cached.activations(images)
    assert acts.dtype == torch.float16 and acts.shape == want_acts.shape
    scale = float(want_acts.abs().max())
    torch.testing.assert_close(acts.float(), want_acts, rtol=2e-3, atol=2e-3 * scale)

    for name in ("encode", "features"):
        want, got = getattr(full, name)(images), getattr(cached, name)(images)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=2e-2 * float(want.abs().max()))
    # The training path feeds the same activations (no flip) to the same stages.
    batches = list(cached.train_batches(images, torch.tensor([3, 1, 4]), torch.Generator().manual_seed(0)))
    assert torch.equal(batches[0].index, torch.tensor([3, 1, 4]))
    assert torch.equal(batches[0].inputs, acts[[3, 1, 4]].float())
    assert torch.equal(batches[0].labels, torch.from_numpy(images.labels[[3, 1, 4]]).float())
    with torch.no_grad():
        torch.testing.assert_close(cached.forward(batches[0].inputs), cached.encode(images)[[3, 1, 4]])


def test_flip_augments_cached_activations(pretrained_state, tmp_path) -> None:
    images = pixel_images(16)
    cached = pipeline(make_model(pretrained_state), 12, tmp_path, flip=True, batch_size=16)
    acts = cached.activations(images).float()
    (batch,) = list(cached.train_batches(images, torch.arange(16), torch.Generator().manual_seed(1)))
    flipped = [not torch.equal(batch.inputs[i], acts[i]) for i in range(16)]
    for i in range(16):
        assert torch.equal(batch.inputs[i], acts[i].flip(-1) if flipped[i] else acts[i])
    assert 0 < sum(flipped) < 16
    (again,) = list(cached.train_batches(images, torch.arange(16), torch.Generator().manual_seed(1)))
    assert torch.equal(again.inputs, batch.inputs)  # the generator decides: runs are reproducible


def test_encode_flip_averages_outputs_on_the_input_and_its_mirror(pretrained_state, tmp_path) -> None:
    from hashkit.api import Hasher

    images = pixel_images(6, seed=2)
    mirrored = ImageCollection(images.labels, pixels=images.pixels[:, :, ::-1].copy(), source="toy-mirrored")
    model = make_model(pretrained_state).eval()
    full = ImagePipeline(model, image_size=SIZE, batch_size=8, num_workers=0, device=CPU, encode_flip=True)
    x = torch.stack([full.eval_transform(images.load(i)) for i in range(len(images))])
    with torch.no_grad():  # the obvious reference: the whole network on the image and on its mirror
        want = 0.5 * (model(x) + model(x.flip(-1)))
    torch.testing.assert_close(full.encode(images), want, rtol=1e-5, atol=1e-5)
    plain = ImagePipeline(model, image_size=SIZE, batch_size=8, num_workers=0, device=CPU).encode(images)
    assert (plain - want).abs().max() > 1e-3  # off by default, and the averaging does change outputs
    torch.testing.assert_close(full.encode(mirrored), full.encode(images), rtol=1e-5, atol=1e-5)  # mirror-invariant

    # Under --train-from the mirror is taken of the cached activations the trained stages see.
    cached = pipeline(model, 12, tmp_path, flip=False, encode_flip=True)
    acts = cached.activations(images).float()
    with torch.no_grad():
        want_cached = 0.5 * (model(acts, start=12) + model(acts.flip(-1), start=12))
    torch.testing.assert_close(cached.encode(images), want_cached, rtol=1e-5, atol=1e-5)

    # hashkit.load(...).encode mirrors at the same place as the run's own evaluation.
    for config, reference in (({"train_from": None}, want), ({"train_from": "block11"}, want_cached)):
        hasher = Hasher(model, {"image_size": SIZE, "encode_flip": True, **config}, {}, CPU)
        with torch.no_grad():
            got = hasher.outputs(x)
        scale = 2e-2 if config["train_from"] else 1e-5  # the cache holds float16 activations
        torch.testing.assert_close(got, reference, rtol=0, atol=scale * float(reference.abs().max()))
    with torch.no_grad():
        assert torch.equal(Hasher(model, {"image_size": SIZE}, {}, CPU).outputs(x), model(x))

    with pytest.raises(HashkitError, match="--encode-flip"):
        pipeline(model, len(model.backbone), tmp_path, encode_flip=True).encode(images)


# ---------------------------------------------------------------- training keeps the prefix frozen


def test_training_leaves_the_frozen_prefix_untouched(pretrained_state, tmp_path) -> None:
    images = pixel_images(16)
    model = make_model(pretrained_state)
    cached = pipeline(model, 12, tmp_path)
    prefix_before = {k: v.clone() for k, v in model.backbone[:12].state_dict().items()}
    suffix_before = {k: v.clone() for k, v in model.backbone[12:].state_dict().items()}
    optimizer = build_optimizer(model, {"lr": 1e-3, "hash_lr_mult": 1.0, "weight_decay": 1e-5, "optimizer": "adam"})
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not trained & {id(p) for p in model.backbone[:12].parameters()}
    assert {id(p) for p in model.backbone[12:].parameters()} <= trained
    model.train()  # what the Trainer does every epoch
    stages = list(model.backbone.children())
    assert not any(m.training for stage in stages[:12] for m in stage.modules())
    assert all(m.training for stage in stages[12:] for m in stage.modules())
    for batch in cached.train_batches(images, torch.randperm(16), torch.Generator().manual_seed(0)):
        loss = (cached.forward(batch.inputs) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone[:12].state_dict()
    assert all(torch.equal(after[k], v) for k, v in prefix_before.items())
    suffix_after = model.backbone[12:].state_dict()
    assert not torch.equal(suffix_after["block11.dw_bn.running_mean"], suffix_before["block11.dw_bn.running_mean"])
    assert cached.key.weights == state_dict_hash(model.backbone[:12])


def test_freeze_depthwise_keeps_only_the_depthwise_weights(pretrained_state, tmp_path) -> None:
    """--freeze-depthwise: the 16 depthwise convolutions keep their weights; the layers below them still
    get gradients through them (the expand convolution of block11 changes), the rest trains."""
    images = pixel_images(16)
    model = make_model(pretrained_state)
    assert freeze_depthwise_convolutions(model.backbone) == 16
    assert freeze_depthwise_convolutions(nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 8, 1))) == 0
    cached = pipeline(model, 12, tmp_path)
    before = {k: v.clone() for k, v in model.backbone[12:].state_dict().items()}
    optimizer = build_optimizer(model, {"lr": 1e-3, "hash_lr_mult": 1.0, "weight_decay": 1e-5, "optimizer": "adam"})
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 16 and not trained & {id(m.weight) for m in depthwise}
    model.train()
    for batch in cached.train_batches(images, torch.randperm(16), torch.Generator().manual_seed(0)):
        loss = (cached.forward(batch.inputs) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone[12:].state_dict()
    changed = {k for k, v in before.items() if not torch.equal(after[k], v)}
    assert not any(k.endswith("dw_conv.weight") for k in changed)
    assert {"block11.expand_conv.weight", "block11.project_conv.weight", "block15.expand_conv.weight"} <= changed


# ---------------------------------------------------------------- real CIFAR-10: train, then evaluate


def test_train_then_evaluate_reproduces_the_map_on_real_cifar10(cifar_tar, hashkit_cache, tmp_path, monkeypatch) -> None:
    from hashkit.run import evaluate, train

    config = ({
        "method": "dpsh", "code_length": 16, "dataset": "cifar10", "root": str(cifar_tar), "seed": 1,
        "num_query": 20, "num_train": 30, "num_database": 40, "out": str(tmp_path / "run"), "cpu_recipe": True,
        "image_size": 32, "max_iter": 2, "batch_size": 16, "metrics": "map",
    })  # fmt: skip
    result = train(config)
    assert result["status"] == "finished" and result["config"]["train_from"] == "block11"
    assert result["config"]["encode_flip"] is True  # the recipe's flip-averaged encoding, reproduced below
    folder = next((hashkit_cache / "features" / "cifar10").glob("efficientnet_lite0-block11-32px-*"))
    assert sum(1 for _ in folder.glob("shard-*")) >= 1

    computed = []
    real = cached_pipeline.compute_activations
    monkeypatch.setattr(cached_pipeline, "compute_activations", lambda *a, **k: computed.append(1) or real(*a, **k))
    evaluated = evaluate(str(tmp_path / "run" / "checkpoint.pt"), {})
    assert evaluated["map"] == pytest.approx(result["map"], abs=1e-6)
    assert computed == []  # evaluation read the cache
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    pretrained = build_model("efficientnet_lite0", 16, pretrained=True).state_dict()
    assert all(torch.equal(checkpoint["model"][k], pretrained[k]) for k in pretrained if k.startswith(tuple(
        f"backbone.{name}." for name in ["stem"] + [f"block{i}" for i in range(11)])))  # fmt: skip


def test_augmented_views_are_cached_once_and_drawn_for_training(pretrained_state, tmp_path) -> None:
    images = pixel_images(6)
    model = make_model(pretrained_state).eval()
    cached = pipeline(model, 12, tmp_path, flip=False, views=2, batch_size=6)
    where = cached.locate_views(images)
    assert where.shape == (6, 3, 2) and cached.computed == 6 + 12
    # A view is the prefix's output for a fixed random crop + flip of the image, at the input size.
    augmented = feature_cache.AugmentedViews(images, item_keys(images), 2, SIZE, "bicubic")
    view = augmented.load(3)  # image 1, view 2
    assert view.size == (SIZE, SIZE) and np.array_equal(np.asarray(view), np.asarray(augmented.load(3)))
    x = ImagePipeline(model, image_size=SIZE, batch_size=8, num_workers=0, device=CPU).eval_transform(view)
    with torch.no_grad():
        want = model.backbone[:12](x[None])[0]
    got = cached.store.gather(where[1:2, 2])[0].float()
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3 * float(want.abs().max()))
    assert not torch.equal(cached.store.gather(where[:, 1]), cached.store.gather(where[:, 0]))
    # Another pipeline reuses them; training batches draw from the original and its views.
    again = pipeline(make_model(pretrained_state), 12, tmp_path, flip=False, views=2, batch_size=6)
    where = again.locate_views(images)
    assert again.computed == 0
    assert torch.equal(again.store.gather(where[1:2, 2])[0], cached.store.gather(cached.locate_views(images)[1:2, 2])[0])
    drawn = set()
    for seed in range(4):
        (batch,) = list(again.train_batches(images, torch.arange(6), torch.Generator().manual_seed(seed)))
        for i in range(6):
            options = [again.store.gather(where[i : i + 1, v])[0].float() for v in range(3)]
            (match,) = [v for v in range(3) if torch.equal(batch.inputs[i], options[v])]
            drawn.add(match)
    assert drawn == {0, 1, 2}

"""The input-pipeline seam (hashkit.pipeline): both pipelines implement InputPipeline, the training
view torchrun uses leaves the pipeline untouched, one encoding loop serves training, evaluation and
``hashkit.load``, and one preprocessing definition (hashkit.transforms) serves the image path and the
feature cache bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import use_tiny_backbones  # noqa: E402

from hashkit.api import Hasher  # noqa: E402
from hashkit.cached_pipeline import CachedPipeline  # noqa: E402
from hashkit.data.base import ImageCollection, one_hot  # noqa: E402
from hashkit.errors import HashkitError  # noqa: E402
from hashkit.feature_cache import ResizedImages  # noqa: E402
from hashkit.model import binarize, build_model  # noqa: E402
from hashkit.pipeline import ImagePipeline, InputPipeline, encode_batches  # noqa: E402
from hashkit.transforms import (  # noqa: E402
    RECIPES, TEST_TRANSFORMS, TRAIN_TRANSFORMS, build_transform, describe, normalize_batch, pil_resample,
)

CPU = torch.device("cpu")


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch):
    use_tiny_backbones(monkeypatch)
    torch.manual_seed(0)
    return build_model("tiny-bn", 16, pretrained=False)


def images(n: int, size: int = 20, seed: int = 0) -> ImageCollection:
    """Random images of ``size`` px (not the input size: every path must resize them the same way)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ImageCollection(one_hot(np.arange(n) % 3, 3), pixels=pixels, source="toy")


def image_pipeline(model, **kw) -> ImagePipeline:
    return ImagePipeline(model, image_size=32, batch_size=4, num_workers=0, device=CPU, **kw)


def cached_pipeline(model, tmp_path: Path, **kw) -> CachedPipeline:
    return CachedPipeline(model, 1, dataset="toy", image_size=32, batch_size=4, num_workers=0, device=CPU,
                          cache_dir=str(tmp_path), **kw)  # fmt: skip


class Counting(nn.Module):
    """Stands in for a DistributedDataParallel wrapper: runs the model, counts its calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module, self.calls = model, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def test_both_pipelines_are_input_pipelines(model, tmp_path: Path) -> None:
    for pipeline in (image_pipeline(model), cached_pipeline(model, tmp_path)):
        assert isinstance(pipeline, InputPipeline)
        assert pipeline.model is model and pipeline.batch_size == 4


@pytest.mark.parametrize("kind", ["image", "cached"])
def test_for_training_runs_the_given_network_and_leaves_the_pipeline_alone(model, tmp_path: Path, kind: str) -> None:
    pipeline = image_pipeline(model) if kind == "image" else cached_pipeline(model, tmp_path, flip=False)
    data = images(10)
    wrapper = Counting(model)
    view = pipeline.for_training(wrapper, 3)
    assert view.batch_size == 3 and pipeline.batch_size == 4 and view.model is model
    order = torch.arange(10)
    batches = list(view.train_batches(data, order, torch.Generator().manual_seed(0)))
    assert [len(b.index) for b in batches] == [3, 3, 3, 1]
    assert [len(b.index) for b in pipeline.train_batches(data, order, torch.Generator().manual_seed(0))] == [4, 4, 2]
    model.eval()
    with torch.no_grad():
        got = view.forward(batches[0].inputs)
        assert wrapper.calls == 1
        assert torch.equal(got, pipeline.forward(batches[0].inputs)) and wrapper.calls == 1  # the pipeline runs the model


def test_one_encode_loop_restores_the_mode_and_handles_nothing(model) -> None:
    model.train()
    out = encode_batches(model, iter([torch.ones(2, 3), torch.zeros(1, 3)]), lambda x: x.sum(1, keepdim=True) * 2,
                         total=3, width=1, show_progress=False)  # fmt: skip
    assert model.training and out.tolist() == [[6.0], [6.0], [0.0]]
    assert encode_batches(model, iter([]), model, total=0, width=16).shape == (0, 16)
    model.eval()
    encode_batches(model, iter([]), model, total=0, width=16)
    assert not model.training


def test_api_encodes_as_the_image_pipeline(model) -> None:
    """hashkit.load(...).encode and the run's evaluation share transform, loop and network: equal codes."""
    data = images(7, size=40)
    want = binarize(image_pipeline(model).encode(data)).to(torch.int8).numpy()
    hasher = Hasher(model, {"image_size": 32, "code_length": 16}, {}, CPU)
    assert np.array_equal(hasher.encode(data, batch_size=3, progress=False), want)
    assert hasher.encode([], progress=False).shape == (0, 16)


def test_the_feature_cache_preprocesses_exactly_as_the_evaluation_transform(model) -> None:
    spec = model.backbone.input_spec
    data = images(5, size=23)
    transform = build_transform(spec, 32, train=False)
    want = torch.stack([transform(data.load(i)) for i in range(len(data))])
    resized = ResizedImages(data, 32, spec.interpolation)
    got = normalize_batch(torch.stack([resized[i] for i in range(len(data))]), spec.mean, spec.std)
    assert torch.equal(got, want)
    # the default evaluation transform is what it always was: a PIL resize to size × size, then normalise
    old = T.Compose([T.Resize((32, 32), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    assert torch.equal(torch.stack([old(data.load(i)) for i in range(len(data))]), want)
    image = data.load(0)
    assert np.array_equal(np.asarray(resized[0]), np.asarray(image.resize((32, 32), pil_resample(spec.interpolation))))


def test_transform_recipes(model) -> None:
    spec = model.backbone.input_spec
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    for name in TRAIN_TRANSFORMS:
        assert build_transform(spec, 24, train=True, name=name)(image).shape == (3, 24, 24), name
    for name in TEST_TRANSFORMS:
        expected = (10, 3, 24, 24) if name == "ten_crop" else (3, 24, 24)
        assert build_transform(spec, 24, train=False, name=name)(image).shape == expected, name
    assert set(TRAIN_TRANSFORMS) | set(TEST_TRANSFORMS) == set(RECIPES)
    with pytest.raises(HashkitError, match="--test-transform .nope. is unknown; valid: resize, center_crop, resize256_centercrop224, resize256x256_centercrop224, ten_crop"):
        build_transform(spec, 24, train=False, name="nope")
    with pytest.raises(HashkitError, match="resize filter"):
        pil_resample("sharpest")
    assert pil_resample("bicubic") == Image.BICUBIC and pil_resample("bilinear") == Image.BILINEAR
    # the cache key's text of the default recipe is the one caches were written under before recipes existed
    assert describe(spec, 32) == ("resize bilinear 32x32 (PIL), to [0,1], normalize mean [0.5, 0.5, 0.5] "
                                  "std [0.25, 0.25, 0.25]")  # fmt: skip


def test_retrieval_api_does_not_import_the_training_path() -> None:
    code = "import sys, hashkit.api; print(' '.join(sorted(m for m in sys.modules if m.startswith(('hashkit', 'methods')))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "hashkit.api" in loaded and "hashkit.pipeline" in loaded
    for module in ("hashkit.trainer", "hashkit.run", "hashkit.cached_pipeline", "hashkit.feature_cache", "methods"):
        assert module not in loaded


def test_the_cached_pipeline_caches_the_configured_evaluation_transform(model, tmp_path: Path) -> None:
    """--freeze-backbone / --train-from cache the frozen part's outputs under the run's --test-transform (a seed
    recipe's Resize(256) + CenterCrop(224) reaches the frozen features): the cached pipeline encodes as the image
    pipeline does with that transform, and differently from the plain resize. ten_crop is refused in one line.
    Fails if build_cached_pipeline stops passing test_transform (every config would cache the resize)."""
    from hashkit.cached_pipeline import build_cached_pipeline

    data = images(6, size=40)
    config = {"dataset": "cifar10", "image_size": 32, "batch_size": 4, "cache_dir": str(tmp_path),
              "freeze_backbone": True, "test_transform": "resize256_centercrop224"}  # fmt: skip
    cached = build_cached_pipeline(config, model, CPU)
    assert cached is not None and cached.recipe == "resize256_centercrop224"
    want = image_pipeline(model, test_transform="resize256_centercrop224").encode(data)
    got, resized = cached.encode(data), image_pipeline(model).encode(data)
    assert torch.allclose(got, want, atol=1e-4)  # cached activations, then the top of the network
    assert (resized - want).abs().max() > 10 * (got - want).abs().max()
    with pytest.raises(HashkitError, match="--test-transform ten_crop cannot be cached"):
        build_cached_pipeline({**config, "test_transform": "ten_crop"}, model, CPU)

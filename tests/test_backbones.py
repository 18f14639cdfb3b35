"""Backbones: shapes, stage splitting, weight files, offline errors, TF-SAME padding and real Lite0 weights."""

from __future__ import annotations

import io
import math
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from hashkit.backbones import Backbone, InputSpec, build_backbone
from hashkit.backbones.efficientnet_lite import Conv2dSame, efficientnet_lite0_classifier
from hashkit.errors import HashkitError
from hashkit.registry import BACKBONES

CIFAR_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg.tar"
SIZE = 64  # alexnet needs >= 63 px, the others work at 32
EXPECTED = {  # arch -> (feature_dim, stage names); a new registered arch only needs to be added here
    "alexnet": (4096, ["conv1", "conv2", "conv3", "conv4", "conv5", "pool", "fc6", "fc7"]),
    "vgg16": (4096, ["conv1", "conv2", "conv3", "conv4", "conv5", "pool", "fc6", "fc7"]),
    "resnet50": (2048, ["stem", "layer1", "layer2", "layer3", "layer4", "pool"]),
    "efficientnet_lite0": (1280, ["stem", *[f"block{i}" for i in range(16)], "head"]),
}


@pytest.fixture(scope="module")
def built() -> dict[str, Backbone]:
    """Each registered arch, random init, eval mode (so dropout and BN are deterministic)."""
    torch.manual_seed(0)
    return {arch: build_backbone(arch, pretrained=False).eval() for arch in BACKBONES.names()}


@pytest.mark.parametrize("arch", BACKBONES.names())
def test_forward_split_and_stages(arch: str, built: dict[str, Backbone]) -> None:
    bb = built[arch]
    dim, names = EXPECTED[arch]
    assert isinstance(bb, Backbone) and isinstance(bb, torch.nn.Sequential)
    assert bb.arch == arch and bb.feature_dim == dim and bb.stage_names == names
    assert isinstance(bb.input_spec, InputSpec) and bb.input_spec.default_size == 224
    assert bb.input_spec.interpolation in ("bicubic", "bilinear")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        full = bb(x)
        k = len(bb) // 2
        head, tail = bb[:k], bb[k:]
        split = tail(head(x))
    assert full.shape == (2, dim) and torch.isfinite(full).all()
    assert torch.allclose(split, full, atol=1e-5)
    assert isinstance(head, Backbone) and head.stage_names == names[:k] and head.feature_dim is None
    assert isinstance(tail, Backbone) and tail.stage_names == names[k:] and tail.feature_dim == dim
    assert tail.arch == arch and tail.input_spec == bb.input_spec
    # The split shares modules with the original (freezing bb[:k] freezes bb's parameters).
    assert next(iter(head.parameters())) is next(iter(bb.parameters()))
    # stage_index: names, ints, negative ints and numeric strings; errors list the valid names.
    assert bb.stage_index(names[k]) == k and bb.stage_index(k) == k
    assert bb.stage_index(-1) == len(names) - 1 and bb.stage_index(str(k)) == k
    for bad in ("nope", len(names), -len(names) - 1):
        with pytest.raises(HashkitError, match=f"valid stages: {', '.join(names)}"):
            bb.stage_index(bad)


def test_channels_last_matches_contiguous(built: dict[str, Backbone]) -> None:
    bb = built["efficientnet_lite0"]
    x = torch.randn(2, 3, 70, 69)  # odd and even sizes exercise both SAME-padding cases
    with torch.no_grad():
        ref = bb(x)
        bb.to(memory_format=torch.channels_last)
        try:
            out = bb(x.to(memory_format=torch.channels_last))
        finally:
            bb.to(memory_format=torch.contiguous_format)
    assert torch.allclose(out, ref, atol=1e-4)


def tf_same_reference(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """Slow, obvious TF "SAME": out = ceil(n / s); total pad = (out-1)*s + k - n; the extra one at the end."""
    n_h, n_w = x.shape[-2:]
    k = weight.shape[-1]
    pads = []
    for n in (n_h, n_w):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    padded = torch.zeros(x.shape[0], x.shape[1], n_h + top + bottom, n_w + left + right)
    padded[:, :, top : top + n_h, left : left + n_w] = x
    return F.conv2d(padded, weight, stride=stride, groups=groups)


@pytest.mark.parametrize("kernel,stride,groups", [(3, 2, 1), (5, 2, 4), (3, 1, 4), (5, 1, 1), (1, 1, 1)])
@pytest.mark.parametrize("size", [(8, 8), (9, 7), (16, 11)])
def test_conv2d_same_matches_tf_rule(kernel: int, stride: int, groups: int, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    conv = Conv2dSame(4, 8, kernel, stride, groups=groups)
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        out = conv(x)
    assert out.shape[-2:] == (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert torch.allclose(out, tf_same_reference(x, conv.weight.detach(), stride, groups), atol=1e-5)


# ---- weights files and offline errors (torchvision nets) ----


def test_torchvision_state_dict_file_loads(tmp_path: Path) -> None:
    torch.manual_seed(2)
    ref = torchvision.models.alexnet(weights=None).eval()
    file = tmp_path / "alexnet.pth"
    torch.save(ref.state_dict(), file)
    bb = build_backbone("alexnet", weights=str(file)).eval()  # a file wins over pretrained: no download
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.flatten(ref.avgpool(ref.features(x)), 1)
        expected = ref.classifier[:6](expected)  # up to fc7 + ReLU (+ dropout, identity in eval)
        got = bb(x)
    assert torch.equal(got, expected)
    # The backbone's own state dict round-trips as well.
    own = tmp_path / "own.pth"
    torch.save(bb.state_dict(), own)
    bb2 = build_backbone("alexnet", pretrained=False, weights=str(own)).eval()
    with torch.no_grad():
        assert torch.equal(bb2(x), got)


def test_resnet_file_with_old_batchnorm_keys(tmp_path: Path) -> None:
    """Old checkpoints lack num_batches_tracked; the torchvision fc is ignored, the rest must match."""
    torch.manual_seed(3)
    ref = torchvision.models.resnet50(weights=None).eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "r50.pth")
    bb = build_backbone("resnet50", weights=str(tmp_path / "r50.pth")).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref.fc = torch.nn.Identity()
        assert torch.allclose(bb(x), ref(x), atol=1e-6)


def test_bad_weights_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(HashkitError, match="nope.pth.*does not exist"):
        build_backbone("alexnet", weights=str(missing))
    state = torchvision.models.alexnet(weights=None).state_dict()
    state["features.0.weight_typo"] = state.pop("features.0.weight")
    bad = tmp_path / "bad_keys.pth"
    torch.save(state, bad)
    with pytest.raises(HashkitError, match=r"bad_keys\.pth.*features\.0\.weight_typo.*missing keys"):
        build_backbone("alexnet", weights=str(bad))
    vgg = tmp_path / "vgg_for_alexnet.pth"
    torch.save(torchvision.models.vgg11(weights=None).features.state_dict(), vgg)
    with pytest.raises(HashkitError, match="vgg_for_alexnet.pth"):
        build_backbone("alexnet", weights=str(vgg))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(HashkitError, match="junk.pth.*not a loadable state dict"):
        build_backbone("alexnet", weights=str(junk))
    lite = tmp_path / "lite.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "bogus": torch.zeros(1)}, lite)
    with pytest.raises(HashkitError, match=r"lite\.pth.*unexpected keys: bogus.*missing keys: stem\.bn\.weight"):
        build_backbone("efficientnet_lite0", weights=str(lite))


def test_offline_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: torchvision must download

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(HashkitError) as info:
        build_backbone("resnet50", pretrained=True)
    message = str(info.value)
    assert "resnet50" in message and "no internet" in message and "\n" not in message
    for hint in ("--weights FILE", "--arch efficientnet_lite0", "--no-pretrained"):
        assert hint in message


# ---- EfficientNet-Lite0's shipped ImageNet weights are real ----

SHIP_LIKE = {  # ImageNet classes a CIFAR "ship" may look like ("amphibian" is the amphibious vehicle)
    "container ship", "liner", "fireboat", "speedboat", "lifeboat", "schooner", "yawl", "catamaran",
    "trimaran", "wreck", "aircraft carrier", "submarine", "pirate", "canoe", "gondola", "paddlewheel",
    "dock", "breakwater", "boathouse", "amphibian", "drilling platform", "paddle",
}  # fmt: skip


def _cifar_batch(tar: tarfile.TarFile, cls: str, n: int) -> torch.Tensor:
    """The first n CIFAR-10 test images of a class, bicubic to 224 px, normalised to [-1, 1]."""
    images = []
    for i in range(n):
        data = tar.extractfile(f"test/{cls}/{i:04d}.jpg").read()  # type: ignore[union-attr]
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return (torch.stack(images) - 0.5) / 0.5


def test_efficientnet_lite0_pretrained_recognises_ships() -> None:
    if not CIFAR_TAR.is_file():
        pytest.skip(f"CIFAR-10 tar not found at {CIFAR_TAR} (the shared data folder next to the repo)")
    categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    ship_ids = {categories.index(name) for name in SHIP_LIKE}
    bb = build_backbone("efficientnet_lite0", pretrained=True).eval()
    assert bb.input_spec == InputSpec((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 224)
    fc = efficientnet_lite0_classifier().eval()
    rates = {}
    with tarfile.open(CIFAR_TAR) as tar, torch.no_grad():
        for cls in ("ship", "frog"):
            top5 = fc(bb(_cifar_batch(tar, cls, 40))).topk(5, dim=1).indices.tolist()
            rates[cls] = sum(bool(ship_ids & set(row)) for row in top5) / len(top5)
    # Measured: ships 0.675 (27/40), frogs 0.0. Symmetric instead of TF-SAME padding drops ships below 0.6.
    assert rates["ship"] >= 0.6, rates
    assert rates["frog"] <= 0.1, rates

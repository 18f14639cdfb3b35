"""What the recipe flags mean in the model, the optimiser, the scheduler and the transforms (issue 17)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from PIL import Image
from torch import nn

from hashkit.backbones.base import Backbone, InputSpec
from hashkit.errors import HashkitError
from hashkit.model import HashModel, binarize
from hashkit.trainer import build_optimizer, build_scheduler
from hashkit.transforms import build_transform

SPEC = InputSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear", default_size=32)


def fc_backbone() -> Backbone:
    """A tiny AlexNet-like backbone whose last stage is fc7 = Dropout, Linear, ReLU (as torchvision's)."""
    stages = OrderedDict(
        pool=nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(1)),
        fc7=nn.Sequential(nn.Dropout(), nn.Linear(12, 16), nn.ReLU(inplace=True)),
    )
    return Backbone(stages, feature_dim=16, input_spec=SPEC, arch="toy")


def config(**overrides) -> dict:
    base = {"lr": 1e-3, "hash_lr_mult": 10.0, "weight_decay": 5e-4, "optimizer": "sgd", "max_iter": 10}
    return {**base, **overrides}


# ---------------------------------------------------------------- model

def test_tanh_activation_init_std_and_codes() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8)
    plain = HashModel(fc_backbone(), 6).eval()
    tanh = HashModel(fc_backbone(), 6, hash_activation="tanh").eval()
    tanh.load_state_dict(plain.state_dict())
    assert torch.allclose(tanh(x), torch.tanh(plain(x)))
    assert torch.equal(binarize(tanh(x)), binarize(plain(x)))  # sign(tanh u) = sign u
    wide = HashModel(fc_backbone(), 2048, hash_init_std=0.01)
    assert wide.head.linear.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.all(wide.head.linear.bias == 0)
    with pytest.raises(HashkitError, match="--hash-activation"):
        HashModel(fc_backbone(), 6, hash_activation="sigmoid")


def test_relu_linear_head_takes_fc7_before_its_relu() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8)
    seed_head = HashModel(fc_backbone(), 6, hash_head="relu_linear").eval()
    fc7 = seed_head.backbone[1]
    assert [type(m) for m in fc7] == [nn.Dropout, nn.Linear]  # the trailing ReLU is gone
    features = seed_head.backbone(x)
    assert (features < 0).any()  # pre-activation features (what SSDH's structure is built on)
    expected = seed_head.head.linear(torch.relu(features))  # the seed's ReLU → Linear head
    assert torch.allclose(seed_head(x), expected)


def test_ten_crop_outputs_are_the_mean_over_the_crops() -> None:
    torch.manual_seed(2)
    model = HashModel(fc_backbone(), 6).eval()
    views = torch.randn(3, 10, 3, 8, 8)
    out = model.encode_outputs(views)
    expected = torch.stack([model(views[i]).mean(dim=0) for i in range(3)])
    assert torch.allclose(out, expected, atol=1e-6)


# ---------------------------------------------------------------- transforms

def test_transforms_by_name() -> None:
    image = Image.new("RGB", (40, 30), color=(200, 10, 90))
    assert build_transform(SPEC, 24, train=True)(image).shape == (3, 24, 24)
    assert build_transform(SPEC, 24, train=True, name="resized_crop_flip")(image).shape == (3, 24, 24)
    assert build_transform(SPEC, 24, train=False, name="center_crop")(image).shape == (3, 24, 24)
    ten = build_transform(SPEC, 24, train=False, name="ten_crop")(image)
    assert ten.shape == (10, 3, 24, 24)
    with pytest.raises(HashkitError, match="--test-transform"):
        build_transform(SPEC, 24, train=False, name="resized_crop_flip")


# ---------------------------------------------------------------- optimiser and scheduler

def test_optimizers_groups_momentum_and_nesterov() -> None:
    model = HashModel(fc_backbone(), 6)
    sgd = build_optimizer(model, config(nesterov=True))
    assert isinstance(sgd, torch.optim.SGD)
    assert [g["lr"] for g in sgd.param_groups] == [1e-3, 1e-2]  # backbone, hash layer × hash_lr_mult
    assert all(g["momentum"] == 0.9 and g["nesterov"] and g["weight_decay"] == 5e-4 for g in sgd.param_groups)
    rms = build_optimizer(model, config(optimizer="rmsprop", hash_lr_mult=1.0))
    assert isinstance(rms, torch.optim.RMSprop) and rms.param_groups[0]["momentum"] == 0.0
    assert build_optimizer(model, config(optimizer="rmsprop", momentum=0.5)).param_groups[0]["momentum"] == 0.5
    with pytest.raises(HashkitError, match="--nesterov"):
        build_optimizer(model, config(optimizer="adam", nesterov=True))


def lrs(cfg: dict, intervals: int, steps_per_epoch: int | None = None) -> list[list[float]]:
    optimizer = build_optimizer(HashModel(fc_backbone(), 6), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    out = []
    for _ in range(intervals):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def test_schedules_are_torchs() -> None:
    cosine = lrs(config(lr_schedule="cosine", lr_eta_min=1e-5, hash_lr_mult=1.0), 11)
    assert cosine[0][0] == pytest.approx(1e-3) and cosine[10][0] == pytest.approx(1e-5)
    exponential = lrs(config(lr_schedule="exponential", lr_gamma=0.9), 4)
    assert [row[1] for row in exponential] == pytest.approx([1e-2 * 0.9**k for k in range(4)])
    step = lrs(config(lr_schedule="step", lr_gamma=0.5, lr_step_size=2, lr_interval="step"), 6)
    assert [row[0] for row in step] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    constant = lrs(config(), 3)
    assert constant == [[1e-3, 1e-2]] * 3
    per_step_cosine = build_scheduler(build_optimizer(HashModel(fc_backbone(), 6), config(lr_schedule="cosine",
                                      lr_interval="step")), config(lr_schedule="cosine", lr_interval="step"), 7)
    assert per_step_cosine.T_max == 70
    with pytest.raises(HashkitError, match="--lr-gamma"):
        lrs(config(lr_schedule="exponential"), 1)

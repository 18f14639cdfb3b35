"""The method contract's capabilities (hashkit/method.py), each held by one example method of
tests/method_examples/ that is registered for its test only and put through the registry-wide checks of
tests/test_method_registry.py: trains, checkpoints, resumes bit-identically, evaluates (reproducing its mAP
from the checkpoint alone), encodes and searches. Plus what the contract refuses, per-data-set recipes, and
the heads.

Mutations these tests catch (one per capability): dropping ``batch.features`` in the Trainer (the
unsupervised example fails), drawing one view instead of ``views`` (the contrastive example's reshape fails),
leaving ``method_own_optimizers`` out of the checkpoint (the adversarial example's resume differs), building
an optimiser for a closed-form method (its checkpoint's ``optimizer`` is not None), and ignoring
``recipes["seed@cifar10"]`` (the dry-run test).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_method_registry import (  # noqa: E402
    check_encodes_and_searches,
    check_help_documents_hyperparameters,
    check_resume_after_interrupted_epoch,
    check_trains_evaluates_and_reproduces,
    check_unsupervised_ignores_labels,
    cli,
    tiny_argv,
    tiny_world,
    train_ok,
)

from hashkit.checkpoint import load_checkpoint  # noqa: E402
from hashkit.distributed import DistContext  # noqa: E402
from hashkit.errors import HashkitError  # noqa: E402
from hashkit.registry import HEADS, METHODS  # noqa: E402

EXAMPLES = {
    "pairwise_example": "PairwiseExample",
    "center_example": "CenterExample",
    "unsupervised_example": "UnsupervisedExample",
    "contrastive_example": "ContrastiveExample",
    "adversarial_example": "AdversarialExample",
    "closed_form_example": "ClosedFormExample",
}


def example(name: str) -> type:
    return getattr(importlib.import_module(f"method_examples.{name}"), EXAMPLES[name])


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    """Register an example method for this test only."""

    def register(name: str) -> type:
        METHODS.names()
        cls = example(name)
        monkeypatch.setitem(METHODS._entries, name, cls)
        return cls

    return register


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_method_passes_the_registry_checks(name: str, registered, tmp_path: Path, tiny_world, monkeypatch, capsys) -> None:
    cls = registered(name)
    check_help_documents_hyperparameters(name, capsys)
    check_trains_evaluates_and_reproduces(name, tmp_path / "train", capsys)
    check_resume_after_interrupted_epoch(name, tmp_path / "resume", monkeypatch)
    check_encodes_and_searches(name, tmp_path / "search", capsys)
    if not cls.supervised:
        check_unsupervised_ignores_labels(name, tmp_path / "labels", tiny_world)


def test_views_through_the_cached_path(registered, tmp_path: Path, tiny_world, monkeypatch, capsys) -> None:
    """Two views drawn among cached activations (``--train-from`` with cached views), with the MLP head:
    trains, reproduces its mAP and resumes bit-identically like the image path."""
    registered("contrastive_example")
    extra = ("--train-from", "pool", "--cached-views", "2", "--cache-dir", str(tmp_path / "cache"))
    check_trains_evaluates_and_reproduces("contrastive_example", tmp_path / "train", capsys, extra=extra)
    check_resume_after_interrupted_epoch("contrastive_example", tmp_path / "resume", monkeypatch, extra=extra)


def test_views_and_features_reach_the_method_with_their_shapes(registered, tmp_path: Path, tiny_world, monkeypatch) -> None:
    """outputs (b, views, bits) and features (b, views, d) for a method with views and features; the two
    views of an item differ (independent augmentations)."""
    cls = registered("contrastive_example")
    seen: dict[str, tuple] = {}
    real = cls.training_step

    def spy(self, outputs, batch):
        seen.setdefault("outputs", tuple(outputs.shape))
        seen.setdefault("features", tuple(batch.features.shape))
        seen.setdefault("differ", not torch.equal(batch.inputs[:, 0], batch.inputs[:, 1]))
        return real(self, outputs, batch)

    monkeypatch.setattr(cls, "needs_features", True)
    monkeypatch.setattr(cls, "training_step", spy)
    train_ok(tiny_argv("contrastive_example", tmp_path / "run", max_iter=1))
    assert seen == {"outputs": (8, 2, 8), "features": (8, 2, 24), "differ": True}


def test_closed_form_fit_is_pca_of_the_frozen_features(registered, tmp_path: Path, tiny_world) -> None:
    """The closed-form example's saved head is the PCA projection of the training split's features
    (computed here independently with numpy's SVD, up to each direction's sign)."""
    import numpy as np

    from hashkit.run import load_run

    registered("closed_form_example")
    out = tmp_path / "run"
    result = train_ok(tiny_argv("closed_form_example", out))
    assert result["history"][0]["losses"]["explained_variance"] > 0
    _, splits, model, _, pipeline, _ = load_run(out / "checkpoint.pt", {}, torch.device("cpu"))
    x = pipeline.features(splits.train).double().numpy()
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    weight = model.head.linear.weight.detach().double().numpy()
    for k in range(8):
        assert abs(abs(float(weight[k] @ vt[k])) - 1.0) < 1e-4, k
    np.testing.assert_allclose(model.head.linear.bias.detach().numpy(), -(weight @ x.mean(axis=0)), atol=1e-4)


def test_a_head_registered_by_a_method_file_encodes_from_the_saved_model(monkeypatch, registered, tmp_path: Path, tiny_world, capsys) -> None:
    """A head of a method's own (registered beside it) is part of the saved model: ``hashkit evaluate`` and
    ``hashkit.load`` rebuild it from the checkpoint and give the trained codes."""
    from torch import nn

    import hashkit
    from hashkit.heads import HashHead

    class ScaledHead(HashHead):
        def __init__(self, in_features: int, code_length: int, **_) -> None:
            super().__init__()
            self.linear = nn.Linear(in_features, code_length)
            self.scale = nn.Parameter(torch.full((code_length,), -1.0))  # flips every bit until trained

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.scale * self.linear(features)

    HEADS.names()
    monkeypatch.setitem(HEADS._entries, "scaled_example", ScaledHead)
    cls = registered("pairwise_example")
    monkeypatch.setattr(cls, "head", "scaled_example")
    check_trains_evaluates_and_reproduces("pairwise_example", tmp_path, capsys)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert "head.scale" in checkpoint["model"] and checkpoint["config"]["hash_head"] == "scaled_example"
    loaded = hashkit.load(tmp_path / "run" / "checkpoint.pt")
    assert isinstance(loaded.model.head, ScaledHead)


def test_capabilities_that_torchrun_cannot_share_are_refused_by_name(registered) -> None:
    from hashkit.config import resolve_config
    from hashkit.run import _validate

    two = DistContext(rank=0, world_size=2, local_rank=0)
    for name, reason in (
        ("contrastive_example", "draws 2 views of every item"),
        ("adversarial_example", "optimisation steps of its own"),
        ("closed_form_example", "fitted in closed form"),
    ):
        registered(name)
        config = resolve_config({"method": name, "arch": "efficientnet_lite0"})
        monkey_supported = METHODS.get(name)
        monkey_supported.supports_distributed, saved = True, monkey_supported.supports_distributed
        try:
            with pytest.raises(HashkitError, match=f"--method {name} cannot train under torchrun \\(2 processes\\): .*{reason}"):
                _validate(config, two)
        finally:
            monkey_supported.supports_distributed = saved


def test_a_method_without_the_hook_it_trains_by_is_refused_when_built() -> None:
    """A gradient-trained method must define training_step and a closed-form one fit; a class with neither is
    refused when it is built, naming the class and the missing hook (not at its first step, minutes later)."""
    from hashkit.method import HashingMethod

    class NoStep(HashingMethod):
        name = "no_step"

    class NoFit(HashingMethod):
        name = "no_fit"
        closed_form = True

        def training_step(self, outputs: torch.Tensor, batch) -> dict[str, torch.Tensor]:
            return {"loss": outputs.sum()}

    with pytest.raises(TypeError, match="'no_step' is trained by gradients but defines no training_step"):
        NoStep(8, {}, torch.device("cpu"))
    with pytest.raises(TypeError, match="'no_fit' is a closed-form method .* defines no fit"):
        NoFit(8, {}, torch.device("cpu"))
    for name in METHODS.names():  # every registered method has the hook its closed_form needs
        cls = METHODS.get(name)
        assert callable(getattr(cls, "fit" if cls.closed_form else "training_step", None)), name


@pytest.mark.parametrize("method", ["dpsh", "csq", "orthocos", "jmlh"])
def test_a_hash_activation_the_loss_cannot_use_is_refused_naming_the_method(method: str, capsys) -> None:
    argv = ["train", "--method", method, "--hash-activation", "tanh", "--dry-run", "--json"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--method {method} relaxes its outputs itself" in err[0] and "--hash-activation none" in err[0]


def test_a_tanh_relaxation_accepts_the_model_tanh(capsys) -> None:
    assert cli(["train", "--method", "dhn", "--hash-activation", "tanh", "--dry-run", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["method_contract"]["relaxation"] == "tanh" and shown["hash_activation"] == "tanh"


def test_recipe_per_data_set_wins_on_its_data_set_only(monkeypatch, capsys) -> None:
    """``recipes["seed@cifar10"]`` is applied on cifar10 on top of ``recipes["seed"]``, not elsewhere, and the
    dry run names the tables used; a flag still wins."""
    cls = METHODS.get("dpsh")
    recipes = {**cls.recipes, "seed@cifar10": {"train_transform": "resize", "max_iter": 7}}
    monkeypatch.setattr(cls, "recipes", recipes)

    def dry(*extra: str) -> dict:
        assert cli(["train", "--method", "dpsh", "--dry-run", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    cifar = dry("--dataset", "cifar10")
    assert cifar["recipe_layers"] == ["method:seed", "method:seed@cifar10"]
    assert cifar["train_transform_name"] == "resize" and cifar["max_iter"] == 7
    assert cifar["train_transform"] == ["Resize(224)", "ToTensor()", "Normalize(mean, std)"]
    other = dry("--dataset", "imagenet100")
    assert other["recipe_layers"] == ["method:seed"] and other["max_iter"] == recipes["seed"]["max_iter"]
    assert dry("--dataset", "cifar10", "--max-iter", "3")["max_iter"] == 3


def test_reference_transforms_by_name() -> None:
    from hashkit.transforms import step_names

    assert step_names("resize_flip_jitter", 224, train=True) == [
        "Resize(224)", "RandomHorizontalFlip()", "ColorJitter()", "ToTensor()", "Normalize(mean, std)"]
    assert step_names("resize256_randomcrop224_flip", 224, train=True)[:3] == [
        "Resize(256)", "RandomCrop(224)", "RandomHorizontalFlip()"]
    assert step_names("resize256_centercrop224", 224, train=False)[:2] == ["Resize(256)", "CenterCrop(224)"]


def test_a_checkpoint_from_before_heads_loads_into_the_linear_head() -> None:
    """State dicts written before heads existed name the linear layer ``hash_layer``."""
    from hashkit.model import build_model

    model = build_model("efficientnet_lite0", 16, pretrained=False)
    state = model.state_dict()
    legacy = {("hash_layer." + k[len("head.linear."):] if k.startswith("head.linear.") else k): v for k, v in state.items()}
    assert "hash_layer.weight" in legacy
    fresh = build_model("efficientnet_lite0", 16, pretrained=False)
    fresh.load_state_dict(legacy)
    assert torch.equal(fresh.head.linear.weight, model.head.linear.weight)


def test_unknown_head_is_one_line(capsys) -> None:
    assert cli(["train", "--method", "dpsh", "--hash-head", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hash-head 'nope' is unknown; valid heads: anchors, bn, fixed_linear, linear, mlp, no_bias, relu_linear, spectral" in err[0]

"""The one configuration resolution (hashkit/config.py): defaults < shared recipe < the method's recipe <
--from's fixed keys < flags given; --recipe / --cpu-recipe; --dry-run --json; schedulers from torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from loguru import logger

from hashkit.config import GLOBAL_DEFAULTS, describe_config, resolve_config
from hashkit.errors import HashkitError
from hashkit.recipes import CPU_RECIPE
from hashkit.registry import METHODS


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    logger.remove()
    logger.add(sys.stderr)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    dpsh = METHODS.get("dpsh")
    monkeypatch.setattr(dpsh, "recipes", {"seed": {"lr": 0.5, "max_iter": 7}, "cpu": {"lr": 0.25, "eta": 3.0}})
    seed = resolve_config({"method": "dpsh"})
    assert (seed["lr"], seed["max_iter"], seed["optimizer"], seed["recipe"]) == (0.5, 7, GLOBAL_DEFAULTS["optimizer"], "seed")
    assert seed["eta"] == dpsh.hyperparameters["eta"].default
    cpu = resolve_config({"method": "dpsh", "recipe": "cpu"})
    # the method's cpu values beat the shared CPU recipe, which beats the defaults
    assert (cpu["lr"], cpu["eta"], cpu["image_size"], cpu["train_from"]) == (0.25, 3.0, 128, CPU_RECIPE["train_from"])
    given = resolve_config({"method": "dpsh", "recipe": "cpu", "lr": 0.125, "eta": None, "image_size": 64})
    assert (given["lr"], given["eta"], given["image_size"]) == (0.125, 3.0, 64)  # None = not given


def test_cpu_recipe_flag_is_an_alias() -> None:
    a = resolve_config({"method": "hashnet", "cpu_recipe": True})
    b = resolve_config({"method": "hashnet", "recipe": "cpu"})
    assert a == b and a["cpu_recipe"] is True and a["recipe"] == "cpu"
    with pytest.raises(HashkitError, match="--cpu-recipe is an alias of --recipe cpu but --recipe seed"):
        resolve_config({"method": "hashnet", "cpu_recipe": True, "recipe": "seed"})
    with pytest.raises(HashkitError, match="--recipe 'gpu' is unknown; valid recipes: seed, cpu"):
        resolve_config({"method": "hashnet", "recipe": "gpu"})


REGULARISED_METHODS = (
    "jmlh", "csq", "dpn", "orthocos", "orthoarc", "greedyhash", "sdhc", "ce",  # catalogue I
    "dhn", "dsh", "dsdh", "dch", "dtsh", "dfh", "idhn", "mihash", "qsmih", "hyp2", "lcdsh", "dshsd", "mdsh",  # DBDH: below
)


@pytest.mark.parametrize("method", REGULARISED_METHODS)
def test_catalogue_cpu_recipe_is_the_regularised_one_unless_the_user_says(method: str) -> None:
    # measured per method (README CPU results, note 11): e.g. JMLH 0.7816 with these against 0.7683 without
    config = resolve_config({"method": method, "recipe": "cpu"})
    assert (config["max_iter"], config["cached_views"]) == (20, 8)
    assert (config["freeze_depthwise"], config["drop_path"], config["hash_dropout"]) == (True, 0.4, 0.6)
    assert resolve_config({"method": method, "recipe": "cpu", "max_iter": 32})["max_iter"] == 32
    assert resolve_config({"method": method, "recipe": "cpu", "drop_path": 0.0})["drop_path"] == 0.0
    assert resolve_config({"method": method})["max_iter"] != 20  # the seed recipe's epochs
    # with another backbone the recipe's EfficientNet-only values are left out (a user's own still apply)
    resnet = resolve_config({"method": method, "recipe": "cpu", "arch": "resnet50"})
    assert (resnet["freeze_depthwise"], resnet["drop_path"], resnet["hash_dropout"]) == (False, 0.0, 0.6)
    assert resolve_config({"method": method, "recipe": "cpu", "arch": "lite0"})["drop_path"] == 0.4  # an alias


def test_dbdh_cpu_recipe_centres_its_outputs() -> None:
    """DBDH's CPU recipe adds the bn head and drops the feature dropout (docs/results.md note 12); its seed keeps
    the reference's linear layer, and --hash-head wins over the recipe."""
    config = resolve_config({"method": "dbdh", "recipe": "cpu"})
    assert (config["hash_head"], config["hash_dropout"], config["drop_path"]) == ("bn", 0.0, 0.4)
    assert resolve_config({"method": "dbdh", "recipe": "seed"})["hash_head"] != "bn"
    assert resolve_config({"method": "dbdh", "recipe": "cpu", "hash_head": "linear"})["hash_head"] == "linear"


def test_mihash_cpu_recipe_is_the_hash_layer_on_frozen_features_at_the_authors_batch() -> None:
    """MIHash merges classes when the top blocks are fine-tuned (docs/results.md note 12): its CPU recipe trains the
    hash layer alone on the pooled features, in fcakir/deep-mihash's batch of 256 (get_opts.m)."""
    config = resolve_config({"method": "mihash", "recipe": "cpu"})
    assert (config["freeze_backbone"], config["batch_size"]) == (True, 256)
    assert config.get("train_from") is None and not config.get("encode_flip")  # left out under --freeze-backbone
    assert resolve_config({"method": "mihash", "recipe": "cpu", "batch_size": 64})["batch_size"] == 64


def test_methods_outside_the_regularised_recipe_keep_the_shared_one() -> None:
    dpsh = resolve_config({"method": "dpsh", "recipe": "cpu"})
    assert dpsh["max_iter"] == CPU_RECIPE["max_iter"] == 32
    assert (dpsh["freeze_depthwise"], dpsh["drop_path"], dpsh["hash_dropout"], dpsh["cached_views"]) == (False, 0.0, 0.0, 4)


def test_from_checkpoint_fixes_its_keys() -> None:
    """DIHN takes ADSH's incremental split from the --from checkpoint; a conflicting flag is refused."""
    adsh = {"arch": "efficientnet_lite0", "code_length": 16, "dataset": "cifar10", "seed": 3, "num_seen": 7,
            "num_query": 200, "num_database": None}  # fmt: skip
    config = resolve_config({"method": "dihn", "init_from": "adsh.pt"}, adsh)
    assert (config["num_seen"], config["seed"], config["num_query"], config["code_length"], config["arch"]) == (7, 3, 200, 16, "efficientnet_lite0")
    assert resolve_config({"method": "dihn", "init_from": "adsh.pt", "num_seen": 7}, adsh)["num_seen"] == 7
    with pytest.raises(HashkitError, match="--from adsh.pt was trained with --num-seen 7 but this command passes --num-seen 5"):
        resolve_config({"method": "dihn", "init_from": "adsh.pt", "num_seen": 5}, adsh)
    # other methods take only the network's shape from --from
    dpsh = resolve_config({"method": "dpsh", "init_from": "adsh.pt"}, adsh)
    assert dpsh["code_length"] == 16 and dpsh["seed"] == 0 and "num_seen" not in dpsh


def test_other_methods_hyperparameters_are_dropped() -> None:
    config = resolve_config({"method": "dhn", "eta": 3.0})
    assert "eta" not in config and config["lamda"] == METHODS.get("dhn").hyperparameters["lamda"].default


@pytest.mark.parametrize("method", METHODS.names())
def test_dry_run_json_of_every_method(method: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--dry-run --json`` prints the resolved configuration with the documented keys and loads nothing
    (its --root does not exist)."""
    from hashkit.cli import main

    argv = ["train", "--method", method, "--root", str(tmp_path / "missing"), "--dry-run", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method and out["recipe"] == "seed"
    assert set(out["optimizer"]) >= {"name", "lr", "weight_decay", "momentum", "nesterov"}
    assert out["optimizer"]["name"] in ("adam", "sgd", "rmsprop")
    assert out["scheduler"]["name"] in ("constant", "cosine", "exponential", "step")
    assert out["scheduler"]["interval"] in ("epoch", "step", "outer_iteration")
    assert isinstance(out["train_transform"], list) and all(isinstance(s, str) for s in out["train_transform"])
    assert isinstance(out["test_transform"], list) and out["hash_activation"] in (None, "tanh")
    assert not (tmp_path / "missing").exists() and not Path(out["out"]).exists()
    assert main(argv + ["--recipe", "cpu"]) == 0
    cpu = json.loads(capsys.readouterr().out)
    assert cpu["recipe"] == "cpu" and cpu["image_size"] == 128 and cpu["cached_activations"] is True


def test_describe_config_scheduler_parameters_use_torch_names() -> None:
    base = resolve_config({"method": "dpsh", "lr_schedule": "cosine", "lr_eta_min": 1e-7, "max_iter": 9})
    assert describe_config(base)["scheduler"] == {"name": "cosine", "interval": "epoch", "T_max": 9, "eta_min": 1e-7}
    step = resolve_config({"method": "dpsh", "lr_schedule": "step", "lr_step_size": 2000, "lr_gamma": 0.5, "lr_interval": "step"})
    assert describe_config(step)["scheduler"] == {"name": "step", "interval": "step", "step_size": 2000, "gamma": 0.5}
    adsh = resolve_config({"method": "adsh", "lr_schedule": "exponential", "lr_gamma": 0.9})
    assert describe_config(adsh)["scheduler"] == {"name": "exponential", "interval": "outer_iteration", "gamma": 0.9}
    sgd = describe_config(resolve_config({"method": "dpsh", "optimizer": "sgd", "momentum": 0.8, "nesterov": True}))
    assert (sgd["optimizer"]["momentum"], sgd["optimizer"]["nesterov"]) == (0.8, True)


def test_another_optimizer_than_the_recipes_drops_its_momentum_settings() -> None:
    seed = resolve_config({"method": "hashnet"})
    assert (seed["optimizer"], seed["momentum"], seed["nesterov"]) == ("sgd", 0.9, True)  # HashNet's seed
    adam = resolve_config({"method": "hashnet", "optimizer": "adam"})
    assert (adam["momentum"], adam["nesterov"]) == (None, False)
    same = resolve_config({"method": "hashnet", "optimizer": "sgd", "momentum": 0.5})
    assert (same["momentum"], same["nesterov"]) == (0.5, True)


def test_momentum_defaults_per_optimizer_when_no_recipe_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(METHODS.get("dpsh"), "recipes", {})
    assert resolve_config({"method": "dpsh", "optimizer": "sgd"})["momentum"] == 0.9
    assert resolve_config({"method": "dpsh", "optimizer": "rmsprop"})["momentum"] == 0.0
    assert resolve_config({"method": "dpsh", "optimizer": "adam"})["momentum"] is None


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"lr_schedule": "constant"}, [1.0, 1.0, 1.0, 1.0]),
        ({"lr_schedule": "exponential", "lr_gamma": 0.5}, [1.0, 0.5, 0.25, 0.125]),
        ({"lr_schedule": "step", "lr_step_size": 2, "lr_gamma": 0.1}, [1.0, 1.0, 0.1, 0.1]),
        ({"lr_schedule": "cosine", "lr_eta_min": 0.0, "max_iter": 4}, [1.0, 0.8535533905932737, 0.5, 0.14644660188293457]),
    ],
)
def test_schedulers_come_from_torch(flags: dict, expected: list[float]) -> None:
    """The lr of the first intervals, against the closed forms (cosine: eta_min + (1-eta_min)(1+cos(πt/T))/2)."""
    from hashkit.trainer import build_scheduler

    config = resolve_config({"method": "dpsh", "lr": 1.0, **flags})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config)
    seen = []
    for _ in expected:
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected, rel=1e-6)

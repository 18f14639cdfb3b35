"""--ema: the checkpoint, the evaluation and --resume use an exponential moving average of the weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_method_registry import (  # noqa: E402
    _assert_equal_state,
    check_resume_after_interrupted_epoch,
    cli,
    tiny_argv,
    tiny_world,  # noqa: F401  (a fixture)
    train_ok,
)

from hashkit.checkpoint import load_checkpoint  # noqa: E402

DECAY = 0.8


def test_checkpoint_holds_the_average_of_every_steps_weights(tmp_path: Path, tiny_world, monkeypatch, capsys) -> None:
    """The weights after each optimiser step are recorded; the checkpoint's "model" must be their running
    average e₁ = w₁, e_k = d·e_{k−1} + (1 − d)·w_k (written out here, in float64), batch-norm statistics included;
    the training weights travel beside it; ``hashkit evaluate`` (which reads "model") reproduces the trained mAP,
    so the training's own evaluation used the average too. Fails if the trainer saved its raw weights as "model"
    (as it did before --ema), or updated the average before the optimiser step."""
    steps: list[dict[str, torch.Tensor]] = []
    update = AveragedModel.update_parameters

    def recording(self: AveragedModel, model: torch.nn.Module) -> None:
        steps.append({name: value.detach().clone() for name, value in model.state_dict().items()})
        update(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", recording)
    out = tmp_path / "run"
    result = train_ok(tiny_argv("dpsh", out, "--ema", str(DECAY), max_iter=2))
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert len(steps) == 2 * 6 and checkpoint["ema_steps"] == len(steps)  # 48 training items / batch 8, 2 epochs
    _assert_equal_state(checkpoint["ema_training_model"], steps[-1])
    moved = 0
    for name, last in steps[-1].items():
        if not last.is_floating_point():
            continue
        expected = steps[0][name].double()
        for weights in steps[1:]:
            expected = DECAY * expected + (1.0 - DECAY) * weights[name].double()
        torch.testing.assert_close(checkpoint["model"][name].double(), expected, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.allclose(expected, last.double(), atol=1e-6)
    assert moved > 0  # the average is not the last weights
    capsys.readouterr()
    assert cli(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map"] == pytest.approx(result["map"], abs=1e-6)


def test_a_resumed_run_with_ema_is_bit_identical(tmp_path: Path, tiny_world, monkeypatch) -> None:
    """Ctrl-C inside epoch 2, then --resume: the average, the training weights and its step count are those
    of the uninterrupted run."""
    check_resume_after_interrupted_epoch("dpsh", tmp_path, monkeypatch, extra=("--ema", str(DECAY)))
    whole, resumed = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("whole", "resumed"))
    _assert_equal_state(whole["ema_training_model"], resumed["ema_training_model"])
    assert whole["ema_steps"] == resumed["ema_steps"] > 0


def test_ema_is_refused_where_it_means_nothing(tmp_path: Path, tiny_world, capsys) -> None:
    """A closed-form method takes no steps to average: one line, nothing written."""
    out = tmp_path / "itq"
    assert cli(tiny_argv("itq", out, "--ema", "0.9")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--ema: --method itq is fitted in closed form, with no steps to average; drop --ema"
    )
    assert not (out / "checkpoint.pt").exists()

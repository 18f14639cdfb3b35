"""Never lose a run: a SIGKILLed / SIGTERMed run resumes bit-identically, --resume refuses a changed run,
a non-finite loss stops with a clear line and keeps the last good checkpoint, a full disk keeps the
previous checkpoint.

The kill test runs tests/test_distributed.py as the ``hashkit`` command (a tiny BatchNorm + dropout
backbone registered) in subprocesses, on a synthetic CIFAR-10 image tree; the other tests call the CLI
entry point ``hashkit.cli.main`` in-process with the tiny backbones made available by
``use_tiny_backbones``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import HERE as RUNNER, tiny_env, use_tiny_backbones, write_tree  # noqa: E402

from hashkit.checkpoint import load_checkpoint  # noqa: E402


@pytest.fixture(autouse=True)
def restore_logging():
    """hashkit.cli.main points loguru at the test's captured stderr; put the default sink back after."""
    yield
    logger.remove()
    logger.add(sys.stderr)


def argv(root: Path, out: Path, *extra: str, arch: str = "tiny-bn", max_iter: int = 3) -> list[str]:
    return [
        "train", "--method", "dpsh", "--root", str(root), "--out", str(out), "--arch", arch, "--no-pretrained",
        "--image-size", "32", "--code-length", "16", "--num-query", "10", "--num-train", "40", "--batch-size", "4",
        "--max-iter", str(max_iter), "--lr", "0.01", "--evaluate-interval", "2",
        "--optimizer", "adam", "--lr-schedule", "constant", "--hash-lr-mult", "10", "--weight-decay", "1e-5", "--train-transform", "resize_flip",
        "--test-transform", "resize", *extra,
    ]  # fmt: skip


def start(args: list[str], sleep: float | None = None) -> subprocess.Popen:
    env = tiny_env()
    if sleep:
        env["HASHKIT_TEST_STEP_SLEEP"] = str(sleep)
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_epochs(out: Path, epochs: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll result.json (written atomically after each epoch's checkpoint) until ``epochs`` are done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            if json.loads((out / "result.json").read_text()).get("epochs_done") == epochs:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"{out} did not reach epoch {epochs}")


def result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def assert_same_run(a: Path, b: Path, every_evaluation: bool = True) -> None:
    ra, rb = result(a), result(b)
    assert ra["status"] == rb["status"] == "finished"
    assert [(h["epoch"], h["losses"]) for h in ra["history"]] == [(h["epoch"], h["losses"]) for h in rb["history"]]
    if every_evaluation:
        assert [h.get("metrics") for h in ra["history"]] == [h.get("metrics") for h in rb["history"]]
    assert ra["map"] == rb["map"] and ra["best_map"] == rb["best_map"]
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for part in ("model", "method_state"):
        assert ca[part].keys() == cb[part].keys()
        for key in ca[part]:  # weights, BatchNorm statistics, the code memory: bit for bit
            assert torch.equal(ca[part][key], cb[part][key]), (part, key)


def test_killed_run_resumes_bit_identically(tmp_path: Path) -> None:
    """SIGKILL in epoch 2 → --resume → SIGTERM in epoch 3 (recorded) → --resume: the same weights,
    losses and mAP as an uninterrupted run (BatchNorm, dropout, flips, one DataLoader worker)."""
    root = write_tree(tmp_path / "tree", per_class=3)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    reference = start(argv(root, straight, "--num-workers", "1"))

    first = start(argv(root, broken, "--num-workers", "1"), sleep=0.15)  # 10 steps × 0.15 s per epoch
    wait_for_epochs(broken, 1, first)
    time.sleep(0.4)  # a few steps into epoch 2
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert load_checkpoint(broken / "checkpoint.pt")["epoch"] == 1
    assert result(broken)["status"] == "running"  # a SIGKILL cannot record anything; the checkpoint is intact

    second = start(argv(root, broken, "--num-workers", "1", "--resume"), sleep=0.15)
    wait_for_epochs(broken, 2, second)
    time.sleep(0.4)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = result(broken)
    assert stopped["status"] == "failed" and stopped["epochs_done"] == 2
    assert "terminated (SIGTERM) in epoch 3" in stopped["error"] and "--resume" in stopped["error"]
    assert load_checkpoint(broken / "checkpoint.pt")["epoch"] == 2

    third = start(argv(root, broken, "--num-workers", "1", "--resume"))
    _, err = third.communicate(timeout=240)
    assert third.returncode == 0, err[-3000:]
    assert f"resuming {broken} after epoch 2 of 3" in err and "| epoch 3: likelihood" in err
    assert "| epoch 1: likelihood" not in err and "| epoch 2: likelihood" not in err  # only epoch 3 was trained
    _, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err[-3000:]
    assert_same_run(straight, broken)
    assert not list(broken.glob(".*.tmp"))


def test_resume_checks_the_run_and_extends_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from hashkit.cli import main

    use_tiny_backbones(monkeypatch)
    root = write_tree(tmp_path / "tree", per_class=3)
    out, straight = tmp_path / "run", tmp_path / "straight"
    assert main(argv(root, out, max_iter=1)) == 0
    capsys.readouterr()
    cases = [
        (argv(root, out, "--resume", "--lr", "0.5", max_iter=1),
         f"--resume: {out}/checkpoint.pt was trained with --lr 0.01 (this command: 0.5); pass the same flags"),
        ([a if a != "dpsh" else "dhn" for a in argv(root, out, "--resume", max_iter=1)],
         f"--resume: {out}/checkpoint.pt is a dpsh run but this command trains dhn; pass --method dpsh"),
        (argv(root, out, "--resume", "--seed", "1", "--code-length", "8", max_iter=1), "--code-length 16 (this command: 8), --seed 0"),
        (argv(root, out, "--resume", "--overwrite", max_iter=1), "pass only one of them"),
        (argv(root, tmp_path / "empty", "--resume", max_iter=1), "holds no checkpoint.pt"),
        (argv(root, out, max_iter=1), "already holds a run (status finished); pass --resume to continue it"),
    ]  # fmt: skip
    for args, expected in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("hashkit: error:")]
        assert len(lines) == 1 and expected in lines[0], err
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1  # nothing was written over

    # A constant learning rate does not depend on the number of epochs: --max-iter may grow on --resume,
    # and 1 epoch + 2 resumed ones is exactly a 3-epoch run.
    assert main(argv(root, out, "--resume", max_iter=3)) == 0
    assert main(argv(root, straight, max_iter=3)) == 0
    assert_same_run(straight, out, every_evaluation=False)  # the 1-epoch run also evaluated after epoch 1
    assert main(argv(root, out, "--resume", max_iter=3)) == 0  # already complete: nothing left to train
    assert "nothing left to train" in capsys.readouterr().err
    # A cosine schedule depends on --max-iter, so changing it is refused.
    cosine = tmp_path / "cosine"
    assert main(argv(root, cosine, "--lr-schedule", "cosine", max_iter=1)) == 0
    assert main(argv(root, cosine, "--lr-schedule", "cosine", "--resume", max_iter=2)) == 2
    assert "--max-iter 1 (this command: 2)" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """lr 1e30: the single step of epoch 1 is finite (initial weights) but moves every weight by ~1e30
    (Adam's first step is ±lr), so epoch 2's loss overflows. Exit 2, one line naming the epoch and the
    learning rate; checkpoint.pt of epoch 1 still loads; result.json says failed."""
    from hashkit.cli import main

    use_tiny_backbones(monkeypatch)
    root = write_tree(tmp_path / "tree", per_class=3)
    out = tmp_path / "nan"
    assert main(argv(root, out, "--num-train", "10", "--batch-size", "10", "--lr", "1e30", arch="tiny-plain")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("hashkit: error:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert "in epoch 2" in line and ("became nan" in line or "became inf" in line or "became -inf" in line), line
    assert "learning rate 1e+30 is likely too high: lower --lr" in line, line
    assert f"the last good checkpoint {out}/checkpoint.pt (epoch 1) is kept" in line, line
    failed = result(out)
    assert failed["status"] == "failed" and failed["epochs_done"] == 1 and "in epoch 2" in failed["error"]
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The second checkpoint write hits ENOSPC: the run stops with a one-line error naming the file,
    checkpoint.pt of epoch 1 is intact, result.json records the failure, no temporary file is left."""
    from hashkit.cli import main

    use_tiny_backbones(monkeypatch)
    root = write_tree(tmp_path / "tree", per_class=3)
    out = tmp_path / "full"
    real_fsync = os.fsync
    writes = {"checkpoint": 0}

    def fsync(fd: int) -> None:
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            writes["checkpoint"] += 1
            if writes["checkpoint"] >= 2:
                raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(argv(root, out)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hashkit: error:")]
    assert len(lines) == 1, err
    assert f"writing {out}/checkpoint.pt failed (No space left on device); the previous file, if any, is intact" in lines[0]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    failed = result(out)
    assert failed["status"] == "failed" and failed["epochs_done"] == 1 and "No space left on device" in failed["error"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "result.json"]

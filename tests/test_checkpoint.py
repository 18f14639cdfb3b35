"""Checkpoints and atomic writes: round trip, safe loading, previous file intact on failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hashkit.atomic import atomic_save, atomic_write_json
from hashkit.checkpoint import load_checkpoint, save_checkpoint
from hashkit.errors import HashkitError


class Payload:
    """A class a malicious or foreign checkpoint might pickle."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_round_trip_keeps_tensors_and_plain_values(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    payload = {
        "method": "dpsh", "code_length": 32, "config": {"lr": 1e-4, "topk": None, "name": "x"},
        "model": {"w": torch.randn(3, 4)}, "method_state": {"U": torch.randn(5, 32)}, "history": [{"epoch": 1}],
    }
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert loaded["format"] == "hashkit-checkpoint-v1"
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert torch.equal(loaded["method_state"]["U"], payload["method_state"]["U"])
    assert loaded["config"] == payload["config"] and loaded["history"] == [{"epoch": 1}]


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "hashkit-checkpoint-v1", "model": Payload()}, path)
    with pytest.raises(HashkitError, match="refusing to load .*evil.pt.*pickled"):
        load_checkpoint(path)


def test_truncated_foreign_and_missing_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(100, 100)}})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(HashkitError, match="truncated.pt is truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(HashkitError, match="not a hashkit checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(HashkitError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_write_leaves_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    atomic_write_json(path, {"map": 0.5})

    def crash(handle) -> None:
        handle.write(b'{"map": 0.')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_save(path, crash)
    assert json.loads(path.read_text()) == {"map": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind


def test_disk_full_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "result.json"
    atomic_write_json(path, {"map": 0.5})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(HashkitError, match="writing .*result.json failed \\(No space left on device\\); the previous file"):
        atomic_write_json(path, {"map": 0.9})
    assert json.loads(path.read_text()) == {"map": 0.5}


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HashkitError, match="cannot write"):
        atomic_write_json(blocker / "sub" / "result.json", {})

"""Untrusted and bad input, met where the user meets it: ``hashkit`` exits with status 2 and prints one
line ``hashkit: error: …`` naming the file or flag and the fix, without a traceback, and writes nothing
over what was there.

Most cases call the CLI's entry point ``hashkit.cli.main`` in-process (the same code a console run goes
through, minus interpreter start-up, which costs seconds per case on a shared 2-core machine); one test
runs real ``hashkit`` subprocesses for the contract at the process boundary (status 2, stderr, no
traceback) and a checkpoint whose pickled payload must not run.

Already covered elsewhere (not repeated here): unknown method / dataset through the CLI and a missing
--root (test_package.py); truncated, foreign, missing and pickled checkpoints, atomic writes, a full disk
and an unwritable folder at the file level (test_checkpoint.py); every CIFAR-10 form, missing or empty
class folders, a truncated image at load time, greyscale / CMYK conversion (test_cifar10_data.py);
--resume with another method or changed flags, a non-finite loss, a full disk during training
(test_resume.py); distributed refusals (test_distributed.py); DIHN --from a non-ADSH checkpoint
(test_adsh_dihn.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loguru import logger
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import tiny_env, use_tiny_backbones, write_tree  # noqa: E402

from hashkit.checkpoint import save_checkpoint  # noqa: E402
from hashkit.data.base import load_rgb  # noqa: E402

HASHKIT = str(Path(sys.executable).parent / "hashkit")


@pytest.fixture(autouse=True)
def restore_logging():
    """hashkit.cli.main points loguru at the test's captured stderr; put the default sink back after."""
    yield
    logger.remove()
    logger.add(sys.stderr)


def tiny(root: Path, out: Path, *extra: str) -> list[str]:
    """``hashkit train`` arguments for one epoch of the tiny test backbone (see use_tiny_backbones)."""
    return [
        "train", "--method", "dpsh", "--root", str(root), "--out", str(out), "--arch", "tiny-plain", "--no-pretrained",
        "--image-size", "32", "--code-length", "8", "--num-query", "10", "--num-train", "20", "--batch-size", "10",
        "--max-iter", "1", *extra,
    ]  # fmt: skip


def cli(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str]:
    """Run ``hashkit ARGS`` in-process: (exit status, stderr)."""
    from hashkit.cli import main

    capsys.readouterr()
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    return status, capsys.readouterr().err


def run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run the commands concurrently (each is mostly interpreter start-up) and return their results."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tiny_env()) for c in commands]
    outputs = [p.communicate(timeout=300) for p in procs]
    return [subprocess.CompletedProcess(c, p.returncode, *o) for c, p, o in zip(commands, procs, outputs)]


def error_line(status: int, stderr: str, *expected: str) -> str:
    """The single ``hashkit: error:`` line of a failed command, checked to contain ``expected``."""
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "hashkit: error:" in line]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0][lines[0].index("hashkit: error:") :]  # a progress bar may share the line (\r)
    for text in expected:
        assert text in line, (text, line)
    return line


def digest(folder: Path) -> dict[str, str]:
    """Content hash of every file under ``folder`` (to show that nothing was written over)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ images
def test_corrupt_and_truncated_jpegs_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Met in training or evaluation, in the main process or a DataLoader worker: one line naming the file."""
    use_tiny_backbones(monkeypatch)
    truncated_tree = write_tree(tmp_path / "t", per_class=2)
    corrupt_tree = write_tree(tmp_path / "c", per_class=2)
    jpeg = tmp_path / "ok.jpg"
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(jpeg, quality=90)
    truncated = truncated_tree / "train" / "dog" / "0001.jpg"
    truncated.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 3])
    corrupt = corrupt_tree / "test" / "ship" / "0000.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 8)
    before = {tree: digest(tree) for tree in (truncated_tree, corrupt_tree)}
    cases = [
        (truncated_tree, truncated, ["--num-workers", "0"]),
        (truncated_tree, truncated, ["--num-workers", "1"]),  # re-raised from the worker: unwrapped to one line
        (corrupt_tree, corrupt, ["--num-workers", "1"]),
    ]
    for i, (tree, bad, extra) in enumerate(cases):
        out = tmp_path / f"out{i}"
        error_line(*cli(capsys, tiny(tree, out, *extra)), f"image {bad} is unreadable", "replace or remove the file")
        failed = json.loads((out / "result.json").read_text())
        assert failed["status"] == "failed" and str(bad) in failed["error"] and "Traceback" not in failed["error"]
    assert before == {tree: digest(tree) for tree in (truncated_tree, corrupt_tree)}  # inputs untouched


def test_non_rgb_images_are_converted_not_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Greyscale, greyscale+alpha, RGBA, palette, bilevel and CMYK images train like RGB ones."""
    use_tiny_backbones(monkeypatch)
    modes = {"L": "png", "LA": "png", "RGBA": "png", "P": "png", "1": "png", "CMYK": "jpg"}
    tree = write_tree(tmp_path / "tree", per_class=2)
    rng = np.random.default_rng(0)
    written = []
    for (mode, ext), folder in zip(modes.items(), sorted((tree / "train").iterdir())):
        for old in folder.iterdir():
            old.unlink()
            image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert(mode)
            path = old.with_suffix("." + ext)
            image.save(path)
            written.append(path)
            assert load_rgb(path).mode == "RGB" and load_rgb(path).size == (32, 32)
    status, err = cli(capsys, tiny(tree, tmp_path / "out"))
    assert status == 0, err[-3000:]
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "finished"


def test_sixteen_bit_greyscale_keeps_its_brightness(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16)).save(path)
    assert tuple(np.asarray(load_rgb(path))[0, 0]) == (117, 117, 117)  # round(30000 / 257)


# ------------------------------------------------------------------------------------------ list files
def write_lists(root: Path, train: str, query: str, database: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(root / f"{i}.png")
    (root / "train.txt").write_text(train)
    (root / "test.txt").write_text(query)
    (root / "database.txt").write_text(database)
    return root


def test_list_file_mistakes_name_the_file_and_line(tmp_path: Path, capsys) -> None:
    good = "0.png 1 0\n1.png 0 1\n"
    cases = [
        (good, good, "2.png 1 0\n3.png 1 0 1\n", ["database.txt:2: 3 label columns but the first entry has 2"]),
        ("0.png 1 0\n1.png 0 2\n", good, good, ["train.txt:2: label value '2' is not 0 or 1"]),
        (good, "0.png 1 0\nnope.png 0 1\n", good, ["test.txt:2: image", "nope.png does not exist", "fix --root or the list"]),
        ("", good, good, ["train.txt holds no entries"]),  # an empty split
    ]
    for i, (train, query, database, expected) in enumerate(cases):
        root = write_lists(tmp_path / f"lists{i}", train, query, database)
        out = tmp_path / f"out{i}"
        args = ["train", "--method", "dpsh", "--dataset", "list", "--root", str(root), "--out", str(out),
                "--arch", "efficientnet_lite0", "--no-pretrained"]  # fmt: skip
        error_line(*cli(capsys, args), *expected)
        assert not (out / "result.json").exists()


# ------------------------------------------------------------------------------------------ flags and folders
def test_flag_and_folder_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    tree = write_tree(tmp_path / "tree", per_class=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "result.json").write_text('{"status": "finished", "map": 0.7}\n')
    (existing / "checkpoint.pt").write_bytes(b"the previous run's checkpoint")
    snapshot = digest(existing)
    other = tmp_path / "other.pt"  # a 16-bit checkpoint, here given to a 32-bit run with --from
    save_checkpoint(other, {"method": "hashnet", "arch": "efficientnet_lite0", "code_length": 16, "config": {}, "model": {}})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --gpu on a machine without CUDA
    base = ["train", "--method", "dpsh", "--root", str(tree), "--arch", "efficientnet_lite0", "--no-pretrained",
            "--num-query", "10", "--num-train", "10"]  # fmt: skip
    early = [  # refused before anything is read or created
        (["--code-length", "0"], "--code-length 0 is out of range; use 1..4096"),
        (["--code-length", "5000"], "--code-length 5000 is out of range; use 1..4096"),
        (["--arch", "nosuch"], "unknown arch 'nosuch'; valid archs: alexnet, efficientnet_lite0, resnet50, vgg16"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--gpu", "0"], "--gpu 0 was given but this machine has no usable CUDA GPU; drop --gpu"),
        (["--freeze-backbone", "--encode-flip"], "--encode-flip mirrors images or spatial activations but "
         "--freeze-backbone caches pooled features; pass --no-encode-flip, or --train-from STAGE instead of --freeze-backbone"),
    ]
    later = [
        (["--num-train", "0"], "--num-train must be positive, got 0"),  # an empty split
        (["--from", str(other)], f"--from {other} has code_length 16 but this run uses 32; pass --code-length 16"),
        (["--out", str(blocker / "out")], f"results folder {blocker}/out is not writable"),
        (["--out", str(existing)], f"{existing} already holds a run (status finished); pass --resume to continue it"),
        (["--arch", "alexnet", "--freeze-depthwise"], "--freeze-depthwise: backbone alexnet has no depthwise convolutions; drop the flag"),
        (["--arch", "alexnet", "--drop-path", "0.2"], "--drop-path: backbone alexnet has no blocks with stochastic depth; drop the flag"),
        (["--drop-path", "-0.1"], "--drop-path must be in [0, 1) (EfficientNet trained with 0.2), got -0.1"),
        (["--hash-dropout", "1"], "--hash-dropout must be in [0, 1) (EfficientNet's classifier uses 0.2), got 1.0"),
        (["--ema", "1.5"], "--ema must be a decay in (0, 1) a step, e.g. 0.998, or 0 (off), got 1.5"),
        (["--mixup", "-1"], "--mixup must be ≥ 0 (α of Beta(α, α); 0 = off, 0.2–1 usual), got -1.0"),
        (["--mixup", "0.2"], "--mixup: --method dpsh reads labels as pairwise similarities or class indices, which mixed "
         "labels do not define; drop --mixup, or use a method whose loss is a cross-entropy on the codes "
         "(bihalf_sup, ce, ce_tanh, greedyhash, jmlh)"),
    ]
    for i, (extra, expected) in enumerate(early + later):
        out = tmp_path / f"o{i}"
        error_line(*cli(capsys, [*base, "--out", str(out), *extra]), expected)
        if i < len(early):
            assert not out.exists()
    assert digest(existing) == snapshot and blocker.read_text() == "not a folder"


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_carrying_code_are_refused(tmp_path: Path, capsys) -> None:
    """--from and --resume refuse a checkpoint whose pickle would run code; the payload never runs."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hashkit-checkpoint-v1", "model": Payload(str(marker))}, evil)
    resumed = tmp_path / "run"
    resumed.mkdir()
    (resumed / "checkpoint.pt").write_bytes(evil.read_bytes())
    tree = write_tree(tmp_path / "tree", per_class=1)
    train = ["train", "--method", "dpsh", "--arch", "efficientnet_lite0", "--no-pretrained", "--root", str(tree),
             "--num-query", "10", "--num-train", "10"]  # fmt: skip
    for extra in (["--out", str(tmp_path / "o"), "--from", str(evil)], ["--out", str(resumed), "--resume"]):
        error_line(*cli(capsys, [*train, *extra]), "refusing to load", "pickled Python objects")
    assert not marker.exists()


def test_cli_processes_exit_2_with_one_line_and_never_run_pickled_code(tmp_path: Path) -> None:
    """Real ``hashkit`` processes: a checkpoint carrying code and a list file with a bad label are refused
    with status 2, one stderr line and no traceback; the pickled payload never runs."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hashkit-checkpoint-v1", "model": Payload(str(marker))}, evil)
    lists = write_lists(tmp_path / "lists", "0.png 1 0\n1.png 0 7\n", "0.png 1 0\n", "0.png 1 0\n")
    cases = [
        ([HASHKIT, "evaluate", "--checkpoint", str(evil)], ["refusing to load", "pickled Python objects"]),
        ([HASHKIT, "train", "--method", "dpsh", "--dataset", "list", "--root", str(lists), "--out", str(tmp_path / "l")],
         ["train.txt:2: label value '7' is not 0 or 1"]),
    ]  # fmt: skip
    for (_, expected), proc in zip(cases, run_all([command for command, _ in cases])):
        error_line(proc.returncode, proc.stderr, *expected)
    assert not marker.exists() and not (tmp_path / "l").exists()

"""Progress display (hashkit.progress): bars on a terminal only; in a log file one line per epoch / stage
with its images per second, never a bar frame (a real training run, stderr to a file and to a pty)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import HERE as RUNNER, tiny_env, tiny_train_argv, write_tree  # noqa: E402

import hashkit.progress as progress_module  # noqa: E402
from hashkit.progress import progress  # noqa: E402


@pytest.fixture
def log_lines():
    """Every log message of the test, and no other sink (one left by another test may write to stderr)."""
    lines: list[str] = []
    logger.remove()
    logger.add(lambda message: lines.append(str(message).rstrip("\n")), format="{message}")
    yield lines
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


class FakeTerminal:
    def __init__(self, tty: bool) -> None:
        self.tty, self.written = tty, []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [False, True])
def test_a_stage_logs_one_line_without_a_terminal_and_draws_a_bar_on_one(monkeypatch, log_lines, tty: bool) -> None:
    stream = FakeTerminal(tty)
    monkeypatch.setattr(progress_module.sys, "stderr", stream)
    with progress(10, "encode query") as bar:
        for _ in range(5):
            bar.update(2)
    assert bar.count == 10 and bar.rate > 0
    summary = [line for line in log_lines if line.startswith("encode query: 10 images in ")]
    if tty:
        assert summary == [] and any("encode query" in text for text in stream.written)  # the bar, no line
    else:
        assert len(summary) == 1 and summary[0].endswith(" img/s)") and stream.written == []


def test_always_never_disabled_and_failed_stages(monkeypatch, log_lines) -> None:
    monkeypatch.setattr(progress_module.sys, "stderr", FakeTerminal(True))
    with progress(3, "caching", summary="always") as bar:
        bar.update(3)
    with progress(3, "epoch 1/2", summary="never") as bar:
        bar.update(3)
    monkeypatch.setattr(progress_module.sys, "stderr", FakeTerminal(False))
    with progress(3, "quiet", enabled=False) as bar:
        bar.update(3)
    with pytest.raises(RuntimeError):
        with progress(3, "broken") as bar:
            bar.update(1)
            raise RuntimeError("stop")
    assert [line.split(":")[0] for line in log_lines] == ["caching"]


def train_with_stderr_to(target, tmp_path: Path) -> subprocess.Popen:
    root = write_tree(tmp_path / "cifar", per_class=3)
    argv = tiny_train_argv(root, tmp_path / "run", "--max-iter", "2")
    return subprocess.Popen([sys.executable, str(RUNNER), *argv], env=tiny_env(), stdout=subprocess.DEVNULL, stderr=target)


def test_training_logged_to_a_file_has_no_bar_frames(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        assert train_with_stderr_to(handle, tmp_path).wait(timeout=300) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "\r" not in text and "it/s" not in text and "%|" not in text  # no tqdm frame
    epochs = [line for line in text.splitlines() if "| epoch " in line and "likelihood" in line]
    assert len(epochs) == 2 and all(line.endswith(" img/s)") for line in epochs), text
    assert sum(" | encode query: 10 images in " in line for line in text.splitlines()) == 2  # one line per stage


def test_training_on_a_terminal_draws_bars(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = train_with_stderr_to(slave, tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "\r" in text and "epoch 1/2" in text and "img/s" in text, text[-2000:]

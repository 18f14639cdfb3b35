"""``hashkit encode`` takes the folder index's writer lock before it encodes: a second writer stops at once
naming the first (or waits with --wait), and the lock of a killed writer is taken over."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hashkit.api import Hasher
from hashkit.index import Index
from hashkit.index.storage import LOCK
from tests.test_retrieval_cli import make_checkpoint, make_images

# Another writer, as hashkit.index.storage.writer_lock holds the lock: flock on INDEX/.lock plus a JSON record
# naming the holder. Written out (not imported) so the process starts in milliseconds, without torch.
HOLD = """
import fcntl, json, os, socket, sys, time
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now",
                         "purpose": "test holder"}).encode())
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("lock")
    make_images(tmp / "photos", 4, seed=6)
    return {"checkpoint": str(make_checkpoint(tmp / "model.pt", code_length=8)), "photos": str(tmp / "photos")}


def hold(index: Path, seconds: float) -> subprocess.Popen:
    """Another process holding ``index``'s writer lock for ``seconds`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(index), str(seconds)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().strip() == "held"
    return proc


def encode(capsys: pytest.CaptureFixture, setup: dict, index: Path, *extra: str) -> tuple[int, str, str]:
    from hashkit.cli import main

    capsys.readouterr()
    status = main(["encode", "--checkpoint", setup["checkpoint"], "--images", setup["photos"], "--out", str(index), *extra])
    out = capsys.readouterr()
    return status, out.out, out.err


class Recorder:
    """Every Hasher.encode call, with the state of ``index``'s writer lock at that moment."""

    def __init__(self) -> None:
        self.index: Path | None = None
        self.calls: list[dict] = []


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    original = Hasher.encode

    def recording(self, images, *args, **kwargs):
        recorder.calls.append({"images": len(images), "lock": lock_state(recorder.index), "at": time.monotonic()})
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(Hasher, "encode", recording)
    return recorder


def lock_state(index: Path) -> dict:
    """Whether another descriptor can take the lock now, and the holder record the file shows."""
    fd = os.open(index / LOCK, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        text = os.pread(fd, 4096, 0).decode().strip()
    finally:
        os.close(fd)
    return {"held": held, "record": json.loads(text) if text else {}}


def test_second_writer_stops_at_once_naming_the_holder_and_encodes_nothing(setup: dict, tmp_path: Path, encodes: Recorder,
                                                                           capsys: pytest.CaptureFixture) -> None:
    index = tmp_path / "index"
    holder = hold(index, 60)
    try:
        start = time.monotonic()
        status, out, err = encode(capsys, setup, index)
        elapsed = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert status == 2 and out == ""
    assert f"index {index} is being written by pid {holder.pid} on " in err and "(test holder)" in err, err
    assert "--wait SECONDS" in err and "Traceback" not in err
    assert encodes.calls == []  # not one image was encoded
    assert elapsed < 10  # stopped at once: loading the checkpoint is all it did
    assert not (index / "manifest.json").exists()  # and nothing was written


def test_the_lock_is_held_while_encoding_and_released_after(setup: dict, tmp_path: Path, encodes: Recorder,
                                                            capsys: pytest.CaptureFixture) -> None:
    index = tmp_path / "index"
    encodes.index = index
    status, out, err = encode(capsys, setup, index)
    assert status == 0, err
    assert json.loads(out)["count"] == 4
    [call] = encodes.calls
    assert call["images"] == 4 and call["lock"]["held"]  # held by this process while it encoded
    assert call["lock"]["record"]["pid"] == os.getpid() and "hashkit encode" in call["lock"]["record"]["purpose"]
    assert lock_state(index) == {"held": False, "record": {}}  # released, with no holder left named
    assert len(Index.open(index)) == 4


def test_wait_seconds_waits_for_the_holder(setup: dict, tmp_path: Path, encodes: Recorder,
                                           capsys: pytest.CaptureFixture) -> None:
    index = tmp_path / "index"
    encodes.index = index
    holder = hold(index, 4)
    held_at = time.monotonic()
    status, _, err = encode(capsys, setup, index)  # without --wait: stops
    assert status == 2 and f"pid {holder.pid}" in err
    status, out, err = encode(capsys, setup, index, "--wait", "60")
    holder.wait()
    assert status == 0, err
    [call] = encodes.calls
    assert call["at"] >= held_at + 4  # encoding began only after the holder let go, 4 s after it took the lock
    assert json.loads(out)["count"] == 4 and call["lock"]["record"]["pid"] == os.getpid()
    status, _, err = encode(capsys, setup, index, "--wait", "-1")
    assert status == 2 and "--wait -1: give a number of seconds >= 0" in err


def test_a_killed_writers_lock_is_taken_over(setup: dict, tmp_path: Path, encodes: Recorder,
                                             capsys: pytest.CaptureFixture) -> None:
    index = tmp_path / "index"
    encodes.index = index
    holder = hold(index, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_state(index)["record"]["pid"] == holder.pid  # its record is left behind, the flock is not
    status, out, err = encode(capsys, setup, index)
    assert status == 0, err
    assert f"taking over the writer lock left by pid {holder.pid} " in err and "no longer running" in err
    assert json.loads(out)["count"] == 4 and encodes.calls[0]["lock"]["record"]["pid"] == os.getpid()

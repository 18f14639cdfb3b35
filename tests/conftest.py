"""Shared fixtures: the real CIFAR-10 tar beside the repo (tests skip with a reason if it is absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from loguru import logger

# Where the machine sets PYTHONDONTWRITEBYTECODE (these CI VMs do), Python never caches bytecode, and every CLI or
# torchrun subprocess of the suite recompiled torch, torchvision and sympy from source: `import torchvision`
# took 9-10 s instead of 3.5, and the suite 19 min instead of 9 on one host. The suite's processes may cache it
# (in the venv's and the repo's __pycache__ folders, which git ignores); the first one pays, the rest read it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parents[1]
CIFAR_TAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar"


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    if not CIFAR_TAR.exists():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR_TAR} (../shared/data/cifar10-jpg.tar beside the repo)")
    return CIFAR_TAR


@pytest.fixture(scope="session")
def hashkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole test session, so the CIFAR-10 tar is unpacked once."""
    path = tmp_path_factory.mktemp("hashkit-cache")
    os.environ["HASHKIT_CACHE"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _loguru_writes_to_the_current_stderr():
    """``hashkit.cli.main`` points loguru at the sys.stderr of the moment, which under capsys is a capture
    stream closed after the test; afterwards, log to whatever sys.stderr is when a message is written."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on 2
    shared cores, 2 OpenMP threads ran the backbone tests several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """``HOST:PORT`` of a real Milvus standalone server (the PyPI ``milvus`` package, which embeds one), started
    once per test session on a free loopback port and stopped at the end. Skips, with the reason, only where
    the package is missing or the server cannot start (scripts/setup.sh installs it)."""
    import time
    import urllib.request

    try:
        import pymilvus  # noqa: F401
        from milvus import MilvusServer
    except ImportError as exc:
        pytest.skip(f"the embedded Milvus server is not installed ({exc}); scripts/setup.sh installs it")
    base = tmp_path_factory.mktemp("milvus-server")
    server = MilvusServer(wait_for_started=False)
    server.set_base_dir(str(base))
    server.listen_port = _free_port()
    try:
        server.start()  # returns at once: readiness is polled below, with a bound and an eye on the process
    except Exception as exc:  # noqa: BLE001 - whatever stops it from starting, the tests skip with it
        server.stop()
        pytest.skip(f"the embedded Milvus server could not start here: {exc}")
    health = f"http://127.0.0.1:{server.webservice_port}/healthz"
    deadline, reason = time.monotonic() + 120, "no answer within 120 s"
    while time.monotonic() < deadline:
        if server.server_proc.poll() is not None:
            log = base / "logs" / "milvus-stderr.log"
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            cause = next((line for line in lines if line.startswith("panic")), lines[-1] if lines else "no log")
            reason = f"it exited with status {server.server_proc.returncode} ({cause.strip()}; log {log})"
            break
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if b"OK" in response.read():
                    reason = ""
                    break
        except OSError:
            pass
        time.sleep(0.2)
    if reason:
        server.stop()
        pytest.skip(f"the embedded Milvus server could not start here: {reason}")
    logger.info(f"embedded Milvus server on 127.0.0.1:{server.listen_port} ({base})")
    try:
        yield f"127.0.0.1:{server.listen_port}"
    finally:
        server.stop()


@pytest.fixture
def torch_threads(request: pytest.FixtureRequest):
    """Set torch's thread count for one test to ``request.param`` (indirect parametrisation) or 1: pinned trained
    codes depend on it (a reduction split over 2 threads rounds differently than over 1), so a pin records the
    count it was made with and holds on any number of cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(getattr(request, "param", 1)))
    yield torch.get_num_threads()
    torch.set_num_threads(before)

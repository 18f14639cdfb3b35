"""Shared fixtures: the real CIFAR-10 tar beside the repo (tests skip with a reason if it is absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from loguru import logger

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

"""Shared fixtures: the real CIFAR-10 tar beside the repo (tests skip with a reason if it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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

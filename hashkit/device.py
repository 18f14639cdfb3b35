"""Device selection (``--gpu N`` → cuda:N) and seeding for bit-identical CPU runs."""

from __future__ import annotations

import random

import numpy as np
import torch

from hashkit.errors import HashkitError


def resolve_device(gpu: int | None) -> torch.device:
    """CPU when ``gpu`` is None, else ``cuda:gpu`` — a clear error if that GPU is not there."""
    if gpu is None or gpu < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise HashkitError(f"--gpu {gpu} was given but this machine has no usable CUDA GPU; drop --gpu to run on the CPU")
    count = torch.cuda.device_count()
    if gpu >= count:
        raise HashkitError(f"--gpu {gpu} does not exist: this machine has {count} GPU(s) (0..{count - 1})")
    return torch.device(f"cuda:{gpu}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a CPU run with the same seed is bit-identical."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

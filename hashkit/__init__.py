"""hashkit: deep hashing for image retrieval — one CLI, shared data, backbones and evaluator."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashkit.api import Hasher

__version__ = "0.1.0"


def load(checkpoint: "str | os.PathLike", device: "str | None" = None, gpu: "int | None" = None) -> "Hasher":
    """Load a checkpoint for encoding images: ``hashkit.load(path).encode(images)`` (see hashkit.api)."""
    from hashkit.api import load as _load

    return _load(checkpoint, device=device, gpu=gpu)

"""Checkpoints: one ``torch.save`` dict written atomically, loaded with ``weights_only=True``.

Contents: ``format``, ``hashkit_version``, ``git_commit``, ``method``, ``arch``, ``code_length``, the
full ``config``, ``model`` (state dict), ``method_state`` (the method's memories / learned codes),
``method_module`` (the state dict of a method's own trainable module, or None), ``optimizer``, ``scheduler``, ``epoch`` (epochs completed), ``history`` and ``metrics``.
Only tensors and plain Python values are stored, so loading never executes pickled code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from hashkit.atomic import atomic_save
from hashkit.errors import HashkitError

FORMAT = "hashkit-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically."""
    data = {"format": FORMAT, **payload}
    atomic_save(path, lambda handle: torch.save(data, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a hashkit checkpoint safely; refuse files that are missing, foreign or carry pickled code."""
    path = Path(path)
    if not path.is_file():
        raise HashkitError(f"checkpoint {path} does not exist; pass the checkpoint.pt a training run wrote")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise HashkitError(
            f"refusing to load {path}: it carries pickled Python objects, not only tensors and plain values "
            "(weights_only=True); only load checkpoints that hashkit wrote"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise HashkitError(f"checkpoint {path} is truncated or corrupt ({exc}); use an intact copy") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HashkitError(f"{path} is not a hashkit checkpoint (no '{FORMAT}' tag); pass a checkpoint.pt from hashkit train")
    return data

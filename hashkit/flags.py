"""The description of one command-line flag, shared by ``hashkit/config.py`` and the data loaders.

A leaf module (it imports nothing from hashkit), so ``data/`` can declare its own flags without depending
on anything above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# What a config key is about; decides whether ``--resume`` may change it and how ``hashkit report`` uses it:
#   "training"  changes the training trajectory (refused by --resume; a report setting)
#   "protocol"  defines the retrieval protocol or the backbone (a report column; --resume refuses it too,
#               except topk, which only changes the evaluation)
#   "runtime"   where files live, resources, what is reported (free on --resume, ignored by reports)
FlagKind = Literal["training", "protocol", "runtime"]


@dataclass(frozen=True)
class Flag:
    """One ``hashkit train`` flag: its default (None = per method / recipe), help, type and kind."""

    default: Any
    help: str
    type: Any = str
    choices: tuple[str, ...] | None = None
    kind: FlagKind = "training"

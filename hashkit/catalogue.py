"""What a user picks a method by: its family and the public code it was read from, per registered method.

Each method class declares ``family`` (a key of :data:`FAMILIES`, one documentation page each) and
``reference_code``; ``hashkit methods``, ``hashkit train --method NAME --help`` and the documentation site read
them through this module. A new family needs its entry here and its page ``docs/methods/<key>.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hashkit.registry import METHODS


@dataclass(frozen=True)
class Family:
    """A group of methods that share a training scheme (one documentation page each)."""

    key: str
    title: str
    summary: str


FAMILIES: dict[str, Family] = {
    family.key: family
    for family in (
        Family(
            "pairwise", "Pairwise similarity",
            "A likelihood of the pairwise label similarity given the inner product of relaxed codes, plus a "
            "term pulling the relaxed codes to ±1.",
        ),
        Family(
            "asymmetric", "Asymmetric and incremental",
            "The database codes are learned directly (discrete updates) while the network learns to encode "
            "queries; DIHN adds new classes without re-encoding the original database.",
        ),
        Family(
            "unsupervised", "Unsupervised",
            "No labels: the similarity comes from the pretrained features.",
        ),
        Family(
            "class-codes", "Fixed class codes",
            "Each class gets a fixed target code (Hadamard rows or random balanced bits); the network is pulled "
            "toward its labels' codes.",
        ),
        Family(
            "classifier", "Classifier on binary codes",
            "A classifier is trained on (nearly) binary codes through a binarising layer; the cross-entropy "
            "baseline belongs here.",
        ),
        Family(
            "shallow", "Shallow (closed form)",
            "Fitted once in closed form (or a few iterations) on the frozen backbone's features: projections "
            "and rotations, no training loop.",
        ),
    )
}

UNCATALOGUED = "other"  # a method whose class declares no family (tests/test_docs.py fails for it)


@dataclass(frozen=True)
class MethodInfo:
    """One registered method as the catalogue shows it."""

    name: str
    family: str
    supervised: bool
    paper: str
    reference_code: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "family": self.family, "supervision": "supervised" if self.supervised else "unsupervised",
            "paper": self.paper, "reference_code": list(self.reference_code),
        }


def describe(name: str) -> MethodInfo:
    """The catalogue entry of one registered method, from its class attributes."""
    canonical = METHODS.canonical(name)
    method_cls = METHODS.get(canonical)
    family = method_cls.family if method_cls.family in FAMILIES else UNCATALOGUED
    return MethodInfo(canonical, family, bool(method_cls.supervised), method_cls.paper, tuple(method_cls.reference_code))


def all_methods() -> list[MethodInfo]:
    """Every registered method, by family (the order of :data:`FAMILIES`), then by name."""
    families = [*FAMILIES, UNCATALOGUED]
    infos = [describe(name) for name in METHODS.names()]
    return sorted(infos, key=lambda i: (families.index(i.family), i.name))


def family_title(family: str) -> str:
    """The display name of a family ('other' for a method not catalogued yet)."""
    return FAMILIES[family].title if family in FAMILIES else family

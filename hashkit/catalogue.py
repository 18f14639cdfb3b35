"""What a user picks a method by: its family and the public code it was read from, per registered method.

Kept here until the method classes carry ``family`` and ``reference_code`` themselves; :func:`describe`
prefers a class attribute when one exists, so moving the values into ``methods/*.py`` needs no change here.
``hashkit methods``, ``hashkit train --method NAME --help`` and the documentation site read this module.
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
    )
}

UNCATALOGUED = "other"  # a method not in the table below yet (tests/test_docs.py fails until it is added)
FIRE = "CISiPLab/cisip-FIRe"
DEEPHASH = "swuxyj/DeepHash-pytorch"
# name -> (family, reference code: the public repositories the seed recipe and loss were read from)
METHOD_CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    "dpsh": ("pairwise", ("TreezzZ/DPSH_PyTorch", "jiangqy/DPSH-pytorch")),
    "dhn": ("pairwise", ("TreezzZ/DHN_PyTorch",)),
    "hashnet": ("pairwise", ("thuml/HashNet",)),
    "adsh": ("asymmetric", ("jiangqy/ADSH-AAAI2018",)),
    "dihn": ("asymmetric", ("IIE-MR/DIHN",)),
    "ssdh": ("unsupervised", ("TreezzZ/SSDH_PyTorch",)),
    "csq": ("class-codes", (DEEPHASH,)),
    "dpn": ("class-codes", (DEEPHASH,)),
    "orthocos": ("class-codes", (FIRE,)),
    "orthoarc": ("class-codes", (FIRE,)),
    "greedyhash": ("classifier", (DEEPHASH,)),
    "jmlh": ("classifier", (FIRE,)),
    "sdhc": ("classifier", (FIRE,)),
    "bihalf_sup": ("classifier", (FIRE,)),
    "ce": ("classifier", (FIRE,)),
}


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
    """The catalogue entry of one registered method (class attributes win over the table above)."""
    canonical = METHODS.canonical(name)
    method_cls = METHODS.get(canonical)
    family, reference = METHOD_CATALOGUE.get(canonical, (None, ()))
    family = getattr(method_cls, "family", None) or family or UNCATALOGUED
    reference = tuple(getattr(method_cls, "reference_code", None) or reference)
    return MethodInfo(canonical, family, bool(method_cls.supervised), method_cls.paper, reference)


def all_methods() -> list[MethodInfo]:
    """Every registered method, by family (the order of :data:`FAMILIES`), then as listed in the catalogue."""
    families, listed = [*FAMILIES, UNCATALOGUED], list(METHOD_CATALOGUE)
    infos = [describe(name) for name in METHODS.names()]
    return sorted(infos, key=lambda i: (families.index(i.family), listed.index(i.name) if i.name in listed else len(listed), i.name))


def family_title(family: str) -> str:
    """The display name of a family ('other' for a method not catalogued yet)."""
    return FAMILIES[family].title if family in FAMILIES else family

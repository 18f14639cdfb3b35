"""Reproducible class-balanced sampling for retrieval splits (the seeds' CIFAR-10 protocol).

All sampling uses ``numpy.random.default_rng(seed)``; the same seed gives the same split on every
machine. Multi-label data is sampled uniformly instead (classes overlap, so per-class quotas do not apply).
"""

from __future__ import annotations

import numpy as np

from hashkit.errors import HashkitError


def per_class_sample(
    labels: np.ndarray, candidates: np.ndarray, total: int, rng: np.random.Generator, what: str
) -> np.ndarray:
    """Draw ``total`` items from ``candidates`` with an equal share per class (single-label data).

    ``total`` must divide evenly among the classes; the result is sorted by position so the order of
    a split never depends on the draw order.
    """
    num_classes = labels.shape[1]
    if total % num_classes:
        raise HashkitError(f"{what}={total} must be a multiple of the {num_classes} classes for a class-balanced split")
    per_class = total // num_classes
    class_of = labels[candidates].argmax(axis=1)
    chosen = []
    for c in range(num_classes):
        members = candidates[class_of == c]
        if len(members) < per_class:
            raise HashkitError(
                f"{what}={total} needs {per_class} images of class {c} but only {len(members)} are left; lower {what}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def uniform_sample(candidates: np.ndarray, total: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """Draw ``total`` items uniformly from ``candidates`` without replacement (sorted by position)."""
    if total > len(candidates):
        raise HashkitError(f"{what}={total} but only {len(candidates)} images are available; lower {what}")
    return np.sort(rng.choice(candidates, size=total, replace=False))


def sample(labels: np.ndarray, candidates: np.ndarray, total: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """Class-balanced for single-label data, uniform for multi-label data."""
    if (labels[candidates].sum(axis=1) == 1).all():
        return per_class_sample(labels, candidates, total, rng, what)
    return uniform_sample(candidates, total, rng, what)


def query_train_database(
    labels: np.ndarray, num_query: int, num_train: int, num_database: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed protocol over a pooled set: queries, then training images from the rest; the database
    is every non-query image (training images included), optionally subsampled to ``num_database``.
    """
    for what, value in (("--num-query", num_query), ("--num-train", num_train), ("--num-database", num_database)):
        if value is not None and value <= 0:
            raise HashkitError(f"{what} must be positive, got {value}")
    rng = np.random.default_rng(seed)
    everything = np.arange(len(labels))
    query = sample(labels, everything, num_query, rng, "--num-query")
    rest = np.setdiff1d(everything, query, assume_unique=True)
    train = sample(labels, rest, num_train, rng, "--num-train")
    database = rest if num_database is None else sample(labels, rest, num_database, rng, "--num-database")
    return query, train, database

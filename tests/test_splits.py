"""The seed split protocol: sizes, class balance, disjointness, determinism from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from hashkit.data.base import one_hot
from hashkit.data.splits import query_train_database
from hashkit.errors import HashkitError


def pool_labels(per_class: int = 60, classes: int = 10) -> np.ndarray:
    return one_hot(np.repeat(np.arange(classes), per_class), classes)


def test_seed_protocol_sizes_balance_and_disjointness() -> None:
    labels = pool_labels()
    query, train, database = query_train_database(labels, num_query=100, num_train=200, num_database=None, seed=3)
    assert len(query) == 100 and len(train) == 200 and len(database) == 600 - 100
    assert (labels[query].sum(0) == 10).all() and (labels[train].sum(0) == 20).all()
    assert not set(query) & set(train)
    assert not set(query) & set(database)
    assert set(train) <= set(database)  # the database is every non-query item, training items included


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = pool_labels()
    a = query_train_database(labels, 100, 200, 300, seed=7)
    b = query_train_database(labels, 100, 200, 300, seed=7)
    c = query_train_database(labels, 100, 200, 300, seed=8)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert (labels[a[2]].sum(0) == 30).all()  # subsampled database stays class-balanced


def test_impossible_split_is_a_clear_error() -> None:
    labels = pool_labels(per_class=10)
    with pytest.raises(HashkitError, match="--num-train"):
        query_train_database(labels, num_query=50, num_train=60, num_database=None, seed=0)
    with pytest.raises(HashkitError, match="multiple of the 10 classes"):
        query_train_database(labels, num_query=15, num_train=10, num_database=None, seed=0)
    with pytest.raises(HashkitError, match="must be positive"):
        query_train_database(labels, num_query=0, num_train=10, num_database=None, seed=0)

"""The incremental protocol (``--num-seen N``): a database that grows by new classes, as in DIHN.

Applies to any single- or multi-label dataset whose factory is wrapped with :func:`incremental_option`
(CIFAR-10 is). Without ``--num-seen`` the dataset's own protocol is unchanged. With it:

* the dataset's own protocol draws query, training and database images first (same ``--seed``,
  ``--num-query``, ``--num-train``, ``--num-database``), so the queries are exactly the usual ones;
* seen classes = the first N class indices (not drawn: CIFAR-10 ``--num-seen 7`` sees airplane …
  frog; horse, ship, truck are new — the DIHN seed's split); new classes = the rest;
* an image is *new* when it carries any new class, else *seen*;
* original database = the seen database images; incremental database = the new ones; the database
  used for evaluation is original + incremental, **in that order** (the first ``num_original`` rows
  are the original database, so codes learned for it stay row-aligned);
* queries come from all classes; ``extra["query_groups"] = {"seen": mask, "new": mask}`` makes
  evaluation report ``map_by_group`` next to ``map``;
* the training split is the protocol's training images of seen classes only (methods trained on
  ``train`` never see a new class); ADSH learns codes for the original database only, DIHN for the
  incremental one. ``extra["incremental"]`` records the sizes and the flags that fix the split.

Every draw comes from ``--seed`` through the dataset's own protocol; this step draws nothing.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from hashkit.flags import Flag
from hashkit.errors import HashkitError

from .base import DataConfig, DatasetSplits, ImageCollection

NUM_SEEN_FLAG = Flag(
    None,
    "incremental protocol (ADSH → DIHN): the first N classes are seen (original database), the rest arrive "
    "later (incremental database); queries of all classes against original + incremental",
    int,
)
# The flags (config keys) that fix which images form the original database; DIHN checks them against --from.
PROTOCOL_KEYS = ("seed", "num_seen", "num_query", "num_database")


def incremental_option(factory: Callable[[DataConfig], DatasetSplits]) -> Callable[[DataConfig], DatasetSplits]:
    """Wrap a dataset factory so ``--num-seen N`` (``config.options['num_seen']``) applies the protocol."""

    @functools.wraps(factory)
    def wrapper(config: DataConfig) -> DatasetSplits:
        splits = factory(config)
        num_seen = config.options.get("num_seen")
        if num_seen is None:
            return splits
        return incremental_splits(splits, int(num_seen), config)

    wrapper.cli_flags = {**getattr(factory, "cli_flags", {}), "num_seen": NUM_SEEN_FLAG}  # type: ignore[attr-defined]
    return wrapper


def is_new(labels: np.ndarray, num_seen: int) -> np.ndarray:
    """(n,) bool: the items carrying any class index ≥ ``num_seen``."""
    return np.asarray(labels)[:, num_seen:].any(axis=1)


def incremental_splits(base: DatasetSplits, num_seen: int, config: DataConfig) -> DatasetSplits:
    """``base`` (the dataset's own protocol) under the incremental protocol with ``num_seen`` seen classes."""
    num_classes = base.num_classes
    if not 1 <= num_seen < num_classes:
        raise HashkitError(
            f"--num-seen {num_seen} is out of range for {base.name} ({num_classes} classes); use 1..{num_classes - 1}"
        )
    db_new = is_new(base.database.labels, num_seen)
    original, incremental = np.flatnonzero(~db_new), np.flatnonzero(db_new)
    if len(original) == 0 or len(incremental) == 0:
        which = "original (seen-class)" if len(original) == 0 else "incremental (new-class)"
        raise HashkitError(f"--num-seen {num_seen}: the {which} database of {base.name} is empty; change --num-seen")
    order = np.concatenate([original, incremental])
    database = ImageCollection.concatenate(
        [base.database.subset(original), base.database.subset(incremental)], source=base.database.source
    )
    train_keep = np.flatnonzero(~is_new(base.train.labels, num_seen))
    query_new = is_new(base.query.labels, num_seen)
    seen_names = base.class_names[:num_seen]
    new_names = base.class_names[num_seen:]
    extra: dict[str, Any] = dict(base.extra)
    for key, part in (("database_index", order), ("train_index", train_keep)):
        if key in extra:
            extra[key] = np.asarray(extra[key])[part]
    options = config.options
    extra["incremental"] = {
        "num_seen": num_seen,
        "seen_classes": seen_names,
        "new_classes": new_names,
        "num_original": int(len(original)),
        "num_incremental": int(len(incremental)),
        "dataset": base.name,
        "protocol": {key: (num_seen if key == "num_seen" else getattr(config, key, options.get(key))) for key in PROTOCOL_KEYS},
    }
    extra["query_groups"] = {"seen": ~query_new, "new": query_new}
    return DatasetSplits(
        name=base.name,
        train=base.train.subset(train_keep),
        query=base.query,
        database=database,
        class_names=list(base.class_names),
        default_topk=base.default_topk,
        protocol=(
            f"{base.protocol}; incremental: seen classes {', '.join(seen_names)}; new classes {', '.join(new_names)}; "
            f"database = {len(original)} original (seen) + {len(incremental)} incremental (new) images; "
            f"queries {int((~query_new).sum())} seen + {int(query_new.sum())} new; training images of seen classes only "
            f"({len(train_keep)})"
        ),
        extra=extra,
    )

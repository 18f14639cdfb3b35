"""List-file datasets: NUS-WIDE, ImageNet100, MS-COCO, MIRFLICKR-25K in the HashNet / DeepHash-pytorch format.

Format: one image per line, ``<image path> <label vector>``, space separated, the label vector as 0/1
columns (one-hot for single-label data, multi-hot for multi-label data), e.g.::

    images/0001.jpg 0 1 0 0 1 0 …

Relative image paths are resolved against ``--root`` (the folder holding the lists when no ``--root``
is given); absolute paths are kept. Blank lines are skipped. Every path is checked up front, and a
malformed line is reported as ``<list file>:<line>``.

Two layouts, looked for in this order:

* **three lists** (as distributed by thuml/HashNet and DeepHash-pytorch): ``train.txt``, ``test.txt``
  (or ``query.txt``) and ``database.txt`` under ``--root``, or any files given with ``--train-list``,
  ``--query-list``, ``--database-list``. The splits are used as listed; ``--num-query``,
  ``--num-train``, ``--num-database`` subsample a list (class-balanced for single-label lists, uniform
  for multi-label ones, from ``--seed``).
* **one pooled list** ``all.txt`` (or ``--all-list``): the preset's protocol is drawn from it with
  ``--seed`` (hashkit.data.splits): queries first, training images from the rest, and the database is
  every non-query image (training images included), as the seeds do. Used where the standard lists are
  not distributed (MIRFLICKR-25K, NUS-WIDE top-10 for SSDH) or to redraw a split.

``--dataset list`` takes any such files (the pooled layout then needs ``--num-query`` and
``--num-train``); mAP@ALL unless ``--topk``. Presets fix the standard protocol and ``--topk`` default:

=============  ============================  =======  =======  ===========================  =========
preset         data                          query    train    database                     mAP@
=============  ============================  =======  =======  ===========================  =========
nuswide21      NUS-WIDE, 21 top concepts     2,100    10,500   193,734 (all non-query)      5000
imagenet100    ImageNet, 100 classes         5,000    10,000   128,495                      1000
coco           MS-COCO 2014, 80 categories   5,000    10,000   117,218 (all non-query)      5000
flickr25k      MIRFLICKR-25K (multi-label)   2,000    10,000   all non-query                5000
nuswide10      NUS-WIDE, 10 top concepts     5,000    5,000    all non-query                5000
=============  ============================  =======  =======  ===========================  =========

Sources: nuswide21 — DeepHash-pytorch README (195,834 images with one of the 21 most frequent concepts;
100 queries per concept; 500 training images per concept from the database) and TreezzZ/DHN_PyTorch;
imagenet100 and coco — thuml/HashNet's lists (DeepHash-pytorch copies them); flickr25k and nuswide10 —
the SSDH seed (TreezzZ/SSDH_PyTorch README: 2,000/10,000 and 5,000/5,000, mAP@5000), whose loader draws
query and training images at random and keeps every non-query image in the database. Drawn from
``all.txt`` the multi-label presets sample queries uniformly (the concepts overlap; the DeepHash-pytorch
NUS-WIDE list draws 100 per concept). Presets check the number of label columns (nuswide21 21,
imagenet100 100, coco 80, nuswide10 10) and warn when listed split sizes differ from the standard ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from loguru import logger

from hashkit.flags import Flag
from hashkit.errors import HashkitError
from hashkit.registry import DATASETS

from .base import DataConfig, DatasetSplits, ImageCollection
from .splits import query_train_database, sample

TRAIN_NAMES = ("train.txt",)
QUERY_NAMES = ("test.txt", "query.txt")
DATABASE_NAMES = ("database.txt",)
POOL_NAMES = ("all.txt",)

LIST_FLAGS: dict[str, Flag] = {
    "train_list": Flag(None, "list file of the training split (default: <root>/train.txt); list-file presets read it too"),
    "query_list": Flag(None, "list file of the queries (default: <root>/test.txt or <root>/query.txt)"),
    "database_list": Flag(None, "list file of the database (default: <root>/database.txt)"),
    "all_list": Flag(None, "one pooled list to draw query/train/database from with --seed (default: <root>/all.txt)"),
}


@dataclass(frozen=True)
class Preset:
    """A standard protocol over list files: split sizes, label columns and the mAP cut-off."""

    name: str
    title: str
    num_query: int
    num_train: int
    num_database: int | None  # size of the standard database list, for a warning only (None: not fixed)
    num_classes: int | None
    default_topk: int | None
    aliases: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("nuswide21", "NUS-WIDE (21 most frequent concepts)", 2100, 10500, 193734, 21, 5000,
               ("nus-wide-21", "nuswide_21", "nus-wide-tc21")),
        Preset("imagenet100", "ImageNet100 (100 ImageNet classes)", 5000, 10000, 128495, 100, 1000,
               ("imagenet-100", "imagenet_100")),
        Preset("coco", "MS-COCO 2014 (80 categories)", 5000, 10000, 117218, 80, 5000, ("mscoco", "ms-coco")),
        Preset("flickr25k", "MIRFLICKR-25K", 2000, 10000, None, None, 5000, ("mirflickr", "mirflickr25k")),
        Preset("nuswide10", "NUS-WIDE (10 most frequent concepts)", 5000, 5000, None, 10, 5000,
               ("nus-wide-10", "nuswide_10", "nus-wide-tc10")),
    )
}


def read_list(list_file: str | Path, image_root: str | Path | None = None) -> ImageCollection:
    """Parse one list file into an ImageCollection (absolute paths, uint8 labels), checking every line
    and that every image exists; errors name the file and line."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise HashkitError(f"list file {list_file} does not exist; check the path or --root")
    root = Path(image_root) if image_root is not None else list_file.parent
    paths: list[str] = []
    rows: list[list[bool]] = []
    lines: list[int] = []
    width = -1
    try:
        handle = open(list_file, encoding="utf-8")
    except OSError as exc:
        raise HashkitError(f"list file {list_file} is unreadable ({exc.strerror}); check its permissions") from exc
    with handle:
        try:
            for lineno, line in enumerate(handle, 1):
                parts = line.split()
                if not parts:
                    continue
                where = f"{list_file}:{lineno}"
                columns = parts[1:]
                if not columns:
                    raise HashkitError(
                        f"{where}: no label columns after the image path {parts[0]!r}; each line is "
                        "'<image path> <0/1 label vector>'"
                    )
                if width < 0:
                    width = len(columns)
                elif len(columns) != width:
                    raise HashkitError(
                        f"{where}: {len(columns)} label columns but the first entry has {width}; every line needs "
                        "the same label vector length (a path with spaces also splits into extra columns)"
                    )
                bad = next((t for t in columns if t != "0" and t != "1"), None)
                if bad is not None:
                    raise HashkitError(f"{where}: label value {bad!r} is not 0 or 1; labels are a 0/1 vector")
                token = parts[0]
                paths.append(token if os.path.isabs(token) else os.path.normpath(os.path.join(root, token)))
                rows.append([t == "1" for t in columns])
                lines.append(lineno)
        except UnicodeDecodeError as exc:
            raise HashkitError(f"list file {list_file} is not UTF-8 text ({exc.reason}); is it a list file?") from exc
    if not paths:
        raise HashkitError(
            f"list file {list_file} holds no entries; each line is '<image path> <0/1 label vector>'"
        )
    _check_images_exist(paths, lines, list_file, root)
    labels = np.asarray(rows, dtype=np.uint8)
    return ImageCollection(labels, paths=paths, source=str(list_file))


def _check_images_exist(paths: list[str], lines: list[int], list_file: Path, root: Path) -> None:
    seen: dict[str, bool] = {}
    missing = []
    for index, path in enumerate(paths):
        ok = seen.get(path)
        if ok is None:
            ok = seen[path] = os.path.exists(path)
        if not ok:
            missing.append(index)
    if missing:
        first = missing[0]
        raise HashkitError(
            f"{list_file}:{lines[first]}: image {paths[first]} does not exist ({len(missing):,} of {len(paths):,} "
            f"listed images are missing); relative paths are resolved against {root} — fix --root or the list"
        )


def _resolve_flag(value: str, root: Path | None) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and root is not None and (root / path).exists():
        return root / path
    return path


def _first_existing(root: Path | None, names: tuple[str, ...]) -> Path | None:
    if root is None:
        return None
    return next((root / n for n in names if (root / n).is_file()), None)


def load_list_dataset(config: DataConfig, preset: Preset | None) -> DatasetSplits:
    """The splits of a list-file dataset (``preset`` None: ``--dataset list``) under its layout."""
    name = preset.name if preset else "list"
    options = config.options or {}
    root = Path(config.root).expanduser() if config.root else None
    if root is not None and not root.exists():
        raise HashkitError(f"--root {root} does not exist; point it at the folder holding the list files and images")
    if root is not None and root.is_file():
        raise HashkitError(f"--root {root} is a file; for list-file datasets it is the folder of the lists and images")
    given = {k: options.get(k) for k in LIST_FLAGS}
    found = {
        key: _resolve_flag(given[key], root) if given[key] else _first_existing(root, names)
        for key, names in (("train_list", TRAIN_NAMES), ("query_list", QUERY_NAMES), ("database_list", DATABASE_NAMES))
    }
    explicit = any(given[k] for k in found)
    pool = _resolve_flag(given["all_list"], root) if given["all_list"] else _first_existing(root, POOL_NAMES)
    if all(found.values()) and (explicit or not given["all_list"]):
        return _three_lists(config, preset, name, root, found)  # type: ignore[arg-type]
    if pool is not None and not explicit:
        return _pooled(config, preset, name, root, pool)
    where = f" under --root {root}" if root else ""
    if explicit or any(found.values()):
        missing = [k for k, v in found.items() if v is None]
        raise HashkitError(
            f"--dataset {name}: no {' / '.join(_describe(k) for k in missing)}{where} (the three-list layout needs "
            f"train.txt, test.txt or query.txt, and database.txt); pass "
            f"{', '.join('--' + k.replace('_', '-') for k in missing)}, or one all.txt to draw the splits from"
        )
    raise HashkitError(
        f"--dataset {name}: no list files{where or ' (no --root given)'}; expected train.txt, test.txt (or query.txt) "
        "and database.txt, or one all.txt to draw the splits from with --seed; or pass --train-list, --query-list "
        "and --database-list (or --all-list), with --root for relative image paths"
    )


def _describe(key: str) -> str:
    return {"train_list": "train.txt", "query_list": "test.txt or query.txt", "database_list": "database.txt"}[key]


def _check_classes(preset: Preset | None, parts: dict[str, ImageCollection]) -> int:
    widths = {p.source: p.num_classes for p in parts.values()}
    if len(set(widths.values())) > 1:
        listing = ", ".join(f"{src} has {w}" for src, w in widths.items())
        raise HashkitError(f"the list files disagree on the number of label columns ({listing}); use lists of one dataset")
    width = next(iter(widths.values()))
    if preset and preset.num_classes is not None and width != preset.num_classes:
        first = next(iter(parts.values())).source
        raise HashkitError(
            f"{first}: {width} label columns, but --dataset {preset.name} ({preset.title}) has {preset.num_classes}; "
            "pass the matching lists, or --dataset list for other data"
        )
    return width


def _subsample(part: ImageCollection, total: int | None, rng: np.random.Generator, what: str) -> ImageCollection:
    if total is None or total == len(part):
        return part
    if total <= 0:
        raise HashkitError(f"{what} must be positive, got {total}")
    if total > len(part):
        raise HashkitError(f"{what}={total} but {part.source} lists only {len(part)} images; lower {what}")
    return part.subset(sample(part.labels, np.arange(len(part)), total, rng, what))


def _three_lists(
    config: DataConfig, preset: Preset | None, name: str, root: Path | None, files: dict[str, Path]
) -> DatasetSplits:
    parts = {k: read_list(path, root if root is not None else path.parent) for k, path in files.items()}
    width = _check_classes(preset, parts)
    rng = np.random.default_rng(config.seed)
    train = _subsample(parts["train_list"], config.num_train, rng, "--num-train")
    query = _subsample(parts["query_list"], config.num_query, rng, "--num-query")
    database = _subsample(parts["database_list"], config.num_database, rng, "--num-database")
    if preset:
        standard = {"query": preset.num_query, "train": preset.num_train, "database": preset.num_database}
        for part, coll, given in (("query", query, config.num_query), ("train", train, config.num_train),
                                  ("database", database, config.num_database)):
            if given is None and standard[part] is not None and len(coll) != standard[part]:
                logger.warning(
                    f"{name}: {coll.source} lists {len(coll):,} {part} images; "
                    f"the standard protocol has {standard[part]:,}"
                )
    sizes = ", ".join(f"{Path(c.source).name} {len(c):,}" for c in (train, query, database))
    subsampled = any(v is not None for v in (config.num_train, config.num_query, config.num_database))
    return DatasetSplits(
        name=name,
        train=train,
        query=query,
        database=database,
        class_names=[f"label{i}" for i in range(width)],
        default_topk=preset.default_topk if preset else None,
        protocol=f"list files (train, query, database): {sizes}; {width} label columns"
        + (f"; subsampled with seed {config.seed}" if subsampled else ""),
        extra={"lists": {k: str(v) for k, v in files.items()}},
    )


def _pooled(config: DataConfig, preset: Preset | None, name: str, root: Path | None, pool_file: Path) -> DatasetSplits:
    pool = read_list(pool_file, root if root is not None else pool_file.parent)
    width = _check_classes(preset, {"all_list": pool})
    num_query = config.num_query if config.num_query is not None else (preset.num_query if preset else None)
    num_train = config.num_train if config.num_train is not None else (preset.num_train if preset else None)
    if num_query is None or num_train is None:
        raise HashkitError(
            f"--dataset list with one pooled list ({pool_file}) needs --num-query and --num-train to draw the splits"
        )
    query, train, database = query_train_database(pool.labels, num_query, num_train, config.num_database, config.seed)
    db_text = "every non-query image" if config.num_database is None else f"{len(database):,} non-query images"
    return DatasetSplits(
        name=name,
        train=pool.subset(train),
        query=pool.subset(query),
        database=pool.subset(database),
        class_names=[f"label{i}" for i in range(width)],
        default_topk=preset.default_topk if preset else None,
        protocol=(
            f"{len(pool):,} images of {pool_file} pooled; {len(query):,} queries; {len(train):,} training images "
            f"from the rest; database = {db_text}; {width} label columns; seed {config.seed}"
        ),
        extra={"pool": pool, "query_index": query, "train_index": train, "database_index": database,
               "lists": {"all_list": str(pool_file)}},
    )


@DATASETS.register("list", aliases=("listfile", "list-file"))
def list_dataset(config: DataConfig) -> DatasetSplits:
    """Any list files: train/test(query)/database lists, or one all.txt with --num-query/--num-train."""
    return load_list_dataset(config, None)


list_dataset.cli_flags = LIST_FLAGS  # type: ignore[attr-defined]


def _preset_factory(preset: Preset) -> Callable[[DataConfig], DatasetSplits]:
    def factory(config: DataConfig) -> DatasetSplits:
        return load_list_dataset(config, preset)

    factory.__name__ = preset.name
    db = f"{preset.num_database:,}" if preset.num_database else "all non-query"
    factory.__doc__ = (
        f"{preset.title}: {preset.num_query:,} query / {preset.num_train:,} train / {db} database, "
        f"mAP@{preset.default_topk or 'ALL'} (list files under --root)."
    )
    return factory


for _preset in PRESETS.values():
    DATASETS.register(_preset.name, aliases=_preset.aliases)(_preset_factory(_preset))

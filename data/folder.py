"""Any folder of images as a dataset: ``--dataset folder --root DIR`` (user guide: docs/folder-datasets.md).

Labels (torchvision's ``ImageFolder`` convention):

* **labelled** — ``DIR/<class>/…/<image>``: every subfolder of ``DIR`` that holds an image is a class;
  classes are sorted by folder name (class index = position in that order); a class's images are all
  images below its folder, at any depth. Images lying directly in ``DIR`` belong to no class and are
  skipped (listed in the warning below). At least two class folders are needed.
* **unlabelled** — a flat folder (no subfolder holds an image), or any tree with ``--unlabelled``: every
  image below ``DIR`` at any depth, and no labels (a label matrix with zero columns). Only methods with
  ``supervised = False`` train on it; a supervised one is refused in one line by ``hashkit train``.

Files: hidden files and folders (name starting with ``.``: ``.DS_Store``, ``.thumbnails/``…) are ignored.
Every other file is an image when its suffix is one of :data:`hashkit.data.base.IMAGE_SUFFIXES` and PIL
recognises its header. Everything else (a ``.txt``, an empty or corrupt ``.jpg``) is skipped and listed
in **one** warning per scan (up to :data:`LISTED_IN_WARNING` names, then the count). A file whose header
is fine but whose pixels are truncated is found only when decoded, as a one-line error naming it (a full
decode of every image at each start would cost minutes on large photo folders). Symbolic links are
followed, as ImageFolder does (a link back up the tree is visited once).

Order and ids: classes in class order, a class's images in ImageFolder's order (its folders sorted by
path, the files of each folder by name); unlabelled data in the same order over the whole tree. An item's id is its path relative to ``DIR`` with ``/``
separators — the id ``hashkit encode --images DIR`` stores for the same file, which uses the same scan.

Splits (hashkit.data.splits, every draw from ``--seed``): queries first, training images from the
rest, database = every non-query image (training images included) or ``--num-database`` of them, as
for the pooled list-file layout. Labelled data is drawn class-balanced (each total must be a multiple
of the number of classes); unlabelled data uniformly. Defaults, so a folder works without flags:

* ``--num-query``: 10 % of the images, at most 1,000 (labelled: per class 10 % of the smallest class,
  at least 1, at most 1,000 in all);
* ``--num-train``: every non-query image, at most 10,000 (labelled: the largest class-balanced draw,
  i.e. per class the smallest class's size less its queries, at most 10,000 in all). The cap is the
  list presets' training-set size; methods that hold an n × n training similarity (SSDH, ADSH) need
  it on a large folder (49,000 images would be 2.4 G entries).

mAP@ALL unless ``--topk``. Relevance: a database image is relevant to a query when they share the class
(as everywhere in hashkit). **Unlabelled data has no ground truth**, so it has no mAP: ``hashkit train``
trains and saves the checkpoint as usual, and its result.json records ``"map": null`` (the training log
line reads ``mAP nan``); ``hashkit evaluate`` refuses in one line. Codes of an unlabelled folder are
used through ``hashkit encode --images DIR``, ``search`` and ``serve``. hashkit does not invent a
substitute (e.g. feature-space neighbours as ground truth): such a number measures agreement with a
backbone, not what a user's own photos mean, and would read as a real mAP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from loguru import logger
from PIL import Image, UnidentifiedImageError

from hashkit.errors import HashkitError
from hashkit.flags import Flag
from hashkit.registry import DATASETS

from .base import IMAGE_SUFFIXES, DataConfig, DatasetSplits, ImageCollection, one_hot
from .splits import query_train_database

LISTED_IN_WARNING = 20  # skipped files named in the warning; the rest are counted
DEFAULT_QUERY_FRACTION = 10  # default --num-query: 1 / 10 of the images…
DEFAULT_MAX_QUERIES = 1000  # …and at most this many
DEFAULT_MAX_TRAIN = 10_000  # default --num-train: every non-query image up to this many

FOLDER_FLAGS: dict[str, Flag] = {
    "unlabelled": Flag(
        False,
        "use every image below --root without labels, even when it has class subfolders (only unsupervised "
        "methods train; no mAP)",
        bool,
    ),
}


@dataclass
class FolderScan:
    """The readable images below a folder, their classes, and the files skipped on the way."""

    root: Path
    paths: list[str]  # absolute paths of readable images, in dataset order
    class_names: list[str]  # [] when unlabelled
    classes: np.ndarray  # (n,) class index of each image; empty when unlabelled
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to root, why)

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)


def image_problem(path: str) -> str | None:
    """Why ``path`` is not a readable image (None when it is): the suffix, or PIL's header check."""
    if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
        return "not an image file type"
    try:
        with Image.open(path) as image:  # reads the header only: format, size and mode
            image.size  # noqa: B018 - the header parsed
    except UnidentifiedImageError:
        return "not a readable image"
    except OSError as exc:  # permission errors, a folder named like an image…
        return f"unreadable: {exc.strerror or exc}"
    except (SyntaxError, ValueError) as exc:  # PIL's plugins raise these for malformed headers
        return f"unreadable: {exc}"
    return None


def _walk_files(folder: Path) -> list[str]:
    """Every non-hidden file below ``folder`` (following links, each real folder once), in ImageFolder's
    order: folders sorted by path, then the files of each folder sorted by name."""
    found: list[tuple[str, str]] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a link back up the tree
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend((dirpath, name) for name in filenames if not name.startswith("."))
    return [os.path.join(dirpath, name) for dirpath, name in sorted(found)]


def _readable(files: list[str], root: Path, skipped: list[tuple[str, str]]) -> list[str]:
    """The readable images among ``files``; the others are appended to ``skipped``."""
    keep = []
    for path in files:
        problem = image_problem(path)
        if problem is None:
            keep.append(path)
        else:
            skipped.append((Path(path).relative_to(root).as_posix(), problem))
    return keep


def warn_skipped(root: Path, skipped: list[tuple[str, str]]) -> None:
    """One warning naming the skipped files (the first LISTED_IN_WARNING of them) and their number."""
    if not skipped:
        return
    named = "; ".join(f"{name} ({why})" for name, why in skipped[:LISTED_IN_WARNING])
    more = f"; and {len(skipped) - LISTED_IN_WARNING:,} more" if len(skipped) > LISTED_IN_WARNING else ""
    logger.warning(f"skipped {len(skipped):,} file(s) under {root} that are not readable images: {named}{more}")


def _check_root(root: Path, flag: str) -> None:
    if not root.exists():
        raise HashkitError(f"{flag} {root} does not exist; point it at a folder of images")
    if not root.is_dir():
        raise HashkitError(f"{flag} {root} is not a folder; point it at a folder of images (one subfolder per class for labels)")


def scan_images(root: str | Path, flag: str = "--images") -> tuple[list[str], list[str]]:
    """(absolute paths, ids) of every readable image below ``root`` — what ``hashkit encode --images DIR``
    encodes; ids are paths relative to ``root`` as the folder dataset's. Skipped files: one warning."""
    root = Path(root).expanduser().absolute()
    _check_root(root, flag)
    skipped: list[tuple[str, str]] = []
    paths = _readable(_walk_files(root), root, skipped)
    warn_skipped(root, skipped)
    if not paths:
        raise HashkitError(f"{flag} {root} holds no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, [Path(p).relative_to(root).as_posix() for p in paths]


def scan_folder(root: str | Path, unlabelled: bool = False) -> FolderScan:
    """The images below ``root`` under the layout rules of the module docstring (one warning for the
    skipped files; one-line errors for an empty tree, an empty class folder or a single class)."""
    root = Path(root).expanduser().absolute()
    _check_root(root, "--root")
    skipped: list[tuple[str, str]] = []
    if not unlabelled:
        folders = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and e.is_dir())
        per_class = {name: _readable(_walk_files(root / name), root, skipped) for name in folders}
        with_images = [name for name in folders if per_class[name]]
        if with_images:
            return _labelled(root, folders, per_class, skipped)
        skipped.clear()  # a flat folder: the scan below lists every file once
    paths = _readable(_walk_files(root), root, skipped)
    warn_skipped(root, skipped)
    if not paths:
        raise HashkitError(f"--root {root} holds no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}); point it at a folder of images")
    return FolderScan(root, paths, [], np.zeros(0, dtype=np.int64), skipped)


def _labelled(root: Path, folders: list[str], per_class: dict[str, list[str]], skipped: list[tuple[str, str]]) -> FolderScan:
    loose = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and not e.is_dir())
    skipped.extend((name, "outside the class folders; --unlabelled uses every image") for name in loose)
    warn_skipped(root, skipped)
    empty = [name for name in folders if not per_class[name]]
    if empty:
        raise HashkitError(
            f"class folder {root / empty[0]} holds no readable images ({len(empty)} such folder(s)); add images, "
            "remove the folder, or pass --unlabelled to use the images without labels"
        )
    if len(folders) < 2:
        raise HashkitError(
            f"--root {root} has one class folder ({folders[0]}): labels need at least two; point --root at a folder "
            f"with one subfolder per class, or pass --unlabelled (or --root {root / folders[0]}) to use its images "
            "without labels"
        )
    paths = [p for name in folders for p in per_class[name]]
    classes = np.repeat(np.arange(len(folders)), [len(per_class[name]) for name in folders])
    return FolderScan(root, paths, folders, classes, skipped)


def default_sizes(scan: FolderScan, num_query: int | None, num_train: int | None) -> tuple[int, int]:
    """``--num-query`` / ``--num-train`` with the defaults of the module docstring filled in."""
    if scan.labelled:
        num_classes = len(scan.class_names)
        counts = np.bincount(scan.classes, minlength=num_classes)
        smallest = int(counts.min())
        if num_query is None:
            per_class = max(1, min(smallest // DEFAULT_QUERY_FRACTION, DEFAULT_MAX_QUERIES // num_classes))
            num_query = per_class * num_classes
        if num_train is None:
            per_class = min(smallest - num_query // num_classes, max(1, DEFAULT_MAX_TRAIN // num_classes))
            if per_class < 1:
                name = scan.class_names[int(counts.argmin())]
                raise HashkitError(
                    f"class folder {name} has {smallest} image(s), none left for training after "
                    f"{num_query // num_classes} per class for queries; add images, lower --num-query, or pass --num-train"
                )
            num_train = per_class * num_classes
        return num_query, num_train
    total = len(scan.paths)
    if num_query is None:
        num_query = max(1, min(total // DEFAULT_QUERY_FRACTION, DEFAULT_MAX_QUERIES))
    if num_train is None:
        num_train = min(total - num_query, DEFAULT_MAX_TRAIN)
        if num_train < 1:
            raise HashkitError(f"--root {scan.root} holds {total} image(s): too few for queries and training; add images")
    return num_query, num_train


@DATASETS.register("folder", aliases=("imagefolder", "image-folder", "images"))
def folder(config: DataConfig) -> DatasetSplits:
    """Any folder of images: class subfolders give labels (ImageFolder); a flat folder or --unlabelled none."""
    if not config.root:
        raise HashkitError("--dataset folder needs --root DIR: a folder of images (one subfolder per class for labels)")
    scan = scan_folder(config.root, unlabelled=bool((config.options or {}).get("unlabelled")))
    if scan.labelled:
        labels = one_hot(scan.classes, len(scan.class_names))
    else:
        labels = np.zeros((len(scan.paths), 0), dtype=np.uint8)
    pool = ImageCollection(labels, paths=scan.paths, source=str(scan.root), id_root=str(scan.root))
    num_query, num_train = default_sizes(scan, config.num_query, config.num_train)
    query, train, database = query_train_database(labels, num_query, num_train, config.num_database, config.seed)
    how = "class-balanced" if scan.labelled else "uniformly drawn"
    kind = f"{len(scan.class_names)} classes (subfolders)" if scan.labelled else "unlabelled (no mAP)"
    db_text = "every non-query image" if config.num_database is None else f"{len(database):,} non-query images"
    return DatasetSplits(
        name="folder",
        train=pool.subset(train),
        query=pool.subset(query),
        database=pool.subset(database),
        class_names=list(scan.class_names),
        default_topk=None,
        protocol=(
            f"{len(pool):,} images under {scan.root}, {kind}; {len(query):,} {how} queries; {len(train):,} training "
            f"images from the rest; database = {db_text}; seed {config.seed}"
            + (f"; {len(scan.skipped):,} files skipped" if scan.skipped else "")
        ),
        extra={"pool": pool, "query_index": query, "train_index": train, "database_index": database,
               "skipped": scan.skipped},
    )


folder.cli_flags = FOLDER_FLAGS  # type: ignore[attr-defined]

"""CIFAR-10 (Krizhevsky, 2009) in every common form, under the deep-hashing seed protocol.

Accepted ``--root`` forms (detected in this order):
  * ``cifar-10-python.tar.gz`` (the official archive) or a folder holding it;
  * ``cifar-10-batches-py/`` (torchvision's extracted format) or a folder holding it;
  * a folder-per-class image tree ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``;
  * a ``.tar`` of such a tree (e.g. ``cifar10-jpg.tar``) or a folder holding one — unpacked once into
    ``<cache>/datasets/`` and reused on later runs;
  * ``--download``: fetch the official archive into ``--root`` with torchvision (needs internet).

Protocol (default, as DPSH/ADSH/DIHN seeds): the 60,000 train+test images are pooled (train first,
then test, each in class order then file order); 1,000 queries (100 per class) are drawn, then 5,000
training images (500 per class) from the rest; the database is every non-query image (59,000,
training images included). mAP@ALL by default. All draws come from ``--seed``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from loguru import logger

from hashkit.errors import HashkitError
from hashkit.paths import cache_root
from hashkit.registry import DATASETS

from .base import IMAGE_SUFFIXES, DataConfig, DatasetSplits, ImageCollection, one_hot
from .incremental import incremental_option
from .splits import query_train_database

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OFFICIAL_ARCHIVE = "cifar-10-python.tar.gz"
BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@DATASETS.register("cifar10", aliases=("cifar-10", "cifar"))
@incremental_option  # --num-seen N: the incremental protocol (data/incremental.py)
def cifar10(config: DataConfig) -> DatasetSplits:
    """CIFAR-10 under the seed protocol: 1,000 query / 5,000 train / 59,000 database, mAP@ALL."""
    pool = load_cifar10_pool(config.root, download=config.download, cache_dir=config.cache_dir)
    num_query = config.num_query if config.num_query is not None else 1000
    num_train = config.num_train if config.num_train is not None else 5000
    query, train, database = query_train_database(pool.labels, num_query, num_train, config.num_database, config.seed)
    db_text = "every non-query image" if config.num_database is None else f"{len(database)} class-balanced non-query images"
    return DatasetSplits(
        name="cifar10",
        train=pool.subset(train),
        query=pool.subset(query),
        database=pool.subset(database),
        class_names=list(CLASS_NAMES),
        default_topk=None,
        protocol=(
            f"60,000 train+test images pooled; {len(query)} class-balanced queries; {len(train)} class-balanced "
            f"training images from the rest; database = {db_text}; seed {config.seed}"
        ),
        extra={"pool": pool, "query_index": query, "train_index": train, "database_index": database},
    )


def load_cifar10_pool(root: str | None, download: bool = False, cache_dir: str | None = None) -> ImageCollection:
    """All 60,000 CIFAR-10 images (train then test) from whichever supported form ``root`` holds."""
    if root is None:
        if not download:
            raise HashkitError("no CIFAR-10 location given; pass --root PATH (a tar, archive or folder) or --download")
        root = str(cache_root(cache_dir) / "data" / "cifar10")
    path = Path(root).expanduser()
    if download and not _find_python_format(path):
        _download(path)
    if not path.exists():
        raise HashkitError(f"--root {path} does not exist; point it at CIFAR-10 (a tar, archive or folder) or add --download")
    found = _find_python_format(path)
    if found is not None:
        return _load_python_format(found)
    tree = _find_image_tree(path)
    if tree is not None:
        return _load_image_tree(tree)
    tar = _find_tree_tar(path)
    if tar is not None:
        return _load_image_tree(_unpack_once(tar, cache_dir))
    raise HashkitError(
        f"--root {path} holds no CIFAR-10 data: expected {OFFICIAL_ARCHIVE}, {BATCH_FOLDER}/, train/<class>/ and "
        "test/<class>/ image folders, or a .tar of them; fix --root or add --download (needs internet)"
    )


def _find_python_format(path: Path) -> Path | None:
    candidates = [path, path / BATCH_FOLDER, path / OFFICIAL_ARCHIVE]
    for candidate in candidates:
        if candidate.is_dir() and (candidate / "test_batch").exists():
            return candidate
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz")):
            return candidate
    return None


def _read_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(data, encoding="latin1")  # the official format is a pickle of plain arrays
        pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise HashkitError(f"{source} is not a readable CIFAR-10 batch ({exc}); re-download it") from exc
    return np.ascontiguousarray(pixels), labels


def _load_python_format(found: Path) -> ImageCollection:
    names = TRAIN_BATCHES + ["test_batch"]
    blobs: dict[str, bytes] = {}
    if found.is_dir():
        for name in names:
            file = found / name
            if not file.exists():
                raise HashkitError(f"{file} is missing; the CIFAR-10 folder is incomplete, re-download it")
            blobs[name] = file.read_bytes()
    else:
        try:
            with tarfile.open(found) as archive:
                for member in archive.getmembers():
                    base = os.path.basename(member.name)
                    if base in names and member.isfile():
                        blobs[base] = archive.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise HashkitError(f"{found} is not a readable archive ({exc}); re-download it") from exc
        missing = [n for n in names if n not in blobs]
        if missing:
            raise HashkitError(f"{found} lacks {', '.join(missing)}; it is not the official CIFAR-10 archive")
    parts = [_read_batch(blobs[name], f"{found}:{name}") for name in names]
    pixels = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([l for _, l in parts])
    logger.info(f"CIFAR-10: {len(labels)} images from {found}")
    return ImageCollection(one_hot(labels, 10), pixels=pixels, source=str(found))


def _find_image_tree(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    for candidate in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def _load_image_tree(tree: Path) -> ImageCollection:
    paths: list[str] = []
    classes: list[int] = []
    for part in ("train", "test"):
        folders = sorted(p for p in (tree / part).iterdir() if p.is_dir())
        names = [f.name for f in folders]
        if names != CLASS_NAMES:
            raise HashkitError(
                f"{tree / part} has class folders {names}; CIFAR-10 needs exactly {CLASS_NAMES}"
            )
        for class_index, folder in enumerate(folders):
            files = sorted(f.name for f in os.scandir(folder) if os.path.splitext(f.name)[1].lower() in IMAGE_SUFFIXES)
            if not files:
                raise HashkitError(f"class folder {folder} has no images; add them or remove the folder")
            paths.extend(str(folder / f) for f in files)
            classes.extend([class_index] * len(files))
    logger.info(f"CIFAR-10: {len(paths)} images from the image tree {tree}")
    return ImageCollection(one_hot(np.asarray(classes), 10), paths=paths, source=str(tree))


def _find_tree_tar(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".tar":
        return path
    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
        preferred = [t for t in tars if "cifar" in t.name.lower()]
        if preferred or len(tars) == 1:
            return (preferred or tars)[0]
    return None


def _unpack_once(tar: Path, cache_dir: str | None) -> Path:
    """Unpack ``tar`` into the cache (keyed by its path, size and mtime) unless already there."""
    stat = tar.stat()
    key = hashlib.sha256(f"{tar.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root(cache_dir) / "datasets" / f"{tar.stem}-{key}"
    if (target / ".complete").exists():
        return _find_image_tree(target) or target
    logger.info(f"unpacking {tar} once into {target} (later runs reuse it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(tar) as archive:
            archive.extractall(staging, filter="data")
        (staging / ".complete").write_text(str(tar) + "\n")
        _publish_unpacked(staging, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise HashkitError(f"cannot unpack {tar} into {target.parent} ({exc}); check the file and free disk space") from exc
    tree = _find_image_tree(target)
    if tree is None:
        raise HashkitError(f"{tar} holds no train/<class>/ and test/<class>/ folders; it is not a CIFAR-10 image tar")
    return tree


def _publish_unpacked(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` tree to ``target``. A parallel run (a sweep started at once) may have
    published it meanwhile and be reading it: then keep theirs and drop ours, never delete a complete tree."""
    if not (target / ".complete").exists():
        if target.exists():  # an older, incomplete attempt
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
            return
        except OSError:
            if not (target / ".complete").exists():
                raise
    shutil.rmtree(staging, ignore_errors=True)


def _download(path: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10

        path.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(path), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise HashkitError(
            f"--download could not fetch CIFAR-10 into {path} ({type(exc).__name__}: {exc}); without internet, "
            "pass --root with a local copy (tar, archive or folder)"
        ) from exc

"""Dataset building blocks shared by every dataset: image collections, splits and the torch Dataset.

Labels are one-hot (single-label) or multi-hot (multi-label) uint8 matrices everywhere, so every
method and the evaluator share one code path: two items are relevant when they share a label.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hashkit.errors import HashkitError

# File suffixes read as images wherever hashkit scans a folder (dataset trees, `hashkit encode --images`).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".gif", ".tif", ".tiff"})


@dataclass
class DataConfig:
    """Everything a dataset factory needs; built from the CLI flags of the same names."""

    root: str | None = None
    seed: int = 0
    num_query: int | None = None
    num_train: int | None = None
    num_database: int | None = None
    download: bool = False
    cache_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageCollection:
    """Images with their labels: file paths (decoded on demand) or an in-memory uint8 array."""

    labels: np.ndarray  # (n, classes) uint8, one-hot or multi-hot
    paths: list[str] | None = None  # absolute or relative-to-root image files
    pixels: np.ndarray | None = None  # (n, H, W, 3) uint8
    source: str = ""  # what these images are, for error messages ("CIFAR-10 test batch", a list file…)
    id_root: str | None = None  # item ids are paths relative to this folder (folder datasets), else as stored

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.pixels is None):
            raise ValueError("ImageCollection needs exactly one of paths or pixels")
        if len(self.labels) != len(self):
            raise ValueError(f"{len(self.labels)} labels for {len(self)} images in {self.source}")

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.pixels)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    def item_id(self, index: int) -> str:
        """A stable, human-readable id for item ``index`` (its path, or source[index])."""
        if self.paths is not None:
            if self.id_root is not None:
                return Path(self.paths[index]).relative_to(self.id_root).as_posix()
            return self.paths[index]
        return f"{self.source}[{index}]"

    def load(self, index: int) -> Image.Image:
        """Decode item ``index`` as an RGB PIL image (greyscale, RGBA, CMYK are converted)."""
        if self.pixels is not None:
            return Image.fromarray(self.pixels[index])
        return load_rgb(self.paths[index])  # type: ignore[index]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageCollection":
        """The items at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageCollection(
            labels=self.labels[idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            pixels=self.pixels[idx] if self.pixels is not None else None,
            source=self.source,
            id_root=self.id_root,
        )

    @staticmethod
    def concatenate(parts: Sequence["ImageCollection"], source: str = "") -> "ImageCollection":
        """One collection holding ``parts`` in order (all path-based or all in-memory)."""
        labels = np.concatenate([p.labels for p in parts])
        if all(p.paths is not None for p in parts):
            roots = {p.id_root for p in parts}
            id_root = roots.pop() if len(roots) == 1 else None
            paths = [x for p in parts for x in p.paths]  # type: ignore[union-attr]
            return ImageCollection(labels, paths=paths, source=source, id_root=id_root)
        if all(p.pixels is not None for p in parts):
            return ImageCollection(labels, pixels=np.concatenate([p.pixels for p in parts]), source=source)  # type: ignore[misc]
        raise ValueError("cannot concatenate path-based and in-memory collections")


@dataclass
class DatasetSplits:
    """A dataset under its retrieval protocol: train, query and database collections."""

    name: str
    train: ImageCollection
    query: ImageCollection
    database: ImageCollection
    class_names: list[str]
    default_topk: int | None  # None = mAP@ALL
    protocol: str  # one line describing how the splits were drawn
    extra: dict[str, Any] = field(default_factory=dict)  # protocol-specific parts (e.g. incremental)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "num_train": len(self.train),
            "num_query": len(self.query),
            "num_database": len(self.database),
            "num_classes": self.num_classes,
            "protocol": self.protocol,
        }


def load_rgb(path: str | Path, data: bytes | None = None) -> Image.Image:
    """Decode an image file as RGB; a missing, truncated or corrupt file is a one-line error."""
    try:
        if data is None:
            with open(path, "rb") as handle:
                data = handle.read()
        image = Image.open(io.BytesIO(data))
        image.load()
    except FileNotFoundError as exc:
        raise HashkitError(f"image {path} does not exist; fix the path in the list file or --root") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HashkitError(
            f"image {path} is unreadable ({exc}); replace or remove the file (truncated or corrupt?)"
        ) from exc
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit greyscale: scale, don't clip
        peak = 65535.0 if image.mode.startswith("I;16") else float(max(1, np.asarray(image).max()))
        scaled = np.round(np.asarray(image, dtype=np.float64) * (255.0 / peak)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(scaled, mode="L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


class ImageDataset(torch.utils.data.Dataset):
    """A torch Dataset over an ImageCollection: (image tensor, label vector, position)."""

    def __init__(self, images: ImageCollection, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform
        self.labels = torch.from_numpy(images.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.transform(self.images.load(index)), self.labels[index], index


def one_hot(class_indices: np.ndarray, num_classes: int) -> np.ndarray:
    """(n,) integer class indices → (n, num_classes) uint8 one-hot matrix."""
    out = np.zeros((len(class_indices), num_classes), dtype=np.uint8)
    out[np.arange(len(class_indices)), class_indices] = 1
    return out

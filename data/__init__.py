"""Datasets (installed as ``hashkit.data``); importing this package registers every dataset."""

from . import cifar10  # noqa: F401  (registers "cifar10")
from . import folder  # noqa: F401  (registers "folder")
from . import listfile  # noqa: F401  (registers "list" and its presets)
from .base import DataConfig, DatasetSplits, ImageCollection, ImageDataset

__all__ = ["DataConfig", "DatasetSplits", "ImageCollection", "ImageDataset"]

"""On-disk cache of a frozen backbone prefix's outputs, one float16 row per image, computed once.

A cache folder is keyed (:class:`CacheKey`) by everything that changes the activations: dataset, arch,
a hash of the frozen prefix's state dict (weights and BN statistics), the stage the prefix stops before,
the image size and the transform (resize filter, normalisation, compute precision). Inside it, rows are
keyed per image (:func:`item_keys`: path relative to the dataset root + size + mtime, or a hash of the
pixels), so the union of train / query / database images is computed once, whatever the split, the
method or the bit length; images a later run needs that are not there yet are computed and added.

Rows live in shard files written atomically (``hashkit.atomic``: a temporary file renamed into place),
each with a header (key, item keys, shape, CRC-32 of the payload): a truncated or corrupt shard is never
read — it is logged, deleted and its images recomputed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from loguru import logger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from hashkit.atomic import atomic_open
from hashkit.data.base import ImageCollection
from hashkit.errors import HashkitError
from hashkit.progress import progress
from hashkit.transforms import DEFAULT_TEST, geometric_steps, normalize_batch, pil_resample

CACHE_FORMAT = 2  # bump when the file layout or the way activations are computed changes (2: full batches, issue 35)
MAGIC = b"HKFCACHE"
SHARD_SUFFIX = ".hkfc"
SHARD_IMAGES = 10_000  # rows per shard: an interrupted caching loses at most one shard's work


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines a frozen prefix's activations except which images they are of."""

    dataset: str
    arch: str
    stage: str  # the first stage NOT in the prefix ("end" = after the last stage: pooled features)
    stage_index: int
    weights: str  # sha256 of the prefix's state dict (weights and BN running statistics)
    image_size: int
    transform: str  # resize filter, normalisation and compute precision, as text
    dtype: str = "float16"
    format: int = CACHE_FORMAT

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def folder(self, root: Path) -> Path:
        """``<root>/features/<dataset>/<arch>-<stage>-<size>px-<digest>``: readable and unique."""
        return Path(root) / "features" / self.dataset / f"{self.arch}-{self.stage}-{self.image_size}px-{self.digest()[:16]}"


def state_dict_hash(module: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``module``'s state dict (its weights' identity)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def item_keys(images: ImageCollection) -> list[str]:
    """One stable key per image: file path relative to the collection's root + size + mtime (a replaced
    file gets a new key), or a hash of the pixels for in-memory collections."""
    if images.pixels is not None:
        return ["px:" + hashlib.blake2b(np.ascontiguousarray(p).tobytes(), digest_size=16).hexdigest() for p in images.pixels]
    root = images.source.rstrip("/") + "/" if images.source else None
    keys = []
    for path in images.paths:  # type: ignore[union-attr]
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise HashkitError(f"image {path} is not readable ({exc.strerror}); fix the dataset path") from exc
        name = path[len(root):] if root and path.startswith(root) else path
        keys.append(f"{name}|{stat.st_size}|{stat.st_mtime_ns}")
    return keys


# --------------------------------------------------------------------------------------------------
# Shard files: MAGIC, 8-byte header length, JSON header, zero padding to 64 bytes, raw float16 rows.


def write_shard(path: Path, key: CacheKey, ids: Sequence[str], rows: np.ndarray) -> None:
    """Write ``rows`` (n, ...) float16 for images ``ids`` atomically to ``path``."""
    rows = np.ascontiguousarray(rows, dtype=np.float16)
    payload = memoryview(rows).cast("B")
    header = json.dumps(
        {"key": asdict(key), "ids": list(ids), "shape": list(rows.shape), "dtype": "float16", "crc32": zlib.crc32(payload)}
    ).encode()
    offset = _payload_offset(len(header))
    with atomic_open(path) as handle:
        handle.write(MAGIC + struct.pack("<Q", len(header)) + header)
        handle.write(b"\0" * (offset - len(MAGIC) - 8 - len(header)))
        handle.write(payload)


def read_shard(path: Path, key: CacheKey) -> tuple[list[str], np.ndarray]:
    """(ids, rows) of a shard; ValueError naming what is wrong if it is truncated, corrupt or foreign."""
    with open(path, "rb") as handle:
        start = handle.read(len(MAGIC) + 8)
        if len(start) < len(MAGIC) + 8 or start[: len(MAGIC)] != MAGIC:
            raise ValueError("not a hashkit feature-cache shard (or truncated)")
        (length,) = struct.unpack("<Q", start[len(MAGIC) :])
        if _payload_offset(length) > os.path.getsize(path):
            raise ValueError("truncated header")
        try:
            header = json.loads(handle.read(length))
            if header.get("key") != asdict(key):
                raise ValueError("its key differs from the folder's")
            shape = tuple(int(s) for s in header["shape"])
            ids = [str(i) for i in header["ids"]]
            crc = int(header["crc32"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"unreadable header ({exc})") from exc
        if header.get("dtype") != "float16" or not shape or shape[0] != len(ids):
            raise ValueError("inconsistent header")
        handle.seek(_payload_offset(length))
        rows = np.fromfile(handle, dtype=np.float16)
    if rows.size != int(np.prod(shape)):
        raise ValueError(f"payload holds {rows.size} values, expected {int(np.prod(shape))} (truncated?)")
    if zlib.crc32(memoryview(rows).cast("B")) != crc:
        raise ValueError("payload checksum mismatch")
    return ids, rows.reshape(shape)


def _payload_offset(header_length: int) -> int:
    return -(-(len(MAGIC) + 8 + header_length) // 64) * 64


class FeatureStore:
    """The rows of one cache folder, loaded once per process and topped up with the shards other processes
    (runs side by side in a sweep) wrote since, before anything is computed; ``ensure`` computes what is missing."""

    def __init__(self, folder: Path, key: CacheKey) -> None:
        self.folder = Path(folder)
        self.key = key
        self._shards: list[np.ndarray] = []
        self._where: dict[str, tuple[int, int]] = {}  # item key -> (shard, row)
        self._seen: set[str] = set()  # shard file names already read (or written) by this process
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        self._load_new_shards()

    def _load_new_shards(self) -> None:
        """Read the folder's shards this process has not read yet (all of them on the first call)."""
        for path in sorted(self.folder.glob(f"shard-*{SHARD_SUFFIX}")):
            if path.name not in self._seen:
                self._seen.add(path.name)
                self._load_shard(path)

    def _load_shard(self, path: Path) -> None:
        try:
            ids, rows = read_shard(path, self.key)
        except (OSError, ValueError) as exc:
            logger.warning(f"feature cache shard {path} is unusable ({exc}); deleting it, its images are recomputed")
            try:
                path.unlink()
            except OSError:
                pass
            return
        index = len(self._shards)
        self._shards.append(rows)
        for row, item in enumerate(ids):
            self._where.setdefault(item, (index, row))

    def __len__(self) -> int:
        self._load()
        return len(self._where)

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions of ``keys`` that have no cached row (first occurrence of each distinct key). Rows missing
        from what this process has read are looked for in shards written since by other processes first."""
        self._load()
        if any(item not in self._where for item in keys):
            self._load_new_shards()
        seen: set[str] = set()
        out = []
        for position, item in enumerate(keys):
            if item not in self._where and item not in seen:
                seen.add(item)
                out.append(position)
        return out

    def add(self, ids: Sequence[str], rows: np.ndarray) -> None:
        """Write ``rows`` for ``ids`` as a new shard (atomically) and make them available."""
        self._load()
        path = self.folder / f"shard-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}"
        write_shard(path, self.key, ids, rows)
        self._seen.add(path.name)
        index = len(self._shards)
        self._shards.append(np.ascontiguousarray(rows, dtype=np.float16))
        for row, item in enumerate(ids):
            self._where.setdefault(item, (index, row))

    def locate(self, keys: Sequence[str]) -> np.ndarray:
        """(n, 2) int64 array of (shard, row) for ``keys``; all of them must be cached."""
        self._load()
        try:
            return np.array([self._where[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        except KeyError as exc:
            raise RuntimeError(f"image {exc} is not in the feature cache {self.folder}") from None

    def gather(self, where: np.ndarray) -> torch.Tensor:
        """float16 rows at ``where`` ((n, 2) from :meth:`locate`), in order, as one CPU tensor."""
        shards = where[:, 0]
        first = int(shards[0]) if len(where) else 0
        if len(where) and (shards == first).all():
            return torch.from_numpy(self._shards[first][where[:, 1]])
        shape = self._shards[0].shape[1:] if self._shards else ()
        out = np.empty((len(where), *shape), dtype=np.float16)
        for shard in np.unique(shards):
            mask = shards == shard
            out[mask] = self._shards[int(shard)][where[mask, 1]]
        return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------------
# Computing the activations fast: the transform recipe's PIL steps (hashkit.transforms) to uint8 in the
# loader, normalisation batched in torch (transforms.normalize_batch), the prefix with BatchNorm folded
# into its convolutions, channels_last, inference_mode.


class ResizedImages(Dataset):
    """(uint8 H×W×3 tensor) per image after the geometric steps of transform ``recipe`` (the evaluation
    transform's resize by default), without the slow per-image float conversion (done batched afterwards)."""

    def __init__(self, images: ImageCollection | AugmentedViews, size: int, interpolation: str,
                 recipe: str = DEFAULT_TEST) -> None:  # fmt: skip
        self.images = images
        self.size = size
        self.geometry = T.Compose(geometric_steps(recipe, size, interpolation))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.geometry(self.images.load(index))
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())


# Views of a training image: a random crop of 64–100% of its area (aspect 3/4–4/3) resized to the input
# size, flipped with probability ½ — drawn from a hash of (item key, view), so a view never changes.
VIEW_AUGMENTATION = "crop-area-0.64-1-aspect-0.75-1.33+hflip-v1"


def view_keys(keys: Sequence[str], views: int) -> list[str]:
    """Item keys of views 1..``views`` of each image, image by image."""
    return [f"{key}|view{v}|{VIEW_AUGMENTATION}" for key in keys for v in range(1, views + 1)]


class AugmentedViews:
    """``views`` deterministic augmented views (already at ``size``) of each image of a collection,
    image by image; ``load`` / ``subset`` / ``len`` as an ImageCollection, for :class:`ResizedImages`."""

    def __init__(self, images: ImageCollection, keys: Sequence[str], views: int, size: int, interpolation: str,
                 pairs: Sequence[tuple[int, int]] | None = None) -> None:  # fmt: skip
        self.images, self.keys, self.views, self.size = images, list(keys), views, size
        self.interpolation = interpolation
        self.resample = pil_resample(interpolation)
        self.pairs = list(pairs) if pairs is not None else [(i, v) for i in range(len(images)) for v in range(1, views + 1)]

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, positions: Sequence[int]) -> "AugmentedViews":
        pairs = [self.pairs[p] for p in positions]
        return AugmentedViews(self.images, self.keys, self.views, self.size, self.interpolation, pairs)

    def load(self, index: int) -> Image.Image:
        item, view = self.pairs[index]
        image = self.images.load(item)
        seed = int.from_bytes(hashlib.blake2b(f"{self.keys[item]}|{view}".encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        width, height = image.size
        area = width * height * rng.uniform(0.64, 1.0)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        w = min(width, max(1.0, float(np.sqrt(area * aspect))))
        h = min(height, max(1.0, float(np.sqrt(area / aspect))))
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        view_image = image.resize((self.size, self.size), self.resample, box=(x0, y0, x0 + w, y0 + h))
        return view_image.transpose(Image.FLIP_LEFT_RIGHT) if rng.uniform() < 0.5 else view_image


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (eval mode) with each BatchNorm2d that directly follows a Conv2d folded
    into the conv's weight and bias (y = γ(Wx − μ)/σ + β). Pairs are children adjacent in registration
    order that run in that order: inside an nn.Sequential, or named alike (``dw_conv``/``dw_bn``,
    ``conv1``/``bn1``). The caller checks the result against the original."""
    folded = copy.deepcopy(module).eval()
    for parent in folded.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if not (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.num_features == conv.out_channels):
                continue
            if not (isinstance(parent, nn.Sequential) or conv_name.replace("conv", "bn") == bn_name):
                continue
            if bn.running_mean is None or bn.running_var is None:
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
            setattr(parent, bn_name, nn.Identity())
    return folded


def inference_prefix(prefix: nn.Module, probe: torch.Tensor, channels_last: bool) -> nn.Module:
    """The fastest faithful copy of ``prefix`` for inference: BN folded (kept only if the outputs agree
    with the original on ``probe``), channels_last weights for convnets."""
    prefix = copy.deepcopy(prefix).eval()
    for p in prefix.parameters():
        p.requires_grad_(False)
    folded = fold_batchnorm(prefix)
    if channels_last:
        prefix = prefix.to(memory_format=torch.channels_last)
        folded = folded.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = prefix(probe), folded(probe)
    scale = want.abs().max().clamp_min(1e-6)
    if got.shape == want.shape and float((got - want).abs().max() / scale) < 1e-4:
        return folded
    logger.warning("folding BatchNorm changed the frozen prefix's outputs; caching with the unfolded prefix")
    return prefix


def fixed_probe(row_shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Two fixed standard-normal inputs of ``row_shape``: the BatchNorm-folding check sees the same values
    whatever images come first, so whether a cache is computed folded never depends on the split."""
    return torch.randn((2, *row_shape), generator=torch.Generator().manual_seed(0)).to(device)


def compute_activations(
    prefix: nn.Module,
    images: ImageCollection | AugmentedViews,
    *,
    image_size: int,
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    num_workers: int,
    device: torch.device,
    channels_last: bool,
    precision: str = "fp32",
    desc: str = "caching",
    recipe: str = DEFAULT_TEST,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start position, float16 rows) of ``prefix``'s outputs over ``images`` (transform
    ``recipe``) in order; logs the images/s at the end (and shows a bar on a terminal).
    ``precision="bf16"`` runs the prefix under bfloat16 autocast.
    """
    # A private generator: a DataLoader draws its workers' base seed from the one it is given, by default
    # torch's global RNG, which a run's dropout and stochastic depth draw from; caching must not move it, or
    # a run that fills the cache would train differently from one that reads it (issue 35). Nothing here is
    # random (views draw from their item key), so the seed is fixed.
    loader = DataLoader(
        ResizedImages(images, image_size, interpolation, recipe), batch_size=batch_size, num_workers=num_workers,
        persistent_workers=False, prefetch_factor=4 if num_workers else None, generator=torch.Generator().manual_seed(0),
    )
    network: nn.Module | None = None
    position = 0
    with torch.inference_mode(), progress(len(images), desc, summary="always") as bar:
        for batch in loader:
            x = normalize_batch(batch, mean, std).to(device)
            # Every batch is run at the full batch size (the last one padded with zeros): oneDNN picks its
            # convolution kernels by batch size (and threads), and kernels round differently, so an image's
            # row would depend on the batch it fell in, i.e. on which other images the cache lacked (issue 35).
            # Within a batch size an image's outputs do not depend on its position or neighbours (measured).
            short = batch_size - len(x)
            if short > 0:
                x = torch.cat([x, x.new_zeros((short, *x.shape[1:]))])
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
            if network is None:
                network = inference_prefix(prefix, fixed_probe(x.shape[1:], device), channels_last).to(device)
            if precision == "bf16":
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    out = network(x)
            else:
                out = network(x)
            yield position, out[: len(batch)].to(torch.float16).cpu().contiguous().numpy()
            position += len(batch)
            bar.update(len(batch))


def ensure_cached(
    store: FeatureStore,
    images: ImageCollection | AugmentedViews,
    keys: Sequence[str],
    compute: Callable[[Any], Iterator[tuple[int, np.ndarray]]],
) -> int:
    """Compute and store the rows ``store`` lacks among ``images`` (keys ``keys``); return how many."""
    todo = store.missing(keys)
    if not todo:
        return 0
    logger.info(f"feature cache {store.folder}: computing {len(todo)} of {len(keys)} images once")
    subset = images.subset(todo)
    pending_ids: list[str] = []
    pending: list[np.ndarray] = []
    for start, rows in compute(subset):
        pending_ids.extend(keys[todo[start + i]] for i in range(len(rows)))
        pending.append(rows)
        if len(pending_ids) >= SHARD_IMAGES:
            store.add(pending_ids, np.concatenate(pending))
            pending_ids, pending = [], []
    if pending_ids:
        store.add(pending_ids, np.concatenate(pending))
    return len(todo)

"""The Python API for retrieval with trained codes: ``hashkit.load(checkpoint).encode(images)``.

    import hashkit
    from hashkit.index import Index

    model = hashkit.load("runs/dpsh/checkpoint.pt")          # any method's checkpoint
    index = Index.create("photos.hkx", model.code_length, model.identity)
    index.add(model.encode(paths), ids=paths)                 # ±1 codes, (n, bits)
    D, I = index.search(model.encode(["query.jpg"]), k=10)    # Hamming distances, positions
    print(index.ids(I))

An index can also live in Milvus (docs/milvus.md): ``hashkit.index.milvus.open_or_create("milvus://HOST:PORT/NAME",
model.code_length, model.identity)`` to write, ``hashkit.index.open_index(address)`` to read; same API and results.

A Hasher encodes with the checkpoint's own backbone, input size and normalisation (the evaluation
transform of hashkit.transforms, through hashkit.pipeline's one encoding loop; it imports nothing of the
training path); its ``identity`` names the method, backbone, code length and a sha256 of the weights, so
an index refuses queries encoded by another model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from hashkit.checkpoint import load_checkpoint
from hashkit.data.base import ImageCollection, load_rgb
from hashkit.device import resolve_device
from hashkit.model import binarize, build_model, model_options
from hashkit.pipeline import encode_batches, image_batches, mirrored_outputs, train_from_index
from hashkit.transforms import build_transform

ImageLike = str | os.PathLike | Image.Image


class Hasher:
    """A trained hashing network in evaluation mode, ready to turn images into ±1 codes."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], identity: dict[str, Any], device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.config = config
        self.identity = identity
        self.device = device
        # Runs on cached activations (--train-from / --freeze-backbone) evaluated with the plain resize,
        # whatever --test-transform says; other runs with their --test-transform.
        cached = config.get("train_from") not in (None, "", 0, "0") or bool(config.get("freeze_backbone"))
        self.transform = build_transform(
            model.backbone.input_spec, int(config["image_size"]), train=False,
            name=None if cached else config.get("test_transform"),
        )
        # --encode-flip mirrors the input of the trained part: the image, or under --train-from the
        # activations of the frozen stages (the same place the run's own evaluation mirrored).
        self.encode_flip = bool(config.get("encode_flip"))
        self.mirror_at = train_from_index(config, model) if self.encode_flip else 0
        self._network = mirrored_outputs(self.model, self.mirror_at, self.encode_flip)

    @property
    def code_length(self) -> int:
        return int(self.config["code_length"])

    def encode(self, images: Sequence[ImageLike] | ImageCollection, batch_size: int = 64, num_workers: int = 0,
               progress: bool = True) -> np.ndarray:
        """±1 int8 codes (n, code_length) for image paths, PIL images, or an ImageCollection."""
        return self._run(images, lambda out: binarize(out).to(torch.int8), torch.int8, batch_size, num_workers, progress)

    @torch.no_grad()
    def embed(self, images: Sequence[ImageLike] | ImageCollection, batch_size: int = 64, num_workers: int = 0,
              progress: bool = True) -> np.ndarray:
        """The real-valued outputs (n, code_length) float32 whose signs ``encode`` returns (for tie scores)."""
        return self._run(images, lambda out: out.float(), torch.float32, batch_size, num_workers, progress)

    def _run(self, images: Sequence[ImageLike] | ImageCollection, convert: Any, dtype: torch.dtype,
             batch_size: int, num_workers: int, progress: bool) -> np.ndarray:
        collection = images if isinstance(images, ImageCollection) else _as_collection(images)
        batches = image_batches(collection, self.transform, batch_size, num_workers, lambda x: x.to(self.device))
        outputs = encode_batches(self.model, batches, self._network, total=len(collection), width=self.code_length,
                                 show_progress=progress)  # fmt: skip
        return convert(outputs).numpy()

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The network's real-valued outputs for a batch of transformed images (flip-averaged if the run was)."""
        return self._network(images)


def load(checkpoint: str | os.PathLike, device: str | torch.device | None = None, gpu: int | None = None) -> Hasher:
    """Rebuild the network of a hashkit checkpoint (safe load) for encoding images."""
    data = load_checkpoint(checkpoint)
    config = dict(data["config"])
    model = build_model(config["arch"], int(config["code_length"]), pretrained=False, **model_options(config))
    model.load_state_dict(data["model"])
    target = torch.device(device) if device is not None else resolve_device(gpu)
    return Hasher(model, config, model_identity(data), target)


def model_identity(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What makes codes comparable: method, backbone, code length and a digest of the weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {
        "method": checkpoint["method"],
        "arch": checkpoint["arch"],
        "code_length": int(checkpoint["code_length"]),
        "image_size": int(checkpoint["config"]["image_size"]),
        "weights_sha256": digest.hexdigest(),
    }


class _PILCollection(ImageCollection):
    """An ImageCollection over PIL images already in memory (for ``Hasher.encode``)."""

    def __init__(self, images: list[Image.Image]) -> None:
        self._images = images
        super().__init__(labels=np.zeros((len(images), 1), np.uint8), paths=[f"<image {i}>" for i in range(len(images))],
                         source="images")

    def load(self, index: int) -> Image.Image:
        image = self._images[index]
        return image if image.mode == "RGB" else image.convert("RGB")


def _as_collection(images: Sequence[ImageLike]) -> ImageCollection:
    items = list(images)
    if all(isinstance(x, Image.Image) for x in items):
        return _PILCollection(items)  # type: ignore[arg-type]
    paths = [str(x) for x in items]
    for path in paths:
        if not Path(path).is_file():
            load_rgb(path)  # raises the one-line "does not exist" error
    return ImageCollection(np.zeros((len(paths), 1), np.uint8), paths=paths, source="images")

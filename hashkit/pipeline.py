"""Input pipelines: how images reach the network for training and encoding.

``ImagePipeline`` decodes and transforms images and runs the whole network (full fine-tuning, the
default as in the seeds). Other pipelines (e.g. cached activations of a frozen prefix) offer the same
two calls, so the Trainer and evaluation never know which one they drive.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from hashkit.data.base import ImageCollection, ImageDataset
from hashkit.method import Batch
from hashkit.model import HashModel
from hashkit.transforms import build_transform


class ImagePipeline:
    """Images → transforms → the whole HashModel."""

    def __init__(
        self,
        model: HashModel,
        image_size: int,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        encode_batch_size: int | None = None,
        encode_flip: bool = False,
        train_transform: str | None = None,
        test_transform: str | None = None,
    ) -> None:
        spec = model.backbone.input_spec
        self.model = model
        self.train_transform = build_transform(spec, image_size, train=True, name=train_transform)
        self.eval_transform = build_transform(spec, image_size, train=False, name=test_transform)
        self.batch_size = batch_size
        self.encode_batch_size = encode_batch_size or max(batch_size, 128)
        self.num_workers = num_workers
        self.device = device
        self.channels_last = model.backbone.arch.startswith("efficientnet")
        self.encode_flip = encode_flip  # codes = sign(mean of the outputs on the image and its mirror)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.dim() == 4 else images

    def train_batches(
        self, train: ImageCollection, order: torch.Tensor, generator: torch.Generator
    ) -> Iterator[Batch]:
        """Batches of the training items at positions ``order``, in that order (augmented)."""
        dataset = ImageDataset(train, self.train_transform)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            generator=generator,
            persistent_workers=False,
        )
        for images, labels, index in loader:
            yield Batch(self._to_device(images), labels.to(self.device), index.to(self.device))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's real-valued outputs for a training batch's inputs."""
        return self.model(inputs)

    def encode(self, images: ImageCollection, desc: str = "encode") -> torch.Tensor:
        """Real-valued outputs (n, code_length) for ``images`` in order, on the CPU (eval mode)."""
        network = lambda x: self.model.encode_outputs(x, flip=self.encode_flip)  # noqa: E731
        return self._run(images, network, self.model.code_length, desc)

    def features(self, images: ImageCollection, desc: str = "features") -> torch.Tensor:
        """The backbone's features (n, feature_dim) for ``images`` (before the hash layer; eval mode)."""
        return self._run(images, self.model.backbone, self.model.backbone.feature_dim, desc)

    @torch.no_grad()
    def _run(self, images: ImageCollection, network: Callable[[torch.Tensor], torch.Tensor], width: int, desc: str) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        loader = DataLoader(
            ImageDataset(images, self.eval_transform), batch_size=self.encode_batch_size, num_workers=self.num_workers
        )
        outputs = []
        with tqdm(total=len(images), desc=desc, unit="img", leave=False, dynamic_ncols=True) as bar:
            for batch, _, _ in loader:
                outputs.append(network(self._to_device(batch)).float().cpu())
                bar.update(len(batch))
        self.model.train(was_training)
        return torch.cat(outputs) if outputs else torch.zeros(0, width)

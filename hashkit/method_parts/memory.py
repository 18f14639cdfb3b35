"""Shared pairwise machinery of DPSH, DHN and HashNet: a memory of the training split's relaxed codes.

All three methods compare each mini-batch against every item of the training split: the memory holds
the latest relaxed code u_j of every training item (written when its batch is seen, detached) and the
training labels y_j, so a batch of b items yields b × n pairs per step (as DeepHash-pytorch's U/Y
buffers; cf. pytorch-metric-learning's CrossBatchMemory, which keeps a queue of recent embeddings
instead). Similarity is multi-label aware: s_ij = 1 when items i and j share at least one label.

:class:`PairwiseMemoryMethod` is the base class of the three methods: it builds the memory in
``setup``, writes the batch into it before the loss (so the batch's own pairs are included, as in the
seeds), checkpoints it, and leaves a method file only its relaxation (:meth:`relax`) and its loss.
"""

from __future__ import annotations

import abc

import math
from typing import Any

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, TrainingData, similarity


class PairwiseMemory:
    """Relaxed codes ``U`` (n, bits) of the whole training split, its labels ``labels`` (n, classes) and
    which rows were written at least once (``filled``; rows never seen stay 0)."""

    def __init__(self, num_items: int, code_length: int, labels: torch.Tensor | None, device: torch.device) -> None:
        self.U = torch.zeros(num_items, code_length, device=device)
        self.filled = torch.zeros(num_items, dtype=torch.bool, device=device)
        self.labels = labels.to(device=device, dtype=torch.float32) if labels is not None else None
        if self.labels is not None and len(self.labels) != num_items:
            raise ValueError(f"{len(self.labels)} labels for a memory of {num_items} items")

    def __len__(self) -> int:
        return len(self.U)

    def update(self, index: torch.Tensor, outputs: torch.Tensor) -> None:
        """Write the (detached) relaxed codes of the batch items at training positions ``index``."""
        index = index.to(self.U.device)
        self.U[index] = outputs.detach().to(self.U.dtype)
        self.filled[index] = True

    def similarity(self, batch_labels: torch.Tensor) -> torch.Tensor:
        """S (b, n): 1 where a batch item shares at least one label with a memory item, else 0."""
        if self.labels is None:
            raise RuntimeError("this memory holds no labels (it was loaded from a state without them)")
        return similarity(batch_labels.to(self.labels.dtype), self.labels)

    def written_similarity(self, batch_labels: torch.Tensor) -> torch.Tensor:
        """S (b, n) as :meth:`similarity` but 0 for rows never written: DeepHash-pytorch's label buffer Y
        starts at zeros and is written with U, so an unseen item is dissimilar to everything (DSH, DFH)."""
        return self.similarity(batch_labels) * self.filled[None, :].to(self.labels.dtype)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"U": self.U, "filled": self.filled}
        if self.labels is not None:
            state["labels"] = self.labels
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; labels already set by ``setup`` are kept when the state has none.
        Older checkpoints without ``filled`` mark every non-zero row as written."""
        self.U = state["U"].to(self.U.device)
        filled = state.get("filled")
        self.filled = (filled if filled is not None else self.U.abs().sum(dim=1) > 0).to(self.U.device)
        if state.get("labels") is not None:
            self.labels = state["labels"].to(self.U.device)

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> "PairwiseMemory":
        """A memory rebuilt from a checkpoint alone (e.g. ``hashkit evaluate`` never calls ``setup``)."""
        memory = cls(state["U"].shape[0], state["U"].shape[1], None, device)
        memory.load_state_dict(state)
        return memory


def pairwise_nll(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the pairwise logistic model, per pair:
    −log p(s | θ) = log(1 + e^θ) − s·θ, with log(1 + e^θ) as softplus (stable for any θ)."""
    return F.softplus(theta) - s * theta


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """log cosh(x), computed stably as |x| + log(1 + e^{−2|x|}) − log 2 (no overflow for large |x|)."""
    a = x.abs()
    return a + F.softplus(-2.0 * a) - math.log(2.0)


class PairwiseMemoryMethod(HashingMethod):
    """Base of the memory-based pairwise methods: relax → write into the memory → loss against it."""

    memory: PairwiseMemory
    supports_distributed = True  # the loss is a mean over the batch; the memory is written in observe

    def setup(self, data: TrainingData) -> None:
        assert data.labels is not None, f"{self.name} is supervised: it needs the training labels"
        self.memory = PairwiseMemory(data.num_items, self.code_length, data.labels, self.device)

    def relax(self, outputs: torch.Tensor) -> torch.Tensor:
        """The relaxed codes the loss works on (default: the network's outputs as they are)."""
        return outputs

    @abc.abstractmethod
    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of the batch's relaxed ``codes`` against :attr:`memory` (each method defines it)."""

    def observe(self, outputs: torch.Tensor, index: torch.Tensor) -> None:
        """Write the whole global batch's relaxed codes into the memory (under torchrun: every rank's part),
        so the memory is identical on every rank; ``training_step`` then rewrites this rank's rows unchanged."""
        self.memory.update(index, self.relax(outputs))

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        codes = self.relax(outputs)
        self.memory.update(batch.index, codes)
        return self.loss(codes, batch)

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if hasattr(self, "memory"):
            self.memory.load_state_dict(state)
        else:
            self.memory = PairwiseMemory.from_state(state, self.device)

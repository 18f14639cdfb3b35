"""ADSH — Asymmetric Deep Supervised Hashing (Jiang & Li, AAAI 2018).

The database codes V ∈ {−1,+1}^{n×c} are learned directly; the network F is a hash function for
queries only. Objective (paper eq. 3, over a sampled set Ω of |Ω| = ``--num-samples`` database points
and the whole database Γ)::

    J(Θ, V) = Σ_{i∈Ω} Σ_{j∈Γ} (ũ_iᵀ v_j − c S_ij)²  +  γ Σ_{i∈Ω} ‖v_i − ũ_i‖²,    ũ_i = tanh(F(x_i; Θ))

Alternating optimisation; one outer iteration = one trainer epoch (``--max-iter`` of them):

1. ``epoch_indices`` samples Ω from the database (the trainer's generator) and returns it for
   ``--max-epoch`` passes, shuffled per pass; the network minimises J with V fixed (``training_step``).
2. ``on_epoch_end`` minimises J over V with Θ fixed by discrete cyclic coordinate descent: with
   Ũ = tanh outputs of Ω (|Ω|×c), Ū (n×c) = Ũ on Ω's rows and 0 elsewhere and Q = −2c SᵀŨ − 2γŪ, the
   V-dependent part is ‖Ũ Vᵀ‖² + tr(V Qᵀ); for bit k, with V̂_k, Û_k the other bits,
   ``V_{*k} = −sign(2 V̂_k Û_kᵀ Ũ_{*k} + Q_{*k})`` minimises it exactly (paper, "Learn V with Θ fixed").

Similarity: the paper uses S ∈ {−1,+1}; both seeds (jiangqy/ADSH-AAAI2018 ``calc_sim``, IIE-MR/DIHN)
use the "soft" S_ij = +1 for pairs sharing a label and −r otherwise, r = #similar / #dissimilar over
the sampled block Ω×Γ (so S sums to zero and the 1:9 imbalance of CIFAR-10 does not swamp the
positives). We follow the seeds. Normalisation as the seeds: each batch term is divided by
(batch size × database size).

Memory: S (|Ω|×n, 2000×59,000 floats = 470 MB) is never stored. A batch's rows (b×n) are built from
labels in the step; the DCC needs only SᵀŨ (n×c) and r: for single-label data in closed form
(S = (1+r) L_Ω Lᵀ − r), otherwise over database chunks of at most ``CHUNK_ELEMENTS`` entries.

Seed facts (IIE-MR/DIHN ``adsh.py``, the ADSH that DIHN builds on): AlexNet with a tanh hash layer,
Adam lr 1e-4 (weight decay 1e-5, one lr for all layers), batch 64, 50 outer iterations × 3 epochs ×
2,000 samples, γ 200, V initialised with random signs; the lr decays ×0.9 per outer iteration
(hashkit: constant, or ``--lr-schedule cosine``). jiangqy/ADSH-AAAI2018 (PyTorch) uses the same
γ / samples / epochs / batch with ResNet-50, SGD lr 1e-3 and V initialised at 0.

Incremental protocol (``--num-seen``): ADSH learns codes for the original (seen-class) database only —
the first ``num_original`` database rows — and keeps only those rows' labels (setup drops the rest); at
evaluation the incremental images are encoded by the network (``database_codes``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.model import binarize
from hashkit.registry import METHODS

CHUNK_ELEMENTS = 1 << 24  # similarity entries per chunk (64 MB as float32)


@METHODS.register("adsh")
class ADSH(HashingMethod):
    name = "adsh"
    family = "asymmetric"
    reference_code = ('jiangqy/ADSH-AAAI2018',)
    relaxation = "tanh"
    paper = "Jiang, Li. Asymmetric Deep Supervised Hashing. AAAI 2018"
    hyperparameters = {
        "gamma": Hyper(200.0, "weight γ of the quantization term γ‖v_i − tanh(F(x_i))‖² (ADSH eq. 3)"),
        "num_samples": Hyper(2000, "database points sampled per outer iteration (|Ω|)", int),
        "max_epoch": Hyper(3, "passes over the sampled points per outer iteration (--max-iter counts outer iterations)", int),
    }
    recipes = {
        # IIE-MR/DIHN adsh.py / run.py / models/alexnet.py / data/transform.py (its ADSH baseline).
        "seed": {
            "arch": "alexnet",
            "optimizer": "adam",
            # Adam(lr 1e-4) with ExponentialLR(0.9) stepped at the *start* of every outer iteration, so
            # iteration k trains at 1e-4 · 0.9^(k+1) = 9e-5 · 0.9^k (stepping after each iteration here).
            "lr": 9e-5,
            "hash_lr_mult": 1.0,
            "weight_decay": 1e-5,
            "lr_schedule": "exponential",
            "lr_gamma": 0.9,
            "lr_interval": "epoch",  # one epoch = one outer iteration
            "batch_size": 64,
            "max_iter": 50,
            "train_transform": "resized_crop_flip",
            "test_transform": "center_crop",
            "image_size": 224,
            "hash_activation": "tanh",  # hash_layer = Sequential(Linear, Tanh)
            "hash_init_std": None,
            "gamma": 200.0,
            "num_samples": 2000,
            "max_epoch": 3,
        },
        "cpu": {"hash_activation": "tanh"},
    }
    training_split = "database"
    epoch_is_outer_iteration = True

    # Rows [num_frozen, num_codes) of V are learned; rows < num_frozen are fixed (DIHN's original codes).
    num_frozen: int = 0

    def setup(self, data: TrainingData) -> None:
        if data.labels is None:
            raise HashkitError(f"{self.name} is supervised: it needs the database labels")
        info = incremental_info(data.splits)
        self.num_codes = info["num_original"] if info else data.num_items
        self.num_frozen = 0
        self.labels = data.labels[: self.num_codes]
        self.V = random_codes(self.num_codes, self.code_length, self.device)

    # ------------------------------------------------------------------ outer iteration: sample Ω
    def epoch_size(self, num_items: int) -> int:
        """An epoch is an outer iteration: ``max_epoch`` passes over ``num_samples`` sampled database rows."""
        return min(int(self.hparams["num_samples"]), num_items) * int(self.hparams["max_epoch"])

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """Sample Ω among the coded database rows; visit it ``max_epoch`` times, shuffled per pass."""
        size = min(int(self.hparams["num_samples"]), self.num_codes)
        self.sample = torch.randperm(self.num_codes, generator=generator)[:size]
        self.slot = torch.full((self.num_codes,), -1, dtype=torch.long)
        self.slot[self.sample] = torch.arange(size)
        self.U = torch.zeros(size, self.code_length, device=self.device)
        sample_labels = self.labels[self.sample.to(self.device)]
        self.ratio = similarity_ratio(sample_labels, self.labels)
        passes = [self.sample[torch.randperm(size, generator=generator)] for _ in range(int(self.hparams["max_epoch"]))]
        return torch.cat(passes)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        u = self.tanh_outputs(outputs)  # the seed's tanh hash layer, applied once
        self.U[self.slot[batch.index.cpu()].to(self.device)] = u.detach().to(self.U.dtype)
        s = soft_similarity(batch.labels, self.labels, self.ratio)
        return adsh_loss(u, s, self.V, self.V[batch.index], self.hparams["gamma"], self.code_length)

    # ------------------------------------------------------------------ outer iteration: update V
    def on_epoch_end(self, epoch: int) -> None:
        """DCC over the learned rows of V given the tanh outputs Ũ of this iteration's sample Ω."""
        lo = self.num_frozen
        sample = self.sample.to(self.device)
        s_t_u = similarity_t_matmul(self.labels[sample], self.labels[lo:], self.ratio, self.U)
        u_bar = torch.zeros(self.num_codes - lo, self.code_length, dtype=self.U.dtype, device=self.device)
        rows = sample - lo
        keep = rows >= 0
        u_bar[rows[keep]] = self.U[keep]
        self.V[lo:] = dcc_update(self.V[lo:], self.U, s_t_u, u_bar, self.code_length, self.hparams["gamma"])

    # ------------------------------------------------------------------ evaluation and checkpoints
    def database_codes(self, splits: Any, encode: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        """V for the database rows it covers; under the incremental protocol the new images (not
        learned by ADSH) are encoded by the network."""
        codes = self.V.detach().float().cpu()
        total = len(splits.database)
        info = incremental_info(splits)
        if len(codes) == total:
            return codes
        if info and len(codes) == info["num_original"]:
            new = splits.database.subset(np.arange(len(codes), total))
            return torch.cat([codes, encode(new).float().cpu()])
        raise HashkitError(
            f"the checkpoint holds learned codes for {len(codes)} database images but this database has {total}; "
            "evaluate with the checkpoint's own data flags (drop --num-query/--num-database/--num-seen/--seed overrides)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"V": self.V.detach().to(torch.int8).cpu(), "num_frozen": int(self.num_frozen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.V = state["V"].to(self.device, torch.float32)
        self.num_frozen = int(state.get("num_frozen", 0))
        self.num_codes = len(self.V)


def incremental_info(splits: Any) -> dict[str, Any] | None:
    """The incremental protocol's record (data/incremental.py) if ``splits`` follow it, else None."""
    extra = getattr(splits, "extra", None) or {}
    return extra.get("incremental")


def random_codes(rows: int, bits: int, device: torch.device) -> torch.Tensor:
    """±1 codes with random signs (the DIHN seed's initialisation), reproducible from the run's seed."""
    generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
    return (torch.randint(0, 2, (rows, bits), generator=generator) * 2 - 1).float().to(device)


def single_label(*label_sets: torch.Tensor) -> bool:
    """True when every item carries exactly one label (then "shares a label" is the product L_a L_bᵀ)."""
    return all(bool((labels.sum(dim=1) == 1).all()) for labels in label_sets)


def similarity_ratio(sample_labels: torch.Tensor, labels: torch.Tensor) -> float:
    """r = #similar / #dissimilar pairs over sample × database (label sharing), in chunks."""
    if single_label(sample_labels, labels):
        similar = int(round(float(sample_labels.sum(0) @ labels.sum(0))))  # Σ_class count_Ω · count_Γ
    else:
        similar = 0
        chunk = max(1, CHUNK_ELEMENTS // max(1, len(sample_labels)))
        for start in range(0, len(labels), chunk):
            similar += int((sample_labels @ labels[start : start + chunk].t() > 0).sum())
    dissimilar = len(sample_labels) * len(labels) - similar
    return similar / dissimilar if dissimilar else 0.0


def soft_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor, ratio: float) -> torch.Tensor:
    """S_ij = +1 when items i and j share a label, else −ratio (the seeds' soft similarity)."""
    shared = labels_a @ labels_b.t() > 0
    dtype = labels_a.dtype if labels_a.is_floating_point() else torch.float32
    similar = torch.ones((), dtype=dtype, device=shared.device)
    return torch.where(shared, similar, torch.full_like(similar, -float(ratio)))


def similarity_t_matmul(
    sample_labels: torch.Tensor, labels: torch.Tensor, ratio: float, u: torch.Tensor
) -> torch.Tensor:
    """Sᵀ Ũ (n×c) for S = soft_similarity(sample, database), built over database chunks (never |Ω|×n at once).
    Single-label data: S = (1+r) L_Ω Lᵀ − r, so Sᵀ Ũ = (1+r) L (L_Ωᵀ Ũ) − r 1 (1ᵀ Ũ) exactly, without any block."""
    if single_label(sample_labels, labels):
        per_class = sample_labels.to(u.dtype).t() @ u  # (classes, c)
        return (1 + ratio) * (labels.to(u.dtype) @ per_class) - ratio * u.sum(dim=0, keepdim=True)
    out = torch.empty(len(labels), u.shape[1], dtype=u.dtype, device=u.device)
    chunk = max(1, CHUNK_ELEMENTS // max(1, len(sample_labels)))
    for start in range(0, len(labels), chunk):
        block = soft_similarity(sample_labels, labels[start : start + chunk], ratio).to(u.dtype)  # (|Ω|, chunk)
        out[start : start + chunk] = block.t() @ u
    return out


def adsh_loss(
    u: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, batch_codes: torch.Tensor, gamma: float, code_length: int
) -> dict[str, torch.Tensor]:
    """ADSH eq. 3 for one batch: u = tanh outputs (b×c), s = S rows (b×n), codes = V (n×c),
    batch_codes = V of the batch items; both terms divided by b·n as the seeds."""
    scale = u.shape[0] * codes.shape[0]
    similarity = (u @ codes.t() - code_length * s).pow(2).sum() / scale
    quantization = gamma * (batch_codes - u).pow(2).sum() / scale
    return {"similarity": similarity, "quantization": quantization}


def dcc_update(
    v: torch.Tensor, u: torch.Tensor, s_t_u: torch.Tensor, u_bar: torch.Tensor, code_length: int, gamma: float
) -> torch.Tensor:
    """One DCC sweep over the bits: minimise ‖Ũ Vᵀ‖² + tr(V Qᵀ), Q = −2c SᵀŨ − 2γŪ, exactly per bit k
    (V_{*k} = −sign(2 V̂_k Û_kᵀ Ũ_{*k} + Q_{*k}), sign(0) = +1). Returns the new V (input untouched)."""
    vt = v.t().contiguous()  # bits × n: one contiguous row per bit
    qt = (-2.0 * code_length * s_t_u - 2.0 * gamma * u_bar).t().contiguous()
    gram = u.t() @ u  # Û_kᵀ Ũ_{*k} = gram[other bits, k]
    for k in range(vt.shape[0]):
        cross = gram[:, k] @ vt - gram[k, k] * vt[k]  # V̂_k Û_kᵀ Ũ_{*k}
        vt[k] = binarize(-(2.0 * cross + qt[k]))
    return vt.t().contiguous()

"""SSDH — Semantic Structure-based Unsupervised Deep Hashing (Yang, Deng, Liu, Liu, Tao, IJCAI 2018).

Unsupervised: training labels are never read (``supervised = False``, so ``setup`` gets ``labels=None``,
and ``training_step`` never touches ``batch.labels``). The formulas below are those of the paper as
implemented by the PyTorch seed (TreezzZ/SSDH_PyTorch, ``ssdh.py``), step for step.

1. Semantic structure (paper §3.1, Eq. 1), built once in :meth:`SSDH.setup` from the frozen pretrained
   features of the training images (the paper: VGG-F fc7; the seed: VGG16 fc7; here the backbone given
   by ``--arch``, ``TrainingData.pretrained_features``). d_ij = 1 − cos(f_i, f_j) over the pairs i < j.
   The distribution of d is modelled by two half-Gaussians that meet at its mode m:

   * m = left edge of the fullest bin of a histogram of d with bins (k·w, (k+1)·w], w = 0.01 (seed:
     100 bins on [0, 1); here 200 on [0, 2], identical whenever all d < 1, e.g. post-ReLU features);
   * σ_l² = mean of (d − m)² over d ≤ m,  σ_r² = mean of (d − m)² over d > m — the maximum-likelihood
     Gaussians of each half mirrored about m (what the seed gets from ``scipy.stats.norm.fit`` on the
     mirrored halves; their means are m, so m_l = m_r = m in Eq. 1's notation);
   * Eq. 1: S_ij = +1 if d_ij < m − α·σ_l (similar), −1 if d_ij > m + β·σ_r (dissimilar), 0 otherwise
     (unknown); ≤/≥ in the paper, strict in the seed — the same up to ties. S_ii = +1 when m − α·σ_l > 0
     (d_ii = 0), as in the seed.

   Deviation from the seed: the fit uses each pair once and no self-pairs; the seed fits the full n×n
   matrix, whose n zero self-distances widen σ_l slightly (n of ~n²/2 values in the left half).

   **Which images the features see** (``--similarity-transform``): the seed extracts them through its
   *training* loader (ssdh.py ``extract_features(model, train_dataloader, …)`` in eval mode; data/transform.py
   ``train_transform``: RandomResizedCrop(224) + RandomHorizontalFlip), so each training image enters S as one
   random crop and flip. ``--recipe seed`` does the same (``train``): one draw of the run's training transform
   per image, eval mode, drawn from ``--seed`` alone (the same S at every start, ``--resume`` included; the
   seed's draws follow its unseeded global RNG and shuffled loader). Elsewhere — the CPU recipe and the
   default — S is built from the test transform's features (``test``: one deterministic view per image; under
   the CPU recipe's cached activations the only one available, and the cached path refuses ``train`` in
   one line).

2. Hash learning (paper §3.2): the objective over binary codes, Σ_ij |S_ij| (b_iᵀ b_j / r − S_ij)²
   (Eq. 2), relaxed to h_i = tanh(u_i) ∈ (−1, 1)^r (the seed's tanh hash layer; codes are sign(u) =
   sign(h)) and taken over the pairs of one mini-batch of size b, including i = j, as the seed does:

       L = (1 / b²) Σ_{i,j ∈ batch} |S_ij| · (h_iᵀ h_j / r − S_ij)²

   Unknown pairs (S_ij = 0) contribute nothing to the loss or its gradient.

Hyper-parameters: ``--alpha`` 2, ``--beta`` 2 (seed). Training defaults (seed): arch vgg16 (the seed's
choice; torchvision's weights need internet once — ``--arch efficientnet_lite0`` works offline), batch
24, SGD (momentum 0.9, weight decay 1e-5) at lr 1e-3 on every layer (hash_lr_mult 1), 50 epochs,
mAP@5000; 5,000 training / 1,000 query images on CIFAR-10 are the cifar10 protocol's defaults. The seed
uses 12-bit codes; ``--code-length`` keeps the CLI's default of 32, so pass ``--code-length 12`` to
reproduce the seed. SSDH trains one process only (the loss couples every pair of the batch).

State: S (int8, n×n: 25 MB for 5,000 images) lives on the method's device and is not checkpointed: it
is a deterministic function of the frozen pretrained features, so ``setup`` recomputes it at every start
(``--resume`` included: setup sees the pretrained network before the checkpoint is restored). The
checkpoint keeps only the fit (m, σ_l, σ_r, thresholds) and the pair counts; restoring compares them with
the recomputed ones and warns if they differ (e.g. other --image-size or --weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from loguru import logger

from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.registry import METHODS

BIN_WIDTH = 0.01  # histogram bin width for the mode of d (seed: 1/100)
MAX_DISTANCE = 2.0  # cosine distance lies in [0, 2]
BLOCK_ELEMENTS = 1 << 22  # distances computed per block (rows × n), bounds the float64 working memory
MAX_S_BYTES = 4 << 30  # refuse an n×n int8 S beyond 4 GiB
SIMILARITY_TRANSFORMS = ("test", "train")  # --similarity-transform: which images the similarity features see


@dataclass(frozen=True)
class DistanceFit:
    """The two half-Gaussians fitted to the pairwise distances and the thresholds they give (Eq. 1)."""

    mode: float
    sigma_left: float
    sigma_right: float
    similar_below: float  # m − α·σ_l
    dissimilar_above: float  # m + β·σ_r
    num_pairs: int

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor(
            [self.mode, self.sigma_left, self.sigma_right, self.similar_below, self.dissimilar_above],
            dtype=torch.float64,
        )


class DistanceHistogram:
    """Streaming per-bin count, Σd and Σd² of distances in [0, 2], enough to fit both half-Gaussians."""

    def __init__(self, bin_width: float = BIN_WIDTH) -> None:
        self.bin_width = bin_width
        self.num_bins = int(round(MAX_DISTANCE / bin_width))
        self.count = torch.zeros(self.num_bins, dtype=torch.float64)
        self.sum = torch.zeros(self.num_bins, dtype=torch.float64)
        self.sum_sq = torch.zeros(self.num_bins, dtype=torch.float64)

    def add(self, distances: torch.Tensor) -> None:
        """Accumulate a flat tensor of distances (bin k holds (k·w, (k+1)·w]; d ≤ 0 goes to bin 0)."""
        d = distances.reshape(-1).double()
        index = (torch.ceil(d / self.bin_width) - 1).clamp_(0, self.num_bins - 1).long()
        self.count += torch.bincount(index, minlength=self.num_bins).double().cpu()
        self.sum += torch.bincount(index, weights=d, minlength=self.num_bins).cpu()
        self.sum_sq += torch.bincount(index, weights=d * d, minlength=self.num_bins).cpu()

    def fit(self, alpha: float, beta: float) -> DistanceFit:
        """Mode m (left edge of the fullest bin, first on ties), σ_l, σ_r about m, thresholds of Eq. 1."""
        total = int(self.count.sum().item())
        if total == 0:
            raise HashkitError("SSDH needs at least two training images to fit its distance distribution")
        k = int(torch.argmax(self.count).item())
        mode = k * self.bin_width
        sigma_left = _spread(self.count[:k], self.sum[:k], self.sum_sq[:k], mode)
        sigma_right = _spread(self.count[k:], self.sum[k:], self.sum_sq[k:], mode)
        return DistanceFit(
            mode=mode,
            sigma_left=sigma_left,
            sigma_right=sigma_right,
            similar_below=mode - alpha * sigma_left,
            dissimilar_above=mode + beta * sigma_right,
            num_pairs=total,
        )


def _spread(count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor, centre: float) -> float:
    """sqrt(mean of (d − centre)²) from per-bin count, Σd, Σd² (0 for an empty half)."""
    n = float(count.sum())
    if n == 0:
        return 0.0
    second_moment = (float(total_sq.sum()) - 2 * centre * float(total.sum()) + centre * centre * n) / n
    return math.sqrt(max(second_moment, 0.0))


def fit_half_gaussians(distances: torch.Tensor, alpha: float, beta: float) -> DistanceFit:
    """Fit Eq. 1's two half-Gaussians to a flat tensor of pairwise distances (one entry per pair)."""
    histogram = DistanceHistogram()
    histogram.add(distances)
    return histogram.fit(alpha, beta)


def _distance_blocks(features: torch.Tensor):
    """(start, rows × n float64 cosine distances) for consecutive row blocks of the unit features."""
    n = features.shape[0]
    unit = torch.nn.functional.normalize(features.double(), dim=1, eps=1e-12)
    rows = max(1, BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n, rows):
        yield start, 1.0 - unit[start : start + rows] @ unit.t()


def fit_distances(features: torch.Tensor, alpha: float, beta: float) -> DistanceFit:
    """Fit Eq. 1 on the cosine distances of every pair i < j of ``features`` (n, dim), blockwise."""
    histogram = DistanceHistogram()
    n = features.shape[0]
    for start, block in _distance_blocks(features):
        rows = torch.arange(start, start + block.shape[0], device=block.device)
        upper = torch.arange(n, device=block.device)[None, :] > rows[:, None]
        histogram.add(block[upper])
    return histogram.fit(alpha, beta)


def pseudo_similarity(features: torch.Tensor, fit: DistanceFit) -> torch.Tensor:
    """S (n, n) int8 of Eq. 1: +1 if d < m − α·σ_l, −1 if d > m + β·σ_r, else 0 (d_ii = 0)."""
    n = features.shape[0]
    if n * n > MAX_S_BYTES:
        raise HashkitError(
            f"SSDH keeps an n×n int8 similarity matrix: {n * n / 2**30:.1f} GiB for {n} training images; "
            f"pass --num-train {int(math.sqrt(MAX_S_BYTES))} or fewer"
        )
    s = torch.empty(n, n, dtype=torch.int8, device=features.device)
    for start, block in _distance_blocks(features):
        rows = torch.arange(block.shape[0], device=block.device)
        block[rows, rows + start] = 0.0
        s[start : start + block.shape[0]] = (block < fit.similar_below).to(torch.int8) - (
            block > fit.dissimilar_above
        ).to(torch.int8)
    return s


def ssdh_loss(outputs: torch.Tensor, s: torch.Tensor, activated: bool = False) -> torch.Tensor:
    """Eq. 2 relaxed: (1/b²) Σ_ij |S_ij| (h_iᵀ h_j / r − S_ij)² over the batch pairs, h = tanh(u)
    (``outputs`` = u, or h itself when ``activated``: the model's tanh hash layer, as the seed's)."""
    h = outputs if activated else torch.tanh(outputs)
    inner = h @ h.t() / h.shape[1]
    s = s.to(outputs.dtype)
    return (s.abs() * (inner - s).pow(2)).sum() / (outputs.shape[0] ** 2)


@METHODS.register("ssdh")
class SSDH(HashingMethod):
    name = "ssdh"
    family = "unsupervised"
    reference_code = ('TreezzZ/SSDH_PyTorch',)
    relaxation = "tanh"
    paper = (
        "Yang, Deng, Liu, Liu, Tao. Semantic Structure-based Unsupervised Deep Hashing. IJCAI 2018 (unsupervised)"
    )
    hyperparameters = {
        "alpha": Hyper(2.0, "similar pairs have distance < m − α·σ_l (paper eq. 1)"),
        "beta": Hyper(2.0, "dissimilar pairs have distance > m + β·σ_r (paper eq. 1)"),
        "similarity_transform": Hyper(
            "test", "images the similarity's features see: 'test' (the test transform, one fixed view each) or "
            "'train' (one seeded draw of the training transform each, as the seed's training loader)", str),
    }
    recipes = {
        # TreezzZ/SSDH_PyTorch ssdh.py / run.py / model_loader.py / data/transform.py.
        "seed": {
            "arch": "vgg16",
            "optimizer": "sgd",
            "lr": 1e-3,
            "hash_lr_mult": 1.0,
            "weight_decay": 1e-5,
            "momentum": 0.9,
            "nesterov": False,
            "lr_schedule": "constant",
            "lr_interval": "epoch",
            "batch_size": 24,
            "max_iter": 50,
            "topk": 5000,
            "train_transform": "resized_crop_flip",
            "test_transform": "center_crop",
            "image_size": 224,
            "hash_activation": "tanh",  # hash_layer = Sequential(ReLU, Linear, Tanh)
            "hash_head": "relu_linear",  # on VGG16 classifier[:-3]: fc7 before its ReLU
            "hash_init_std": None,
            "alpha": 2.0,
            "beta": 2.0,
            "similarity_transform": "train",  # extract_features(model, train_dataloader, …)
        },
        "cpu": {"hash_activation": "tanh"},
    }
    supervised = False
    # The registry tests' tiny synthetic set needs looser thresholds, and its tiny backbone ends in fc → ReLU:
    # the post-ReLU features (``--hash-head linear``) are the ones those thresholds were set on.
    test_flags = {"alpha": 1.0, "beta": 1.0, "hash_head": "linear"}

    def __init__(self, code_length: int, hparams: dict[str, Any], device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.S: torch.Tensor | None = None
        self.fit: DistanceFit | None = None
        self.pair_counts: torch.Tensor | None = None  # (similar, dissimilar) pairs i < j
        self._restored: dict[str, torch.Tensor] | None = None

    def setup(self, data: TrainingData) -> None:
        transform = str(self.hparams["similarity_transform"])
        if transform not in SIMILARITY_TRANSFORMS:
            raise HashkitError(
                f"--similarity-transform {transform!r} is unknown; valid: {', '.join(SIMILARITY_TRANSFORMS)}"
            )
        source = data.augmented_features if transform == "train" else data.pretrained_features
        if source is None:
            raise HashkitError(
                "SSDH builds its pseudo-similarity from pretrained backbone features, but this pipeline "
                "offers none; use the default image pipeline"
            )
        features = source().to(self.device)
        if features.shape[0] != data.num_items:
            raise HashkitError(f"SSDH got {features.shape[0]} feature rows for {data.num_items} training images")
        self.build_similarity(features)

    def build_similarity(self, features: torch.Tensor) -> None:
        """Fit Eq. 1 on ``features`` (n, dim) and keep S (n, n) int8 on the method's device."""
        alpha, beta = float(self.hparams["alpha"]), float(self.hparams["beta"])
        self.fit = fit_distances(features, alpha, beta)
        self.S = pseudo_similarity(features, self.fit)
        n = features.shape[0]
        similar = (int((self.S == 1).sum()) - int((self.S.diagonal() == 1).sum())) // 2
        dissimilar = int((self.S == -1).sum()) // 2
        self.pair_counts = torch.tensor([similar, dissimilar], dtype=torch.int64)
        pairs = max(n * (n - 1) // 2, 1)
        fit = self.fit
        logger.info(
            f"SSDH structure over {n} images: mode {fit.mode:.3f}, σ_l {fit.sigma_left:.4f}, σ_r {fit.sigma_right:.4f}; "
            f"similar d < {fit.similar_below:.4f} ({similar} pairs, {100 * similar / pairs:.2f}%), "
            f"dissimilar d > {fit.dissimilar_above:.4f} ({dissimilar} pairs, {100 * dissimilar / pairs:.2f}%)"
        )
        if similar == 0 or dissimilar == 0:
            logger.warning(
                f"SSDH found no {'similar' if similar == 0 else 'dissimilar'} pairs: lower --alpha/--beta "
                f"(now {alpha}/{beta}) so that the loss sees both kinds"
            )
        self._check_restored()

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.S is None:
            raise RuntimeError("SSDH.training_step before setup")
        index = batch.index.to(self.S.device)
        s = self.S[index[:, None], index[None, :]].to(outputs.device)
        return {"pairwise": ssdh_loss(outputs, s, activated=self.hash_activation == "tanh")}

    def state_dict(self) -> dict[str, Any]:
        if self.fit is None or self.pair_counts is None:
            return {}
        return {"fit": self.fit.as_tensor(), "pair_counts": self.pair_counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self._restored = {k: v.cpu() for k, v in state.items()}
            self._check_restored()

    def _check_restored(self) -> None:
        """Warn when the recomputed structure differs from the checkpointed one (S is not stored)."""
        if self._restored is None or self.fit is None or self.pair_counts is None:
            return
        same_fit = torch.allclose(self._restored["fit"], self.fit.as_tensor(), rtol=1e-6, atol=1e-9)
        same_counts = torch.equal(self._restored["pair_counts"], self.pair_counts)
        if not (same_fit and same_counts):
            logger.warning(
                "SSDH's recomputed pseudo-similarity differs from the checkpoint's (fit "
                f"{self._restored['fit'].tolist()} vs {self.fit.as_tensor().tolist()}, pairs "
                f"{self._restored['pair_counts'].tolist()} vs {self.pair_counts.tolist()}): the backbone features "
                "changed (other --arch/--weights/--image-size, or features of a fine-tuned network)"
            )

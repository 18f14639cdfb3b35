"""IMH — Inductive Hashing on Manifolds (Shen, Shen, Shi, van den Hengel & Tang, CVPR 2013), the IMH-tSNE
variant, as FIRe's ``functions/loss/imh.py`` runs it on frozen features.

Fit (training split):

1. anchors: k-means with ``--anchors`` m centres (paper and FIRe: 400) — Lloyd's algorithm from m training
   points drawn at random, ``--kmeans-iterations`` rounds (FIRe: faiss ``Kmeans(niter=200)``; here
   scikit-learn's ``KMeans(init="random", n_init=1, algorithm="lloyd", tol=0)``, seeded with ``--seed``);
2. the anchors' embedding Y (m, bits): t-SNE of the anchors into ``bits`` dimensions (IMH-tSNE; FIRe and here:
   scikit-learn's ``TSNE(bits, init="pca", method="exact")`` with its other defaults, perplexity
   ``--perplexity`` 30, seeded with ``--seed``);
3. the inductive embedding of any x (paper Eq. 9 with the k-NN weights of FIRe): its ``--neighbours`` k = 5
   nearest anchors c_j by Euclidean distance, weights w_j = exp(−‖x − c_j‖² / ``--bandwidth``) (FIRe: 512,
   on squared distances as faiss returns them) normalised to sum 1, y(x) = Σ_j w_j Y_j; bit i = sgn(y_i(x)),
   thresholded at 0 as FIRe (t-SNE's embedding has mean ≈ 0).

Not the IMH-LE variant (Laplacian eigenmaps of the anchors) and not the paper's σ from the data: FIRe's code
is followed. Numerics: the weights are computed as exp(−(d_j − d_min)/σ) / Σ exp(−(d − d_min)/σ) — the same
normalised weights, but finite when every d/σ is large (with unscaled features d/512 can reach hundreds,
where FIRe's exp underflows to 0/0).

The "anchors" head below holds the anchors, Y, k and the bandwidth as buffers of the model's state dict, so
encoding needs the checkpoint alone. Needs scikit-learn (``pip install scikit-learn``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from loguru import logger

from hashkit.errors import HashkitError
from hashkit.heads import HashHead
from hashkit.method import Hyper
from hashkit.method_parts.closed_form import ClosedFormMethod, fitted_statistics
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU, fire_shallow_recipes
from hashkit.registry import HEADS, METHODS


@HEADS.register("anchors")
class AnchorHead(HashHead):
    """u = Σ_j w_j(x) Y_j over x's k nearest anchors, w_j ∝ exp(−‖x − c_j‖² / bandwidth) (IMH's inductive map).
    No linear layer: the map is a weighted nearest-anchor average."""

    def __init__(self, in_features: int, code_length: int, init_std: float | None = None, **_: Any) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.zeros(0, in_features))  # (m, d), set by IMH's fit
        self.register_buffer("anchor_embedding", torch.zeros(0, code_length))  # (m, bits)
        self.register_buffer("neighbours", torch.tensor(5, dtype=torch.long))
        self.register_buffer("bandwidth", torch.tensor(512.0, dtype=torch.float64))

    @torch.no_grad()
    def set_anchors(self, anchors: torch.Tensor, embedding: torch.Tensor, neighbours: int, bandwidth: float) -> None:
        self.anchors = anchors.float().to(self.anchors.device)
        self.anchor_embedding = embedding.float().to(self.anchor_embedding.device)
        self.neighbours.fill_(int(neighbours))
        self.bandwidth.fill_(float(bandwidth))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The number of anchors is known only after a fit: take the saved buffers' shapes.
        for name in ("anchors", "anchor_embedding"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.zeros(saved.shape, dtype=saved.dtype, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if len(self.anchors) == 0:
            raise RuntimeError("the anchors head has no anchors: it is set by IMH's fit (hashkit train --method imh)")
        return anchor_embedding(features, self.anchors, self.anchor_embedding, int(self.neighbours), float(self.bandwidth))


def anchor_embedding(features: torch.Tensor, anchors: torch.Tensor, embedding: torch.Tensor,
                     neighbours: int, bandwidth: float) -> torch.Tensor:  # fmt: skip
    """Σ_j w_j Y_j over the k nearest anchors, w ∝ exp(−d²/bandwidth) normalised (shifted by the nearest d²)."""
    squared = torch.cdist(features.double(), anchors.double(), compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    nearest, index = torch.topk(squared, min(neighbours, len(anchors)), dim=1, largest=False)
    weights = torch.softmax(-(nearest - nearest[:, :1]) / bandwidth, dim=1)
    return (weights[:, :, None] * embedding.double()[index]).sum(dim=1).to(features.dtype)


@METHODS.register("imh")
class IMH(ClosedFormMethod):
    name = "imh"
    paper = "Shen, Shen, Shi, van den Hengel & Tang. Inductive Hashing on Manifolds. CVPR 2013 (IMH-tSNE)"
    head = "anchors"
    head_class = AnchorHead
    hyperparameters = {
        "anchors": Hyper(400, "IMH: k-means anchors m (paper, FIRe: 400)", int),
        "neighbours": Hyper(5, "IMH: nearest anchors k in the inductive embedding (paper, FIRe: 5)", int),
        "bandwidth": Hyper(512.0, "IMH: w = exp(-squared distance / bandwidth) (FIRe: 512)"),
        "kmeans_iterations": Hyper(200, "IMH: Lloyd iterations of the anchors' k-means (FIRe: 200)", int),
        "perplexity": Hyper(30.0, "IMH: t-SNE perplexity of the anchors' embedding (scikit-learn's default, FIRe)"),
    }
    recipes = {
        # FIRe: functions/loss/imh.py on the frozen VGG16 fc7 descriptors (configs/templates/imh.yaml).
        **fire_shallow_recipes(anchors=400, neighbours=5, bandwidth=512.0, kmeans_iterations=200),
        "cpu": dict(FROZEN_LITE0_CPU),
    }
    # The registry tests' 48 training images: fewer anchors, and a perplexity below their number.
    test_flags = {"anchors": 16, "perplexity": 5.0}

    def _checked(self, n: int) -> tuple[int, int, float, int, float]:
        h = self.hparams
        anchors, neighbours, iterations = int(h["anchors"]), int(h["neighbours"]), int(h["kmeans_iterations"])
        bandwidth, perplexity = float(h["bandwidth"]), float(h["perplexity"])
        for flag, value in (("--anchors", anchors), ("--neighbours", neighbours), ("--kmeans-iterations", iterations)):
            if value < 1:
                raise HashkitError(f"{flag} must be at least 1 (FIRe: anchors 400, neighbours 5, k-means iterations 200), got {value}")
        if not bandwidth > 0:
            raise HashkitError(f"--bandwidth must be above 0 (FIRe: 512), got {bandwidth}")
        if anchors > n:
            logger.warning(f"IMH: --anchors {anchors} is more than the {n} training items; using {n} anchors")
            anchors = n
        if self.code_length > anchors:
            raise HashkitError(f"IMH embeds its {anchors} anchors in {self.code_length} dimensions: pass --code-length "
                               f"{anchors} or fewer, or more --anchors / training images")  # fmt: skip
        if not 0 < perplexity < anchors:
            raise HashkitError(f"--perplexity must be above 0 and below the {anchors} anchors (default 30), got {perplexity}")
        return anchors, neighbours, bandwidth, iterations, perplexity

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        try:
            from sklearn.cluster import KMeans
            from sklearn.manifold import TSNE
        except ImportError:
            raise HashkitError("--method imh needs scikit-learn (k-means and t-SNE): pip install scikit-learn") from None
        anchors, neighbours, bandwidth, iterations, perplexity = self._checked(len(features))
        seed = torch.initial_seed() % 2**32
        x = features.double().cpu().numpy()
        kmeans = KMeans(n_clusters=anchors, init="random", n_init=1, max_iter=iterations, tol=0.0,
                        algorithm="lloyd", random_state=seed).fit(x)  # fmt: skip
        centres = kmeans.cluster_centers_
        tsne = TSNE(n_components=self.code_length, init="pca", method="exact", perplexity=perplexity, random_state=seed)
        embedding = tsne.fit_transform(centres.astype(np.float32))
        self.head_module.set_anchors(torch.from_numpy(centres), torch.from_numpy(embedding), neighbours, bandwidth)
        outputs = anchor_embedding(features.double(), torch.from_numpy(centres).to(features.device),
                                   torch.from_numpy(embedding).to(features.device), neighbours, bandwidth)  # fmt: skip
        return fitted_statistics(outputs, kmeans_inertia=float(kmeans.inertia_) / len(x), tsne_kl=float(tsne.kl_divergence_))

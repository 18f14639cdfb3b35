"""IDHN — Improved Deep Hashing with Soft Pairwise Similarity for Multi-label Image Retrieval (Zhang, Zou,
Lin, Chen, Wang; IEEE TMM 2019, arXiv 1803.02987), with its first version ISDH (Instance Similarity Deep Hashing,
arXiv 1803.02987v1) as ``--variant isdh``.

Soft pairwise similarities for multi-label data: s_ij ∈ [0, 1], the cosine of the two items' label vectors
(hashkit.method_parts.pairs.cosine_label_similarity). Pairs with s ≈ 1 or s ≈ 0 ("hard", M_ij = 1) get the
pairwise likelihood; the others ("soft", M_ij = 0) a regression of their inner product on s. As
DeepHash-pytorch's ``IDHN.py`` / ``ISDH.py``, on the relaxed codes u' = u / (|u| + 1) (softsign) with a memory
U' of the training split (hashkit.method_parts.memory, the batch written first), θ_ij = α u'_iᵀU'_j, q bits:

    M_ij = [s_ij > 0.99] + [s_ij < 0.01]
    ℓ_ij = log(1 + e^{θ_ij}) − s_ij θ_ij
    idhn:  L = mean_ij [ M_ij ℓ_ij + γ (1 − M_ij) (θ_ij + q − 2 s_ij q)² ]  +  λ · mean_{i,k} | |u'_ik| − 1 |
    isdh:  L = mean_ij [ γ M_ij ℓ_ij + (1 − M_ij) (s_ij − σ(θ_ij))² ]        +  λ · mean_{i,k} | |u'_ik| − 1 |

Readings:

* The soft term of ``idhn`` is the reference's (θ + q − 2sq)², i.e. θ regressed on q(2s − 1), whatever the
  scale α puts θ on (with α = ½ and u' ∈ (−1, 1), |θ| < q/2); taken as written.
* Memory rows never written yet have zero labels in the reference's buffer, so s = 0 there (a hard dissimilar
  pair with θ = 0, a constant log 2 and no gradient): ``written`` rows only, as DSH.
* ``eps`` 1e-5 in the cosine, as the reference: an identical label set gives s = 1 − ~1e-5 (> 0.99, hard).
* log(1 + e^θ) as softplus (the reference's stable form). Relaxation "own": the softsign is applied here, the
  memory keeps u'. Single-label data: s ∈ {0, 1}, every pair hard, and the loss is DPSH-like with α.
* Exact under torchrun: a batch mean against a memory written in ``observe``.

Hyper-parameters (DeepHash-pytorch's ``get_config``): α = 0.5, γ = 0.1 for ``idhn`` (``ISDH.py`` runs
γ = 10: ``--variant isdh --gamma 10``), λ = 0.1. Seed recipe: DeepHash-pytorch
(hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 128 and 150 epochs; on CIFAR-10 its
resize-only transforms, on the other data sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods (cells: docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.errors import HashkitError
from hashkit.method import Batch, Hyper, TrainingData
from hashkit.method_parts.memory import PairwiseMemoryMethod
from hashkit.method_parts.pairs import cosine_label_similarity
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

VARIANTS = ("idhn", "isdh")


def idhn_loss(
    u: torch.Tensor, memory_u: torch.Tensor, s: torch.Tensor, alpha: float, gamma: float, lamda: float, variant: str
) -> dict[str, torch.Tensor]:
    """IDHN's (or ISDH's) pairwise term, mean over the b × n pairs of the relaxed codes ``u`` (b, bits) against
    the memory (n, bits) with soft similarities ``s`` (b, n), and λ × the quantisation mean | |u| − 1 |."""
    s = s.to(u.dtype)
    hard = ((s > 0.99) | (s < 0.01)).to(u.dtype)
    theta = alpha * u @ memory_u.t().to(u.dtype)
    likelihood = F.softplus(theta) - s * theta
    if variant == "isdh":
        pairwise = gamma * hard * likelihood + (1.0 - hard) * (s - torch.sigmoid(theta)).pow(2)
    else:
        bits = u.shape[1]
        pairwise = hard * likelihood + gamma * (1.0 - hard) * (theta + bits - 2.0 * s * bits).pow(2)
    quantization = (u.abs() - 1.0).abs().mean()
    return {"pairwise": pairwise.mean(), "quantization": lamda * quantization}


@METHODS.register("idhn")
class IDHN(PairwiseMemoryMethod):
    name = "idhn"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "own"
    paper = (
        "Zhang, Zou, Lin, Chen, Wang. Improved Deep Hashing with Soft Pairwise Similarity for Multi-label Image "
        "Retrieval. IEEE TMM 2019"
    )
    hyperparameters = {
        "alpha": Hyper(0.5, "scale α of IDHN's inner product θ = α u'ᵀu' (DeepHash-pytorch's 0.5)"),
        "gamma": Hyper(
            0.1, "idhn: weight γ of the soft pairs' squared term (DeepHash-pytorch's 0.1); isdh: weight of the "
            "hard pairs' likelihood (ISDH.py's 10)",
        ),
        "lamda": Hyper(0.1, "weight λ of IDHN's quantisation term mean | |u'| − 1 | (DeepHash-pytorch's 0.1)"),
        "variant": Hyper(
            "idhn", "idhn: soft pairs regress θ on q(2s − 1) (IDHN.py); isdh: soft pairs regress σ(θ) on s, "
            "hard pairs weighted by γ (ISDH.py, the paper's first version)", str,
        ),
    }
    recipes = {
        # DeepHash-pytorch IDHN.py get_config: batch 128, 150 epochs (evaluated every 15).
        **deephash_pytorch_recipes(batch_size=128, max_iter=150, alpha=0.5, gamma=0.1, lamda=0.1, variant="idhn"),
        "cpu": dict(REGULARISED_CPU),  # the catalogue I recipe (hashkit.recipes; DSH 0.52 → 0.67 with it)
    }
    # supports_distributed: True (PairwiseMemoryMethod) — a batch mean against a memory written in observe.

    def setup(self, data: TrainingData) -> None:
        if self.hparams["variant"] not in VARIANTS:
            raise HashkitError(f"--variant {self.hparams['variant']!r} is unknown; valid: {', '.join(VARIANTS)}")
        super().setup(data)

    def relax(self, outputs: torch.Tensor) -> torch.Tensor:
        """u' = u / (|u| + 1), the reference's softsign."""
        return outputs / (outputs.abs() + 1.0)

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        assert self.memory.labels is not None
        written = self.memory.filled[None, :].to(self.memory.labels.dtype)
        s = cosine_label_similarity(batch.labels.to(self.memory.labels.dtype), self.memory.labels) * written
        return idhn_loss(
            codes, self.memory.U, s, float(self.hparams["alpha"]), float(self.hparams["gamma"]),
            float(self.hparams["lamda"]), str(self.hparams["variant"]),
        )  # fmt: skip

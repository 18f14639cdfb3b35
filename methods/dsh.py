"""DSH — Deep Supervised Hashing for Fast Image Retrieval (Liu, Wang, Shan, Chen; CVPR 2016).

A contrastive loss on the real-valued outputs u with margin m = 2·bits, plus a regulariser that pulls
every coordinate's magnitude to 1. As DeepHash-pytorch's ``DSH.py`` (``DSHLoss``), over the pairs of the
batch with a memory U of the whole training split (hashkit.method_parts.memory, the reference's U/Y buffers,
the batch written first):

    D_ij = ‖u_i − U_j‖²,   y_ij = 1 if i and j share no label else 0
    L = mean_{i ∈ batch, j ≤ n} [ ½(1 − y_ij) D_ij + ½ y_ij max(m − D_ij, 0) ]  +  α · mean_{i, k} | 1 − |u_ik| |

Readings:

* Memory rows never written yet count as dissimilar to everything (the reference's label buffer Y is all
  zeros until an item's batch is seen; ``PairwiseMemory.written_similarity``): in the first epoch the hinge
  pushes ‖u_i‖² (the distance to an unseen row's zero code) up to m.
* Pairs against the memory rather than the paper's in-batch pairs (the paper forms the pairs inside each
  mini-batch): the reference's choice, which also makes the loss a batch mean over a memory written in
  ``observe`` — exact under torchrun.
* The paper's m = 2k (k bits) is ``--margin-per-bit`` × bits; α = 0.1 (the reference's, on the mean).
* Relaxation "none": the loss reads u as it is (the reference's AlexNet ends in a linear layer).
* Multi-label: y_ij = 0 when the two items share at least one label (the reference's ``y @ Y.t() == 0``).

Seed recipe: DeepHash-pytorch (hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 64
and 250 epochs; on CIFAR-10 its resize-only
transforms, on the other data sets its 256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU (8 cached views, stochastic
depth, feature dropout, 20 epochs), as the other catalogue II methods.
"""

from __future__ import annotations

import torch

from hashkit.method import Batch, Hyper
from hashkit.method_parts.memory import PairwiseMemoryMethod
from hashkit.method_parts.pairs import squared_distances
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU


def dsh_loss(
    u: torch.Tensor, memory_u: torch.Tensor, s: torch.Tensor, margin: float, alpha: float
) -> dict[str, torch.Tensor]:
    """DSH's contrastive term (mean over the b × n pairs) and α × regulariser (mean over the b × bits
    entries) for batch outputs ``u`` against the memory ``memory_u`` (n, bits) with similarity ``s`` (b, n)."""
    distance = squared_distances(u, memory_u.to(u.dtype))
    s = s.to(u.dtype)
    contrastive = 0.5 * s * distance + 0.5 * (1.0 - s) * (margin - distance).clamp(min=0.0)
    regulariser = (1.0 - u.abs()).abs().mean()
    return {"contrastive": contrastive.mean(), "regulariser": alpha * regulariser}


@METHODS.register("dsh")
class DSH(PairwiseMemoryMethod):
    name = "dsh"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch',)
    relaxation = "none"
    paper = "Liu, Wang, Shan, Chen. Deep Supervised Hashing for Fast Image Retrieval. CVPR 2016"
    hyperparameters = {
        "alpha": Hyper(0.1, "weight α of DSH's regulariser mean | 1 − |u| | (DeepHash-pytorch's 0.1)"),
        "margin_per_bit": Hyper(2.0, "DSH's contrastive margin m in units of the code length: m = this × bits (paper: m = 2k)"),
    }
    recipes = {
        # DeepHash-pytorch DSH.py get_config: batch 64, 250 epochs (evaluated every 15).
        **deephash_pytorch_recipes(batch_size=64, max_iter=250, alpha=0.1, margin_per_bit=2.0),
        # cpu: the catalogue I recipe (hashkit.recipes.REGULARISED_CPU): 0.6701 at 32 bits, seed 0, against 0.5219
        # under the shared 32-epoch recipe alone (results/cifar10-cpu/dsh-32.json; docs/results.md, note 12).
        "cpu": dict(REGULARISED_CPU),
    }
    # supports_distributed: True (PairwiseMemoryMethod) — a batch mean against a memory written in observe.

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        margin = float(self.hparams["margin_per_bit"]) * self.code_length
        s = self.memory.written_similarity(batch.labels)
        return dsh_loss(codes, self.memory.U, s, margin, float(self.hparams["alpha"]))

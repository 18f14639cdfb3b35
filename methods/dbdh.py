"""DBDH — Deep Balanced Discrete Hashing for Image Retrieval (Zheng et al.;
Neurocomputing 2020).

DPSH's pairwise likelihood on codes clipped to [−1, 1], plus a balance term that drives every code's mean
over its bits to 0 (each bit half +1, half −1 across the code). As DeepHash-pytorch's ``DBDH.py`` and FIRe's
``functions/loss/dbdh.py`` (the same loss), on u' = clamp(u, −1, 1) with a memory U' of the training split
(hashkit.method_parts.memory, the batch written first), θ_ij = ½ u'_iᵀU'_j:

    L = mean_{i ∈ batch, j ≤ n} [log(1 + e^{θ_ij}) − s_ij θ_ij]  +  α · mean_i | mean_k u'_ik |^p

Readings:

* The relaxation is the references' ``u.clamp(-1, 1)`` (a hard tanh: no gradient where |u| > 1), which stands
  in for the paper's discrete sign in the forward pass; relaxation "own", the memory keeps u'.
* The balance term is over the bits of each code (``u.mean(dim=1)``), then the mean over the batch; p = 2
  by default (``--power 1``: the absolute value, both references' other branch; DeepHash-pytorch's ``p``,
  FIRe's ``pow``).
* Memory rows never written yet have zero labels and zero codes in the references' buffers (θ = 0: a
  constant log 2, no gradient); ``written_similarity`` as DSH.
* log(1 + e^θ) as softplus (the references' stable form, exact). Multi-label: s_ij = 1 when the items share a
  label. Exact under torchrun (a batch mean against a memory written in ``observe``).

Hyper-parameters: α = 0.1 (DeepHash-pytorch's; FIRe's default 1), p = 2 (both). Seed recipe: DeepHash-pytorch
(hashkit.method_parts.reference_recipes.deephash_pytorch_recipes) with batch 128, 150 epochs and its lr × 0.1
every 50 epochs (``epoch_lr_decrease`` 50); on CIFAR-10 its resize-only transforms, on the other data sets its
256 → 224 crops. CPU recipe: hashkit.recipes.REGULARISED_CPU, as the
other catalogue II methods, on the ``bn`` head (hashkit.heads: W x, then batch-norm over the bits) and without
its feature dropout: centring the outputs keeps them from all leaving the clamp's range together, and dropout's
1/(1 − 0.6) rescaling of the features in training pushes more outputs beyond the clamp, where no gradient
passes (the measurements: docs/results.md, note 12).
"""

from __future__ import annotations

import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, Hyper, TrainingData
from hashkit.method_parts.memory import PairwiseMemoryMethod, pairwise_nll
from hashkit.method_parts.reference_recipes import deephash_pytorch_recipes
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU


def dbdh_loss(u: torch.Tensor, memory_u: torch.Tensor, s: torch.Tensor, alpha: float, p: int) -> dict[str, torch.Tensor]:
    """DBDH's likelihood (mean over the b × n pairs) and α × balance mean_i |mean_k u_ik|^p for clipped codes u."""
    theta = 0.5 * u @ memory_u.t().to(u.dtype)
    likelihood = pairwise_nll(theta, s.to(u.dtype)).mean()
    balance = u.mean(dim=1).abs().pow(p).mean()
    return {"likelihood": likelihood, "balance": alpha * balance}


@METHODS.register("dbdh")
class DBDH(PairwiseMemoryMethod):
    name = "dbdh"
    family = "pairwise"
    reference_code = ('swuxyj/DeepHash-pytorch', 'CISiPLab/cisip-FIRe')
    relaxation = "own"
    paper = "Zheng et al. Deep Balanced Discrete Hashing for Image Retrieval. Neurocomputing 2020"
    hyperparameters = {
        "alpha": Hyper(0.1, "weight α of DBDH's balance term mean |mean_k u_k|^p (DeepHash-pytorch's 0.1; FIRe's 1)"),
        "power": Hyper(
            2, "power p of DBDH's balance term: 2 (squared, both references' default) or 1 (absolute)", int,
            aliases=("pow",),
        ),
    }
    recipes = {
        # DeepHash-pytorch DBDH.py get_config: batch 128, 150 epochs (evaluated every 5), RMSprop lr 1e-5 × 0.1 every
        # 50 epochs (epoch_lr_decrease 50).
        **deephash_pytorch_recipes(
            batch_size=128, max_iter=150, lr_schedule="step", lr_step_size=50, lr_gamma=0.1, lr_interval="epoch",
            alpha=0.1, power=2,
        ),
        # The catalogue I recipe on the ``bn`` head and without feature dropout: on the linear head the pooled
        # features' common component drove every output beyond the clamp (one code for all items, no gradient
        # back), and the dropout's rescaling pushes outputs past it (measured: docs/results.md note 12).
        "cpu": {**REGULARISED_CPU, "hash_head": "bn", "hash_dropout": 0.0},
    }
    # supports_distributed: True (PairwiseMemoryMethod) — a batch mean against a memory written in observe.

    def setup(self, data: TrainingData) -> None:
        if int(self.hparams["power"]) not in (1, 2):
            raise HashkitError(f"--power {self.hparams['power']} is not supported; valid: 1, 2")
        super().setup(data)

    def relax(self, outputs: torch.Tensor) -> torch.Tensor:
        """u' = clamp(u, −1, 1), the references' relaxation."""
        return outputs.clamp(min=-1.0, max=1.0)

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        s = self.memory.written_similarity(batch.labels)
        return dbdh_loss(codes, self.memory.U, s, float(self.hparams["alpha"]), int(self.hparams["power"]))

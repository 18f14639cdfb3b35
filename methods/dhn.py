"""DHN — Deep Hashing Network for Efficient Similarity Retrieval (Zhu, Long, Wang, Cao, AAAI 2016).

The paper's MAP objective C = L + λQ: a pairwise cross-entropy L (the negative log-likelihood of the
pairwise logistic model p(s_ij | h_i, h_j) = σ(θ_ij)) plus a pairwise quantization term Q, the negative
log of a bimodal Laplacian prior that pulls every coordinate of the relaxed code to ±1, made smooth with
|x| ≈ log cosh x. (Equation numbers are not cited: the AAAI-16 PDF could not be checked here.) As the
seed (TreezzZ/DHN_PyTorch ``dhn.py`` ``DHNLoss`` and ``models/alexnet.py``), over the pairs of the batch:

    h = tanh(u)                                                  (the seed's network ends in tanh)
    L = mean_{i, j ∈ batch} [ log(1 + e^{θ_ij}) − s_ij θ_ij ],     θ_ij = ½ h_iᵀ h_j
    Q = mean_{i ∈ batch, k ≤ bits} log cosh(|h_ik| − 1)
    loss = L + λ Q

* Relaxation: tanh. The seed's AlexNet applies ``torch.tanh`` after its hash layer, so both terms act on
  h = tanh(u); codes are sign(u) = sign(h). With ``--hash-activation tanh`` (the seed recipe) the model
  applies it, otherwise the loss does (:meth:`HashingMethod.tanh_outputs`): tanh is applied exactly once.
* θ = ½ hᵢᵀhⱼ as the seed (``theta = H @ H.t() / 2``) and the authors' TensorFlow release
  (thulab/DeepHash, ``alpha = 0.5``).
* Pairs (``--pairs``): ``batch`` (default, the seed) — every ordered pair of the batch, i = j included,
  s from ``targets @ targets.t() > 0``, gradients through both codes of a pair; ``memory`` — the batch
  against a memory of the whole training split's (detached) codes, b × n pairs a step, as
  DeepHash-pytorch's DHN.py (hashkit's earlier default; it trains under torchrun, ``batch`` does not).
* Normalisation as the seed: L is the mean over pairs, Q the mean over the batch's b × bits entries.
  The seed multiplies λ into the likelihood as well (``log(1+e^{−|λθ|}) + max(θ,0) − λSθ``); that is not
  the paper's loss and coincides with it at the seed's λ = 1, which is what is implemented here.
* Multi-label: s_ij = 1 when the two items share at least one label.

Hyper-parameters: ``--lamda`` λ = 1 (seed default; seed spelling), the weight of Q; ``--pairs`` batch.
Seed recipe (TreezzZ/DHN_PyTorch run.py/dhn.py): AlexNet with a tanh hash layer, batch 256, RMSprop
lr 1e-5 on every layer, weight decay 5e-4, ``CosineAnnealingLR(T_max = epochs, eta_min = lr/100)``
stepped per epoch, 500 epochs, RandomResizedCrop(224) + flip / Resize(256) + CenterCrop(224).
"""

from __future__ import annotations

import torch

from hashkit.errors import HashkitError
from hashkit.method_parts.memory import PairwiseMemoryMethod, log_cosh, pairwise_nll
from hashkit.method import Batch, Hyper, TrainingData, similarity
from hashkit.registry import METHODS
from hashkit.recipes import REGULARISED_CPU

PAIRINGS = ("batch", "memory")


@METHODS.register("dhn")
class DHN(PairwiseMemoryMethod):
    name = "dhn"
    family = "pairwise"
    reference_code = ('TreezzZ/DHN_PyTorch',)
    relaxation = "tanh"
    # In-batch pairs couple the processes' parts of a torchrun batch; pairs against the memory (written in
    # observe) are exact. torchrun refuses other values (hashkit.run).
    distributed_flags = {"pairs": "memory"}
    paper = "Zhu, Long, Wang, Cao. Deep Hashing Network for Efficient Similarity Retrieval. AAAI 2016"
    hyperparameters = {
        "lamda": Hyper(1.0, "weight λ of DHN's smooth quantization term Σ log cosh(|h|−1) (paper's C = L + λQ)"),
        "pairs": Hyper(
            "batch", "batch: the pairs within the batch (seed); memory: the batch against a memory of the "
            "training split's codes (trains under torchrun)", str,
        ),
    }
    recipes = {
        # TreezzZ/DHN_PyTorch dhn.py / run.py / models/alexnet.py / data/transform.py (HEAD 79ee001).
        "seed": {
            "arch": "alexnet",
            "optimizer": "rmsprop",
            "lr": 1e-5,
            "hash_lr_mult": 1.0,  # RMSprop(model.parameters(), …): one lr for every layer
            "weight_decay": 5e-4,
            "momentum": 0.0,
            "lr_schedule": "cosine",  # CosineAnnealingLR(optimizer, max_iter, lr / 100), stepped after each epoch
            "lr_eta_min": 1e-7,
            "lr_interval": "epoch",
            "batch_size": 256,
            "max_iter": 500,
            "train_transform": "resized_crop_flip",
            "test_transform": "center_crop",
            "image_size": 224,
            "hash_activation": "tanh",  # x = torch.tanh(hash_layer(x))
            "hash_init_std": None,
            "lamda": 1.0,
            "pairs": "batch",
        },
        # cpu: memory pairs, λ 0.1 and the seed's tanh on the catalogue I recipe (hashkit.recipes.REGULARISED_CPU):
        # 0.7130 at 32 bits, seed 0 (0.6773 on the shared 32-epoch recipe alone); docs/results.md, notes 8 and 12.
        "cpu": {**REGULARISED_CPU, "lamda": 0.1, "hash_activation": "tanh", "pairs": "memory"},
    }

    def setup(self, data: TrainingData) -> None:
        pairs = self.hparams["pairs"]
        if pairs not in PAIRINGS:
            raise HashkitError(f"--pairs {pairs!r} is unknown; valid: {', '.join(PAIRINGS)}")
        super().setup(data)

    def relax(self, outputs: torch.Tensor) -> torch.Tensor:
        """h = tanh(u), applied once (by the model under ``--hash-activation tanh``, else here)."""
        return self.tanh_outputs(outputs)

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self.hparams["pairs"] == "batch":
            labels = batch.labels.to(codes.dtype)
            return dhn_loss(codes, similarity(labels, labels), codes, self.hparams["lamda"])
        return dhn_loss(codes, self.memory.similarity(batch.labels), self.memory.U, self.hparams["lamda"])


def dhn_loss(h: torch.Tensor, s: torch.Tensor, other_h: torch.Tensor, lamda: float) -> dict[str, torch.Tensor]:
    """DHN's pairwise cross-entropy (mean over the b × m pairs) and λ × smooth quantization (mean over
    the batch's b × bits entries) for relaxed batch codes ``h`` (b, bits) against ``other_h`` (m, bits):
    the batch itself (the seed) or the memory."""
    theta = 0.5 * h @ other_h.t().to(h.dtype)
    likelihood = pairwise_nll(theta, s.to(h.dtype)).mean()
    quantization = lamda * log_cosh(h.abs() - 1.0).mean()
    return {"likelihood": likelihood, "quantization": quantization}

"""DHN — Deep Hashing Network for Efficient Similarity Retrieval (Zhu, Long, Wang, Cao, AAAI 2016).

The paper's MAP objective C = L + λQ: a pairwise cross-entropy L (the negative log-likelihood of the
pairwise logistic model p(s_ij | u_i, u_j) = σ(θ_ij)) plus a pairwise quantization term Q, the negative
log of a bimodal Laplacian prior that pulls every coordinate of the relaxed code to ±1, made smooth with
|x| ≈ log cosh x. (Equation numbers are not cited: the AAAI-16 PDF could not be checked here.) Over the
pairs between the batch and a memory U of the whole training split (hashkit.memory):

    L = mean_{i ∈ batch, j ∈ train} [ log(1 + e^{θ_ij}) − s_ij θ_ij ],     θ_ij = ½ u_iᵀ u_j
    Q = mean_{i ∈ batch, k ≤ bits} log cosh(|u_ik| − 1)
    loss = L + λ Q

* θ = ½ uᵢᵀuⱼ as in the seed (TreezzZ/DHN_PyTorch, ``theta = H @ H.t() / 2``) and the authors'
  TensorFlow release (thulab/DeepHash, ``alpha = 0.5``); ½uᵢᵀuⱼ = bits/2 − Hamming distance for ±1 codes.
* Relaxation: none. The seed feeds the hash layer's linear outputs u straight into both terms (no tanh);
  Q is what keeps |u| near 1. Codes are sign(u).
* Normalisation as the seed: L is the mean over pairs, Q the mean over the batch's entries. The seed
  multiplies λ into the likelihood term as well (``log(1+e^{−|λθ|}) + max(θ,0) − λSθ``); that is not the
  paper's loss and coincides with it at the seed's default λ = 1, which is what is implemented here.
* Pairs: the seed pairs the batch with itself; hashkit (as DeepHash-pytorch's DHN.py) pairs it with the
  memory of the whole training split, like DPSH, so each step sees b × n pairs.
* Multi-label: s_ij = 1 when the two items share at least one label.

Hyper-parameters: ``--lamda`` λ = 1 (seed default; seed spelling), the weight of Q.
Training defaults (seed): AlexNet, batch 256 and lr 1e-5 (README), 500 epochs (``--max-iter``, the
project's seed setting; the README/run.py versions stored publicly default to 100), RMSprop (dhn.py), one
learning rate for every layer (``--hash-lr-mult 1``); the seed's weight decay 5e-4 and
cosine decay to lr/100 are ``--weight-decay 5e-4 --lr-schedule cosine`` (hashkit's cosine decays to 0).
"""

from __future__ import annotations

import torch

from hashkit.memory import PairwiseMemoryMethod, log_cosh, pairwise_nll
from hashkit.method import Batch, Hyper
from hashkit.registry import METHODS


@METHODS.register("dhn")
class DHN(PairwiseMemoryMethod):
    name = "dhn"
    paper = "Zhu, Long, Wang, Cao. Deep Hashing Network for Efficient Similarity Retrieval. AAAI 2016"
    hyperparameters = {
        "lamda": Hyper(1.0, "weight λ of DHN's smooth quantization term Σ log cosh(|u|−1) (paper's C = L + λQ)"),
    }
    recipes = {
        "seed": {
            "arch": "alexnet",
            "batch_size": 256,
            "lr": 1e-5,
            "max_iter": 500,
            "optimizer": "rmsprop",
            "hash_lr_mult": 1.0,
        },
    # Under --cpu-recipe λ = 1 costs 0.07 mAP: CIFAR-10 seed protocol, 32 bits, mAP@ALL 0.6221 (λ 1),
    # 0.6924 (λ 0.1), 0.6827 (λ 0.03) — scripts/bench_cifar10_cpu.py --methods dhn --set lamda=…
        "cpu": {"lamda": 0.1},
    }

    def loss(self, codes: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return dhn_loss(codes, self.memory.similarity(batch.labels), self.memory.U, self.hparams["lamda"])


def dhn_loss(u: torch.Tensor, s: torch.Tensor, memory_u: torch.Tensor, lamda: float) -> dict[str, torch.Tensor]:
    """DHN's pairwise cross-entropy (mean over the b × n pairs) and λ × smooth quantization (mean over
    the batch's b × bits entries) for batch codes ``u`` (b, bits) against ``memory_u`` (n, bits)."""
    theta = 0.5 * u @ memory_u.t().to(u.dtype)
    likelihood = pairwise_nll(theta, s.to(u.dtype)).mean()
    quantization = lamda * log_cosh(u.abs() - 1.0).mean()
    return {"likelihood": likelihood, "quantization": quantization}

"""GreedyHash, unsupervised (Su, Zhang, Chen, Tian, Dai; Greedy Hash: Towards Fast Optimization for Accurate
Hash Coding in CNN, NeurIPS 2018, its unsupervised experiment).

The codes are b = sign(u) in the forward pass already, with the straight-through gradient ∂L/∂u = ∂L/∂b
(the paper's hash coding layer; hashkit.method_parts.relaxations.sign_ste). Without labels, the codes copy the
cosine similarities of the backbone's features x (the input of the hash layer; ``batch.features``) on pairs
formed inside the batch — the first half of the batch against the second half —, plus the paper's penalty:

    L = (1/m) Σ_{i<m} ( cos(b_i, b_{i+m}) − cos(x_i, x_{i+m}) )²  +  α · (1/(b·K)) Σ_i Σ_k | |u_ik| − 1 |³

m = ⌊b/2⌋ (hashkit.method_parts.feature_similarity), α = 0.1 in both references. Transcribed from the authors'
``unsupervised_vgg.py`` (ssppp/GreedyHash) and DeepHash-pytorch's ``Unsupervised_GreedyHash.py``, which compute
the same loss. Labels are never read.

Readings:

* **Odd batches**: the last item is left out of the pairs (it still enters the penalty); the references'
  ``b[:n/2]`` against ``b[n/2:]`` fails on an odd batch (FIRe's BiHalf drops the item, as here).
* **x is a target**, detached: the references freeze the backbone (``requires_grad = False``), so no gradient
  reaches x there; under a recipe that fine-tunes backbone stages, x does not learn to copy the codes.
* **x at VGG16**: fc7 after its ReLU and dropout (torchvision's ``classifier[:6]``, the references' x) is the
  output of hashkit's ``vgg16`` backbone. The seed recipe freezes the backbone, so x is computed once and cached
  (eval mode: no dropout); the references keep VGG16's dropout active in training (``net.train()``), so their
  x and u see a different dropped-out fc7 at every step.
* **Transforms under the cached backbone**: hashkit computes the frozen features once per image at the
  ``resize`` transform (hashkit.cached_pipeline), whatever ``--train-transform``/``--test-transform`` say, so
  DeepHash-pytorch's random crop and flip and its centre-crop test transform on photo data sets are not applied
  (on CIFAR-10 its transform is ``resize`` anyway).
* **sign(0)**: +1 here, 0 in ``torch.sign`` (a zero output has probability zero).

Seed recipe: DeepHash-pytorch's ``get_config`` (whose CIFAR-10 figures, mAP@1000 0.409 / 0.467 / 0.476 at
16 / 32 / 64 bits on its "cifar10-2" protocol — 50,000 training images, 10,000 queries, the training set as
database —, issue 31 takes as the target): frozen VGG16, SGD lr 1e-4 (momentum 0.9, weight decay 5e-4) on the
hash layer, lr × 0.1 every 30 epochs, batch 64, 200 epochs, α 0.1, mAP@1000; its image transforms (CIFAR-10:
Resize(224) alone). The authors' script differs only in its schedule: batch 32, 60 epochs (300 at 16 bits), no
decay, Scale(224). The CPU recipe: the same loss on the frozen EfficientNet-Lite0 pooled features at 128 px
(not measured here; the lead's benchmark measures it).
"""

from __future__ import annotations

import torch

from hashkit.method import Batch, HashingMethod, Hyper
from hashkit.method_parts.feature_similarity import half_batch_cosine_loss
from hashkit.method_parts.reference_recipes import (
    DEEPHASH_PYTORCH_SEED, DEEPHASH_PYTORCH_SEED_CIFAR10, FROZEN_LITE0_CPU, frozen_vgg16_sgd_recipe,
)
from hashkit.method_parts.relaxations import greedyhash_penalty, sign_ste
from hashkit.registry import METHODS


@METHODS.register("greedyhash_unsup")
class GreedyHashUnsupervised(HashingMethod):
    name = "greedyhash_unsup"
    family = "unsupervised"
    reference_code = ("ssppp/GreedyHash", "swuxyj/DeepHash-pytorch")
    paper = (
        "Su, Zhang, Chen, Tian, Dai. Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in CNN. "
        "NeurIPS 2018 (unsupervised)"
    )
    hyperparameters = {"alpha": Hyper(0.1, "weight α of the penalty | |u| − 1 |³ (both references: 0.1)")}
    supervised = False
    needs_features = True
    relaxation = "own"
    recipes = {
        # swuxyj/DeepHash-pytorch Unsupervised_GreedyHash.py get_config: VGG16 with every parameter frozen and a
        # Linear(4096, bits) on classifier[:6]; SGD(lr 1e-4, momentum 0.9, weight decay 5e-4), lr × 0.1 every 30
        # epochs, batch 64, 200 epochs, α 0.1, topK 1000; utils/tools.py's transforms.
        "seed": frozen_vgg16_sgd_recipe(
            lr=1e-4, lr_step_size=30, batch_size=64, max_iter=200, alpha=0.1, topk=1000, **DEEPHASH_PYTORCH_SEED
        ),
        "seed@cifar10": dict(DEEPHASH_PYTORCH_SEED_CIFAR10),
        # The frozen EfficientNet-Lite0 pooled features (as the shallow baselines), the shared CPU optimiser.
        "cpu": dict(FROZEN_LITE0_CPU),
    }  # fmt: skip

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.features is None:
            raise RuntimeError("greedyhash_unsup needs batch.features (needs_features)")
        return {
            "similarity": half_batch_cosine_loss(sign_ste(outputs), batch.features),
            "penalty": float(self.hparams["alpha"]) * greedyhash_penalty(outputs),
        }

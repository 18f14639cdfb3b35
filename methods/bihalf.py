"""BiHalf — Li & van Gemert, Deep Unsupervised Image Hashing by Maximizing Bit Entropy, AAAI 2021 (the
unsupervised method of the paper; ``bihalf_sup`` is its supervised variant).

The bi-half layer (arXiv 2012.12334v1 eq. 8–9; hashkit.method_parts.relaxations.bihalf, shared with
``bihalf_sup``) binarises the outputs u of the batch per bit: the half of the batch above the bit's median gets
+1, the other half −1 (every bit balanced in every batch: maximal bit entropy); its backward pass is
∂L/∂u = ∂L/∂b + γ/(N·K)·(u − b), γ = 6. Without labels, the codes copy the cosine similarities of the backbone's
features x (the input of the hash layer; ``batch.features``) on pairs formed inside the batch, the first half
of the batch against the second half (hashkit.method_parts.feature_similarity):

    L = (1/m) Σ_{i<m} ( cos(b_i, b_{i+m}) − cos(x_i, x_{i+m}) )²,   b = BiHalf(u),  m = ⌊b/2⌋

Transcribed from the authors' repository (liyunqianggyn/Deep-Unsupervised-Image-Hashing,
``ImageHashing/Cifar10_I.py``, ``Flickr25k.py``, ``Mscoco.py``: the same layer and loss in each) and FIRe's
``bihalf.py``. At test time the layer is the identity: codes are sign(u), as in the authors' ``compress``.
Labels are never read.

Readings:

* **Odd batches**: the bi-half layer splits the whole batch (⌊N/2⌋ items get +1, as the authors' sort), then
  the last item is left out of the pairs (FIRe's ``bihalf.py``); it still shapes the layer's median.
* **x is a target**, detached (FIRe detaches it; the authors' backbone is frozen, so nothing reaches x there).
* **x at VGG16**: fc7 after its ReLU and dropout (torchvision's ``classifier[:6]``), the output of hashkit's
  ``vgg16``. The seed recipe freezes the backbone and caches x once (eval mode, no dropout); the authors'
  ``cnn.train()`` keeps VGG16's dropout active on x during training.
* **Transforms under the cached backbone**: hashkit computes the frozen features once per image at the
  ``resize`` transform (hashkit.cached_pipeline), whatever ``--train-transform``/``--test-transform`` say, so
  ``Mscoco.py``'s random crop and flip and its centre-crop test transform are not applied on photo data sets
  (``--cached-views N`` adds crop-and-flip views); on CIFAR-10 the authors' transform is ``resize`` anyway.
* **Not DeepHash-pytorch's** ``Unsupervised_BiHalf.py``: same layer and loss, but batch 64, 200 epochs and lr ×
  0.1 every 30 epochs (issue 31: it falls far below the paper); the seed follows the authors.

Seed recipes (the authors' scripts; VGG16 frozen, SGD momentum 0.9, weight decay 5e-4 on the hash layer only,
batch 32, lr × 0.1 every ``epoch_lr_decrease`` epochs, γ 6): CIFAR-10 (``Cifar10_I.py``, the paper's
CIFAR-10 (I)) lr 1e-4, 300 epochs, decay every 120, Scale(224) with no augmentation, mAP@1000; photo data sets
(``Mscoco.py``, the authors' large photo set) lr 1e-3, 150 epochs, decay every 60, Resize(256) + RandomCrop(224)
+ flip for training, Resize(256) + CenterCrop(224) for testing. The CPU recipe: the same loss on the frozen
EfficientNet-Lite0 pooled features at 128 px (not measured here).
"""

from __future__ import annotations

import torch

from hashkit.method import Batch, HashingMethod, Hyper
from hashkit.method_parts.feature_similarity import half_batch_cosine_loss
from hashkit.method_parts.relaxations import bihalf
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU, frozen_vgg16_sgd_recipe
from hashkit.registry import METHODS


@METHODS.register("bihalf")
class BiHalf(HashingMethod):
    name = "bihalf"
    family = "unsupervised"
    reference_code = ("liyunqianggyn/Deep-Unsupervised-Image-Hashing", "CISiPLab/cisip-FIRe")
    paper = "Li, van Gemert. Deep Unsupervised Image Hashing by Maximizing Bit Entropy (Bi-half). AAAI 2021"
    hyperparameters = {"gamma": Hyper(6.0, "γ of the bi-half layer's backward pass γ/(N·K)·(u − b) (paper eq. 9, arXiv v1; the authors': 6)")}
    supervised = False
    needs_features = True
    relaxation = "own"
    recipes = {
        # liyunqianggyn/Deep-Unsupervised-Image-Hashing ImageHashing/Mscoco.py: VGG16 (requires_grad False) +
        # Linear(4096, bits); SGD(lr 1e-3, momentum 0.9, weight decay 5e-4), lr × 0.1 every 60 epochs, batch 32,
        # 150 epochs, γ 6; RandomHorizontalFlip + Scale(256) + RandomCrop(224), test Scale(256) + CenterCrop(224).
        "seed": frozen_vgg16_sgd_recipe(
            lr=1e-3, lr_step_size=60, batch_size=32, max_iter=150, gamma=6.0,
            train_transform="resize256_randomcrop224_flip", test_transform="resize256_centercrop224",
        ),
        # ImageHashing/Cifar10_I.py: lr 1e-4, lr × 0.1 every 120 epochs, 300 epochs, Scale(224) alone, mAP@1000.
        "seed@cifar10": {
            "lr": 1e-4, "lr_step_size": 120, "max_iter": 300, "train_transform": "resize", "test_transform": "resize",
            "topk": 1000,
        },
        # The frozen EfficientNet-Lite0 pooled features (as the shallow baselines), the shared CPU optimiser.
        "cpu": dict(FROZEN_LITE0_CPU),
    }  # fmt: skip

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.features is None:
            raise RuntimeError("bihalf needs batch.features (needs_features)")
        codes = bihalf(outputs, float(self.hparams["gamma"]))
        return {"similarity": half_batch_cosine_loss(codes, batch.features)}

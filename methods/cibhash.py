"""CIBHash — Qiu, Su, Ou, Yu, Chen; Unsupervised Hashing with Contrastive Information Bottleneck, IJCAI 2021.

Two augmented views of every image go through the backbone and the ``mlp`` head (CIBHash's encoder
Linear(d, 1024) − ReLU − Linear(1024, bits); ``--head-hidden``), giving outputs u¹, u² (``views = 2``). Per view
the bit probabilities are p = σ(u) and the codes z = sign(p − 0.5) = sign(u), with the straight-through
gradient ∂L/∂p = ∂L/∂z (hashkit.method_parts.relaxations.sign_ste). The loss is a contrastive term between the
views' codes plus the information-bottleneck term, a symmetrised KL divergence between the views' Bernoulli
bit distributions:

    L = NT-Xent(z¹, z²; τ)  +  β · ½ [ KL(p¹ ‖ sg p²) + KL(p² ‖ sg p¹) ]

* NT-Xent over the 2b codes of the batch (SimCLR's): s_ij = cos(z_i, z_j) / τ; each code's positive is the
  other view of its image, its negatives the other 2b − 2 codes; the mean over the 2b codes of
  −log( exp s_{i,pos} / Σ_{j≠i} exp s_ij );
* KL(p ‖ q) = (1/b) Σ_i Σ_k [ p (log(p + ε) − log(q + ε)) + (1 − p)(log(1 − p + ε) − log(1 − q + ε)) ],
  ε = 1e-8 (the reference's form: summed over the bits, averaged over the batch); sg = stop-gradient (the
  reference detaches the second argument).

τ = 0.3 (``--temperature``), β = 0.001 (``--beta``, the reference's ``--weight``). Transcribed from the authors'
``model/CIBHash.py`` (qiuzx2/CIBHash); FIRe's ``cibhash.py`` computes the same loss. Codes are sign(u) of the
saved model: the mlp head is part of it. Labels are never read.

Readings:

* **The views**: the authors draw two views per image per step with SimCLR's transform (RandomResizedCrop(224,
  scale 0.5–1), flip, colour jitter 0.4/0.4/0.4/0.1 with p 0.7, grayscale p 0.2, Gaussian blur 3×3 p 0.5) through
  the frozen VGG16. hashkit's frozen backbone is cached, so the seed recipe draws the two views among each image's
  cached crop-and-flip views (``--cached-views 8``, plus the image itself; two draws may coincide): no colour
  augmentation, and VGG16's dropout (active in the authors' training) is not applied to the cached features.
  The cache is computed at the ``resize`` transform (the authors' CIFAR-10 test transform).
* **Schedule**: Adam lr 1e-3 on the encoder, batch 64, 60 epochs (the authors raise it to at least 80 at 16
  bits — pass ``--max-iter 80`` there); the authors keep the state with the best validation mAP (checked every
  20 epochs, patience 6); hashkit keeps the last.
* **sign(0)**: +1 here, 0 in ``torch.sign`` (an output of exactly 0 has probability zero).

The authors' code runs CIFAR-10 only (test images Resize((224, 224)), mAP@1000); the seed recipe applies its
settings on every data set. The CPU recipe: the frozen EfficientNet-Lite0 pooled features at 128 px with 8
cached views (not measured here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashkit.method import Batch, HashingMethod, Hyper
from hashkit.method_parts.relaxations import sign_ste
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU
from hashkit.registry import METHODS

KL_EPS = 1e-8  # the reference's ε inside the logarithms


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """mean over the batch of Σ_bits KL(Bernoulli(p) ‖ Bernoulli(q)), q detached, with the reference's ε."""
    q = q.detach()
    kl = p * (torch.log(p + KL_EPS) - torch.log(q + KL_EPS)) + (1 - p) * (
        torch.log(1 - p + KL_EPS) - torch.log(1 - q + KL_EPS)
    )
    return kl.sum(dim=1).mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent between the rows of two views (b, K): cosine similarities / τ, each row's positive the
    other view of its item, mean over the 2b rows."""
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2) / temperature
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, partner)


@METHODS.register("cibhash")
class CIBHash(HashingMethod):
    name = "cibhash"
    family = "unsupervised"
    reference_code = ("qiuzx2/CIBHash", "CISiPLab/cisip-FIRe")
    paper = "Qiu, Su, Ou, Yu, Chen. Unsupervised Hashing with Contrastive Information Bottleneck. IJCAI 2021"
    hyperparameters = {
        "temperature": Hyper(0.3, "τ of the NT-Xent loss between the two views' codes (the authors': 0.3)"),
        "beta": Hyper(0.001, "β, weight of the KL (information-bottleneck) term (the authors' --weight: 0.001)"),
    }
    supervised = False
    views = 2
    head = "mlp"
    relaxation = "sigmoid"
    recipes = {
        # qiuzx2/CIBHash model/CIBHash.py + model/base_model.py defaults: VGG16 (requires_grad False) classifier[:6]
        # → Linear(4096, 1024) − ReLU − Linear(1024, bits); Adam lr 1e-3 on the encoder (no weight decay), batch
        # 64, 60 epochs, τ 0.3, weight 0.001; utils/data.py: two views per image, test Resize((224, 224)), topK 1000.
        "seed": {
            "arch": "vgg16", "freeze_backbone": True, "cached_views": 8, "image_size": 224, "optimizer": "adam",
            "lr": 1e-3, "hash_lr_mult": 1.0, "weight_decay": 0.0, "lr_schedule": "constant", "lr_interval": "epoch",
            "batch_size": 64, "max_iter": 60, "hash_head": "mlp", "head_hidden": 1024, "hash_activation": "none",
            "hash_init_std": None, "temperature": 0.3, "beta": 0.001,
            "train_transform": "resized_crop_flip", "test_transform": "resize",
        },
        "seed@cifar10": {"topk": 1000},
        # The frozen EfficientNet-Lite0 pooled features and 8 cached views, the shared CPU optimiser.
        "cpu": {**FROZEN_LITE0_CPU, "cached_views": 8},
    }  # fmt: skip

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if outputs.dim() != 3 or outputs.shape[1] != 2:
            raise RuntimeError(f"cibhash needs two views per item, got outputs of shape {tuple(outputs.shape)}")
        p1, p2 = torch.sigmoid(outputs[:, 0]), torch.sigmoid(outputs[:, 1])
        z1, z2 = sign_ste(p1 - 0.5), sign_ste(p2 - 0.5)
        kl = 0.5 * (bernoulli_kl(p1, p2) + bernoulli_kl(p2, p1))
        return {
            "contrastive": nt_xent(z1, z2, float(self.hparams["temperature"])),
            "kl": float(self.hparams["beta"]) * kl,
        }

"""TBH — Shen, Qin, Chen, Yu, Liu, Zhu, Shen, Shao; Auto-Encoding Twin-Bottleneck Hashing, CVPR 2020.

An auto-encoder of the backbone's features x (``batch.features``) with two bottlenecks, and two adversarial
discriminators that pull each bottleneck towards a prior:

* **Encoder** — the ``mlp`` head: h = ReLU(W₁ x + b₁) (``--head-hidden``, the authors' 1024), the outputs
  u = W₂ h + b₂ (bits). The **binary bottleneck** is b = 1[σ(u) > ε] ∈ {0, 1}, ε = 0.5, whose backward pass
  treats b as σ(u): ∂L/∂u = σ(u)(1 − σ(u)) ∂L/∂b (the authors' ``binary_activation``, JMLH's layer:
  hashkit.method_parts.relaxations.stochastic_binary). The **continuous bottleneck** is c = σ(W₃ h + b₃)
  (``--continuous-dim``, 512), from the same hidden layer h.
* **Twin bottleneck** — a graph over the batch from the codes' Hamming distances,
  A_ij = (1 − |b_i·(b_j − 1) + (b_i − 1)·b_j| / K)^1.4 = (1 − d_H(b_i, b_j) / K)^1.4 (self-connected), its
  normalisation L = D^{-½} A D^{-½} with D = diag(A·1 + 1e-8), and one graph convolution of c:
  z = σ(L (W₄ c + b₄)).
* **Decoder** — x̂ = W₆ ReLU(W₅ z + b₅) + b₆ (back to the feature width d).
* **Discriminators** — one Linear-sigmoid each: D₁ on codes (K → 1), D₂ on z (512 → 1).

With a binary prior sample b̃ (each bit 0 or 1 with probability ½) and a continuous one z̃ ~ U(0, 1)^512 per item,
and adv(r, f) = mean BCE(D(r), 1) + mean BCE(D(f), 0):

    actor   L_A = ½ Σ_i ‖x̂_i − x_i‖²  −  λ · [ adv(b̃, b) + adv(z̃, z) ]      (encoder, twin bottleneck, decoder)
    critic  L_C = λ · [ adv(b̃, b) + adv(z̃, z) ]                                (the two discriminators)

λ = 1 (``--adversarial``, FIRe's ``adv``). The actor's terms are the main loss (``reconstruction`` and
``adversarial``; the head is trained by the main optimiser, the other actor layers are the method's
:attr:`module`, trained in the same optimiser); the critic is the method's own Adam step (``own_step``, lr
``--critic-lr``) on the discriminators (:attr:`own_modules`). Codes are sign(u) of the saved model: the head is
the encoder up to its binary bottleneck, and sign(u) = the authors' test code 1[σ(u) > 0.5]. Labels are never read.

Transcribed from the authors' code (ymcidence/TBH: ``model/tbh.py``, ``layer/encodec.py``,
``layer/twin_bottleneck.py``, ``layer/gcn.py``, ``layer/binary_activation.py``, ``train/tbh_train.py``) and FIRe's
``functions/loss/tbh.py`` / ``models/architectures/arch_tbh.py`` (the same loss).

Readings:

* **Real and fake**: the authors call the prior samples real (target 1) and the network's bottlenecks fake
  (target 0), as here; FIRe swaps the two. The losses agree when D's weights and bias are negated
  (σ(−s) = 1 − σ(s)), so both train the same adversarial game; tests/test_unsupervised_losses.py checks it.
* **c through a sigmoid**: the authors' ``Encoder`` has ``Dense(cbn_dim, activation='sigmoid')``; FIRe drops
  the sigmoid ("paper is Identity"). hashkit follows the authors' code. Both decoders end without activation.
* **One forward, two steps**: the authors compute both gradients from one forward pass, then apply both. Here
  the main step runs first; the critic step then uses the same step's detached bottlenecks and prior samples
  (kept from ``training_step``), not a recomputation after the actor moved, so its gradient is the authors'.
* **Reconstruction as a sum**: ``tf.nn.l2_loss`` is ½ Σ over the whole batch (FIRe's ``rec_method`` element),
  not a mean; Adam is invariant to that scale, an SGD learning rate is not.
* **x is a target**, detached in the reconstruction term (the authors read precomputed VGG16 fc7 features, FIRe
  freezes the backbone); the encoder's input x keeps its gradient where a recipe fine-tunes the backbone.
  ``--hash-dropout`` would drop x before the head only; h here is computed from x without it.
* **BCE in logits form**: computed from the discriminators' linear outputs (equal to sigmoid then BCE; stable
  where the sigmoid saturates, where torch clamps log at −100 and Keras clips at 1e-7).
* **Adam's ε**: torch's 1e-8 (Keras: 1e-7).
* **The head is required**: another ``--hash-head`` has no hidden layer for the continuous bottleneck and is
  refused in one line.

Seed recipe (``train/tbh_train.py``, ``run_tbh.py``: ``train('cifar10', 32, 512, 400)``): the authors' features
are VGG16 fc7 precomputed once (``--freeze-backbone``, cached), Adam lr 1e-4 for the actor and the critic, no
weight decay, a constant lr, batch 400, 100,000 iterations — 8,000 epochs of hashkit's 5,000 CIFAR-10 training
images (4,000 of ImageNet-100's 10,000), mAP@1000 on CIFAR-10. Their code runs CIFAR-10 only; the transforms are
``resize`` (the features' images are not augmented). The CPU recipe: the frozen EfficientNet-Lite0 pooled
features at 128 px with the authors' optimiser for 96 epochs (the shared CPU optimiser collapsed the codes;
docs/results.md, note 13).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashkit.errors import HashkitError
from hashkit.method import Batch, HashingMethod, Hyper, TrainingData
from hashkit.method_parts.relaxations import stochastic_binary
from hashkit.method_parts.reference_recipes import FROZEN_LITE0_CPU
from hashkit.registry import METHODS

ADJACENCY_POWER = 1.4  # the authors' build_adjacency_hamming exponent
DEGREE_MARGIN = 1e-8  # the authors' OVERFLOW_MARGIN in the graph normalisation


def hamming_adjacency(codes: torch.Tensor) -> torch.Tensor:
    """A_ij = (1 − |b_i·(b_j − 1) + (b_i − 1)·b_j| / K)^1.4 for {0, 1} codes (b, K): 1 on the diagonal."""
    shifted = codes - 1
    distance = (codes @ shifted.t() + shifted @ codes.t()).abs() / codes.shape[1]
    return (1 - distance).pow(ADJACENCY_POWER)


def normalised_adjacency(adjacency: torch.Tensor) -> torch.Tensor:
    """D^{-½} A D^{-½}, D = diag(A·1 + 1e-8)."""
    scale = (adjacency.sum(dim=1) + DEGREE_MARGIN).pow(-0.5)
    return scale[:, None] * adjacency * scale[None, :]


def adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean BCE(σ(real), 1) + mean BCE(σ(fake), 0) from the discriminator's logits."""
    return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
        F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))  # fmt: skip


class TwinBottleneckAutoEncoder(nn.Module):
    """The actor's layers besides the head: the continuous bottleneck, the graph convolution, the decoder."""

    def __init__(self, hidden: int, feature_dim: int, continuous_dim: int) -> None:
        super().__init__()
        self.continuous = nn.Linear(hidden, continuous_dim)
        self.graph = nn.Linear(continuous_dim, continuous_dim)
        self.decoder = nn.Sequential(nn.Linear(continuous_dim, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim))

    def forward(self, hidden: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, x̂): the twin bottleneck's output and the reconstruction, from h and the {0, 1} codes."""
        continuous = torch.sigmoid(self.continuous(hidden))
        z = torch.sigmoid(normalised_adjacency(hamming_adjacency(codes)) @ self.graph(continuous))
        return z, self.decoder(z)


@METHODS.register("tbh")
class TBH(HashingMethod):
    name = "tbh"
    family = "unsupervised"
    reference_code = ("ymcidence/TBH", "CISiPLab/cisip-FIRe")
    paper = (
        "Shen, Qin, Chen, Yu, Liu, Zhu, Shen, Shao. Auto-Encoding Twin-Bottleneck Hashing. CVPR 2020"
    )
    hyperparameters = {
        "adversarial": Hyper(1.0, "weight λ of the two adversarial terms, in the actor's and the critic's loss (FIRe's adv: 1)"),
        "continuous_dim": Hyper(512, "width of the continuous bottleneck (the authors' cbn_dim: 512)", int),
        "critic_lr": Hyper(1e-4, "learning rate of the discriminators' own Adam (the authors': 1e-4)"),
    }
    supervised = False
    needs_features = True
    head = "mlp"
    relaxation = "own"
    recipes = {
        # ymcidence/TBH train/tbh_train.py + run_tbh.py: precomputed VGG16 fc7 features, Adam(1e-4) for actor and
        # critic, batch 400, 100,000 iterations (= 4,000 epochs of ImageNet-100's 10,000 training images),
        # encoder/decoder middle_dim 1024, cbn_dim 512.
        "seed": {
            "arch": "vgg16", "freeze_backbone": True, "image_size": 224, "optimizer": "adam", "lr": 1e-4,
            "hash_lr_mult": 1.0, "weight_decay": 0.0, "lr_schedule": "constant", "lr_interval": "epoch",
            "batch_size": 400, "max_iter": 4000, "hash_head": "mlp", "head_hidden": 1024, "hash_activation": "none",
            "hash_init_std": None, "adversarial": 1.0, "continuous_dim": 512, "critic_lr": 1e-4,
            "train_transform": "resize", "test_transform": "resize",
        },
        # CIFAR-10 (the authors' data set): 100,000 × 400 / 5,000 training images; eval_cls_map(at=1000).
        # The authors test every 2,000 iterations of 400 images: 160 epochs of CIFAR-10's 5,000 training images.
        "seed@cifar10": {"max_iter": 8000, "topk": 1000, "evaluate_interval": 160},
        # The frozen EfficientNet-Lite0 pooled features (as the shallow baselines) with the authors' optimiser
        # (Adam 1e-4 for every layer, constant, no weight decay) for 96 epochs: the shared CPU optimiser (lr 5e-4,
        # hash layer 1e-3, cosine, 32 epochs) collapsed the 16-bit codes onto one (mAP@1000 0.1000); measured in
        # docs/results.md, note 13.
        "cpu": {**FROZEN_LITE0_CPU, "optimizer": "adam", "lr": 1e-4, "hash_lr_mult": 1.0, "lr_schedule": "constant",
                "weight_decay": 0.0, "max_iter": 96},
    }  # fmt: skip

    def __init__(self, code_length: int, hparams: dict, device: torch.device) -> None:
        super().__init__(code_length, hparams, device)
        self.encoder_hidden: nn.Linear | None = None
        self._critic_inputs: tuple[torch.Tensor, ...] | None = None

    def setup(self, data: TrainingData) -> None:
        width = int(self.hparams["continuous_dim"])
        if width < 1:
            raise HashkitError(f"--continuous-dim must be at least 1 (the authors': 512), got {width}")
        self.own_modules = nn.ModuleDict({
            "binary_discriminator": nn.Linear(self.code_length, 1),
            "continuous_discriminator": nn.Linear(width, 1),
        })  # fmt: skip

    def bind_model(self, model: nn.Module) -> None:
        hidden = getattr(getattr(model, "head", None), "hidden", None)
        if not isinstance(hidden, nn.Linear):
            raise HashkitError(
                "--method tbh needs the mlp head (its hidden layer feeds both bottlenecks); drop --hash-head or pass --hash-head mlp"
            )
        self.encoder_hidden = hidden
        self.module = TwinBottleneckAutoEncoder(hidden.out_features, hidden.in_features, int(self.hparams["continuous_dim"]))

    def own_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.critic_optimizer = torch.optim.Adam(self.own_modules.parameters(), lr=float(self.hparams["critic_lr"]))
        return {"critic": self.critic_optimizer}

    def adversarial_terms(self, codes: torch.Tensor, z: torch.Tensor, prior_codes: torch.Tensor,
                          prior_z: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """adv(b̃, b) + adv(z̃, z) under the current discriminators."""
        d1, d2 = self.own_modules["binary_discriminator"], self.own_modules["continuous_discriminator"]
        return adversarial_loss(d1(prior_codes), d1(codes)) + adversarial_loss(d2(prior_z), d2(z))

    def draw_priors(self, codes: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """b̃ = (sign(U − ½) + 1) / 2 per bit and z̃ ~ U(0, 1) per unit (the authors' draws)."""
        prior_codes = (torch.sign(torch.rand_like(codes) - 0.5) + 1) / 2
        return prior_codes, torch.rand_like(z)

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.features is None or self.module is None or self.encoder_hidden is None:
            raise RuntimeError("tbh needs batch.features (needs_features) and a bound model (bind_model)")
        x = batch.features
        codes, _ = stochastic_binary(outputs, torch.full_like(outputs, 0.5))
        z, reconstruction = self.module(F.relu(self.encoder_hidden(x)), codes)
        prior_codes, prior_z = self.draw_priors(codes, z)
        self._critic_inputs = (codes.detach(), z.detach(), prior_codes, prior_z)
        weight = float(self.hparams["adversarial"])
        return {
            "reconstruction": 0.5 * (reconstruction - x.detach()).pow(2).sum(),
            "adversarial": -weight * self.adversarial_terms(codes, z, prior_codes, prior_z),
        }

    def own_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        if self._critic_inputs is None:
            raise RuntimeError("tbh's critic step needs the bottlenecks of this step's training_step")
        loss = float(self.hparams["adversarial"]) * self.adversarial_terms(*self._critic_inputs)
        self._critic_inputs = None
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return {"critic": loss.detach()}

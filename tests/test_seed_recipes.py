"""Every method's seed recipe, per data set, against a hand-written table of its reference code's values.

Each row of :data:`TABLE` is what ``hashkit train --method M --dataset D --recipe seed --dry-run --json`` must
print, typed in from the reference file the row cites (never read from hashkit): optimizer, lr of the backbone
and of the hash head, weight decay, momentum, schedule, epochs, batch, transforms, the backbone's dropout in
training, the head, the head's initialisation and the hyper-parameters the reference sets per data set. A
method added later joins the table (``test_every_method_has_a_row`` fails until it does).

Mutation that fails here: in methods/greedyhash.py's ``"seed@cifar10"`` table change ``"lr_step_size": 30`` to
80 (DeepHash-pytorch's ImageNet value) → ``test_seed_recipe_matches_its_reference[greedyhash-cifar10]`` fails on
``scheduler``; dropping ``"backbone_dropout": False`` from FIRE_SEED fails every FIRe row on ``backbone_dropout``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from hashkit.config import describe_config, resolve_config
from hashkit.model import HashModel
from hashkit.registry import METHODS
from hashkit.trainer import build_scheduler

DATASETS = ("cifar10", "imagenet100")

# --- the references' shared values, typed from their files ---------------------------------------------------

# CISiPLab/cisip-FIRe train.py defaults: --optim adam, --lr 1e-4 (hash layer and classifier), --backbone-lr-scale
# 0.1, --wd 5e-4, --bs 64, --epochs 100, --scheduler step, --step-size 0.8 (relative), --lr-decay-rate 0.1;
# models/backbone/alexnet.py train(): every dropout in eval mode.
FIRE = {
    "source": "CISiPLab/cisip-FIRe train.py, models/backbone/alexnet.py",
    "arch": "alexnet", "optimizer": "adam", "lr": 1e-5, "hash_lr": 1e-4, "weight_decay": 5e-4, "momentum": None,
    "scheduler": {"name": "step", "interval": "epoch", "step_size": 80, "gamma": 0.1},
    "max_iter": 100, "batch_size": 64, "backbone_dropout": False, "hash_init_std": None,
}  # fmt: skip
# FIRe configs.py dataset() (CIFAR-10: Resize((224, 224)) + flip + ColorJitter(0.05, 0.05); test Resize((224, 224)))
# and utils/augmentations.py get_train_transform (ImageNet-100: RandomResizedCrop(224) + flip; test
# compose_transform: Resize((256, 256)) + CenterCrop(224)).
FIRE_TRANSFORMS = {
    "cifar10": {"train": "resize_flip_jitter", "test": "resize"},
    "imagenet100": {"train": "resized_crop_flip", "test": "resize256x256_centercrop224"},
}
# swuxyj/DeepHash-pytorch utils/tools.py: cifar_dataset (Resize(224) alone) and image_transform (Resize(256) +
# flip + RandomCrop(224); test Resize(256) + CenterCrop(224)).
DEEPHASH_TRANSFORMS = {
    "cifar10": {"train": "resize", "test": "resize"},
    "imagenet100": {"train": "resize256_randomcrop224_flip", "test": "resize256_centercrop224"},
}
SAME = {"train": "resized_crop_flip", "test": "center_crop"}  # one transform pair on every data set (part I)
# swuxyj/DeepHash-pytorch as it runs the catalogue II methods (utils/tools.py, network.py AlexNet, each method's
# get_config): RMSprop lr 1e-5 on every layer, weight decay 1e-5, a constant lr, torchvision's dropout active.
DEEPHASH_II = {
    "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr": 1e-5, "weight_decay": 1e-5, "momentum": 0.0,
    "scheduler": {"name": "constant", "interval": "epoch"}, "backbone_dropout": True, "head": "linear",
    "hash_init_std": None,
}  # fmt: skip


def rows(method: str, common: dict[str, Any], transforms: dict[str, dict[str, str]] | None = None,
         **per_dataset: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:  # fmt: skip
    """The method's row for each data set: ``common`` values, its transforms, then the data set's own values."""
    out = []
    for dataset in DATASETS:
        t = (transforms or {}).get(dataset, SAME)
        row = {**common, "train_transform": t["train"], "test_transform": t["test"], **per_dataset.get(dataset, {})}
        out.append((method, dataset, row))
    return out


TABLE: list[tuple[str, str, dict[str, Any]]] = [
    # ---- catalogue I, FIRe
    *rows("orthocos", {**FIRE, "head": "bn", "centers": "min_distance", "source": FIRE["source"] + ", configs/templates/orthocos.yaml (hash_fc_output bn, hash_bias false, cent_init M)"}, FIRE_TRANSFORMS),
    *rows("orthoarc", {**FIRE, "head": "bn", "centers": "iid", "source": FIRE["source"] + ", configs/templates/orthoarc.yaml (hash_fc_output bn, hash_bias false, cent_init B)"}, FIRE_TRANSFORMS),
    *rows("jmlh", {**FIRE, "head": "linear", "hash_init_std": 0.01, "source": FIRE["source"] + ", models/architectures/arch_jmlh.py (bias, normal_(std=0.01))"}, FIRE_TRANSFORMS),
    *rows("sdhc", {**FIRE, "head": "no_bias", "source": FIRE["source"] + " (--hash-bias off), arch ce"}, FIRE_TRANSFORMS),
    *rows("bihalf_sup", {**FIRE, "head": "no_bias", "source": FIRE["source"] + " (--hash-bias off), arch ce"}, FIRE_TRANSFORMS),
    *rows("ce", {**FIRE, "head": "no_bias", "source": FIRE["source"] + " (--hash-bias off), arch ce"}, FIRE_TRANSFORMS),
    *rows("ce_tanh", {**FIRE, "head": "no_bias", "source": "as ce (hashkit's tanh variant)"}, FIRE_TRANSFORMS),
    # ---- catalogue I, DeepHash-pytorch
    *rows("csq", {
        "source": "swuxyj/DeepHash-pytorch CSQ.py get_config, network.py ResNet (hash_layer normal_(0, 0.01), bias 0)",
        "arch": "resnet50", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr": 1e-5, "weight_decay": 1e-5, "momentum": 0.0,
        "scheduler": {"name": "constant", "interval": "epoch"}, "max_iter": 150, "batch_size": 64,
        "backbone_dropout": True, "head": "linear", "hash_init_std": 0.01,
    }, DEEPHASH_TRANSFORMS),
    *rows("dpn", {
        "source": "swuxyj/DeepHash-pytorch DPN.py get_config, network.py AlexNet",
        "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr": 1e-5, "weight_decay": 1e-5, "momentum": 0.0,
        "scheduler": {"name": "constant", "interval": "epoch"}, "max_iter": 150, "batch_size": 32,
        "backbone_dropout": True, "head": "linear", "hash_init_std": None,
    }, DEEPHASH_TRANSFORMS),
    *rows("greedyhash", {
        "source": "swuxyj/DeepHash-pytorch GreedyHash.py get_config (imagenet: alpha 1, epoch_lr_decrease 80)",
        "arch": "alexnet", "optimizer": "sgd", "lr": 1e-3, "hash_lr": 1e-3, "weight_decay": 5e-4, "momentum": 0.9,
        "scheduler": {"name": "step", "interval": "epoch", "step_size": 80, "gamma": 0.1}, "max_iter": 200,
        "batch_size": 64, "backbone_dropout": True, "head": "linear", "hash_init_std": None, "alpha": 1.0,
    }, DEEPHASH_TRANSFORMS, cifar10={"scheduler": {"name": "step", "interval": "epoch", "step_size": 30, "gamma": 0.1}, "alpha": 0.1}),
    # ---- catalogue III, unsupervised (issue 31): every reference freezes VGG16 and trains the hash layer alone
    *rows("greedyhash_unsup", {
        "source": "swuxyj/DeepHash-pytorch Unsupervised_GreedyHash.py get_config (vgg16 requires_grad False), utils/tools.py",
        "arch": "vgg16", "freeze_backbone": True, "optimizer": "sgd", "lr": 1e-4, "hash_lr": 1e-4, "weight_decay": 5e-4,
        "momentum": 0.9, "scheduler": {"name": "step", "interval": "epoch", "step_size": 30, "gamma": 0.1},
        "max_iter": 200, "batch_size": 64, "backbone_dropout": True, "head": "linear", "hash_init_std": None,
        "alpha": 0.1, "topk": 1000,
    }, DEEPHASH_TRANSFORMS),
    *rows("bihalf", {
        "source": "liyunqianggyn/Deep-Unsupervised-Image-Hashing ImageHashing/Mscoco.py (photo data sets), Cifar10_I.py (CIFAR-10)",
        "arch": "vgg16", "freeze_backbone": True, "optimizer": "sgd", "lr": 1e-3, "hash_lr": 1e-3, "weight_decay": 5e-4,
        "momentum": 0.9, "scheduler": {"name": "step", "interval": "epoch", "step_size": 60, "gamma": 0.1},
        "max_iter": 150, "batch_size": 32, "backbone_dropout": True, "head": "linear", "hash_init_std": None,
        "gamma": 6.0,
    }, DEEPHASH_TRANSFORMS, cifar10={
        "lr": 1e-4, "hash_lr": 1e-4, "scheduler": {"name": "step", "interval": "epoch", "step_size": 120, "gamma": 0.1},
        "max_iter": 300, "topk": 1000,
    }),
    *rows("cibhash", {
        "source": "qiuzx2/CIBHash model/CIBHash.py, model/base_model.py argparser defaults, utils/data.py (CIFAR-10 only: topK 1000)",
        "arch": "vgg16", "freeze_backbone": True, "optimizer": "adam", "lr": 1e-3, "hash_lr": 1e-3, "weight_decay": 0.0,
        "momentum": None, "scheduler": {"name": "constant", "interval": "epoch"}, "max_iter": 60, "batch_size": 64,
        "backbone_dropout": True, "head": "mlp", "head_hidden": 1024, "hash_init_std": None, "temperature": 0.3,
        "beta": 0.001,
    }, {d: {"train": "resized_crop_flip", "test": "resize"} for d in DATASETS}, cifar10={"topk": 1000}),
    *rows("tbh", {
        "source": "ymcidence/TBH train/tbh_train.py (Adam 1e-4 actor and critic, 100,000 iterations), run_tbh.py (train('cifar10', 32, 512, 400)), layer/encodec.py (middle_dim 1024)",
        "arch": "vgg16", "freeze_backbone": True, "optimizer": "adam", "lr": 1e-4, "hash_lr": 1e-4, "weight_decay": 0.0,
        "momentum": None, "scheduler": {"name": "constant", "interval": "epoch"}, "batch_size": 400,
        "max_iter": 4000,  # 100,000 iterations × 400 / ImageNet-100's 10,000 training images
        "backbone_dropout": True, "head": "mlp", "head_hidden": 1024, "hash_init_std": None, "adversarial": 1.0,
        "continuous_dim": 512, "critic_lr": 1e-4,
    }, {d: {"train": "resize", "test": "resize"} for d in DATASETS},
        cifar10={"max_iter": 8000, "topk": 1000}),  # 100,000 × 400 / 5,000; util/eval_tools eval_cls_map(at=1000)
    # ---- the six seed methods (their seeds, part I; one transform pair on every data set)
    *rows("dpsh", {
        "source": "TreezzZ/DPSH_PyTorch run.py / dpsh.py (5961d82)",
        "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr": 1e-5, "weight_decay": 1e-5, "momentum": 0.0,
        "scheduler": {"name": "cosine", "interval": "epoch", "T_max": 150, "eta_min": 1e-7}, "max_iter": 150,
        "batch_size": 512, "backbone_dropout": True, "head": "linear", "hash_init_std": None, "eta": 10.0,
        "topk": 5000,  # README.md: its figures are mAP@5000 (mean of 3 runs)
    }),
    *rows("dhn", {
        "source": "TreezzZ/DHN_PyTorch run.py / dhn.py / models/alexnet.py (79ee001)",
        "arch": "alexnet", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr": 1e-5, "weight_decay": 5e-4, "momentum": 0.0,
        "scheduler": {"name": "cosine", "interval": "epoch", "T_max": 500, "eta_min": 1e-7}, "max_iter": 500,
        "batch_size": 256, "backbone_dropout": True, "head": "linear", "hash_init_std": None, "hash_activation": "tanh",
    }),
    *rows("hashnet", {
        "source": "thuml/HashNet pytorch/src/train.py (step_lr_scheduler 0.5 every 2000 iterations), src/network.py",
        "arch": "resnet50", "optimizer": "sgd", "lr": 3e-4, "hash_lr": 3e-3, "weight_decay": 5e-4, "momentum": 0.9,
        "scheduler": {"name": "step", "interval": "step", "step_size": 2000, "gamma": 0.5}, "max_iter": 72,
        "batch_size": 72, "backbone_dropout": True, "head": "linear", "hash_init_std": 0.01,
    }, cifar10={"max_iter": 144}),  # train.py num_iterations 10,000 × 72 / 5,000 training images
    *rows("adsh", {
        "source": "IIE-MR/DIHN adsh.py / run.py (Adam 1e-4, ExponentialLR 0.9 before each outer iteration)",
        "arch": "alexnet", "optimizer": "adam", "lr": 9e-5, "hash_lr": 9e-5, "weight_decay": 1e-5, "momentum": None,
        "scheduler": {"name": "exponential", "interval": "outer_iteration", "gamma": 0.9}, "max_iter": 50,
        "batch_size": 64, "backbone_dropout": True, "head": "linear", "hash_init_std": None, "hash_activation": "tanh",
    }),
    *rows("dihn", {
        "source": "IIE-MR/DIHN dihn.py / run.py (ExponentialLR 0.91, mu 50)",
        "arch": "alexnet", "optimizer": "adam", "lr": 9.1e-5, "hash_lr": 9.1e-5, "weight_decay": 1e-5, "momentum": None,
        "scheduler": {"name": "exponential", "interval": "outer_iteration", "gamma": 0.91}, "max_iter": 50,
        "batch_size": 64, "backbone_dropout": True, "head": "linear", "hash_init_std": None, "hash_activation": "tanh",
        "mu": 50.0,
    }),
    *rows("ssdh", {
        "source": "TreezzZ/SSDH_PyTorch run.py / ssdh.py / model_loader.py / data/transform.py",
        "arch": "vgg16", "optimizer": "sgd", "lr": 1e-3, "hash_lr": 1e-3, "weight_decay": 1e-5, "momentum": 0.9,
        "scheduler": {"name": "constant", "interval": "epoch"}, "max_iter": 50, "batch_size": 24,
        "backbone_dropout": True, "head": "relu_linear", "hash_init_std": None, "hash_activation": "tanh",
        "topk": 5000,
        "similarity_transform": "train",  # ssdh.py extract_features(model, train_dataloader, …): random crops
    }),
    # ---- catalogue II, DeepHash-pytorch
    *rows("dsh", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DSH.py get_config", "max_iter": 250,
                  "batch_size": 64, "alpha": 0.1}, DEEPHASH_TRANSFORMS),
    *rows("dtsh", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DTSH.py get_config", "max_iter": 150,
                   "batch_size": 128, "alpha": 5.0, "lamda": 1.0}, DEEPHASH_TRANSFORMS),
    *rows("dch", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DCH.py get_config", "max_iter": 150,
                  "batch_size": 128, "gamma": 20.0, "lamda": 0.1}, DEEPHASH_TRANSFORMS),
    *rows("dfh", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DFH.py get_config (m 3, mu 0.1, vul 1, nta 1, eta 0.5)",
                  "max_iter": 150, "batch_size": 64, "margin": 3.0, "mu": 0.1, "nu": 1.0, "center_quantization": 1.0,
                  "eta": 0.5}, DEEPHASH_TRANSFORMS),
    *rows("dsdh", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DSDH.py get_config (alpha 1, nu 1, mu 1, eta 55, dcc_iter 10)",
                   "max_iter": 150, "batch_size": 128, "mu": 1.0, "nu": 1.0, "eta": 55.0, "dcc_iter": 10},
         DEEPHASH_TRANSFORMS),
    *rows("idhn", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch IDHN.py get_config (alpha 0.5, gamma 0.1, lambda 0.1)",
                   "max_iter": 150, "batch_size": 128, "alpha": 0.5, "gamma": 0.1, "lamda": 0.1}, DEEPHASH_TRANSFORMS),
    *rows("dbdh", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DBDH.py get_config (alpha 0.1, p 2, epoch_lr_decrease 50)",
                   "scheduler": {"name": "step", "interval": "epoch", "step_size": 50, "gamma": 0.1}, "max_iter": 150,
                   "batch_size": 128, "alpha": 0.1, "power": 2}, DEEPHASH_TRANSFORMS),
    *rows("lcdsh", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch LCDSH.py get_config (lambda 3)", "max_iter": 350,
                    "batch_size": 128, "lamda": 3.0}, DEEPHASH_TRANSFORMS),
    *rows("dshsd", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch DSHSD.py get_config (Adam 1e-5, betas 0.9/0.999, alpha 0.05)",
                    "optimizer": "adam", "weight_decay": 0.0, "momentum": None, "max_iter": 250, "batch_size": 64,
                    "alpha": 0.05}, DEEPHASH_TRANSFORMS),
    *rows("qsmih", {**DEEPHASH_II, "source": "swuxyj/DeepHash-pytorch QSMIH.py get_config (af25142: alpha 0.01, use_square_clamp, RMSprop 1e-5)",
                    "max_iter": 150, "batch_size": 64, "alpha": 0.01}, DEEPHASH_TRANSFORMS),
    # ---- catalogue II, FIRe / the authors' repositories
    *rows("mihash", {**FIRE, "head": "no_bias", "bins": 16, "source": FIRE["source"] + " (--hash-bias off), arch single, configs/templates/mihash.yaml (nbins 16)"}, FIRE_TRANSFORMS),
    *rows("mdsh", {
        "source": "Wangld5/Center-Hashing scripts/utils.py get_config (RMSprop 1e-5, wd 1e-5, batch 64, epoch 1000, lambda 1e-4, beta 1, epoch_change 9), model/Net.py (resnet50, hash layer normal_(0, 0.01) + BatchNorm1d + tanh), dataset/online_loader.py image_transform",
        "arch": "resnet50", "optimizer": "rmsprop", "lr": 1e-5, "hash_lr": 1e-5, "weight_decay": 1e-5, "momentum": 0.0,
        "scheduler": {"name": "constant", "interval": "epoch"}, "max_iter": 1000, "batch_size": 64,
        "backbone_dropout": True, "head": "bn", "hash_init_std": 0.01, "hash_activation": "tanh", "lamda": 1e-4,
        "beta": 1.0, "pair_from_epoch": 9,
    }, {d: {"train": "resize256_randomcrop224_flip", "test": "resize256_centercrop224"} for d in DATASETS}),
    *rows("hyp2", {
        "source": "JerryXu0129/HyP2-Loss config.py (batch 100, epochs 100, beta 0.5; alexnet: feature_rate 0.01, Resize((224, 224)) + flip / Resize((224, 224))), retrieval.py (SGD momentum 0.9, weight_decay 0.0005, StepLR(step_size=10, gamma=0.5)), model.py AlexNet",
        "arch": "alexnet", "optimizer": "sgd", "lr": 0.01, "hash_lr": 0.01, "weight_decay": 5e-4, "momentum": 0.9,
        "scheduler": {"name": "step", "interval": "epoch", "step_size": 10, "gamma": 0.5}, "max_iter": 100,
        "batch_size": 100, "backbone_dropout": True, "head": "linear", "hash_init_std": None, "beta": 0.5,
    }, {d: {"train": "resize_flip", "test": "resize"} for d in DATASETS}),
    # ---- catalogue III, shallow (FIRe functions/loss/{lsh,itq,pca,sh,imh}.py on frozen VGG16 fc7 descriptors, taken
    # through FIRe's test transform of the data set; fitted in closed form: no optimiser, epochs or training transform)
    *[(method, dataset, {
        "source": f"CISiPLab/cisip-FIRe configs/templates/{method}.yaml, configs.py (test transform)",
        "arch": "vgg16", "freeze_backbone": True, "image_size": 224,
        "test_transform": FIRE_TRANSFORMS[dataset]["test"], **values,
    }) for method, values in (
        ("lsh", {"center": 0.0, "head": "fixed_linear"}), ("itq", {"itq_iterations": 100, "head": "fixed_linear"}),
        ("pcah", {"head": "fixed_linear"}), ("sh", {"head": "spectral"}),  # SH encodes by its sinusoids
        ("imh", {"anchors": 400, "neighbours": 5, "bandwidth": 512.0, "kmeans_iterations": 200, "head": "anchors"}),
    )
      for dataset in DATASETS],
]  # fmt: skip


def dry_run(method: str, dataset: str, **flags: Any) -> dict[str, Any]:
    """What ``hashkit train --method M --dataset D --recipe seed --dry-run --json`` prints."""
    return describe_config(resolve_config({"method": method, "dataset": dataset, "recipe": "seed", **flags}))


def test_every_method_has_a_row_per_data_set() -> None:
    assert sorted({(m, d) for m, d, _ in TABLE}) == sorted((m, d) for m in METHODS.names() for d in DATASETS)


@pytest.mark.parametrize(("method", "dataset", "row"), TABLE, ids=[f"{m}-{d}" for m, d, _ in TABLE])
def test_seed_recipe_matches_its_reference(method: str, dataset: str, row: dict[str, Any]) -> None:
    shown = dry_run(method, dataset)
    got = {
        "arch": shown["arch"], "optimizer": shown["optimizer"]["name"], "lr": shown["optimizer"]["lr"],
        "hash_lr": shown["optimizer"]["hash_lr"], "weight_decay": shown["optimizer"]["weight_decay"],
        "momentum": shown["optimizer"]["momentum"], "scheduler": shown["scheduler"], "max_iter": shown["max_iter"],
        "batch_size": shown["batch_size"], "train_transform": shown["train_transform_name"],
        "test_transform": shown["test_transform_name"], "backbone_dropout": shown["backbone_dropout"],
        "head": shown["method_contract"]["head"], "hash_init_std": shown.get("hash_init_std"),
    }  # fmt: skip
    expected = {k: v for k, v in row.items() if k != "source"}
    for key, value in expected.items():
        actual = got[key] if key in got else shown[key]
        if isinstance(value, float):
            assert actual == pytest.approx(value, rel=1e-9), f"{method} on {dataset}: {key} (reference: {row['source']})"
        else:
            assert actual == value, f"{method} on {dataset}: {key} (reference: {row['source']})"


# --- the recipe keys the references need ---------------------------------------------------------------------


def lrs_per_epoch(config: dict[str, Any], epochs: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_fires_lr_step_follows_max_iter() -> None:
    """FIRe's StepLR(max(1, int(epochs × 0.8))): at --max-iter 20 the lr drops after epoch 16, not at an absolute 80
    that a short run never reaches; a --lr-step-size given on the command line wins over the recipe's fraction."""
    short = resolve_config({"method": "orthocos", "dataset": "cifar10", "max_iter": 20})
    assert lrs_per_epoch(short, 20) == [1.0] * 16 + [pytest.approx(0.1)] * 4
    assert dry_run("orthocos", "cifar10", max_iter=20)["scheduler"]["step_size"] == 16
    assert dry_run("jmlh", "cifar10", max_iter=1)["scheduler"]["step_size"] == 1  # max(1, int(0.8))
    given = resolve_config({"method": "orthocos", "dataset": "cifar10", "max_iter": 20, "lr_step_size": 5})
    assert lrs_per_epoch(given, 6) == [1.0] * 5 + [pytest.approx(0.1)]


def dropout_backbone() -> nn.Sequential:
    body = nn.Sequential(nn.Flatten(1), nn.Dropout(0.5), nn.Linear(12, 6), nn.ReLU(), nn.Dropout(0.5))
    body.feature_dim = 6  # type: ignore[attr-defined]
    return body


def test_backbone_dropout_off_keeps_the_backbones_dropout_in_eval_mode_while_training() -> None:
    """FIRe's AlexNet: training outputs equal evaluation outputs (no dropout) without backbone_dropout; with it
    (DeepHash-pytorch, torchvision) the backbone's Dropout(0.5) zeroes features in training."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, 2, 2)
    fire = HashModel(dropout_backbone(), 4, backbone_dropout=False).train()
    assert all(not m.training for m in fire.backbone.modules() if isinstance(m, nn.Dropout))
    assert fire.head.training  # everything else trains
    trained = fire(x)
    assert torch.equal(trained, fire.eval()(x))
    torch.manual_seed(0)
    dropping = HashModel(dropout_backbone(), 4).train()
    assert not torch.allclose(dropping(x), dropping.eval()(x))


def test_fires_imagenet_test_transform_resizes_to_a_square_before_the_center_crop() -> None:
    """Resize((256, 256)) + CenterCrop(224) (FIRe's compose_transform) differs from Resize(256) of the shorter
    side: a 512 × 256 image is squashed to 256 × 256 (all of its width kept), then cropped."""
    from hashkit.transforms import geometric_steps

    image = Image.new("RGB", (512, 256))
    for x in range(512):
        image.putpixel((x, 128), (x // 2, 0, 0))  # a red ramp across the full width
    square = image
    for step in geometric_steps("resize256x256_centercrop224", 224, "bilinear"):
        square = step(square)
    short_side = image
    for step in geometric_steps("resize256_centercrop224", 224, "bilinear"):
        short_side = step(short_side)
    assert square.size == short_side.size == (224, 224)
    # squashed: the crop keeps 224/256 of the width, so its left edge is at 1/16 of the ramp (red ≈ 16);
    # shorter side: the width is 512 and the crop keeps the middle 224 pixels (red ≈ 72 at the left edge)
    assert abs(square.getpixel((0, 112))[0] - 16) <= 2
    assert abs(short_side.getpixel((0, 112))[0] - 72) <= 2

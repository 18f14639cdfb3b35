"""SSDH on real CIFAR-10 with EfficientNet-Lite0 on the CPU, next to its floor and its ceiling.

All three rank the same database for the same queries, from the same frozen ImageNet features
(EfficientNet-Lite0, 1280-d, images upscaled to --image-size, cached by hashkit's feature cache):

* floor — LSH: sign of a random Gaussian projection of the features (SimHash, the data-independent
  code an unsupervised method must beat), same bits, mean ± std over 5 projections;
* SSDH — ``hashkit.run.train`` (what ``hashkit train --method ssdh --arch efficientnet_lite0
  --freeze-backbone`` runs) with the seed's hyper-parameters: α = β = 2, SGD lr 1e-3, batch 24, 50 epochs;
* ceiling — the real-valued features ranked by cosine similarity (exact mAP helper below).

CPU budget: fine-tuning the whole network takes ~7 min per epoch of 5,000 images here at 64 px, so SSDH
trains its hash layer on the frozen features (``--freeze-backbone``); plain ``hashkit train --method
ssdh`` fine-tunes everything. The training labels are used only to score the pseudo-similarity S
(recomputed here from the same features), never to train.

    .venv/bin/python scripts/bench_ssdh.py        # 1,000 query / 5,000 train / 10,000 database, 64 px, 12 and 32 bits
    .venv/bin/python scripts/bench_ssdh.py --code-lengths 16,32,64 --image-size 96
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hashkit.cached_pipeline import build_cached_pipeline  # noqa: E402
from hashkit.config import resolve_config  # noqa: E402
from hashkit.evaluate import mean_average_precision  # noqa: E402
from hashkit.methods.ssdh import fit_distances, pseudo_similarity  # noqa: E402
from hashkit.model import binarize, build_model  # noqa: E402
from hashkit.run import build_splits, train  # noqa: E402

CPU = torch.device("cpu")


def cosine_map(query: torch.Tensor, database: torch.Tensor, q_labels: np.ndarray, d_labels: np.ndarray, topk: int) -> float:
    """Exact mAP@topk of ranking by cosine similarity (descending, ties by database index), with the
    evaluator's AP convention: mean precision over the relevant positions in the top k; 0 if none."""
    q = torch.nn.functional.normalize(query.double(), dim=1)
    d = torch.nn.functional.normalize(database.double(), dim=1)
    ql, dl = torch.from_numpy(q_labels).double(), torch.from_numpy(d_labels).double()
    k = min(topk, len(d))
    positions = torch.arange(1, k + 1, dtype=torch.float64)
    aps = []
    for lo in range(0, len(q), 256):
        order = torch.sort(q[lo : lo + 256] @ d.t(), dim=1, descending=True, stable=True).indices[:, :k]
        relevant = ((ql[lo : lo + 256] @ dl.t()) > 0).double().gather(1, order)
        hits = relevant.cumsum(1)
        found = relevant.sum(1)
        aps.append(torch.where(found > 0, (relevant * hits / positions).sum(1) / found.clamp_min(1), 0.0))
    return float(torch.cat(aps).mean())


def cached_features(config: dict, splits) -> tuple[dict[str, torch.Tensor], int]:
    """Frozen pooled features of train / query / database from hashkit's feature cache (computed once)."""
    pipeline = build_cached_pipeline(resolve_config(config), build_model(config["arch"], 8, pretrained=True), CPU)
    feats = {part: pipeline.features(getattr(splits, part), desc=f"features {part}") for part in ("train", "query", "database")}
    return feats, pipeline.computed


def structure_quality(features: torch.Tensor, labels: np.ndarray, alpha: float, beta: float) -> dict:
    """SSDH's S on the training features, scored against the held-back training labels (evaluation only)."""
    fit = fit_distances(features, alpha, beta)
    s = pseudo_similarity(features, fit)
    y = torch.from_numpy(labels).float()
    same = (y @ y.t()) > 0
    upper = torch.ones_like(same).triu(1)
    sim, dis = (s == 1) & upper, (s == -1) & upper
    pairs = int(upper.sum())
    return {
        "fit": fit,
        "similar_frac": int(sim.sum()) / pairs,
        "dissimilar_frac": int(dis.sum()) / pairs,
        "similar_precision": float(same[sim].float().mean()) if sim.any() else float("nan"),
        "dissimilar_precision": float((~same[dis]).float().mean()) if dis.any() else float("nan"),
        "base_rate": float(same[upper].float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "cifar10-jpg.tar"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-query", type=int, default=1000)
    parser.add_argument("--num-train", type=int, default=5000)
    parser.add_argument("--num-database", type=int, default=10000)
    parser.add_argument("--code-lengths", default="12,32", help="comma-separated bits (seed: 12)")
    parser.add_argument("--epochs", type=int, default=50, help="SSDH epochs (seed: 50)")
    parser.add_argument("--lr", type=float, default=None, help="SSDH learning rate (default: the seed's 1e-3, SGD)")
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--topk", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="hashkit cache (default: $HASHKIT_CACHE or ~/.cache/hashkit)")
    args = parser.parse_args()
    bit_list = [int(b) for b in args.code_lengths.split(",")]
    started = time.perf_counter()

    base = {
        "method": "ssdh", "dataset": "cifar10", "root": args.root, "seed": args.seed, "num_query": args.num_query,
        "num_train": args.num_train, "num_database": args.num_database, "arch": "efficientnet_lite0",
        "pretrained": True, "image_size": args.image_size, "freeze_backbone": True, "num_workers": 0,
        "cache_dir": args.cache_dir, "max_iter": args.epochs, "evaluate_interval": args.epochs, "metrics": "map",
        "topk": args.topk, "alpha": args.alpha, "beta": args.beta, "lr": args.lr,
    }  # fmt: skip
    splits = build_splits(base)
    print(f"{splits.name}: {splits.protocol}")
    t0 = time.perf_counter()
    features, computed = cached_features(base, splits)
    print(f"\nfeatures: {computed} images computed, the rest read from the cache, in {time.perf_counter() - t0:.0f}s")
    q_labels, d_labels, topk = splits.query.labels, splits.database.labels, args.topk

    # Self-check of the cosine helper: on ±1 codes cosine ranking is Hamming ranking (same tie order).
    w = torch.randn(features["query"].shape[1], 16, generator=torch.Generator().manual_seed(123))
    probe, probe_db = binarize(features["query"][:200] @ w), binarize(features["database"] @ w)
    assert abs(cosine_map(probe, probe_db, q_labels[:200], d_labels, topk)
               - mean_average_precision(probe, probe_db, q_labels[:200], d_labels, topk=topk)) < 1e-9  # fmt: skip

    ceiling = cosine_map(features["query"], features["database"], q_labels, d_labels, topk)
    quality = structure_quality(features["train"], splits.train.labels, args.alpha, args.beta)
    rows = []
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-ssdh-") as tmp:
        for bits in bit_list:
            lsh = []
            for r in range(5):
                w = torch.randn(features["train"].shape[1], bits, generator=torch.Generator().manual_seed(1000 + r))
                lsh.append(mean_average_precision(binarize(features["query"] @ w), binarize(features["database"] @ w),
                                                  q_labels, d_labels, topk=topk))  # fmt: skip
            torch.set_num_threads(1)  # a 1280×bits layer: thread hand-offs cost 20× the math on a shared CPU
            try:
                t0 = time.perf_counter()
                result = train({**base, "code_length": bits, "out": str(Path(tmp) / f"ssdh-{bits}")})
                wall = time.perf_counter() - t0
            finally:
                torch.set_num_threads(threads)
            losses = [r["losses"]["pairwise"] for r in result["history"]]
            rows.append((bits, float(np.mean(lsh)), float(np.std(lsh)), result["map"], wall, losses))

    fit = quality["fit"]
    print()
    print(f"CIFAR-10, {len(splits.query)} queries / {len(splits.train)} train / {len(splits.database)} database, "
          f"EfficientNet-Lite0 (ImageNet, frozen) at {args.image_size} px, CPU; mAP@{topk}")  # fmt: skip
    print(f"SSDH's S (α={args.alpha}, β={args.beta}): mode {fit.mode:.2f}, σ_l {fit.sigma_left:.4f}, "
          f"σ_r {fit.sigma_right:.4f}; similar d < {fit.similar_below:.4f}: {100 * quality['similar_frac']:.2f}% of "
          f"pairs, {100 * quality['similar_precision']:.1f}% of them same class; dissimilar d > "
          f"{fit.dissimilar_above:.4f}: {100 * quality['dissimilar_frac']:.2f}% of pairs, "
          f"{100 * quality['dissimilar_precision']:.1f}% of them different class (same-class base rate "
          f"{100 * quality['base_rate']:.1f}%)")  # fmt: skip
    print()
    print(f"| codes | bits | mAP@{topk} |")
    print("|---|---:|---:|")
    for bits, lsh_mean, lsh_std, ssdh_map, wall, _ in rows:
        print(f"| LSH: sign of a random projection of the features (floor; 5 projections) | {bits} | {lsh_mean:.4f} ± {lsh_std:.4f} |")
        print(f"| SSDH: hashkit train --freeze-backbone, {args.epochs} epochs ({wall:.0f}s) | {bits} | {ssdh_map:.4f} |")
    print(f"| cosine similarity of the real-valued 1280-d features (ceiling) | — | {ceiling:.4f} |")
    print()
    for bits, *_, losses in rows:
        print(f"SSDH {bits} bits: loss epoch 1 {losses[0]:.4f} → epoch {len(losses)} {losses[-1]:.4f}")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

"""How much MIHash's and QSMIH's objectives penalise two classes sharing one code (docs/results.md, note 12).

Ideal batch: 10 classes, each with its own random ±1 code (32 bits, outputs u = 3 × code), items cycling over the
classes. Then class 1 takes class 0's code (one merged pair), and classes 1, 3, 5, 7, 9 take their left
neighbour's (five pairs). Each loss is reported as the share of the gap between the ideal batch and a
label-blind one (every item on one code) that the merging gives back: a share near 0 means the objective barely
notices merged classes. Runs in a second on a CPU; no data needed.

    python scripts/probe_class_merging.py
"""

from __future__ import annotations

import torch

from hashkit.methods.mihash import mihash_loss
from hashkit.methods.qsmih import qsmih_loss

BITS, CLASSES, SCALE = 32, 10, 3.0


def batch(codes: torch.Tensor, size: int, merged_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(size) % CLASSES
    merged = codes.clone()
    for k in range(merged_pairs):
        merged[2 * k + 1] = merged[2 * k]
    return SCALE * merged[labels], torch.nn.functional.one_hot(labels, CLASSES).float()


def losses(u: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """MIHash's −I per anchor (its default estimator, bits/2 bins) and QSMIH's clamped term (α's regulariser left out)."""
    return float(mihash_loss(u, labels, 0)["mutual_information"]) / len(u), float(qsmih_loss(u, labels, 0.0)["qsmi"])


def main() -> None:
    codes = torch.sign(torch.randn(CLASSES, BITS, generator=torch.Generator().manual_seed(0)))
    for size in (64, 256):
        u, labels = batch(codes, size, 0)
        ideal = losses(u, labels)
        blind = losses(SCALE * codes[0].expand(size, BITS).clone(), labels)
        for pairs in (1, 5):
            merged = losses(*batch(codes, size, pairs))
            shares = [(m - i) / (b - i) for m, i, b in zip(merged, ideal, blind)]
            print(f"batch {size}, {pairs} merged pair(s): share of the ideal-to-one-code gap given back — "
                  f"mihash {shares[0]:.3f}, qsmih {shares[1]:.3f}")


if __name__ == "__main__":
    main()

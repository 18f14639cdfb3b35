"""Class codes ("hash centers", "target vectors") for the center-based methods: CSQ, DPN, OrthoHash.

Each class c gets a fixed ±1 code C_c of ``bits`` bits; a method pulls the codes of class c's images
towards C_c. Two constructions, both from the papers:

* Hadamard (CSQ, Yuan et al. CVPR 2020, Algorithm 1): the rows of [H; −H], H the bits × bits Sylvester
  Hadamard matrix, are 2·bits codes at mutual Hamming distance bits/2 (or bits for a row and its
  negation). Classes beyond 2·bits get random Bernoulli codes (below), as in Algorithm 1, redrawn up to 20
  times until they are spread (:func:`redraw_until_spread`, DeepHash-pytorch's CSQ.py).
* Bernoulli (CSQ when bits is not a power of 2; DPN's "random assignment of target vectors" with
  p = 0.5): each code has exactly ⌊bits/2⌋ bits set to −1 at random positions (the public codes'
  construction: a random half of the bits flipped), so codes are balanced and at Hamming distance
  ≈ bits/2 from each other in expectation.

FIRe's OrthoHash templates draw their codes otherwise (scripts/train_helper.py ``generate_centroids``):
OrthoCos "M", random codes kept at a minimum mutual distance (:func:`min_distance_centers`), OrthoArc "B",
independent ±1 bits (:func:`iid_centers`).

Multi-label items (CSQ's multi-label centers, DPN): the center of an item with several labels is the bitwise majority
of its labels' centers, sign(Σ_{c ∈ labels} C_c); a bit where the sum is 0 (a tie) takes the bit of one
fixed random code drawn with the centers (the public codes' rule). For a single-label item this is its
class's center, so one function serves both.

The draws use their own generator (seed 0 unless given), so every rank of a distributed run, every
resume and every run of the same (classes, bits) gets the same centers; methods also checkpoint them.
"""

from __future__ import annotations

import torch
from scipy.linalg import hadamard

CENTER_SEED = 0
MAX_CENTER_DRAWS = 20  # DeepHash-pytorch's CSQ.py: for k in range(20)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def bernoulli_centers(num_classes: int, bits: int, generator: torch.Generator) -> torch.Tensor:
    """(num_classes, bits) ±1 codes, each with ⌊bits/2⌋ random bits set to −1."""
    codes = torch.ones(num_classes, bits)
    for c in range(num_classes):
        codes[c, torch.randperm(bits, generator=generator)[: bits // 2]] = -1.0
    return codes


def hadamard_centers(num_classes: int, bits: int, seed: int = CENTER_SEED) -> torch.Tensor:
    """CSQ's Algorithm 1: the first ``num_classes`` rows of [H; −H] (H Sylvester's Hadamard matrix of
    order ``bits``), Bernoulli codes for classes beyond 2·bits, and all Bernoulli codes when ``bits`` is
    not a power of 2 (no Hadamard matrix of that order is constructed)."""
    generator = torch.Generator().manual_seed(seed)
    if not is_power_of_two(bits):
        return bernoulli_centers(num_classes, bits, generator)
    h = torch.from_numpy(hadamard(bits)).float()
    rows = torch.cat([h, -h])[:num_classes]
    if num_classes > len(rows):
        rows = redraw_until_spread(rows, num_classes - len(rows), bits, generator)
    return rows


def redraw_until_spread(fixed_rows: torch.Tensor, extra: int, bits: int, generator: torch.Generator) -> torch.Tensor:
    """``fixed_rows`` plus ``extra`` Bernoulli codes, redrawn as DeepHash-pytorch's CSQ.py ``get_hash_targets``
    does: up to :data:`MAX_CENTER_DRAWS` draws, stopping at the first whose pairwise Hamming distances over all
    the codes have a minimum above bits/4 and a mean of at least bits/2; if none does, the last draw."""
    for _ in range(MAX_CENTER_DRAWS):
        codes = torch.cat([fixed_rows, bernoulli_centers(extra, bits, generator)])
        distances = pairwise_hamming(codes)
        if distances.min() > bits / 4 and distances.mean() >= bits / 2:
            break
    return codes


def pairwise_hamming(codes: torch.Tensor) -> torch.Tensor:
    """The Hamming distances between every two ±1 rows of ``codes`` (i < j), as a flat float tensor."""
    i, j = torch.triu_indices(len(codes), len(codes), offset=1)
    return (codes[i] != codes[j]).sum(dim=1).float()


def iid_centers(num_classes: int, bits: int, generator: torch.Generator) -> torch.Tensor:
    """(num_classes, bits) ±1 codes with independent bits, +1 with probability ½ (FIRe's ``cent_init`` "B",
    scripts/train_helper.py ``generate_centroids``: ``torch.bernoulli(0.5) · 2 − 1``; not balanced)."""
    return torch.randint(0, 2, (num_classes, bits), generator=generator).float() * 2 - 1


def min_distance_centers(
    num_classes: int, bits: int, generator: torch.Generator, start: float = 0.61, floor: float = 0.2,
    step: float = 0.01, max_tries: int = 10000,
) -> torch.Tensor:  # fmt: skip
    """FIRe's ``cent_init`` "M" (functions/loss/dpn.py ``get_centroid``): random sign codes drawn class by class,
    a draw kept only if its normalised Hamming distance to every code kept so far is at least the current bound
    (0.61 at first); after ``max_tries`` rejected draws (counted over the whole run, as there) the bound drops by
    0.01, below 0.2 it gives up; the codes are then shuffled over the classes."""
    codes = torch.zeros(num_classes, bits)
    kept, rejected, bound = 0, 0, start
    while kept < num_classes:
        # The next draws of the sequential loop, a chunk at once: the first that passes is kept (the draws after
        # it are never looked at, as in the loop, whose draws are independent).
        draws = torch.where(torch.randn(min(DRAW_CHUNK, max_tries - rejected), bits, generator=generator) > 0, 1.0, -1.0)
        distances = 0.5 * (bits - draws @ codes[:kept].t()) / bits
        passing = torch.nonzero((distances >= bound).all(dim=1)).flatten()
        if len(passing):
            codes[kept] = draws[passing[0]]
            kept, rejected = kept + 1, rejected + int(passing[0])
            continue
        rejected += len(draws)
        if rejected >= max_tries:
            rejected, bound = 0, bound - step
            if bound < floor:
                raise ValueError(f"no {num_classes} codes of {bits} bits at normalised distance {floor} or more")
    return codes[torch.randperm(num_classes, generator=generator)]


CENTER_KINDS = ("hadamard", "bernoulli", "iid", "min_distance")
DRAW_CHUNK = 512  # min_distance_centers' draws per tensor operation (speed only: the same codes' distribution)


def class_centers(num_classes: int, bits: int, kind: str = "hadamard", seed: int = CENTER_SEED) -> torch.Tensor:
    """The ±1 class codes of ``kind`` (:data:`CENTER_KINDS`), (num_classes, bits)."""
    if kind == "hadamard":
        return hadamard_centers(num_classes, bits, seed)
    generator = torch.Generator().manual_seed(seed)
    if kind == "bernoulli":
        return bernoulli_centers(num_classes, bits, generator)
    if kind == "iid":
        return iid_centers(num_classes, bits, generator)
    if kind == "min_distance":
        return min_distance_centers(num_classes, bits, generator)
    raise ValueError(f"unknown kind of class centers {kind!r}; valid: {', '.join(CENTER_KINDS)}")


def tie_breaker(bits: int, seed: int = CENTER_SEED) -> torch.Tensor:
    """The fixed random ±1 code whose bits settle ties of the multi-label majority."""
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, 2, (bits,), generator=generator).float() * 2 - 1


def label_centers(labels: torch.Tensor, centers: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """(b, bits) ±1 center of each item: sign(labels @ centers), ties settled by ``ties`` (see above)."""
    total = labels.to(centers.dtype) @ centers
    total = torch.where(total == 0, ties.to(total.dtype).expand_as(total), total)
    return torch.where(total > 0, 1.0, -1.0).to(centers.dtype)

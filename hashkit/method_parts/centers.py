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

MDSH (Wang et al., CVPR 2023; the authors' Wangld5/Center-Hashing ``optimizeAccel.py``) optimises its centers
instead (:func:`minimal_distance_separated_centers`): starting from CSQ's codes, each center in turn is moved by an
ADMM ℓp-box solver so that its Hamming distance to every other center reaches the bound d of
:func:`minimal_distance_bound` (a Gilbert–Varshamov-type count of how far 2^bits / classes balls allow).

Multi-label items (CSQ's multi-label centers, DPN): the center of an item with several labels is the bitwise majority
of its labels' centers, sign(Σ_{c ∈ labels} C_c); a bit where the sum is 0 (a tie) takes the bit of one
fixed random code drawn with the centers (the public codes' rule). For a single-label item this is its
class's center, so one function serves both.

The draws use their own generator (seed 0 unless given), so every rank of a distributed run, every
resume and every run of the same (classes, bits) gets the same centers; methods also checkpoint them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.linalg import hadamard
from scipy.special import comb

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


CENTER_KINDS = ("hadamard", "bernoulli", "iid", "min_distance", "minimal_distance_separated")
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
    if kind == "minimal_distance_separated":
        return minimal_distance_separated_centers(num_classes, bits, seed)
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


# --- MDSH: centers at a minimal Hamming distance, by optimisation (Wangld5/Center-Hashing optimizeAccel.py) ----------

MDSH_RHO = 1e-5  # the ADMM penalty's start, × 1.09 per outer iteration up to 1e7
MDSH_RHO_GROWTH, MDSH_RHO_MAX = 1.09, 1e7
MDSH_GAMMA = (1 + 5**0.5) / 2  # the multipliers' step factor
MDSH_ERROR = 1e-6  # stop when the constraints' residuals are all below this
MDSH_OUTER, MDSH_INNER, MDSH_AT_MAX = 1000, 10, 100  # iterations; outer iterations allowed at the largest ρ
MDSH_ROUNDS = 50  # sweeps over the classes


def minimal_distance_bound(bits: int, num_classes: int) -> int:
    """MDSH's d (``get_margin``'s d_max): the d at which Σ_{j<d} C(bits, j) first reaches 2^bits / classes (the
    radius-(d − 1) Hamming balls of the classes' centers then just cover the 2^bits codes); the centers are
    optimised to be at least d apart (e.g. 13 for 10 classes at 32 bits, 24 for 100 classes at 64 bits)."""
    right = 2.0**bits / num_classes
    d = 0
    for dim in range(2 * bits + 4):
        if sum(comb(bits, j) for j in range(dim)) >= right and sum(comb(bits, j) for j in range(dim - 1)) < right:
            d = dim
    return d


def _center_score(code: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """``cal_one_hamm``: (mean + min − variance, min) of a code's Hamming distances to the other centers."""
    distances = 0.5 * (len(code) - others @ code)
    return float(distances.mean() + distances.min() - distances.var()), float(distances.min())


def _spread(codes: np.ndarray) -> tuple[float, float]:
    """``cal_hamm``: (mean + min − variance, min) of the Hamming distances between every two centers."""
    i, j = np.triu_indices(len(codes), k=1)
    distances = (codes[i] != codes[j]).sum(axis=1).astype(np.float64)
    return float(distances.mean() + distances.min() - distances.var()), float(distances.min())


def lp_box_center(
    code: np.ndarray, others: np.ndarray, distance: int, generator: torch.Generator, keep_converged: bool = False
) -> np.ndarray:
    """``Lp_box_one``: one center b moved, the ``others`` (m, bits) fixed, towards min cᵀb (c = the others' mean)
    subject to b ∈ [−1, 1]^bits ∩ {‖b‖² = bits} (the ℓp-box form of b ∈ {±1}^bits) and H b ≤ bits − 2·distance
    (Hamming distance ≥ ``distance`` to every other center), by ADMM with splitting variables z1 (box), z2 (sphere),
    z3 ≥ 0 (slacks) and multipliers y drawn uniform in [0, 1) from ``generator``. As the reference: ρ grows by
    1.09 per outer iteration up to 1e7; once there, sign b replaces the best code whenever it scores better
    (:func:`_center_score`: a higher mean + min − variance or a higher min); at most 100 such iterations, or
    until the residuals drop below 1e-6. Its box check ``item < -1 and item > 1`` can never fire, so only the
    sphere and slack checks decide whether the inner loop projects (kept). Returns the best code (the input if
    none scored better).

    Note: the reference scores sign b only once ρ has reached 1e7, so when the residuals fall below 1e-6 earlier the
    input comes back unchanged, however good the converged b (measured: a center 1 bit from another among CSQ's
    8-bit codes converges at ρ ≈ 0.05 to a code 6 away from all, and is discarded; of 45 small random cases only
    one center moved). ``keep_converged`` scores sign b at that stop as well (hashkit's variant, not the
    reference's)."""
    bits = len(code)
    b = code.astype(np.float64)
    H = others.astype(np.float64)
    d = bits - 2 * distance
    c = H.mean(axis=0)
    rho = MDSH_RHO
    count = 0
    best_eval, best_min = _center_score(np.sign(b), H)
    best = b
    z1, z2 = b.copy(), b.copy()
    z3 = d - H @ np.sign(b)
    y1 = torch.rand(bits, generator=generator, dtype=torch.float64).numpy()
    y2 = torch.rand(bits, generator=generator, dtype=torch.float64).numpy()
    y3 = torch.rand(len(H), generator=generator, dtype=torch.float64).numpy()
    HtH = H.T @ H
    eye = np.eye(bits)
    for _ in range(MDSH_OUTER):
        left_inverse = np.linalg.inv(2 * rho * eye + rho * HtH)
        for _ in range(MDSH_INNER):
            b = left_inverse @ (rho * z1 + rho * z2 + rho * H.T @ (d - z3) - y1 - y2 - H.T @ y3 - c)
            z1 = b + y1 / rho
            z2 = b + y2 / rho
            z3 = d - H @ b - y3 / rho
            feasible = bool((z3 >= 0).all()) and abs(float(z2 @ z2) - bits) <= 0.001
            if not feasible:
                z1 = np.clip(z1, -1.0, 1.0)
                z2 = math.sqrt(bits) * z2 / np.linalg.norm(z2)
                z3 = np.maximum(z3, 0.0)
            y1 = y1 + MDSH_GAMMA * rho * (b - z1)
            y2 = y2 + MDSH_GAMMA * rho * (b - z2)
            y3 = y3 + MDSH_GAMMA * rho * (H @ b + z3 - d)
            if feasible:
                break
        rho = min(MDSH_RHO_GROWTH * rho, MDSH_RHO_MAX)
        if rho == MDSH_RHO_MAX:
            count += 1
            score, smallest = _center_score(np.sign(b), H)
            if score > best_eval or smallest > best_min:
                best_eval, best_min, best = score, smallest, np.sign(b)
        residual = max(np.abs(b - z1).max(), np.abs(b - z2).max(), np.abs(H @ b + z3 - d).max())
        if residual < MDSH_ERROR:
            if keep_converged:
                score, smallest = _center_score(np.sign(b), H)
                if score > best_eval or smallest > best_min:
                    best = np.sign(b)
            break
        if count == MDSH_AT_MAX:
            break
    return best


def optimise_min_distance(
    codes: torch.Tensor, distance: int, generator: torch.Generator, keep_converged: bool = False
) -> torch.Tensor:
    """``Lp_box``: up to 50 sweeps of :func:`lp_box_center` over the classes in order (each center against the
    current others, updated in place); after each sweep the centers are kept if their spread (:func:`_spread`,
    mean + min − variance of the pairwise distances) beats the best so far (0 at first); it stops once every two
    centers are ``distance`` apart. Returns the kept centers (num_classes, bits) — ``codes`` itself never kept
    only if no sweep scored above 0."""
    B = codes.double().numpy().copy()
    best, best_spread = B.copy(), 0.0
    for _ in range(MDSH_ROUNDS):
        for i in range(len(B)):
            B[i] = lp_box_center(B[i], np.concatenate([B[:i], B[i + 1 :]]), distance, generator, keep_converged)
        spread, smallest = _spread(B)
        if spread > best_spread:
            best_spread, best = spread, B.copy()
        if smallest >= distance:
            break
    return torch.from_numpy(best).float()


MDSH_SOLVERS = ("reference", "converged")


@functools.lru_cache(maxsize=8)
def _minimal_distance_separated_centers(num_classes: int, bits: int, seed: int, solver: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if is_power_of_two(bits):
        start = hadamard_centers(num_classes, bits, seed)
    else:  # the reference initialises randomly where Hadamard rows do not exist (its 48 bits: ``init_hash``)
        start = iid_centers(num_classes, bits, generator)
    if num_classes < 2:
        return start
    return optimise_min_distance(start, minimal_distance_bound(bits, num_classes), generator, solver == "converged")


def minimal_distance_separated_centers(
    num_classes: int, bits: int, seed: int = CENTER_SEED, solver: str = "reference"
) -> torch.Tensor:
    """MDSH's centers (num_classes, bits): CSQ's (:func:`hadamard_centers`; random ±1 bits when ``bits`` is not a
    power of 2, as the reference at 48 bits) optimised by :func:`optimise_min_distance` to the distance
    :func:`minimal_distance_bound`. Deterministic for (num_classes, bits, seed); computed once per process
    (0.4 s for 10 classes at 32 bits, 21 s for 100 at 64, 99 s for 80 at 32 on one core). ``solver``
    "converged": :func:`lp_box_center`'s ``keep_converged``."""
    if solver not in MDSH_SOLVERS:
        raise ValueError(f"unknown center solver {solver!r}; valid: {', '.join(MDSH_SOLVERS)}")
    return _minimal_distance_separated_centers(num_classes, bits, seed, solver).clone()

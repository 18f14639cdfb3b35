"""Formula tests of the shallow methods (methods/{lsh,pcah,itq,sh,imh}.py): each fit on fixed features, its codes
from the fitted head compared with an independent numpy transcription of the reference code (FIRe
``functions/loss/{lsh,pca,itq,sh,imh}.py``; the authors' ITQ and SH MATLAB code where FIRe follows them),
written without hashkit's helpers.

Comparisons are made meaningful despite the ambiguities each method has:

* random draws (LSH's hyperplanes, ITQ's initial rotation) are the documented inputs: a standard Gaussian
  torch draw from ``torch.Generator().manual_seed(seed)`` — the transcriptions take the same matrix;
* a principal direction's sign is arbitrary; it flips one bit of every code (Hamming distances unchanged), so
  PCAH and SH codes are compared up to one sign per bit, ITQ's (whose rotation depends on the signs) with
  the documented convention (each direction's largest-magnitude entry positive);
* codes are compared where the reference's real value is not within 1e-6 of 0 (float32 head vs float64).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hashkit.errors import HashkitError
from hashkit.heads import build_head
from hashkit.registry import METHODS

SEED = 7


def features(n: int = 240, d: int = 20, seed: int = 0) -> np.ndarray:
    """Correlated, non-negative, off-centre features (like pooled post-ReLU activations)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * np.linspace(2.0, 0.2, d)
    return np.abs(x + 3.0)


def fitted(method: str, x: np.ndarray, bits: int, **hparams) -> tuple[torch.nn.Module, dict[str, float]]:
    """Fit ``method`` on x (the run's seed = SEED) and return its head and statistics."""
    method_cls = METHODS.get(method)
    torch.manual_seed(SEED)
    head = build_head(method_cls.head, x.shape[1], bits)
    method = method_cls(bits, hparams, torch.device("cpu"))
    method.bind_model(SimpleNamespace(head=head, head_name=method_cls.head))
    stats = method.fit(torch.from_numpy(x).float(), None)
    return head, stats


def head_codes(head: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.where(head(torch.from_numpy(x).float()).numpy() >= 0, 1, -1)


def gaussian(shape: tuple[int, ...]) -> np.ndarray:
    """The documented random input: torch's standard Gaussian draw from a generator seeded with SEED."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(SEED), dtype=torch.float32).numpy()


def assert_codes_equal(codes: np.ndarray, reference: np.ndarray, per_bit_sign: bool = False) -> None:
    """sign(reference) == codes where |reference| > 1e-6 (optionally up to one sign per bit)."""
    ref = np.where(reference >= 0, 1, -1)
    if per_bit_sign:
        ref = ref * np.where((ref == codes).mean(axis=0) >= 0.5, 1, -1)
    clear = np.abs(reference) > 1e-6
    assert clear.mean() > 0.99
    assert (codes[clear] == ref[clear]).all(), f"{(codes[clear] != ref[clear]).sum()} bits differ"


def numpy_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's PCA(n_components=k) by full SVD: mean and components (k, d), each with its largest-|entry|
    positive (the documented sign convention)."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    return mean, components * signs[:, None]


# ------------------------------------------------------------------------------------------------ LSH
@pytest.mark.parametrize("center", [0, 1])
def test_lsh_codes_are_signs_of_the_seeded_gaussian_hyperplanes(center: int) -> None:
    """FIRe lsh.py: W = randn(nbit, d), v = x Wᵀ, codes sgn(v); ``--center 1`` through the mean. Fails if the
    hyperplanes came from the global RNG (they would depend on what building the model drew) or the mean
    were subtracted (or not) against the flag."""
    x = features()
    head, stats = fitted("lsh", x, 16, center=center)
    w = gaussian((16, x.shape[1])).astype(np.float64)
    reference = (x - (x.mean(axis=0) if center else 0.0)) @ w.T
    assert_codes_equal(head_codes(head, x), reference)
    expected_quantization = np.mean(1 - np.abs(reference).sum(1) / (np.linalg.norm(reference, axis=1) * np.sqrt(16)))
    assert stats["quantization"] == pytest.approx(expected_quantization, rel=1e-5)


# ------------------------------------------------------------------------------------------------ PCAH
def test_pcah_codes_are_signs_of_the_top_principal_components() -> None:
    """FIRe pca.py: sklearn PCA(nbit).fit_transform(x), codes sgn. Fails if the features were not centred
    (or the directions taken smallest-variance first)."""
    x = features()
    head, stats = fitted("pcah", x, 8)
    mean, components = numpy_pca(x, 8)
    assert_codes_equal(head_codes(head, x), (x - mean) @ components.T, per_bit_sign=True)
    singular = np.linalg.svd(x - mean, compute_uv=False) ** 2
    assert stats["explained_variance"] == pytest.approx(singular[:8].sum() / singular.sum(), rel=1e-9)


# ------------------------------------------------------------------------------------------------ ITQ
def numpy_itq(v: np.ndarray, iterations: int, r0: np.ndarray, fire_update: bool = False) -> tuple[np.ndarray, list[float]]:
    """Gong & Lazebnik's ITQ.m: R = U of svd(R0) (columns signed by their largest entry, the documented
    convention); repeat: UX = ±1 (0 ↦ +1), C = UXᵀ V, [UB, S, UA] = svd(C),
    R = UA UBᵀ. ``fire_update``: FIRe's ``VT.t() @ U.t()`` with torch.svd's V, i.e. UAᵀ UBᵀ."""
    rotation = np.linalg.svd(r0)[0]
    rotation = rotation * np.sign(rotation[np.abs(rotation).argmax(axis=0), np.arange(len(r0))])[None, :]
    losses = []
    for _ in range(iterations):
        z = v @ rotation
        ux = np.where(z >= 0, 1.0, -1.0)
        losses.append(((ux - z) ** 2).sum() / len(v))
        ub, _, ua_t = np.linalg.svd(ux.T @ v)
        rotation = (ua_t @ ub.T) if fire_update else (ua_t.T @ ub.T)
    z = v @ rotation
    losses.append(((np.where(z >= 0, 1.0, -1.0) - z) ** 2).sum() / len(v))
    return rotation, losses


def test_itq_rotation_and_codes_match_the_authors_iterations() -> None:
    """Same PCA (documented signs), same R0 draw, the authors' 50 iterations: the same codes, the same final
    quantisation loss ‖B − VR‖²/n, non-increasing along the way — and lower than FIRe's transposed update
    reaches. Fails with FIRe's update (R = Ŝᵀ Sᵀ), or with fewer iterations than --itq-iterations."""
    x = features()
    bits = 8
    head, stats = fitted("itq", x, bits, itq_iterations=50)
    mean, components = numpy_pca(x, bits)
    v = (x - mean) @ components.T
    rotation, losses = numpy_itq(v, 50, gaussian((bits, bits)).astype(np.float64))
    assert_codes_equal(head_codes(head, x), v @ rotation)
    assert stats["itq_loss"] == pytest.approx(losses[-1], rel=1e-6)
    assert stats["itq_loss_start"] == pytest.approx(losses[0], rel=1e-6)
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))
    _, fire_losses = numpy_itq(v, 50, gaussian((bits, bits)).astype(np.float64), fire_update=True)
    assert losses[-1] < fire_losses[-1] - 1e-3


# ------------------------------------------------------------------------------------------------ SH
def numpy_spectral_hashing(x: np.ndarray, nbits: int) -> np.ndarray:
    """Weiss et al.'s trainSH.m + compressSH.m (FIRe sh.py), loops as written there; returns the real values
    Π_j sin(π/2 + ω_ij (t_j − mn_j)) of every item (n, nbits)."""
    mean, components = numpy_pca(x, nbits)
    t = (x - mean) @ components.T
    eps = 1e-7
    mn = t.min(axis=0) - eps
    mx = t.max(axis=0) + eps
    r = mx - mn
    max_mode = np.ceil((nbits + 1) * r / r.max()).astype(int)
    n_modes = max_mode.sum() - len(max_mode) + 1
    modes = np.ones((n_modes, nbits))
    m = 0
    for i in range(nbits):
        modes[m + 1 : m + max_mode[i], i] = np.arange(2, max_mode[i] + 1)
        m = m + max_mode[i] - 1
    modes = modes - 1
    omega0 = np.pi / r
    omegas = modes * omega0[None, :]
    eig_val = -(omegas**2).sum(axis=1)
    order = np.argsort(-eig_val, kind="stable")
    modes = modes[order[1 : nbits + 1]]
    omegas = modes * omega0[None, :]
    u = np.zeros((len(x), nbits))
    centred = t - mn
    for i in range(nbits):
        u[:, i] = np.prod(np.sin(centred * omegas[i] + np.pi / 2), axis=1)
    return u


def test_spectral_hashing_codes_match_the_authors_eigenfunctions() -> None:
    """The spectral head's codes equal trainSH/compressSH's on training and unseen items, up to one sign per
    bit (a flipped principal direction flips the odd modes). Fails if the box were not shifted to its
    minimum (t − mn), or the modes were sorted largest eigenvalue first."""
    x = features(n=300)
    head, _ = fitted("sh", x[:240], 12)
    reference = numpy_spectral_hashing(x[:240], 12)
    assert_codes_equal(head_codes(head, x[:240]), reference, per_bit_sign=True)
    # several bits use a mode above 1 along the widest direction (the eigenfunction enumeration matters)
    assert len({tuple(np.round(row, 6)) for row in np.abs(reference[:5])}) == 5


# ------------------------------------------------------------------------------------------------ IMH
def numpy_imh_embedding(x: np.ndarray, centroids: np.ndarray, base: np.ndarray, k: int, bandwidth: float) -> np.ndarray:
    """FIRe imh.py compute_embeddings: the k nearest centroids by squared L2 distance (faiss IndexFlatL2),
    w = exp(−d/bandwidth) normalised, y = Σ w · base[neighbours]."""
    d2 = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    neighbours = np.argsort(d2, axis=1, kind="stable")[:, :k]
    distances = np.take_along_axis(d2, neighbours, axis=1)
    w = np.exp(-distances / bandwidth)
    w = w / w.sum(axis=1, keepdims=True)
    return (w[:, :, None] * base[neighbours]).sum(axis=1)


def test_imh_anchors_embedding_and_inductive_codes() -> None:
    """The anchors are a k-means fixed point of the training features (each the mean of its points), the
    anchors' embedding is scikit-learn's exact t-SNE of them (init "pca", as FIRe), and the codes of unseen
    items are FIRe's inductive embedding's signs. Fails if the weights were not normalised, the k nearest were
    not the nearest, or the bandwidth divided distances instead of squared distances."""
    from sklearn.manifold import TSNE

    x = features(n=300)
    train, unseen = x[:240], x[240:]
    bits, k, bandwidth = 6, 5, 40.0
    head, _ = fitted("imh", train, bits, anchors=24, neighbours=k, bandwidth=bandwidth, perplexity=5.0)
    centroids = head.anchors.double().numpy()
    base = head.anchor_embedding.double().numpy()
    nearest = ((train[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    for j in range(len(centroids)):
        np.testing.assert_allclose(centroids[j], train[nearest == j].mean(axis=0), rtol=1e-5, atol=1e-5)
    expected_base = TSNE(bits, init="pca", method="exact", perplexity=5.0, random_state=SEED).fit_transform(
        centroids.astype(np.float32)
    )
    np.testing.assert_allclose(base, expected_base, rtol=1e-4, atol=1e-4)
    reference = numpy_imh_embedding(unseen, centroids, base, k, bandwidth)
    with torch.no_grad():
        outputs = head(torch.from_numpy(unseen).float()).double().numpy()
    np.testing.assert_allclose(outputs, reference, rtol=1e-4, atol=1e-5)
    assert_codes_equal(head_codes(head, unseen), reference)


def test_imh_weights_stay_finite_where_fires_underflow() -> None:
    """Squared distances thousands of bandwidths away: FIRe's exp(−d/σ) underflows to 0/0; the normalised
    weights are the same function, so the embedding tends to the nearest anchor's. Fails without the shift."""
    x = features(n=120) * 100.0
    head, _ = fitted("imh", x, 4, anchors=12, perplexity=3.0, bandwidth=1e-3)
    centroids = head.anchors.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(numpy_imh_embedding(x, centroids, head.anchor_embedding.double().numpy(), 5, 1e-3)).any()
    with torch.no_grad():
        outputs = head(torch.from_numpy(x).float()).double().numpy()
    nearest = ((x[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    np.testing.assert_allclose(outputs, head.anchor_embedding.double().numpy()[nearest], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ contract
def test_a_shallow_method_refuses_a_head_it_cannot_fit() -> None:
    """--hash-head linear with --method sh: one line naming the method and the fix."""
    method = METHODS.get("sh")(8, {}, torch.device("cpu"))
    with pytest.raises(HashkitError, match=r"--method sh fits its own 'spectral' hash head.*drop --hash-head"):
        method.bind_model(SimpleNamespace(head=build_head("linear", 16, 8), head_name="linear"))


def test_pca_based_methods_refuse_more_bits_than_feature_dimensions() -> None:
    with pytest.raises(HashkitError, match=r"--code-length 20 or fewer"):
        fitted("itq", features(d=20), 32)


@pytest.mark.parametrize("method", ["lsh", "pcah", "itq", "sh", "imh"])
def test_cpu_recipe_fits_the_frozen_pooled_features(method: str) -> None:
    """The CPU recipe of a shallow method freezes the whole backbone, so the shared recipe's --train-from and
    --encode-flip are dropped (as for a given --freeze-backbone) instead of being refused at the run."""
    from hashkit.config import resolve_config

    config = resolve_config({"method": method, "recipe": "cpu"})
    assert config["freeze_backbone"] is True and config["arch"] == "efficientnet_lite0" and config["image_size"] == 128
    assert not config.get("train_from") and not config.get("encode_flip")

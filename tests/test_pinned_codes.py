"""Methods a refactoring should not move do not move: DPSH's and JMLH's trained codes under ``--recipe cpu``
at tiny settings are pinned to the values recorded before the method contract grew heads, features, views,
own optimisation steps and closed-form fits (hashkit/method.py).

The run: the synthetic 4-class data of tests/test_method_registry.py, EfficientNet-Lite0 (ImageNet weights,
shipped offline) at 32 px, the CPU recipe (blocks 0–10 cached, cached views, flip-averaged encoding; JMLH with
the regularised catalogue recipe: fixed depthwise weights, drop-path, feature dropout), 2 epochs, 16 bits. The
pinned value is the sha256 of the packed ±1 codes of the 12 queries and 36 database items, plus the mAP.

History of the pinned values: both were recorded before the contract change and held after it (commit
"Method contract: hash heads …"); JMLH's moved once, with the cache-determinism fix (issue 35: every cached row
computed at the full cache batch size, so its stored activations changed in the last float16 digit), DPSH's
did not.

Pinned per CPU class: torch dispatches its float kernels by the CPU's capability
(``torch.backends.cpu.get_cpu_capability()``: AVX512 / AVX2 / DEFAULT), and the two classes round differently,
so the same commit trains other codes on an AVX-512 host than on an AVX2-only one (checked: the commit that
recorded the AVX512 values gives the AVX2 values on an AVX2-only host). The AVX2 values were recorded at that
commit (46013ef) on an AVX2-only host, so both columns pin the same code. A class with no recorded value skips,
saying which. Both were recorded with two torch threads (the default on these 2-core hosts), which the test
sets: the codes differ under one thread (a reduction split in two rounds differently).

A change that makes it fail: initialise the head after the dropout module in ``HashModel.__init__`` (the
global RNG draws differ), or draw a cached view with another generator call in ``CachedPipeline.train_batches``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_method_registry import synthetic_splits, train_ok  # noqa: E402

from hashkit.model import binarize  # noqa: E402
from hashkit.registry import DATASETS  # noqa: E402

PINNED = {  # {cpu capability: {method: (sha256 of the packed codes, mAP)}}
    "AVX512": {
        "dpsh": ("98f8490993381a74794c498341e7d086e95f5a1335832e0b539a8523b86358a7", 0.7586548168455503),
        "jmlh": ("cf822c0b35733ba6645833f35518de6cf8848692eeb9c4e057cbd4ef128a9305", 0.8403109513407214),
    },
    "AVX2": {
        "dpsh": ("13ef90895292c961b0468ce991a5d4438a2dcedded7bb49ef8049f7c0c31c690", 0.7659014755613481),
        "jmlh": ("e6fb2859a89b78242192c7c584dfafd45758865a7df75fcaafac3f26deb327b0", 0.8072086745795541),
    },
}
PINNED_METHODS = ("dpsh", "jmlh")


@pytest.fixture
def synthetic_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    DATASETS.names()
    monkeypatch.setitem(DATASETS._entries, "synthetic", lambda config: synthetic_splits(config))


def trained_codes(method: str, tmp_path: Path) -> tuple[str, float]:
    from hashkit.run import load_run

    out = tmp_path / method
    result = train_ok([
        "train", "--method", method, "--dataset", "synthetic", "--recipe", "cpu", "--image-size", "32",
        "--code-length", "16", "--batch-size", "8", "--max-iter", "2", "--seed", "0", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    _, splits, _, method_obj, pipeline, _ = load_run(out / "checkpoint.pt", {"cache_dir": str(tmp_path / "cache")},
                                                     torch.device("cpu"))
    codes = torch.cat([binarize(pipeline.encode(splits.query)), binarize(pipeline.encode(splits.database))])
    packed = np.packbits((codes.numpy() > 0).astype(np.uint8), axis=1)
    return hashlib.sha256(packed.tobytes()).hexdigest(), float(result["map"])


@pytest.mark.parametrize("torch_threads", [2], indirect=True)
@pytest.mark.parametrize("method", PINNED_METHODS)
def test_trained_codes_are_pinned(method: str, tmp_path: Path, synthetic_dataset: None, torch_threads: int) -> None:
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in PINNED:
        pytest.skip(f"no codes recorded for CPU capability {capability} (recorded: {', '.join(PINNED)})")
    digest, mean_ap = trained_codes(method, tmp_path)
    assert (digest, mean_ap) == PINNED[capability][method]

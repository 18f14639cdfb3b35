"""Distributed training (torchrun, gloo on the CPU): sharding, exact loss weighting, and a real 2-process
run whose per-epoch losses match a single process with the same global batch.

Run as a script, this file is the ``hashkit`` command with two tiny test backbones registered
(``tiny-plain``: conv → pool → fc, no BatchNorm or dropout; ``tiny-bn``: the same with BatchNorm and
dropout), so subprocess tests train in a second; tests/test_resume.py uses it too. With
HASHKIT_TEST_STEP_SLEEP=S every training step also sleeps S seconds (kill tests; numerics unchanged).

Why a BN-free, flip-invariant setup for the comparison: with BatchNorm in training mode each process
normalises by the statistics of its own part of the batch, not of the global batch (as plain DDP does
everywhere), so the losses would legitimately differ; and random flips draw from per-process streams.
With ``tiny-plain`` and left-right symmetric images (a flip changes nothing) the distributed run must
reproduce the single-process run up to floating-point summation order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve()
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Measured (2-core CPU, 3 epochs × 4 steps, Adam lr 0.01): per-epoch losses differ by ≤ 1.5e-7 relative,
# final weights by ≤ 1.4e-6 absolute (float32 summation order: per-rank sums + all-reduce vs one sum).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4


# ---------------------------------------------------------------------------------------------- helpers
def tiny_backbone_factories() -> dict:
    """Factories of the test backbones ``tiny-plain`` and ``tiny-bn`` (BACKBONES' ``build`` signature)."""
    from hashkit.backbones import Backbone, InputSpec

    spec = InputSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear", default_size=32)

    def build(arch: str, bn: bool):
        def factory(pretrained: bool = True, weights: str | None = None) -> Backbone:
            conv: list[nn.Module] = [nn.Conv2d(3, 8, 3, stride=2, padding=1)]
            if bn:
                conv.append(nn.BatchNorm2d(8))
            conv.append(nn.ReLU())
            fc: list[nn.Module] = [nn.Linear(8 * 4 * 4, 24), nn.ReLU()]
            if bn:
                fc.append(nn.Dropout(0.2))
            stages = OrderedDict(
                conv=nn.Sequential(*conv),
                pool=nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(1)),
                fc=nn.Sequential(*fc),
            )
            return Backbone(stages, feature_dim=24, input_spec=spec, arch=arch)

        return factory

    return {"tiny-plain": build("tiny-plain", False), "tiny-bn": build("tiny-bn", True)}


def register_tiny_backbones() -> None:
    """Register the test backbones for good (subprocesses only: the pytest process must not keep them,
    other tests iterate over every registered arch; in-process tests use ``use_tiny_backbones``)."""
    from hashkit.backbones import BACKBONES

    names = BACKBONES.names()
    for arch, factory in tiny_backbone_factories().items():
        if arch not in names:
            BACKBONES.register(arch)(factory)


def use_tiny_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test backbones available to this test only (undone by ``monkeypatch``)."""
    from hashkit.backbones import BACKBONES

    BACKBONES.names()  # load the real entries first
    for arch, factory in tiny_backbone_factories().items():
        monkeypatch.setitem(BACKBONES._entries, arch, factory)


def write_tree(root: Path, per_class: int, symmetric: bool = False, seed: int = 0) -> Path:
    """A CIFAR-10 image tree (train/<class>/, test/<class>/) of 32×32 PNGs, class-dependent colours."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for part in ("train", "test"):
        for c, name in enumerate(CLASS_NAMES):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, size=(32, 32, 3)) + np.array([c * 17, 255 - c * 23, (c * 53) % 170])
                pixels = np.clip(pixels, 0, 255).astype(np.uint8)
                if symmetric:
                    pixels[:, 16:] = pixels[:, :16][:, ::-1]
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def tiny_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GLOO_SOCKET_IFNAME="lo")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_train_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--method", "dpsh", "--root", str(root), "--out", str(out), "--arch", "tiny-plain", "--no-pretrained",
        "--image-size", "32", "--code-length", "16", "--num-query", "10", "--num-train", "30", "--batch-size", "8",
        "--max-iter", "3", "--lr", "0.01", "--evaluate-interval", "1", "--cache-dir", str(out.parent / "cache"),
        # Adam at a constant lr and flips only (random crops would differ between processes); the tolerances
        # below were measured so (DPSH's seed recipe is RMSprop at 1e-5 with RandomResizedCrop)
        "--optimizer", "adam", "--lr-schedule", "constant", "--hash-lr-mult", "10", "--weight-decay", "1e-5", "--train-transform", "resize_flip",
        "--test-transform", "resize", *extra,
    ]  # fmt: skip


def load_weights(out: Path) -> dict[str, torch.Tensor]:
    from hashkit.checkpoint import load_checkpoint

    return load_checkpoint(out / "checkpoint.pt")["model"]


# ---------------------------------------------------------------------------------------------- unit
def test_shard_order_splits_every_global_batch_between_ranks() -> None:
    from hashkit.distributed import DistContext, part_weight, shard_order

    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    shards = [shard_order(order, 8, DistContext(rank=r, world_size=3)) for r in range(3)]
    # global batches of 8, 8, 7 → parts (3,3,2), (3,3,2), (3,2,2), rank r takes the r-th contiguous part
    assert all(s[1] == [[3, 3, 2], [3, 3, 2], [3, 2, 2]] and s[2] == 0 for s in shards)
    rebuilt = []
    for begin, sizes in zip(range(0, 23, 8), shards[0][1]):
        offsets = np.cumsum([0] + sizes)
        for r in range(3):
            mine = shards[r][0][sum(shards[r][1][k][r] for k in range(begin // 8)) :][: sizes[r]]
            assert torch.equal(mine, order[begin + offsets[r] : begin + offsets[r + 1]])
            rebuilt.append(mine)
    assert torch.equal(torch.cat(rebuilt), order)
    # W·b_r/L: exactly 1 for a full batch; for parts (3, 2, 2) of 7 items 9/7, 6/7, 6/7
    assert part_weight([4, 4], 0) == part_weight([4, 4], 1) == 1.0
    assert [part_weight([3, 2, 2], r) for r in range(3)] == pytest.approx([9 / 7, 6 / 7, 6 / 7])
    # a last batch smaller than the number of ranks is dropped (no rank may be left without items)
    local, sizes, dropped = shard_order(torch.arange(9), 4, DistContext(rank=1, world_size=4))
    assert sizes == [[1, 1, 1, 1], [1, 1, 1, 1]] and dropped == 1 and local.tolist() == [1, 5]


@pytest.mark.parametrize("sizes", [[4, 4], [3, 3, 2]])
def test_ddp_average_of_weighted_part_losses_is_the_global_batch_gradient(sizes: list[int]) -> None:
    """DPSH's loss is a mean over the batch's b × n pairs; DDP averages W gradients. Scaling part r's loss
    by W·b_r/L (1 for full batches) makes the average exactly the gradient of the global batch's loss."""
    from hashkit.distributed import part_weight
    from hashkit.methods.dpsh import dpsh_loss

    gen = torch.Generator().manual_seed(1)
    n, bits, total = 12, 8, sum(sizes)
    weight = torch.randn(5, bits, generator=gen, requires_grad=True)
    inputs = torch.randn(total, 5, generator=gen)
    labels = torch.eye(3)[torch.randint(0, 3, (total,), generator=gen)]
    memory_u, memory_labels = torch.randn(n, bits, generator=gen), torch.eye(3)[torch.randint(0, 3, (n,), generator=gen)]

    def grad(rows: slice, scale: float) -> torch.Tensor:
        weight.grad = None
        terms = dpsh_loss(inputs[rows] @ weight, labels[rows], memory_u, memory_labels, eta=10.0)
        (sum(terms.values()) * scale).backward()
        return weight.grad.clone()

    expected = grad(slice(0, total), 1.0)
    bounds = np.cumsum([0] + sizes)
    parts = [grad(slice(bounds[r], bounds[r + 1]), part_weight(sizes, r)) for r in range(len(sizes))]
    averaged = torch.stack(parts).mean(0)  # what DDP's all-reduce computes
    assert torch.allclose(averaged, expected, rtol=1e-5, atol=1e-7)


def test_torchrun_refusals_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Under torchrun (its environment, here faked): methods without distributed support and a global batch
    that does not split evenly are refused before any data is read."""
    from hashkit.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    base = ["train", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    cases = [
        (["--method", "adsh"], "--method adsh cannot train under torchrun (2 processes)"),
        (["--method", "ssdh"], "--method ssdh cannot train under torchrun"),
        (["--method", "dhn"], "--method dhn with --pairs batch cannot train under torchrun (2 processes): its loss "
                              "couples items across the processes' parts of the batch; pass --pairs memory"),
        (["--method", "hashnet"], "--method hashnet with --pairs split cannot train under torchrun"),
        (["--method", "dpsh", "--batch-size", "7"], "--batch-size 7 is the global batch and must be a multiple of the 2"),
    ]
    for extra, expected in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("hashkit: error: ") and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- end to end
def test_two_process_run_matches_single_process(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", per_class=2, symmetric=True)
    single, multi = tmp_path / "single", tmp_path / "multi"
    env = tiny_env()
    one = subprocess.run([sys.executable, str(HERE), *tiny_train_argv(root, single)], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(HERE),
    ]  # fmt: skip
    two = subprocess.run([*torchrun, *tiny_train_argv(root, multi)], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('"map"') == 1  # one summary line: rank 0's

    a, b = (json.loads((out / "result.json").read_text()) for out in (single, multi))
    assert a["status"] == b["status"] == "finished" and (a["world_size"], b["world_size"]) == (1, 2)
    assert sorted(p.name for p in multi.iterdir()) == ["checkpoint.pt", "result.json"]  # written once, by rank 0
    assert len(a["history"]) == len(b["history"]) == 3
    for ra, rb in zip(a["history"], b["history"]):
        for name in ("likelihood", "quantization", "total"):
            assert rb["losses"][name] == pytest.approx(ra["losses"][name], rel=LOSS_RTOL), (ra, rb)
        assert rb["metrics"]["map"] == pytest.approx(ra["metrics"]["map"], abs=1e-6)  # evaluated every epoch
    wa, wb = load_weights(single), load_weights(multi)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=0, atol=WEIGHT_ATOL), key


if __name__ == "__main__":
    register_tiny_backbones()
    if os.environ.get("HASHKIT_TEST_STEP_SLEEP"):  # slow every training step (kill tests; numerics unchanged)
        import time

        from hashkit.pipeline import ImagePipeline

        pause = float(os.environ["HASHKIT_TEST_STEP_SLEEP"])
        forward = ImagePipeline.forward
        ImagePipeline.forward = lambda self, inputs, **kwargs: (time.sleep(pause), forward(self, inputs, **kwargs))[1]  # type: ignore[method-assign]
    from hashkit.cli import main

    sys.exit(main(sys.argv[1:]))

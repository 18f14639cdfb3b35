"""Exercise every CUDA path of hashkit once and print one line per check (``PASS``/``FAIL``/``SKIP``).

Run by ``scripts/gpu_check.sh`` on a machine with a GPU (the CPU suite never depends on it). Needs no data
or internet: it writes a small synthetic CIFAR-10-like image tree and uses EfficientNet-Lite0's offline
weights. ``--device cpu`` runs the same checks on the CPU (gloo instead of nccl) as a smoke test of the
script itself (tests/test_gpu_check.py).

Checks:
  train        ``hashkit train --gpu 0`` a few steps (full fine-tuning, 64 px) → finite loss, mAP in [0, 1]
  evaluate     the CUDA evaluator against the CPU evaluator on random codes: every metric equal to 1e-6
  search       the torch search engine on the GPU against the native engine: identical (D, I), radius too
  ddp          ``torchrun --nproc-per-node 1 -m hashkit train --gpu 0`` (nccl) → finished, same loss as ``train``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_tree(root: Path, per_class: int = 6) -> Path:
    """train/<class>/*.png and test/<class>/*.png, 32×32, class-dependent colours."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, size=(32, 32, 3)) + np.array([c * 17, 255 - c * 23, (c * 53) % 170])
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


def train_argv(root: Path, out: Path, device: str) -> list[str]:
    gpu = [] if device == "cpu" else ["--gpu", device.split(":")[-1] if ":" in device else "0"]
    return [
        "train", "--method", "dpsh", "--root", str(root), "--out", str(out), "--arch", "efficientnet_lite0",
        "--image-size", "64", "--code-length", "16", "--num-query", "20", "--num-train", "40", "--batch-size", "8",
        "--max-iter", "2", "--optimizer", "adam", "--lr", "1e-3", "--lr-schedule", "constant",
        "--evaluate-interval", "1", "--cache-dir", str(out.parent / "cache"), *gpu,
    ]  # fmt: skip


def check_train(root: Path, work: Path, device: str) -> str:
    out = work / "train"
    proc = subprocess.run([sys.executable, "-m", "hashkit", *train_argv(root, out, device)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    result = json.loads((out / "result.json").read_text())
    losses = [h["losses"]["total"] for h in result["history"]]
    if not (np.isfinite(losses).all() and 0.0 <= result["map"] <= 1.0):
        raise RuntimeError(f"losses {losses}, mAP {result['map']}")
    return f"losses {', '.join(f'{x:.4f}' for x in losses)}; mAP {result['map']:.4f}; {result['timings']}"


def check_evaluate(device: str) -> str:
    import torch

    from hashkit.evaluate import evaluate_codes

    rng = np.random.default_rng(1)
    classes = rng.integers(0, 10, 3000)
    centers = rng.choice([-1, 1], size=(10, 64))
    noise = rng.random((3000, 64)) < 0.2
    codes = np.where(noise, -centers[classes], centers[classes]).astype(np.int8)
    labels = np.eye(10, dtype=np.uint8)[classes]
    q, d, ql, dl = codes[:300], codes[300:], labels[:300], labels[300:]
    metrics = ("map", "precision_radius", "pr_curve", "precision_at")
    started = time.perf_counter()
    gpu = evaluate_codes(q, d, ql, dl, metrics=metrics, topk=1000, device=device)
    if device != "cpu":
        torch.cuda.synchronize()
    took = time.perf_counter() - started
    cpu = evaluate_codes(q, d, ql, dl, metrics=metrics, topk=1000, device="cpu")
    worst = max_abs_difference(gpu, cpu)
    if worst > 1e-6:
        raise RuntimeError(f"{device} and CPU metrics differ by {worst}")
    return f"mAP@1000 {gpu['map']:.6f} on both; largest difference {worst:.1e}; {took:.3f} s on {device}"


def max_abs_difference(a: object, b: object) -> float:
    if isinstance(a, dict):
        return max([max_abs_difference(a[k], b[k]) for k in a] or [0.0])  # type: ignore[index]
    if isinstance(a, (list, tuple)):
        return max([max_abs_difference(x, y) for x, y in zip(a, b)] or [0.0])  # type: ignore[arg-type]
    if isinstance(a, (int, float)):
        return abs(float(a) - float(b))  # type: ignore[arg-type]
    return 0.0


def check_search(work: Path, device: str) -> str:
    from hashkit.index import Index

    rng = np.random.default_rng(2)
    codes = rng.choice([-1, 1], size=(200_000, 64)).astype(np.int8)
    index = Index.create(work / "codes.index", 64, {"method": "gpu-check"})
    index.add(codes, ids=[str(i) for i in range(len(codes))])
    queries = codes[rng.integers(0, len(codes), 100)]
    d_native, i_native = index.search(queries, k=50, backend="native")
    d_torch, i_torch = index.search(queries, k=50, backend="torch", device=device)
    if not (np.array_equal(d_native, d_torch) and np.array_equal(i_native, i_torch)):
        raise RuntimeError("torch engine top-50 differs from native")
    r_native = index.range_search(queries[:20], radius=20, backend="native")
    r_torch = index.range_search(queries[:20], radius=20, backend="torch", device=device)
    for (dn, in_), (dt, it) in zip(r_native, r_torch):
        if not (np.array_equal(dn, dt) and np.array_equal(in_, it)):
            raise RuntimeError("torch engine radius search differs from native")
    return f"top-50 of 100 queries over 200,000 codes and radius-20 search identical to native on {device}"


def check_ddp(root: Path, work: Path, device: str) -> str:
    out = work / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "1",
                "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "hashkit"]  # fmt: skip
    proc = subprocess.run([*torchrun, *train_argv(root, out, device)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit {proc.returncode}")
    result = json.loads((out / "result.json").read_text())
    single = json.loads((work / "train" / "result.json").read_text()) if (work / "train" / "result.json").exists() else None
    backend = "gloo" if device == "cpu" else "nccl"
    note = ""
    if single is not None:
        a, b = single["history"][0]["losses"]["total"], result["history"][0]["losses"]["total"]
        note = f"; first-epoch loss {b:.6f} vs single process {a:.6f}"
    return f"{backend}, 1 process, world_size {result.get('world_size')}, status {result['status']}{note}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="cuda:N (default cuda:0), or cpu to smoke-test the script")
    parser.add_argument("--only", default="train,evaluate,search,ddp", help="comma-separated checks to run")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print("SKIP all: torch sees no CUDA device (torch.cuda.is_available() is False)")
            return 0
        print(f"GPU {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        root = write_tree(work / "tree")
        checks: dict[str, Callable[[], str]] = {
            "train": lambda: check_train(root, work, args.device),
            "evaluate": lambda: check_evaluate(args.device),
            "search": lambda: check_search(work, args.device),
            "ddp": lambda: check_ddp(root, work, args.device),
        }
        failed = 0
        for name in [n.strip() for n in args.only.split(",") if n.strip()]:
            started = time.perf_counter()
            try:
                detail = checks[name]()
                print(f"PASS {name:<8} {detail} ({time.perf_counter() - started:.1f} s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - one line per failed check, then the next check
                failed += 1
                print(f"FAIL {name:<8} {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

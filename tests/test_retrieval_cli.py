"""hashkit encode / search and the Python API (hashkit.load, Index) on real images end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hashkit
from hashkit.api import model_identity
from hashkit.checkpoint import save_checkpoint
from hashkit.index import Index
from hashkit.model import build_model

EXE = str(Path(sys.executable).parent / "hashkit")


def make_checkpoint(path: Path, code_length: int = 16, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model("efficientnet_lite0", code_length, pretrained=False)
    config = {"method": "dpsh", "arch": "efficientnet_lite0", "code_length": code_length, "image_size": 32}
    save_checkpoint(path, {"method": "dpsh", "arch": "efficientnet_lite0", "code_length": code_length,
                           "config": config, "model": model.state_dict(), "method_state": {}})
    return path


def make_images(folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        sub = folder / f"group{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *argv], capture_output=True, text=True)


def test_encode_append_search_match_brute_force(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    first = make_images(tmp_path / "photos", 12, seed=1)
    more = make_images(tmp_path / "more", 6, seed=2)
    index_dir = tmp_path / "index"
    out = cli("encode", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "photos"), "--out", str(index_dir))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["count"] == 12
    listing = tmp_path / "more" / "list.txt"
    listing.write_text("\n".join(str(p.relative_to(tmp_path / "more")) for p in more) + "\n")
    out = cli("encode", "--checkpoint", str(checkpoint), "--images", str(listing), "--out", str(index_dir))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["count"] == 18

    # Reference: encode with the Python API, rank by Hamming distance with ties by insertion order
    # (--ties insertion below; the default tie rule is checked against its own reference in test_serve.py).
    model = hashkit.load(checkpoint)
    ordered = sorted(first, key=lambda p: str(p)) + more
    codes = model.encode([str(p) for p in ordered], progress=False).astype(np.int64)
    query = ordered[3]
    distances = ((codes != codes[3]).sum(axis=1)).tolist()
    expected = sorted(range(len(ordered)), key=lambda j: (distances[j], j))[:5]

    out = cli("search", "--index", str(index_dir), "--checkpoint", str(checkpoint), "--query", str(query), "--k", "5", "--ties", "insertion", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["queries"][0]["results"]
    assert [h["position"] for h in hits] == expected
    assert [h["distance"] for h in hits] == [distances[j] for j in expected]
    ids = [p.relative_to(tmp_path / "photos").as_posix() for p in ordered[:12]]
    ids += [p.relative_to(tmp_path / "more").as_posix() for p in more]
    assert [h["id"] for h in hits] == [ids[j] for j in expected]
    assert hits[0]["distance"] == 0

    radius = sorted(distances)[6]
    out = cli("search", "--index", str(index_dir), "--checkpoint", str(checkpoint), "--query", str(query),
              "--radius", str(radius), "--ties", "insertion", "--json")
    hits = json.loads(out.stdout)["queries"][0]["results"]
    assert [h["position"] for h in hits] == sorted((j for j in range(18) if distances[j] <= radius), key=lambda j: (distances[j], j))


def test_python_api_round_trip(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt", code_length=12)
    paths = [str(p) for p in make_images(tmp_path / "imgs", 5, seed=3)]
    model = hashkit.load(checkpoint)
    codes = model.encode(paths, progress=False)
    assert codes.shape == (5, 12) and set(np.unique(codes)) <= {-1, 1}
    pil = [Image.open(p) for p in paths]
    assert np.array_equal(model.encode(pil, progress=False), codes)
    index = Index.create(tmp_path / "idx", model.code_length, model.identity)
    index.add(codes, ids=paths)
    D, I = index.search(codes[:2], k=1)
    first_equal = [int(np.flatnonzero((codes == codes[q]).all(axis=1))[0]) for q in range(2)]
    assert D[:, 0].tolist() == [0, 0] and I[:, 0].tolist() == first_equal
    assert model.identity == model_identity(torch.load(checkpoint, weights_only=True))


def test_another_model_is_refused(tmp_path: Path) -> None:
    a = make_checkpoint(tmp_path / "a.pt", seed=0)
    b = make_checkpoint(tmp_path / "b.pt", seed=1)
    c = make_checkpoint(tmp_path / "c.pt", code_length=24)
    make_images(tmp_path / "imgs", 3, seed=4)
    index_dir = tmp_path / "index"
    assert cli("encode", "--checkpoint", str(a), "--images", str(tmp_path / "imgs"), "--out", str(index_dir)).returncode == 0
    query = str(next((tmp_path / "imgs").rglob("*.png")))
    for other, expected in ((b, "weights_sha256"), (c, "code length 24 vs 16")):
        out = cli("search", "--index", str(index_dir), "--checkpoint", str(other), "--query", query)
        assert out.returncode == 2 and expected in out.stderr and "Traceback" not in out.stderr
        out = cli("encode", "--checkpoint", str(other), "--images", str(tmp_path / "imgs"), "--out", str(index_dir))
        assert out.returncode == 2 and expected in out.stderr
    assert len(Index.open(index_dir)) == 3  # nothing was appended by the refused encodes
    out = cli("encode", "--checkpoint", str(a), "--images", str(tmp_path / "nothing"), "--out", str(index_dir))
    assert out.returncode == 2 and "does not exist" in out.stderr

"""Distributed encoding: ``torchrun --nproc-per-node 2 -m hashkit encode`` (gloo on the CPU) gives the index a
single process gives (same codes, ids, order), each rank writing its own segment and one manifest commit
making them visible; and the Index.stage / commit_staged pair it is built on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hashkit.errors import HashkitError
from hashkit.index import Index
from test_distributed import free_port, tiny_env
from test_retrieval_cli import EXE, make_checkpoint, make_images


def test_stage_and_commit_equal_one_add(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    codes = rng.choice([-1, 1], size=(50, 24))
    ids = [f"x{i}" for i in range(50)]
    ref = Index.create(tmp_path / "ref", 24)
    ref.add(codes, ids)
    index = Index.create(tmp_path / "idx", 24)
    parts = [index.stage(codes[:20], ids[:20]), index.stage(codes[20:20], []), index.stage(codes[20:], ids[20:])]
    assert parts[1] is None
    assert len(Index.open(tmp_path / "idx")) == 0  # staged files are invisible until the commit
    index.commit_staged(parts)
    for opened in (index, Index.open(tmp_path / "idx")):
        assert len(opened) == 50 and opened.num_segments == 2
        np.testing.assert_array_equal(opened.codes(), ref.codes())
        assert opened.ids(np.arange(50)) == ids
        for a, b in zip(opened.search(codes[:5], 7), ref.search(codes[:5], 7)):
            np.testing.assert_array_equal(a, b)


def test_uncommitted_or_damaged_stage_leaves_the_index_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    codes = rng.choice([-1, 1], size=(10, 16))
    index = Index.create(tmp_path / "idx", 16)
    lost = index.stage(codes, [f"a{i}" for i in range(10)])  # a rank that died before the commit
    index.add(codes[:3], ["b0", "b1", "b2"])  # the next writer deletes its files
    assert not (tmp_path / "idx" / lost["files"]["codes"]["file"]).exists()
    assert len(Index.open(tmp_path / "idx")) == 3
    entry = index.stage(codes, [f"c{i}" for i in range(10)])
    path = tmp_path / "idx" / entry["files"]["codes"]["file"]
    path.write_bytes(bytes(b ^ 1 for b in path.read_bytes()))
    with pytest.raises(HashkitError, match="corrupt"):
        index.commit_staged([entry])
    assert len(Index.open(tmp_path / "idx")) == 3


def test_two_process_encode_equals_single_process(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    make_images(tmp_path / "photos", 13, seed=3)
    env = tiny_env()
    single, multi = tmp_path / "single", tmp_path / "multi"
    argv = ["encode", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "photos"), "--batch-size", "4"]
    one = subprocess.run([EXE, *argv, "--out", str(single)], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "hashkit"]
    two = subprocess.run([*torchrun, *argv, "--out", str(multi)], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    lines = [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["count"] == 13 and lines[0]["processes"] == 2  # rank 0 reports
    a, b = Index.open(single), Index.open(multi)
    assert (len(a), a.num_segments, len(b), b.num_segments) == (13, 1, 13, 2)  # one segment per rank
    np.testing.assert_array_equal(a.codes(), b.codes())
    assert a.ids(np.arange(13)) == b.ids(np.arange(13))
    assert a.model_identity == b.model_identity

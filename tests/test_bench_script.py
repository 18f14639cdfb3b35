"""scripts/bench_cifar10_cpu.py: chunks of the table accumulate in bench.json and render as one table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_cifar10_cpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_cifar10_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = {"arch": "efficientnet_lite0", "image_size": 128, "train_from": "block11", "max_iter": 32, "optimizer": "adam",
          "lr": 5e-4, "lr_schedule": "cosine", "hash_lr_mult": 2.0, "batch_size": 64, "encode_flip": True}  # fmt: skip


def test_chunks_render_as_one_table_in_registry_order(tmp_path: Path) -> None:
    bench = load_script()
    assert bench.load_summary(tmp_path / "missing.json") == {}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({
        "runs": {"ssdh": {"32": {"map": 0.2193, "wall_s": 600, "cpu_s": 1050, "note": "mAP@5000 0.3008"}},
                 "dpsh": {"16": {"map": 0.6936, "wall_s": 531, "cpu_s": 1000}, "64": {"map": 0.7116, "wall_s": 538}}},
        "context": {"cosine": 0.311, "lsh32": 0.1505},
    }))  # fmt: skip
    summary = bench.load_summary(path)
    assert summary["runs"]["dpsh"].keys() == {16, 64}  # JSON's string keys back to bit lengths
    text = bench.render("seed protocol", CONFIG, {"computed": 0, "images": 60000, "seconds": 1.0, "img_per_s": None,
                        "cpu_s": 1.0}, summary["context"], summary["runs"], [16, 32, 64])  # fmt: skip
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("| dpsh") or line.startswith("| ssdh")]
    assert rows[0] == "| dpsh | 0.6936 | – | 0.7116 |"  # registry order: dpsh before ssdh
    assert rows[1] == "| ssdh | – | 0.2193 | – |"
    assert "| *LSH on the frozen features* | – | 0.1505 | – |" in lines  # a bit length without LSH: a dash
    assert "| dpsh | 8.8 (16.7) | – (–) | 9.0 (–) |" in lines
    assert "- ssdh 32 bits: mAP@5000 0.3008" in lines
    assert "flip-averaged encoding; dhn: lamda=0.1" not in text  # DHN is not in these cells
    with_dhn = bench.render("p", CONFIG, {"computed": 0, "images": 1, "seconds": 0, "img_per_s": None, "cpu_s": 0},
                            None, {"dhn": {32: {"map": 0.7}}}, [32])  # fmt: skip
    assert ("flip-averaged encoding; dhn: cached_views=8, max_iter=20, freeze_depthwise=True, drop_path=0.4, "
            "hash_dropout=0.6, lamda=0.1, hash_activation=tanh, pairs=memory") in with_dhn  # its recipes["cpu"], listed
    assert "--set" not in with_dhn
    probe = bench.render("p", {**CONFIG, "overrides": {"max_iter": 20, "freeze_depthwise": True}},
                         {"computed": 0, "images": 1, "seconds": 0, "img_per_s": None, "cpu_s": 0}, None,
                         {"dhn": {32: {"map": 0.7}}}, [32])  # fmt: skip
    assert "; --set (wins over the above): max_iter=20, freeze_depthwise=True." in probe


def test_report_only_prints_the_stored_table_without_touching_data(tmp_path: Path, capsys) -> None:
    bench = load_script()
    root = str(tmp_path / "no-such-cifar.tar")  # --report-only must not need the data
    try:
        bench.main(["--out", str(tmp_path), "--root", root, "--report-only"])
    except SystemExit as exc:
        assert "holds no runs" in str(exc) and str(tmp_path / "bench.json") in str(exc)
    else:
        raise AssertionError("--report-only without a bench.json must fail with a clear message")
    caching = {"computed": 60000, "images": 60000, "seconds": 522.0, "img_per_s": 115.0, "cpu_s": 327.0}
    (tmp_path / "bench.json").write_text(json.dumps({
        "config": {**CONFIG, "threads": 2}, "protocol": "seed protocol", "caching": caching,
        "context": {"cosine": 0.311, "lsh16": 0.1312}, "runs": {"hashnet": {"16": {"map": 0.6918, "wall_s": 522}}},
    }))  # fmt: skip
    assert bench.main(["--out", str(tmp_path), "--root", root, "--report-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "## CIFAR-10 on the CPU (2 torch threads), --cpu-recipe"
    assert "One-time caching: 60000 of 60000 images computed in 8.7 min (115 img/s; 5.5 CPU-min)" in lines
    assert "| hashnet | 0.6918 |" in lines and "| *LSH on the frozen features* | 0.1312 |" in lines

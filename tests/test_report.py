"""hashkit report / plot and scripts/sweep.sh on fake run folders (no training: fast)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from hashkit.cli import main
from hashkit.plotting import DPI, FIGSIZE
from hashkit.report import collect, render_markdown, tabulate

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "scripts" / "sweep.sh"


def fake_curves(bits: int, quality: float) -> dict:
    """Plausible pr_curve / precision_at: recall grows with the Hamming radius, precision falls to 0.1."""
    recall = [min(1.0, (r / bits) ** (1 - quality) if r else 0.02 * quality) for r in range(bits + 1)]
    precision = [0.1 + (quality - 0.1) * (1 - rc) ** 0.5 for rc in recall]
    precision_at = {str(n): quality - 0.1 * quality * n / 1000 for n in range(100, 1001, 100)}
    return {"pr_curve": {"precision": precision, "recall": recall}, "precision_at": precision_at}


def write_run(
    root: Path,
    name: str,
    method: str = "dpsh",
    bits: int = 32,
    seed: int = 0,
    map_value: float | None = 0.7,
    status: str = "finished",
    dataset: str = "cifar10",
    topk: int | None = None,
    curves: bool = False,
    error: str | None = None,
    **config_extra,
) -> Path:
    """A run folder with a result.json shaped like hashkit.trainer.Trainer._write_result writes it."""
    folder = root / name
    folder.mkdir(parents=True)
    config = {
        "method": method, "dataset": dataset, "code_length": bits, "seed": seed, "out": str(folder),
        "arch": "efficientnet_lite0", "pretrained": True, "image_size": 64, "lr": 1e-4, "max_iter": 3,
        "topk": topk, "num_query": None, "num_train": None, "num_database": None, "metrics": "map",
        "root": f"/data/{seed}", "gpu": None, "num_workers": 0, "evaluate_interval": 10, **config_extra,
    }
    metrics = {} if map_value is None else {"map": map_value, "topk": topk, "num_query": 1000, "num_database": 59000}
    if curves and map_value is not None:
        metrics.update(fake_curves(bits, map_value))
    result = {
        "status": status, "hashkit_version": "0.1.0", "git_commit": None, "config": config,
        "dataset": {"dataset": dataset, "num_train": 5000, "num_query": 1000, "num_database": 59000,
                    "num_classes": 10, "protocol": f"... seed {seed}"},
        "metrics": metrics, "map": map_value, "best_map": None if map_value is None else map_value + 0.01,
        "epochs_done": 3 if status == "finished" else 1, "history": [], "timings": {},
        "checkpoint": str(folder / "checkpoint.pt"),
    }
    if error:
        result["error"] = error
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return folder


def mean_std(values: list[float]) -> tuple[float, float]:
    """Slow obvious reference: mean and the sample standard deviation (n - 1 in the denominator)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, value in enumerate([0.71, 0.69, 0.735]):
        write_run(root / "sweep", f"dpsh-32b-seed{seed}", "dpsh", 32, seed, value)
    for seed, value in enumerate([0.60, 0.64]):
        write_run(root / "sweep", f"dpsh-16b-seed{seed}", "dpsh", 16, seed, value)
    write_run(root / "sweep", "hashnet-32b-seed0", "hashnet", 32, 0, 0.55)
    write_run(root / "sweep", "hashnet-16b-seed0", "hashnet", 16, 0, None, status="failed", error="the loss became nan")
    write_run(root / "sweep", "hashnet-16b-seed1", "hashnet", 16, 1, None, status="running")
    (root / "broken").mkdir()
    (root / "broken" / "result.json").write_text('{"status": "finish')
    # scripts/sweep.sh's log of a run that died before the trainer wrote result.json.
    (root / "sweep" / "dhn-16b-seed0").mkdir()
    (root / "sweep" / "dhn-16b-seed0" / "train.log").write_text("loading\rhashkit: error: --root x does not exist\n\n")
    # Same method and bits but mAP@1000 instead of mAP@ALL: not comparable, so its own row.
    write_run(root / "other", "dpsh-32b-top1000", "dpsh", 32, 0, 0.8, topk=1000)
    return root


def table_lines(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_markdown_table_cells_and_problems(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(runs)]) == 0
    out = capsys.readouterr().out
    rows = table_lines(out)
    assert rows[0] == ["method", "dataset", "topk", "16 bits", "32 bits"]
    body = {tuple(r[:3]): r[3:] for r in rows[1:]}
    m32, s32 = mean_std([0.71, 0.69, 0.735])
    m16, s16 = mean_std([0.60, 0.64])
    assert body[("dpsh", "cifar10", "ALL")] == [f"{m16:.4f} ± {s16:.4f} (2)", f"{m32:.4f} ± {s32:.4f} (3)"]
    assert body[("dpsh", "cifar10", "1000")] == ["–", "0.8000"]
    assert body[("hashnet", "cifar10", "ALL")] == ["–", "0.5500"]
    assert len(body) == 3
    # The caption carries what every row shares.
    assert "Shared by all rows: efficientnet_lite0 (ImageNet-pretrained), 64 px, 1000 queries / 5000 train / 59000 database." in out
    below = out.split("Not in the table (4):")[1]
    assert f"{runs / 'sweep' / 'dhn-16b-seed0'}: no result.json — failed before training, or still starting: hashkit" in below
    assert below.count("hashkit: error: --root x does not exist") == 1
    assert f"{runs / 'sweep' / 'hashnet-16b-seed0'}: failed — the loss became nan" in below
    assert f"{runs / 'sweep' / 'hashnet-16b-seed1'}: running — epoch 1/3" in below
    assert f"{runs / 'broken' / 'result.json'}: unreadable — not valid JSON" in below


def test_rows_split_on_training_settings_and_show_them(tmp_path: Path) -> None:
    write_run(tmp_path, "a0", seed=0, map_value=0.5, lr=1e-4)
    # A newer hashkit lists more config keys (other methods' hyper-parameters, unset): still the same setting.
    write_run(tmp_path, "a1", seed=1, map_value=0.6, lr=1e-4, sigmoid_alpha=None, train_list=None)
    write_run(tmp_path, "b0", seed=0, map_value=0.3, lr=1e-3)
    # init_from differs per seed (each starts from its own checkpoint) but is the same setting.
    write_run(tmp_path, "c0", method="dihn", seed=0, map_value=0.4, init_from="x/seed0/checkpoint.pt")
    write_run(tmp_path, "c1", method="dihn", seed=1, map_value=0.5, init_from="x/seed1/checkpoint.pt")
    table = tabulate(*collect(tmp_path))
    assert [(r.method, r.shown) for r in table.rows] == [("dihn", {}), ("dpsh", {"lr": 0.0001}), ("dpsh", {"lr": 0.001})]
    assert table.rows[0].cells[32].n == 2
    assert [r.cells[32].values for r in table.rows[1:]] == [[0.5, 0.6], [0.3]]
    rows = table_lines(render_markdown(table))
    assert rows[0] == ["method", "dataset", "setting", "32 bits"]
    assert rows[2][:3] == ["dpsh", "cifar10", "lr=0.0001"]


def test_duplicate_seed_is_noted(tmp_path: Path) -> None:
    write_run(tmp_path, "a", seed=0, map_value=0.5)
    write_run(tmp_path, "a-again", seed=0, map_value=0.5)
    table = tabulate(*collect(tmp_path))
    assert table.rows[0].cells[32].n == 2
    assert len(table.notes) == 1 and "seed 0 appears in several runs" in table.notes[0]


def test_csv_and_json_formats(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(runs), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    records = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(records) == 4  # dpsh@ALL 16 & 32, dpsh@1000 32, hashnet 32 (one line per cell)
    dpsh32 = next(r for r in records if r["method"] == "dpsh" and r["code_length"] == "32" and r["topk"] == "ALL")
    m32, s32 = mean_std([0.71, 0.69, 0.735])
    assert dpsh32["n"] == "3" and dpsh32["seeds"] == "0 1 2" and dpsh32["metric"] == "map"
    assert float(dpsh32["mean"]) == pytest.approx(m32, abs=1e-12)
    assert float(dpsh32["std"]) == pytest.approx(s32, abs=1e-12)
    single = next(r for r in records if r["method"] == "hashnet")
    assert single["std"] == "" and single["num_database"] == "59000"
    assert captured.err.count("not in the table") == 4  # problems go to stderr so stdout stays CSV

    assert main(["report", str(runs), "--format", "json", "--metric", "best_map"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric"] == "best_map" and doc["bits"] == [16, 32] and doc["varying"] == ["topk"]
    cell = next(r for r in doc["rows"] if r["method"] == "dpsh" and r["settings"]["topk"] == "ALL")["cells"]["16"]
    m16, s16 = mean_std([0.61, 0.65])
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(m16) and cell["std"] == pytest.approx(s16)
    assert {p["status"] for p in doc["problems"]} == {"failed", "running", "unreadable", "no result.json"}


def test_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no result.json under" in capsys.readouterr().err
    write_run(tmp_path, "f", status="failed", map_value=None, error="boom")
    assert main(["report", str(tmp_path)]) == 1  # nothing to tabulate, but the failure is still listed
    captured = capsys.readouterr()
    assert "failed — boom" in captured.out and "no finished run" in captured.err


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_png_of_expected_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_run(tmp_path, "dpsh-32", "dpsh", 32, map_value=0.72, curves=True)
    b = write_run(tmp_path, "dpsh-16", "dpsh", 16, map_value=0.65, curves=True)
    c = write_run(tmp_path, "hashnet-32", "hashnet", 32, map_value=0.6, curves=True)
    out = tmp_path / "fig" / "curves.png"
    assert main(["plot", str(a), str(b / "result.json"), str(c), "--out", str(out), "--title", "CIFAR-10"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert out.stat().st_size > 10_000
    assert png_size(out) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert not [p for p in out.parent.iterdir() if p.name != "curves.png"]  # no temporary file left


def test_plot_labels_and_evaluation_json(tmp_path: Path) -> None:
    from hashkit.plotting import load_curves, run_labels

    a = write_run(tmp_path, "a", "hashnet", 32, seed=0, curves=True)
    b = write_run(tmp_path, "b", "hashnet", 32, seed=1, map_value=0.6)
    # b's result.json lacks the curves; the saved `hashkit evaluate --json` beside it has them.
    evaluation = {"method": "hashnet", "dataset": "cifar10", "code_length": 32, "map": 0.6, **fake_curves(32, 0.6)}
    (b / "evaluation.json").write_text(json.dumps(evaluation))
    curves = load_curves([a, b])
    assert curves[1].source == b / "evaluation.json"
    assert run_labels(curves) == ["HashNet 32 bits seed 0", "HashNet 32 bits seed 1"]  # b's seed from its result.json
    (b / "result.json").unlink()
    assert run_labels(load_curves([a, b])) == ["HashNet 32 bits (a)", "HashNet 32 bits (b)"]  # evaluate output has no seed
    c = write_run(tmp_path, "c", "hashnet", 32, seed=1, curves=True)
    d = write_run(tmp_path, "d", "dpsh", 32, seed=0, curves=True)
    assert run_labels(load_curves([a, c, d])) == ["HashNet 32 bits seed 0", "HashNet 32 bits seed 1", "DPSH 32 bits"]
    assert curves[0].precision_at[0] == (100, pytest.approx(0.7 - 0.007))
    assert len(curves[0].recall) == 33


def test_plot_missing_metrics_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = write_run(tmp_path, "good", curves=True)
    bare = write_run(tmp_path, "bare")
    out = tmp_path / "x.png"
    assert main(["plot", str(good), str(bare), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bare / 'result.json'} has no pr_curve or precision_at" in err
    assert f"hashkit evaluate --checkpoint {bare / 'checkpoint.pt'} --metrics map,pr_curve,precision_at --json" in err
    assert "--metrics" in err and not out.exists()
    assert main(["plot", str(good), "--out", str(tmp_path / "x.bmpx")]) == 2
    assert "unknown image type" in capsys.readouterr().err


def test_sweep_script_syntax() -> None:
    subprocess.run(["bash", "-n", str(SWEEP)], check=True)


def test_sweep_loops_over_grid_and_reports(tmp_path: Path) -> None:
    """A fake hashkit records its calls; one run fails, one is already finished; the sweep goes on and reports."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake-hashkit"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        'if [ "$1" = train ]; then\n'
        '  out=""; prev=""\n'
        '  for a in "$@"; do [ "$prev" = --out ] && out="$a"; prev="$a"; done\n'
        '  case "$out" in *dhn-16b-seed1) echo "boom" >&2; exit 3;; esac\n'
        '  echo \'{"status": "finished"}\' > "$out/result.json"\n'
        "fi\n"
        'if [ "$1" = report ]; then echo "TABLE"; fi\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "runs" / "sweep"
    runs = out / "cifar10"
    (runs / "dpsh-32b-seed0").mkdir(parents=True)
    (runs / "dpsh-32b-seed0" / "result.json").write_text('{\n  "status": "finished"\n}\n')
    (runs / "dhn-32b-seed0").mkdir(parents=True)
    (runs / "dhn-32b-seed0" / "result.json").write_text('{"status": "failed"}')
    env = {
        **os.environ, "HASHKIT": str(fake), "METHODS": "dpsh dhn", "BITS": "16 32", "SEEDS": "0 1",
        "DATASET": "cifar10", "ROOT": str(tmp_path), "OUT": str(out), "EXTRA": "--image-size 64 --max-iter 2",
    }
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stderr  # one run failed
    calls = log.read_text().splitlines()
    trains = [c for c in calls if c.startswith("train ")]
    expected = {f"{m}-{b}b-seed{s}" for m in ("dpsh", "dhn") for b in (16, 32) for s in (0, 1)} - {"dpsh-32b-seed0"}
    assert {c.split("--out ")[1].split()[0].rsplit("/", 1)[1] for c in trains} == expected
    for c in trains:
        assert "--dataset cifar10" in c and f"--root {tmp_path}" in c and c.endswith("--image-size 64 --max-iter 2")
    retried = next(c for c in trains if "dhn-32b-seed0" in c)
    assert "--overwrite" in retried  # the failed run is re-run in place
    assert calls[-1] == f"report {out}"
    assert "TABLE" in proc.stdout
    assert (out / "report.md").read_text() == "TABLE\n"
    summary = (out / "sweep.tsv").read_text().splitlines()
    failed = [line for line in summary if "\tfailed\t" in line]
    assert len(failed) == 1 and "dhn-16b-seed1" in failed[0] and "\t3\t" in failed[0]
    assert "boom" in (runs / "dhn-16b-seed1" / "train.log").read_text()
    assert "dhn-16b-seed1" in proc.stderr  # the failures are repeated at the end


def test_sweep_dry_run_runs_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "HASHKIT": "/nonexistent/hashkit", "METHODS": "dpsh", "BITS": "12 24", "SEEDS": "0",
           "ROOT": str(tmp_path), "OUT": str(tmp_path / "o"), "DRY_RUN": "1"}
    proc = subprocess.run(["bash", str(SWEEP)], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("/nonexistent/hashkit train --method dpsh") == 2
    assert not (tmp_path / "o").exists()

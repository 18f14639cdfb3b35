"""The documentation: the site builds strictly, generated parts match the code and the committed result cells."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

from hashkit.catalogue import FAMILIES, all_methods
from hashkit.cli import main as cli
from hashkit.registry import METHODS

REPO = Path(__file__).resolve().parents[1]
CELL_FIELDS = ("method", "dataset", "bits", "recipe", "protocol", "seed", "map", "times", "host", "commit", "source")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, anchor or missing page fails; generated pages are filled in."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    site = tmp_path / "site"
    build(load_config(str(REPO / "mkdocs.yml"), site_dir=str(site), strict=True))
    cli_page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("train", "evaluate", "encode", "search", "report", "plot", "serve", "methods"):
        assert f"hashkit {command}" in cli_page
    assert "--code-length" in cli_page and "generated:" not in cli_page
    for info in all_methods():
        page = (site / "methods" / info.family / "index.html").read_text(encoding="utf-8")
        assert f"<code>{info.name}</code>" in page
        for key in METHODS.get(info.name).hyperparameters:
            assert "--" + key.replace("_", "-") in page, f"{key} of {info.name} is not on its family page"


def test_every_method_has_a_family_page() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for name in METHODS.names():
        family = METHODS.get(name).family
        assert family in FAMILIES, f"{name} declares family {family!r}; valid: {', '.join(FAMILIES)}"
        assert METHODS.get(name).reference_code, f"{name} declares no reference_code"
        assert f"methods/{family}.md" in nav
        assert (REPO / "docs" / "methods" / f"{family}.md").exists()


def test_published_tables_equal_the_result_files() -> None:
    """docs/results.md's tables and README's method table are what the committed cells generate."""
    from hashkit.docs_gen import REPORT_BLOCK, refresh_readme, refresh_reports

    results = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert len(REPORT_BLOCK.findall(results)) >= 5
    assert refresh_reports(results) == results, "docs/results.md is stale: run python -m hashkit.docs_gen"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- generated: methods-table -->" in readme
    assert refresh_readme(readme) == readme, "README.md's method table is stale: run python -m hashkit.docs_gen"


def test_result_cells_are_complete_and_tabulated_as_written() -> None:
    """Every cell carries its provenance; each table cell is the mean of its files (an independent reading)."""
    from hashkit.report import PROTOCOL_KEYS, collect, tabulate

    folders = sorted(p for p in (REPO / "results").iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        expected: dict[tuple[str, int, str], list[float]] = {}
        for path in sorted(folder.glob("*.json")):
            cell = json.loads(path.read_text(encoding="utf-8"))
            missing = [f for f in CELL_FIELDS if f not in cell]
            assert not missing, f"{path} lacks {missing}"
            assert 0 < cell["map"] < 1 and isinstance(cell["bits"], int)
            setting = json.dumps(cell.get("settings") or {}, sort_keys=True)
            expected.setdefault((cell["method"], cell["bits"], setting), []).append(cell["map"])
        runs, problems = collect(folder)
        assert not problems
        table = tabulate(runs)
        got = {}
        for row in table.rows:
            setting = json.dumps({k: v for k, v in row.settings.items() if k not in PROTOCOL_KEYS}, sort_keys=True)
            for bits, cell in row.cells.items():
                got[(row.method, bits, setting)] = cell.mean
        assert {key: round(statistics.fmean(v), 12) for key, v in expected.items()} == {
            key: round(v, 12) for key, v in got.items()
        }


def test_report_reads_cells_beside_runs_and_wall_time(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cell = json.loads((REPO / "results" / "cifar10-cpu" / "jmlh-32.json").read_text(encoding="utf-8"))
    (tmp_path / "a.json").write_text(json.dumps(cell))
    (tmp_path / "b.json").write_text(json.dumps(cell | {"seed": 1, "map": 0.5, "times": {"wall_min": 3.0}}))
    (tmp_path / "notes.json").write_text('{"unrelated": true}')  # not a cell, not a result.json: ignored
    assert cli(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{statistics.fmean([cell['map'], 0.5]):.4f} ± {statistics.stdev([cell['map'], 0.5]):.4f} (2)" in out
    assert cli(["report", str(tmp_path), "--metric", "wall_min"]) == 0
    minutes = [cell["times"]["wall_min"], 3.0]
    assert f"{statistics.fmean(minutes):.1f} ± {statistics.stdev(minutes):.1f} (2)" in capsys.readouterr().out


def test_train_help_per_method(capsys: pytest.CaptureFixture) -> None:
    """``train --help`` stays short and method-free; ``--method NAME --help`` adds the method and its recipes."""
    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    general = capsys.readouterr().out
    assert "--lamda" not in general and "hashkit train --method NAME --help" in " ".join(general.split())
    with pytest.raises(SystemExit):
        cli(["train", "--method", "jmlh", "--help"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 150
    flat = " ".join(text.split())
    assert "--lamda" in flat and "(default: 0.1)" in flat and "--eta" not in flat
    assert "(jmlh: seed 1e-05, cpu 0.0005)" in flat  # --lr under each recipe
    assert "CISiPLab/cisip-FIRe" in flat


def test_method_flags_parse_without_help() -> None:
    from hashkit.cli import build_parser

    args = build_parser().parse_args(["train", "--method", "jmlh", "--lamda", "0.3"])
    assert args.lamda == 0.3


def test_methods_command_lists_every_method(capsys: pytest.CaptureFixture) -> None:
    assert cli(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [info.name for info in all_methods()]
    assert cli(["methods", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == METHODS.names()
    jmlh = json.loads((REPO / "results" / "cifar10-cpu" / "jmlh-32.json").read_text(encoding="utf-8"))["map"]
    assert rows["jmlh"]["cpu_map"]["32"] == jmlh and rows["jmlh"]["family"] == "classifier"
    assert rows["ssdh"]["supervision"] == "unsupervised" and rows["dpsh"]["reference_code"]


def test_readme_is_short_and_keeps_the_ci_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in readme
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / target).exists(), f"README links to missing {target}"


def test_add_cell_writes_a_cell_from_a_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """``python -m hashkit.docs_gen --add-cell RUN`` turns a finished run's result.json into a complete cell that
    the tables read back with the run's mAP (rounded to 4 places); an unfinished run is refused in one line."""
    from hashkit import docs_gen
    from hashkit.report import collect, tabulate

    monkeypatch.setattr(docs_gen, "REPO", tmp_path)
    for name in ("README.md", "docs/results.md"):  # main() then refreshes the generated blocks of these
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((REPO / name).read_text(encoding="utf-8"), encoding="utf-8")
    shutil.copytree(REPO / "results", tmp_path / "results")
    run = tmp_path / "runs" / "itq-32"
    run.mkdir(parents=True)
    result = {
        "status": "finished", "git_commit": "abc123", "map": 0.297812, "timings": {"train_s": 90.0, "eval_s": 30.0},
        "config": {"method": "itq", "dataset": "cifar10", "code_length": 32, "recipe": "cpu", "seed": 0,
                   "arch": "efficientnet_lite0", "pretrained": True, "image_size": 128},
        "metrics": {"map": 0.297812, "topk": None, "num_query": 1000, "num_database": 59000},
        "dataset": {"dataset": "cifar10", "num_train": 5000, "num_query": 1000, "num_database": 59000},
    }  # fmt: skip
    (run / "result.json").write_text(json.dumps(result))
    assert docs_gen.main(["--add-cell", str(run), "--table", "t", "--source", "hashkit train …", "--threads", "1",
                          "--wall-min", "7.25"]) == 0  # fmt: skip
    cell = json.loads((tmp_path / "results" / "t" / "itq-32.json").read_text(encoding="utf-8"))
    assert not [f for f in CELL_FIELDS if f not in cell]
    assert (cell["map"], cell["commit"], cell["threads"]) == (0.2978, "abc123", 1)
    assert cell["run"] == "runs/itq-32"  # from the runs/ component on: no machine's absolute path
    assert cell["times"] == {"train_min": 1.5, "eval_min": 0.5, "wall_min": 7.2}
    assert {k: cell["protocol"][k] for k in ("topk", "num_train", "num_database")} == {
        "topk": "ALL", "num_train": 5000, "num_database": 59000}
    runs, problems = collect(tmp_path / "results" / "t")
    assert not problems and tabulate(runs).rows[0].cells[32].mean == 0.2978
    (run / "result.json").write_text(json.dumps(result | {"status": "running"}))
    assert docs_gen.main(["--add-cell", str(run), "--table", "t"]) == 2
    assert "only a finished run with an mAP makes a result cell" in capsys.readouterr().err

    # --topk K: the cell of another cut-off from the same checkpoint (hashkit.run.evaluate at topk K)
    import hashkit.run

    (run / "result.json").write_text(json.dumps(result))
    calls = []

    def fake_evaluate(checkpoint: str, overrides: dict) -> dict:
        calls.append((checkpoint, overrides))
        return {"map": 0.49251, "topk": overrides["topk"]}

    monkeypatch.setattr(hashkit.run, "evaluate", fake_evaluate)
    assert docs_gen.main(["--add-cell", str(run), "--table", "t1000", "--topk", "1000"]) == 2  # no checkpoint.pt
    assert "no checkpoint.pt" in capsys.readouterr().err
    (run / "checkpoint.pt").write_bytes(b"")
    assert docs_gen.main(["--add-cell", str(run), "--table", "t1000", "--topk", "1000"]) == 0
    cell = json.loads((tmp_path / "results" / "t1000" / "itq-32.json").read_text(encoding="utf-8"))
    assert calls == [(str(run / "checkpoint.pt"), {"topk": 1000})]
    assert (cell["map"], cell["protocol"]["topk"], cell["commit"]) == (0.4925, 1000, "abc123")
    assert "reevaluate_min" in cell["times"]

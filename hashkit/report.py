"""Collect the ``result.json`` files of many runs into one paper-style table (pure functions, no I/O but reading).

Rows are method × dataset × *setting*, columns are code lengths, and a cell is the metric's mean ± sample
standard deviation (ddof=1) over the finished runs of that row and length, with their number n. Runs are only
averaged together when their numbers are comparable: the row key holds everything that changes the number
except the seed and the code length, i.e. the effective mAP cut-off (``topk``), the split sizes that define
the protocol (``num_query``, ``num_train``, ``num_database``), the backbone (``arch``, ``pretrained``,
``image_size``) and every other training setting in the run's config (learning rate, epochs, method
hyper-parameters, …). Settings that are the same for every row go into the caption; protocol settings that
differ become table columns; other settings that differ between rows of one method and dataset are shown in
a ``setting`` column. Failed, unfinished and unreadable runs are never dropped silently: they are returned
as :class:`Problem` entries to be listed below the table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from hashkit.config import keys_of_kind
from hashkit.errors import HashkitError

METRICS = ("map", "best_map", "wall_min")
DIGITS = {"map": 4, "best_map": 4, "wall_min": 1}  # decimals a cell shows
# A committed result cell (results/<table>/<method>-<bits>.json): one measured number with its provenance,
# for results whose run folders are not kept (docs/results.md is generated from them).
CELL_KIND = "hashkit-result-cell"
# Settings that define the retrieval protocol and the backbone (the "protocol" kind of hashkit.config, less
# the keys that index the table): differences are shown as columns.
PROTOCOL_KEYS = ("arch", "pretrained", "image_size", "topk", "num_query", "num_train", "num_database")
# The keys that index the table itself, plus every "runtime" key of hashkit.config (where files live, how
# fast it ran, what else was computed): they never change the number. The recipe's name is ignored too:
# the values it set are compared one by one.
IGNORED_KEYS = frozenset({"method", "dataset", "code_length", "seed", "command", "verbose", "run", "recipe", "cpu_recipe"}) | keys_of_kind("runtime")
LOG_NAME = "train.log"  # scripts/sweep.sh keeps each run's output here
PROTOCOL_LABELS = {
    "arch": "arch", "pretrained": "pretrained", "image_size": "image", "topk": "topk",
    "num_query": "query", "num_train": "train", "num_database": "database",
}


@dataclass(frozen=True)
class Run:
    """One finished run: where it is, what it trained, under which setting, and its metric value."""

    path: Path
    method: str
    dataset: str
    code_length: int
    seed: Any
    settings: tuple[tuple[str, Any], ...]  # sorted (key, value) pairs: protocol keys first, then the rest
    value: float


@dataclass(frozen=True)
class Problem:
    """A result.json that is not in the table: failed, unfinished, unreadable, or missing the metric."""

    path: Path
    status: str
    reason: str


@dataclass
class Cell:
    """The runs of one row at one code length."""

    values: list[float] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (ddof=1); None for a single run."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self, digits: int = 4) -> str:
        """'0.7012 ± 0.0031 (3)' for several runs, '0.7012' for one."""
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


@dataclass
class Row:
    method: str
    dataset: str
    settings: dict[str, Any]
    cells: dict[int, Cell] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=dict)  # non-protocol settings that tell this row apart


@dataclass
class Table:
    """The result of :func:`tabulate`: rows, code lengths, caption facts, problems and notes."""

    metric: str
    rows: list[Row]
    bits: list[int]
    constant: dict[str, Any]  # protocol settings shared by every row (the caption)
    varying: list[str]  # protocol settings that differ between rows (extra columns)
    problems: list[Problem]
    notes: list[str]


def find_results(root: str | Path, allow_empty: bool = False) -> tuple[list[Path], list[Path]]:
    """(every result.json under ``root``, recursively and sorted; the run folders that have only a train.log).

    ``root`` may also be one result.json. A folder with scripts/sweep.sh's train.log but no result.json is a
    run that failed before training (bad flag, missing data) or is still starting: it is reported, not skipped.
    """
    root = Path(root)
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise HashkitError(f"{root} does not exist; pass the folder your runs were written to (e.g. runs/)")
    found = sorted(root.rglob("result.json"))
    orphans = sorted(log.parent for log in root.rglob(LOG_NAME) if not (log.parent / "result.json").exists())
    if not found and not orphans and not allow_empty:
        raise HashkitError(f"no result.json under {root}; pass the folder that holds the run folders of hashkit train")
    return found, orphans


def find_cells(root: str | Path) -> list[Path]:
    """Every committed result cell under ``root`` (JSON files other than result.json marked ``CELL_KIND``)."""
    root = Path(root)
    candidates = [root] if root.is_file() else sorted(root.rglob("*.json")) if root.is_dir() else []
    return [path for path in candidates if path.name != "result.json" and _is_cell(path)]


def _is_cell(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return CELL_KIND in handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def cell_as_result(cell: dict[str, Any]) -> dict[str, Any]:
    """A result cell in the shape of a result.json, so cells and runs are tabulated by the same code."""
    protocol = cell.get("protocol") or {}
    config = {
        "method": cell.get("method"), "dataset": cell.get("dataset"), "code_length": cell.get("bits"),
        "seed": cell.get("seed"), "recipe": cell.get("recipe"),
        **{k: protocol.get(k) for k in ("arch", "pretrained", "image_size")},
        **(cell.get("settings") or {}),
    }
    metrics = {k: protocol.get(k) for k in ("topk", "num_query", "num_train", "num_database")}
    times = cell.get("times") or {}
    return {"config": config, "metrics": metrics, "status": "finished", "map": cell.get("map"), "wall_min": times.get("wall_min")}


def read_result(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result dict, None) or (None, why it cannot be used); a result cell is read as a result."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    try:
        result = json.loads(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc}); the run was probably killed mid-write or the file was edited"
    if isinstance(result, dict) and result.get("kind") == CELL_KIND:
        result = cell_as_result(result)
    if not isinstance(result, dict) or not isinstance(result.get("config"), dict):
        return None, "not a hashkit result.json (no 'config' object)"
    missing = [k for k in ("method", "dataset", "code_length") if k not in result["config"]]
    if missing:
        return None, f"not a hashkit result.json (config lacks {', '.join(missing)})"
    return result, None


def run_settings(result: dict[str, Any]) -> dict[str, Any]:
    """Everything in a result that makes its number comparable or not (see the module docstring)."""
    config = result["config"]
    summary = result.get("dataset") if isinstance(result.get("dataset"), dict) else {}
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    settings: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        if key == "topk":
            value = metrics.get("topk", config.get("topk"))
            value = value or "ALL"  # None and 0 both mean the whole database
        elif key.startswith("num_"):
            # The split sizes actually drawn (the config holds None for "the protocol's default").
            value = metrics.get(key, summary.get(key, config.get(key)))
        else:
            value = config.get(key)
        settings[key] = value
    for key, value in sorted(config.items()):
        if key in IGNORED_KEYS or key in PROTOCOL_KEYS:
            continue
        if key == "init_from":
            # Each seed starts from its own checkpoint path; what matters is that it starts from one.
            value = "checkpoint" if value else None
        if value is None:
            # Unset / not this method's: the same as absent (configs of newer hashkit versions list more keys).
            continue
        settings[key] = value
    return settings


def collect(root: str | Path, metric: str = "map") -> tuple[list[Run], list[Problem]]:
    """Read every result.json under ``root``: finished runs with the metric, and the problems of the rest."""
    if metric not in METRICS:
        raise HashkitError(f"--metric {metric!r} is unknown; valid: {', '.join(METRICS)}")
    runs: list[Run] = []
    problems: list[Problem] = []
    cells = find_cells(root)
    results, orphans = find_results(root, allow_empty=bool(cells))
    results = sorted({*results, *cells})
    for folder in orphans:
        problems.append(
            Problem(folder, "no result.json", f"failed before training, or still starting: {_last_line(folder / LOG_NAME)}")
        )
    for path in results:
        where = path if path in cells else path.parent  # a cell is its own file, a run its folder
        result, why = read_result(path)
        if result is None:
            problems.append(Problem(path, "unreadable", why or ""))
            continue
        status = str(result.get("status", "unknown"))
        if status != "finished":
            problems.append(Problem(where, status, _unfinished_reason(result, status)))
            continue
        value = result.get(metric) if metric != "wall_min" else _wall_minutes(result)
        if path in cells and not _is_number(value):
            continue  # a cell measures what it measures (e.g. no time): nothing is missing
        if not _is_number(value):
            unlabelled = (result.get("dataset") or {}).get("num_classes") == 0
            why = "trained on unlabelled data: no ground truth, no mAP" if unlabelled else (
                f"finished but its result.json has no finite {metric} value")
            problems.append(Problem(where, status, why))
            continue
        config = result["config"]
        try:
            bits = int(config["code_length"])
        except (TypeError, ValueError):
            problems.append(Problem(where, "unreadable", f"code_length {config['code_length']!r} is not a number"))
            continue
        settings = run_settings(result)
        runs.append(
            Run(
                path=where,
                method=str(config["method"]),
                dataset=str(config["dataset"]),
                code_length=bits,
                seed=config.get("seed"),
                settings=tuple((k, _hashable(v)) for k, v in settings.items()),
                value=float(value),
            )
        )
    return runs, sorted(problems, key=lambda p: str(p.path))


def tabulate(runs: Iterable[Run], problems: Iterable[Problem] = (), metric: str = "map") -> Table:
    """Group runs into rows (method, dataset, setting) × code-length cells; see the module docstring."""
    rows: dict[tuple, Row] = {}
    for run in runs:
        key = (run.dataset, run.method, run.settings)
        row = rows.setdefault(key, Row(run.method, run.dataset, dict(run.settings)))
        cell = row.cells.setdefault(run.code_length, Cell())
        cell.values.append(run.value)
        cell.seeds.append(run.seed)
        cell.paths.append(run.path)
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1], repr(k[2])))]
    bits = sorted({b for row in ordered for b in row.cells})

    constant: dict[str, Any] = {}
    varying: list[str] = []
    for key in PROTOCOL_KEYS:
        values = {repr(row.settings.get(key)) for row in ordered}
        if len(values) > 1:
            varying.append(key)
        elif ordered:
            constant[key] = ordered[0].settings.get(key)

    # Other settings: show those that differ between rows of the same method and dataset.
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in ordered:
        groups.setdefault((row.dataset, row.method), []).append(row)
    for members in groups.values():
        if len(members) < 2:
            continue
        keys = sorted({k for row in members for k in row.settings if k not in PROTOCOL_KEYS})
        differing = [k for k in keys if len({repr(row.settings.get(k)) for row in members}) > 1]
        for row in members:
            row.shown = {k: row.settings.get(k) for k in differing}

    notes = []
    for row in ordered:
        for length, cell in sorted(row.cells.items()):
            repeated = sorted({str(s) for s in cell.seeds if cell.seeds.count(s) > 1})
            if repeated:
                notes.append(
                    f"{row.method} {row.dataset} {length} bits: seed {', '.join(repeated)} appears in several runs "
                    f"({', '.join(str(p) for p in cell.paths)}); each counts in n — delete the copies you do not want"
                )
    return Table(metric, ordered, bits, constant, varying, list(problems), notes)


def _wall_minutes(result: dict[str, Any]) -> float | None:
    """A result's wall time in minutes: a cell's ``wall_min``, else the sum of a run's ``timings``."""
    if _is_number(result.get("wall_min")):
        return float(result["wall_min"])
    timings = result.get("timings")
    if isinstance(timings, dict) and timings and all(_is_number(v) for v in timings.values()):
        return sum(timings.values()) / 60
    return None


def render_markdown(table: Table) -> str:
    """The table as a Markdown document: caption, table, then everything that is not in it."""
    lines = [caption(table), ""]
    if table.rows:
        show_setting = any(row.shown for row in table.rows)
        header = ["method", "dataset"] + [PROTOCOL_LABELS[k] for k in table.varying]
        header += ["setting"] * show_setting + [f"{b} bits" for b in table.bits]
        lines.append("| " + " | ".join(header) + " |")
        aligns = ["---"] * (len(header) - len(table.bits)) + ["---:"] * len(table.bits)
        lines.append("|" + "|".join(aligns) + "|")
        for row in table.rows:
            cells = [row.method, row.dataset] + [_fmt(row.settings.get(k)) for k in table.varying]
            if show_setting:
                cells.append(_setting_text(row.shown) or "–")
            cells += [row.cells[b].text(DIGITS[table.metric]) if b in row.cells else "–" for b in table.bits]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("(no finished runs)")
    if table.problems:
        lines += ["", f"Not in the table ({len(table.problems)}):"]
        lines += [f"- {problem_line(p)}" for p in table.problems]
    if table.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """One CSV line per table cell (tidy: mean, std, n and seeds as separate columns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "dataset", *PROTOCOL_KEYS, "setting", "code_length", "metric", "n", "mean", "std", "seeds", "runs"])
    for row in table.rows:
        for length, cell in sorted(row.cells.items()):
            std = cell.std
            writer.writerow([
                row.method, row.dataset, *[_fmt(row.settings.get(k)) for k in PROTOCOL_KEYS], _setting_text(row.shown),
                length, table.metric, cell.n, repr(cell.mean), "" if std is None else repr(std),
                " ".join(str(s) for s in cell.seeds), " ".join(str(p) for p in cell.paths),
            ])
    return buffer.getvalue()


def render_json(table: Table) -> str:
    """The whole table, problems and notes as one JSON document."""
    doc = {
        "metric": table.metric,
        "caption": caption(table),
        "constant": table.constant,
        "varying": table.varying,
        "bits": table.bits,
        "rows": [
            {
                "method": row.method,
                "dataset": row.dataset,
                "settings": row.settings,
                "setting": row.shown,
                "cells": {
                    str(length): {
                        "mean": cell.mean, "std": cell.std, "n": cell.n, "text": cell.text(DIGITS[table.metric]),
                        "seeds": cell.seeds, "runs": [str(p) for p in cell.paths],
                    }
                    for length, cell in sorted(row.cells.items())
                },
            }
            for row in table.rows
        ],
        "problems": [{"path": str(p.path), "status": p.status, "reason": p.reason} for p in table.problems],
        "notes": table.notes,
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


def caption(table: Table) -> str:
    """'mAP, mean ± std over seeds (n runs). Shared by all rows: …' — the settings every row has in common."""
    name = {
        "map": "mAP", "best_map": "best mAP during training (picked on the queries: optimistic)",
        "wall_min": "wall time per run in minutes (host and load differ: see each cell's file)",
    }[table.metric]
    text = f"{name}: mean ± sample std over seeds (n runs); a single run shows its value alone."
    shared = dict(table.constant)
    parts = []
    if "arch" in shared:
        arch = _fmt(shared.pop("arch"))
        if "pretrained" in shared:
            arch += " (ImageNet-pretrained)" if shared.pop("pretrained") else " (random init)"
        parts.append(arch)
    if "image_size" in shared:
        parts.append(f"{_fmt(shared.pop('image_size'))} px")
    if "topk" in shared:
        parts.append(f"mAP@{_fmt(shared.pop('topk'))}")
    sizes = [(k, label) for k, label in (("num_query", "queries"), ("num_train", "train"), ("num_database", "database"))]
    if all(k in shared for k, _ in sizes):
        parts.append(" / ".join(f"{_fmt(shared.pop(k))} {label}" for k, label in sizes))
    parts += [f"{PROTOCOL_LABELS[k]} {_fmt(v)}" for k, v in shared.items()]
    if parts:
        text += " Shared by all rows: " + ", ".join(parts) + "."
    return text


def problem_line(problem: Problem) -> str:
    return f"{problem.path}: {problem.status} — {problem.reason}"


def _unfinished_reason(result: dict[str, Any], status: str) -> str:
    progress = f"epoch {result.get('epochs_done', '?')}/{result['config'].get('max_iter', '?')}"
    if status == "failed":
        return f"{result.get('error') or 'no error recorded'} (after {progress})"
    if status == "running":
        return f"{progress}; still training, or killed without a trace (check its log)"
    return f"unknown status ({progress})"


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (after the last carriage return: tqdm bars), or why there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"{path.name} unreadable ({exc.strerror})"
    lines = [line.split("\r")[-1].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else f"{path.name} is empty"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _fmt(value: Any) -> str:
    return "–" if value is None else str(value)


def _setting_text(shown: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())


def result_cell(
    result: dict[str, Any], run: str, *, source: str, note: str = "", host: str = "", threads: int | None = None,
    wall_min: float | None = None, date: str | None = None, settings: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A committed result cell (results/<table>/<method>-<bits>.json) made from a finished run's result.json:
    the number, its protocol and its provenance (git commit, run folder, how it was produced), so that the docs'
    tables are generated from files written by code, never typed. ``wall_min``: the command's whole wall time
    (feature caching included), when it was measured outside the run; the run's own timings are kept too."""
    if result.get("status") != "finished" or result.get("map") is None:
        raise HashkitError(f"{run}: the run is {result.get('status')!r} with map {result.get('map')}; only a finished "
                           "run with an mAP makes a result cell")  # fmt: skip
    config, metrics = result.get("config") or {}, result.get("metrics") or {}
    times = {f"{k[:-2]}_min": round(v / 60, 1) for k, v in (result.get("timings") or {}).items() if k.endswith("_s")}
    if wall_min is not None:
        times["wall_min"] = round(float(wall_min), 1)
    return {
        "kind": CELL_KIND, "method": config.get("method"), "dataset": config.get("dataset"),
        "bits": config.get("code_length"), "recipe": config.get("recipe"), "settings": settings or {},
        "protocol": {
            **{k: config.get(k) for k in ("arch", "pretrained", "image_size")},
            "topk": "ALL" if metrics.get("topk") is None else metrics["topk"],  # None: mAP over the whole ranking
            **{k: (result.get("dataset") or {}).get(k, metrics.get(k)) for k in ("num_query", "num_train", "num_database")},
        },
        "seed": config.get("seed"), "map": round(float(result["map"]), 4), "times": times, "host": host,
        "threads": threads, "date": date, "commit": result.get("git_commit"), "run": run, "source": source,
        "note": note,
    }  # fmt: skip

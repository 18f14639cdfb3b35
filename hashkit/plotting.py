"""Precision-recall and precision@N curves of several runs on one figure (matplotlib Agg, no display needed).

A run's curves come from its result.json (``hashkit train --metrics map,pr_curve,precision_at``) or from the
output of ``hashkit evaluate --metrics map,pr_curve,precision_at --json`` saved to a file. For a run folder,
``result.json`` is used when it holds the curves, else ``evaluation.json`` beside it.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hashkit.atomic import atomic_write_bytes
from hashkit.errors import HashkitError

NEEDED = ("pr_curve", "precision_at")
EVALUATION_FILE = "evaluation.json"  # where the fix in the error message asks to save `hashkit evaluate --json`
FIGSIZE = (13.0, 5.2)  # inches
DPI = 120
DISPLAY_NAMES = {
    "dpsh": "DPSH", "dhn": "DHN", "hashnet": "HashNet", "adsh": "ADSH", "dihn": "DIHN", "ssdh": "SSDH",
    "csq": "CSQ", "dpn": "DPN", "orthocos": "OrthoCos", "orthoarc": "OrthoArc", "greedyhash": "GreedyHash",
    "jmlh": "JMLH", "sdhc": "SDH-C", "bihalf_sup": "BiHalf (supervised)", "ce": "CE", "ce_tanh": "CE (tanh)",
}  # fmt: skip


@dataclass
class RunCurves:
    """What one run contributes to the figure."""

    source: Path
    method: str
    dataset: str
    code_length: int
    seed: Any
    recall: list[float]
    precision: list[float]
    precision_at: list[tuple[int, float]]  # (N, precision of the top N), sorted by N


@dataclass
class _Loaded:
    source: Path
    info: dict[str, Any]
    metrics: dict[str, Any]
    checkpoint: str


def load_curves(runs: Sequence[str | Path]) -> list[RunCurves]:
    """The curves of every run, or one HashkitError naming each run that lacks them and how to compute them."""
    loaded = [_load(run) for run in runs]
    missing = [(item, [k for k in NEEDED if not item.metrics.get(k)]) for item in loaded]
    missing = [(item, keys) for item, keys in missing if keys]
    if missing:
        first = missing[0][0]
        listed = "; ".join(f"{item.source} has no {' or '.join(keys)}" for item, keys in missing)
        folder = first.source.parent
        raise HashkitError(
            f"cannot plot: {listed}. Compute them with `hashkit evaluate --checkpoint {first.checkpoint} "
            f"--metrics map,pr_curve,precision_at --json > {folder / EVALUATION_FILE}` and plot {folder} again"
            f"{' (likewise for each run listed)' if len(missing) > 1 else ''}, "
            "or train with --metrics map,pr_curve,precision_at"
        )
    return [_curves(item) for item in loaded]


def plot_curves(curves: Sequence[RunCurves], title: str | None = None):
    """A two-panel Figure: precision vs recall (Hamming radii 0..bits) and precision@N."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    pr_ax, pn_ax = fig.subplots(1, 2)
    labels = run_labels(curves)
    colors = _colors(len(curves))
    markers = "osD^vP*Xh<>p"
    styles = ["-", "--", "-.", ":"]
    for i, (run, label) in enumerate(zip(curves, labels)):
        style = dict(color=colors[i], marker=markers[i % len(markers)], linestyle=styles[(i // 10) % len(styles)],
                     linewidth=1.6, markersize=5, label=label)
        # About a dozen markers per curve: enough to tell the lines apart, few enough not to hide them.
        pr_ax.plot(run.recall, run.precision, markevery=max(1, len(run.recall) // 12), **style)
        pn_ax.plot([n for n, _ in run.precision_at], [p for _, p in run.precision_at],
                   markevery=max(1, len(run.precision_at) // 12), **style)

    pr_ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (Hamming radius 0 … bits)")
    pr_ax.set_xlim(-0.02, 1.02)
    pr_ax.set_ylim(0, 1.02)
    pn_ax.set(xlabel="Number of top returned items N", ylabel="Precision@N", title="Precision@N")
    pn_ax.set_ylim(0, 1.02)
    all_n = [n for run in curves for n, _ in run.precision_at]
    if all_n and min(all_n) > 0 and max(all_n) / min(all_n) >= 100:
        pn_ax.set_xscale("log")
    for ax in (pr_ax, pn_ax):
        ax.grid(True, alpha=0.3)
    ncol = len(curves) if len(curves) <= 6 else math.ceil(len(curves) / math.ceil(len(curves) / 5))
    handles, names = pr_ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=ncol, frameon=False, fontsize="medium")
    datasets = sorted({run.dataset for run in curves})
    fig.suptitle(title or ", ".join(datasets), fontsize="x-large")
    return fig


def save_figure(fig, out: str | Path) -> Path:
    """Render ``fig`` in the format of ``out``'s suffix and write it atomically."""
    out = Path(out)
    formats = fig.canvas.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise HashkitError(f"--out {out}: unknown image type {out.suffix or '(none)'!r}; use one of .png, .pdf, .svg")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix, dpi=DPI)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def run_labels(curves: Sequence[RunCurves]) -> list[str]:
    """'DPSH 32 bits', plus the dataset, seed or folder only where that is needed to tell runs apart."""
    labels = [f"{DISPLAY_NAMES.get(c.method, c.method.upper())} {c.code_length} bits" for c in curves]
    if len({c.dataset for c in curves}) > 1:
        labels = [f"{label} {c.dataset}" for label, c in zip(labels, curves)]
    if len(set(labels)) < len(labels) and None not in {c.seed for c in curves}:
        labels = [f"{label} seed {c.seed}" if labels.count(label) > 1 else label for label, c in zip(labels, curves)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({c.source.parent.name})" if labels.count(label) > 1 else label for label, c in zip(labels, curves)]
    return labels


def _load(run: str | Path) -> _Loaded:
    path = Path(run)
    if path.is_dir():
        candidates = [path / "result.json", path / EVALUATION_FILE]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            raise HashkitError(f"{path} holds no result.json; pass a run folder written by hashkit train, or a JSON file")
        loaded = [_read(c) for c in existing]
        chosen = next((item for item in loaded if all(item.metrics.get(k) for k in NEEDED)), loaded[0])
        for other in loaded:  # evaluate's output has no seed: take what it lacks from result.json
            for key, value in other.info.items():
                if chosen.info.get(key) is None:
                    chosen.info[key] = value
        return chosen
    if not path.is_file():
        raise HashkitError(f"{path} does not exist; pass a run folder, its result.json, or a `hashkit evaluate --json` output")
    return _read(path)


def _read(path: Path) -> _Loaded:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HashkitError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    except ValueError as exc:
        raise HashkitError(f"{path} is not valid JSON ({exc}); was the run killed mid-write?") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict):  # result.json of hashkit train
        config = data["config"]
        info = {k: config.get(k) for k in ("method", "dataset", "code_length", "seed")}
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        checkpoint = data.get("checkpoint") or str(path.parent / "checkpoint.pt")
        if (path.parent / "checkpoint.pt").is_file():  # the folder may have moved since training
            checkpoint = str(path.parent / "checkpoint.pt")
    elif isinstance(data, dict) and "method" in data and "code_length" in data:  # hashkit evaluate --json
        info = {k: data.get(k) for k in ("method", "dataset", "code_length", "seed")}
        metrics = data
        checkpoint = data.get("checkpoint") or str(path.parent / "checkpoint.pt")
    else:
        raise HashkitError(f"{path} is neither a hashkit result.json nor `hashkit evaluate --json` output")
    if info["method"] is None or info["code_length"] is None:
        raise HashkitError(f"{path} does not name its method and code_length; is it a hashkit result?")
    return _Loaded(path, info, metrics, checkpoint)


def _curves(item: _Loaded) -> RunCurves:
    pr = item.metrics["pr_curve"]
    try:
        precision = [float(p) if p is not None else math.nan for p in pr["precision"]]
        recall = [float(r) if r is not None else math.nan for r in pr["recall"]]
        if len(precision) != len(recall):
            raise ValueError(f"{len(precision)} precisions but {len(recall)} recalls")
        at = sorted((int(n), float(p)) for n, p in item.metrics["precision_at"].items())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HashkitError(
            f"{item.source}: malformed pr_curve/precision_at ({exc}); re-run hashkit evaluate with --metrics pr_curve,precision_at"
        ) from exc
    # Radii at which nothing is retrieved have no defined precision: leave those points out.
    points = [(r, p) for r, p in zip(recall, precision) if math.isfinite(r) and math.isfinite(p)]
    return RunCurves(
        source=item.source,
        method=str(item.info["method"]),
        dataset=str(item.info.get("dataset") or "?"),
        code_length=int(item.info["code_length"]),
        seed=item.info.get("seed"),
        recall=[r for r, _ in points],
        precision=[p for _, p in points],
        precision_at=at,
    )


def _colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]

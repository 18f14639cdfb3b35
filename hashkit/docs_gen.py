"""The documentation's generated parts: method pages and tables, from the registry and the result cells.

Two ways in:

* the mkdocs hook :mod:`hashkit.cli_docs` fills ``<!-- generated: … -->`` placeholders at build time (CLI
  reference and method pages: they follow the code, so they cannot drift);
* committed blocks (``<!-- report: FOLDER [--metric M] -->`` … ``<!-- /report -->`` in docs/results.md and
  ``<!-- generated: methods-table -->`` … ``<!-- /generated -->`` in README.md): ``python -m hashkit.docs_gen``
  rewrites them from ``results/``; ``tests/test_docs.py`` fails when the committed text differs.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from hashkit.catalogue import FAMILIES, MethodInfo, all_methods, family_title
from hashkit.registry import METHODS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
MAIN_TABLE = "cifar10-cpu"  # the folder of the headline CPU cells (one per method × bits)
REPORT_BLOCK = re.compile(r"(<!-- report: (\S+)((?: --metric \S+)?) -->\n)(.*?)(<!-- /report -->)", re.S)
README_BLOCK = re.compile(r"(<!-- generated: methods-table -->\n)(.*?)(<!-- /generated -->)", re.S)


def best_figures(folder: Path | None = None) -> dict[str, dict[int, float]]:
    """{method: {bits: mAP}} of the committed headline cells (empty when results/ is not shipped)."""
    from hashkit.report import collect

    folder = folder or RESULTS / MAIN_TABLE
    if not folder.is_dir():
        return {}
    runs, _ = collect(folder)
    figures: dict[str, dict[int, float]] = {}
    for run in runs:
        figures.setdefault(run.method, {})[run.code_length] = run.value
    return figures


def best_text(figures: dict[int, float]) -> str:
    """'0.7816 (32 bits)': the highest figure a method has, with its code length."""
    if not figures:
        return "–"
    bits, value = max(figures.items(), key=lambda item: (item[1], -item[0]))
    return f"{value:.4f} ({bits} bits)"


def docstring_markdown(method: str) -> str:
    """The method module's docstring as Markdown (reST ``literals`` become `code`)."""
    module = importlib.import_module(METHODS.get(method).__module__)
    text = inspect.cleandoc(module.__doc__ or "")
    return text.replace("``", "`")


def recipe_rows(method: str) -> list[tuple[str, str, str]]:
    """(flag, seed value, cpu value) for every key either recipe sets for ``method``."""
    from hashkit.config import flag_name, recipe_values, resolve_config

    keys = set(recipe_values(method, "seed")) | set(recipe_values(method, "cpu"))
    seed = resolve_config({"method": method, "recipe": "seed"})
    cpu = resolve_config({"method": method, "recipe": "cpu"})
    return [(flag_name(key), _value(seed.get(key)), _value(cpu.get(key))) for key in sorted(keys)]


def method_section(info: MethodInfo, figures: dict[str, dict[int, float]]) -> str:
    """One method's part of its family page: paper, reference code, loss, hyper-parameters, recipes, figures."""
    from hashkit.config import flag_name

    method_cls = METHODS.get(info.name)
    lines = [f"## `{info.name}`", "", f"**Paper**: {info.paper}  ", "**Reference code**: " + _repos(info.reference_code) + "  "]
    lines += [
        f"**Supervision**: {'supervised' if info.supervised else 'unsupervised'}; "
        f"**torchrun**: {'yes' if method_cls.supports_distributed else 'no (one process)'}"
        + (f"; **starts from**: `{method_cls.starts_from}` (`--from`)" if method_cls.starts_from else ""),
        "",
    ]
    lines += [docstring_markdown(info.name), ""]
    if method_cls.hyperparameters:
        lines += ["**Hyper-parameters**", "", "| flag | default | meaning |", "|---|---|---|"]
        for key, spec in method_cls.hyperparameters.items():
            names = ", ".join(f"`{flag_name(n)}`" for n in (key, *spec.aliases))
            lines.append(f"| {names} | `{spec.default}` | {_cell(spec.help)} |")
        lines.append("")
    lines += ["**Recipes** (`--recipe seed`, the default, and `--recipe cpu`; flags you give win)", "",
              "| flag | seed | cpu |", "|---|---|---|"]
    lines += [f"| `{flag}` | {seed} | {cpu} |" for flag, seed, cpu in recipe_rows(info.name)]
    mine = figures.get(info.name, {})
    cells = ", ".join(f"{bits} bits {value:.4f}" for bits, value in sorted(mine.items())) or "not measured yet"
    lines += ["", f"**Measured** (CPU recipe, CIFAR-10, mAP@ALL; [results](../results.md)): {cells}.", ""]
    return "\n".join(lines)


def family_page(family: str) -> str:
    """The generated body of docs/methods/<family>.md."""
    figures = best_figures()
    members = [info for info in all_methods() if info.family == family]
    parts = [FAMILIES[family].summary, ""]
    parts += [method_section(info, figures) for info in members]
    return "\n".join(parts)


def methods_table(link_prefix: str = "docs/methods/") -> str:
    """The table of every method: name, family, paper, reference code, best measured CPU figure."""
    figures = best_figures()
    lines = [
        "| method | family | supervision | paper | reference code | best CPU mAP@ALL |",
        "|---|---|---|---|---|---|",
    ]
    for info in all_methods():
        family = family_title(info.family)
        lines.append(
            f"| [`{info.name}`]({link_prefix}{info.family}.md) | {family} | "
            f"{'supervised' if info.supervised else 'unsupervised'} | {_cell(info.paper)} | "
            f"{_repos(info.reference_code)} | {best_text(figures.get(info.name, {}))} |"
        )
    return "\n".join(lines) + "\n"


def report_table(folder: str, metric: str = "map") -> str:
    """What ``hashkit report FOLDER --metric METRIC`` prints (Markdown)."""
    from hashkit.report import collect, render_markdown, tabulate

    runs, problems = collect(REPO / folder, metric)
    text = render_markdown(tabulate(runs, problems, metric))
    return text.replace(str(REPO) + "/", "")


def refresh_reports(text: str) -> str:
    """``text`` with every ``<!-- report: … -->`` block regenerated."""

    def replace(match: re.Match) -> str:
        metric = match.group(3).split()[-1] if match.group(3) else "map"
        return match.group(1) + report_table(match.group(2), metric) + match.group(5)

    return REPORT_BLOCK.sub(replace, text)


def refresh_readme(text: str) -> str:
    """README.md with its method table regenerated."""
    return README_BLOCK.sub(lambda m: m.group(1) + methods_table() + m.group(3), text)


def _value(value: Any) -> str:
    return "–" if value is None else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _repos(repos: tuple[str, ...]) -> str:
    return ", ".join(f"[{r}](https://github.com/{r})" for r in repos) or "–"


def portable_run_path(run: Path) -> str:
    """The run folder as a reader's checkout would name it: from its ``runs/`` component on (a clone's
    ``/somewhere/clone/runs/demo`` is ``runs/demo``), else relative to this repository, else its name."""
    parts = run.resolve().parts
    if "runs" in parts:
        return str(Path(*parts[parts.index("runs"):]))
    try:
        return str(run.resolve().relative_to(REPO))
    except ValueError:
        return run.name


def reevaluated_at(run: Path, result: dict, topk: int) -> dict:
    """``result`` with its mAP replaced by the run's checkpoint evaluated at mAP@``topk`` (``hashkit evaluate
    --checkpoint RUN/checkpoint.pt --topk K``: the same codes, another cut-off), so that one training gives the
    cells of two protocols (the unsupervised papers' mAP@1000 beside mAP@ALL); the evaluation's time is added."""
    import time

    from hashkit.errors import HashkitError
    from hashkit.run import evaluate

    checkpoint = run / "checkpoint.pt"
    if not checkpoint.is_file():
        raise HashkitError(f"--add-cell {run} --topk {topk}: no checkpoint.pt there to evaluate; drop --topk or pass the run folder")
    start = time.perf_counter()
    evaluated = evaluate(str(checkpoint), {"topk": topk})
    metrics = {**(result.get("metrics") or {}), "map": evaluated["map"], "topk": evaluated["topk"]}
    timings = {**(result.get("timings") or {}), "reevaluate_s": time.perf_counter() - start}
    return {**result, "map": evaluated["map"], "metrics": metrics, "timings": timings}


def add_cell(args: argparse.Namespace) -> Path:
    """Write the result cell of the finished run ``args.add_cell`` into results/``args.table``/ (atomically)."""
    import datetime
    import json

    from hashkit.atomic import atomic_write_json
    from hashkit.errors import HashkitError
    from hashkit.report import result_cell

    run = Path(args.add_cell)
    path = run / "result.json"
    if not path.is_file():
        raise HashkitError(f"--add-cell {run}: no result.json there; pass the run folder of a finished hashkit train")
    result = json.loads(path.read_text(encoding="utf-8"))
    date = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).date().isoformat()
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as error:
        raise HashkitError(f"--settings {args.settings!r} is not JSON ({error}); pass e.g. '{{\"max_iter\": 8}}'") from None
    if args.topk is not None:
        result = reevaluated_at(run, result, args.topk)
    cell = result_cell(result, portable_run_path(run), source=args.source, note=args.note, host=args.host, threads=args.threads,
                       wall_min=args.wall_min, date=date, settings=settings)  # fmt: skip
    out = REPO / "results" / args.table / f"{cell['method']}-{cell['bits']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, cell)
    print(f"wrote {out.relative_to(REPO)}: {cell['method']} {cell['bits']} bits mAP {cell['map']:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m hashkit.docs_gen``: rewrite the committed generated blocks (or --check them)."""
    parser = argparse.ArgumentParser(prog="python -m hashkit.docs_gen", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed block is out of date")
    parser.add_argument("--add-cell", metavar="RUN", default=None,
                        help="first write results/TABLE/<method>-<bits>.json from RUN/result.json (a finished run)")
    parser.add_argument("--table", default=MAIN_TABLE, help="with --add-cell: the results/ folder (default: %(default)s)")
    parser.add_argument("--source", default="", help="with --add-cell: the command that produced the run")
    parser.add_argument("--note", default="", help="with --add-cell: what a reader must know about the number")
    parser.add_argument("--host", default="", help="with --add-cell: the machine, in words")
    parser.add_argument("--threads", type=int, default=None, help="with --add-cell: torch threads of the run")
    parser.add_argument("--wall-min", type=float, default=None, help="with --add-cell: the command's wall minutes")
    parser.add_argument("--topk", type=int, default=None, help="with --add-cell: the cell's mAP@K from the run's "
                        "checkpoint evaluated at that cut-off (default: the run's own mAP)")
    parser.add_argument("--settings", default="{}", help="with --add-cell: JSON of the flags that differ from the "
                        "recipe, e.g. '{\"max_iter\": 8}' (a row of their own in the table)")
    args = parser.parse_args(argv)
    if args.add_cell:
        from hashkit.errors import HashkitError

        try:
            add_cell(args)
        except HashkitError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    stale = []
    for path, refresh in ((REPO / "docs" / "results.md", refresh_reports), (REPO / "README.md", refresh_readme)):
        old = path.read_text(encoding="utf-8")
        new = refresh(old)
        if new != old:
            stale.append(path.name)
            if not args.check:
                from hashkit.atomic import atomic_write_bytes

                atomic_write_bytes(path, new.encode("utf-8"))
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python -m hashkit.docs_gen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

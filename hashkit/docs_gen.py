"""The documentation's generated parts: CLI reference, method pages and result tables, from the code and data.

Two ways in:

* an mkdocs hook (``mkdocs.yml`` ``hooks:``): :func:`on_page_markdown` replaces ``<!-- generated: … -->``
  placeholders at build time (CLI reference and method pages: they follow the code, so they cannot drift);
* committed blocks (``<!-- report: FOLDER [--metric M] -->`` … ``<!-- /report -->`` in docs/results.md and
  ``<!-- generated: methods-table -->`` … ``<!-- /generated -->`` in README.md): ``python -m hashkit.docs_gen``
  rewrites them from ``results/``; ``tests/test_docs.py`` fails when the committed text differs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator

from hashkit.catalogue import FAMILIES, MethodInfo, all_methods, family_title
from hashkit.registry import METHODS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
MAIN_TABLE = "cifar10-cpu"  # the folder of the headline CPU cells (one per method × bits)
HELP_WIDTH = "100"  # columns argparse wraps help text to in the generated reference
PLACEHOLDER = re.compile(r"<!-- generated: ([a-z-]+)(?: ([a-z-]+))? -->")
REPORT_BLOCK = re.compile(r"(<!-- report: (\S+)((?: --metric \S+)?) -->\n)(.*?)(<!-- /report -->)", re.S)
README_BLOCK = re.compile(r"(<!-- generated: methods-table -->\n)(.*?)(<!-- /generated -->)", re.S)


@contextlib.contextmanager
def help_width() -> Iterator[None]:
    """Fixed help width, so the generated text does not depend on the terminal."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def command_help(argv: list[str]) -> str:
    """What ``hashkit ARGV --help`` prints (e.g. ``["train", "--method", "jmlh"]``)."""
    from hashkit.cli import build_parser

    with help_width():
        parser = build_parser(argv + ["--help"])
        command = parser._subparsers._group_actions[0].choices[argv[0]]  # type: ignore[union-attr]
        return command.format_help()


def cli_reference() -> str:
    """Every subcommand's ``--help``, as the CLI prints it."""
    from hashkit.cli import build_parser
    from hashkit.commands import COMMANDS

    with help_width():
        top = build_parser().format_help()
    parts = ["## hashkit", "", "```text", top.rstrip(), "```", ""]
    for name in COMMANDS:
        parts += [f"## hashkit {name}", "", "```text", command_help([name]).rstrip(), "```", ""]
    parts += [
        "Each method's own flags and its recipe defaults: `hashkit train --method NAME --help` "
        "and the [method pages](methods/index.md).", "",
    ]
    return "\n".join(parts)


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
    from hashkit.commands.common import flag_name
    from hashkit.config import recipe_values, resolve_config

    keys = set(recipe_values(method, "seed")) | set(recipe_values(method, "cpu"))
    seed = resolve_config({"method": method, "recipe": "seed"})
    cpu = resolve_config({"method": method, "recipe": "cpu"})
    return [(flag_name(key), _value(seed.get(key)), _value(cpu.get(key))) for key in sorted(keys)]


def method_section(info: MethodInfo, figures: dict[str, dict[int, float]]) -> str:
    """One method's part of its family page: paper, reference code, loss, hyper-parameters, recipes, figures."""
    from hashkit.commands.common import flag_name

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


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None) -> str:
    """mkdocs hook: fill the ``<!-- generated: … -->`` placeholders of a page."""

    def replace(match: re.Match) -> str:
        what, argument = match.group(1), match.group(2)
        if what == "cli":
            return cli_reference()
        if what == "family" and argument in FAMILIES:
            return family_page(argument)
        if what == "methods-table":
            return methods_table(link_prefix="")
        raise ValueError(f"unknown placeholder {match.group(0)} in {getattr(page, 'file', page)}")

    return PLACEHOLDER.sub(replace, markdown)


def _value(value: Any) -> str:
    return "–" if value is None else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _repos(repos: tuple[str, ...]) -> str:
    return ", ".join(f"[{r}](https://github.com/{r})" for r in repos) or "–"


def main(argv: list[str] | None = None) -> int:
    """``python -m hashkit.docs_gen``: rewrite the committed generated blocks (or --check them)."""
    parser = argparse.ArgumentParser(prog="python -m hashkit.docs_gen", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed block is out of date")
    args = parser.parse_args(argv)
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

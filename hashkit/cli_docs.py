"""The mkdocs hook (``mkdocs.yml`` ``hooks:``): generated pages, filled in at build time.

``<!-- generated: cli -->`` becomes every subcommand's ``--help`` (from the argparse parsers, so the reference
cannot drift from the CLI); ``<!-- generated: family KEY -->`` and ``<!-- generated: methods-table -->`` come
from :mod:`hashkit.docs_gen`. It sits on top of the CLI, as the CLI's own documentation.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from contextlib import redirect_stdout
from typing import Any, Iterator

from hashkit.catalogue import FAMILIES
from hashkit.docs_gen import family_page, methods_table

HELP_WIDTH = "100"  # columns argparse wraps help text to in the generated reference
PLACEHOLDER = re.compile(r"<!-- generated: ([a-z-]+)(?: ([a-z-]+))? -->")


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
    """What ``hashkit ARGV --help`` prints (``["train", "--method", "jmlh"]`` gives the method's help)."""
    from hashkit.cli import main

    buffer = io.StringIO()
    with help_width(), redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return buffer.getvalue()


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


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None) -> str:
    """mkdocs hook: fill the ``<!-- generated: … -->`` placeholders of a page."""

    def replace(match: re.Match) -> str:
        what, argument = match.group(1), match.group(2)
        if what == "cli":
            return cli_reference()
        if what == "family" and argument in FAMILIES:
            return family_page(argument)
        if what == "methods-table":
            return methods_table(link_prefix="" if argument == "local" else "methods/")
        raise ValueError(f"unknown placeholder {match.group(0)} in {getattr(page, 'file', page)}")

    return PLACEHOLDER.sub(replace, markdown)



"""The ``hashkit`` command line: one module per subcommand (hashkit/commands/), flags from the registries.

Every user mistake surfaces as one line ``hashkit: error: …`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from loguru import logger

import hashkit
from hashkit.commands import COMMANDS
from hashkit.errors import HashkitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hashkit", description="Train, evaluate and search with deep hashing methods for image retrieval."
    )
    parser.add_argument("--version", action="version", version=f"hashkit {hashkit.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"hashkit.commands.{name}")
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hashkit`` console script and ``python -m hashkit``."""
    try:
        args = build_parser().parse_args(argv)
        logger.remove()
        logger.add(sys.stderr, level="DEBUG" if args.verbose else "INFO", format="{time:HH:mm:ss} | {level: <7} | {message}")
        return args.run(args)
    except HashkitError as exc:
        from hashkit.trainer import unwrap_worker_error

        print(f"hashkit: error: {unwrap_worker_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hashkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

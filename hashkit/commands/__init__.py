"""One module per ``hashkit`` subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

A new subcommand is a new module here plus its name in ``COMMANDS``.
"""

COMMANDS = ["train", "evaluate", "encode", "search", "export", "report", "plot", "serve", "methods"]

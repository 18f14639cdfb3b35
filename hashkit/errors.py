"""User-facing errors: one line that says what went wrong, where, and how to fix it.

The CLI catches :class:`HashkitError` and prints ``error: <message>`` with exit status 2 instead of a
traceback; anything else escaping is a bug in hashkit and keeps its traceback.
"""

from __future__ import annotations


class HashkitError(Exception):
    """A mistake in the user's input or environment, reported as one actionable line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

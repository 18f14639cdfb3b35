"""Facts about the code that produced a result: hashkit version and git commit."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import hashkit


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the hashkit source tree (with ``-dirty`` if it has uncommitted changes), or None.
    Asked once per process (cached): a run's code does not change while it runs."""
    source = Path(hashkit.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict[str, str | None]:
    return {"hashkit_version": hashkit.__version__, "git_commit": git_commit()}

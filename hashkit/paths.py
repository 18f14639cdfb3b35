"""Where hashkit keeps caches: ``--cache-dir``, else ``$HASHKIT_CACHE``, else ``~/.cache/hashkit``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory to use (not created here)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HASHKIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hashkit"

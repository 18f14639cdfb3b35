"""Progress display: a live tqdm bar on a terminal, one plain log line per stage everywhere else.

A tqdm bar redraws itself with carriage returns; written to a file (a sweep's log, CI, ``nohup``) every
redraw becomes a line — 930 of the 1,048 lines of the README demo's log were bar frames. So every
progress display in hashkit goes through :func:`progress`: a bar only when standard error is a
terminal, and otherwise (or additionally, for stages worth a permanent record) one loguru line when the
stage ends, ``<desc>: <n> images in <s>s (<rate> img/s)``, which is what a user greps a log for.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Literal

from loguru import logger
from tqdm import tqdm

# When the end-of-stage line is logged: "no_bar" = only when no bar was drawn (a file, not a terminal),
# "always" = also after a bar (a stage worth a permanent record, e.g. building the feature cache),
# "never" = the caller logs its own line (the Trainer's per-epoch line carries the rate).
Summary = Literal["no_bar", "always", "never"]

_NOUNS = {"img": "images"}


def bars_wanted(stream: Any = None) -> bool:
    """True when progress bars should be drawn: ``stream`` (standard error by default) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Counts the items of one stage; draws a bar on a terminal and/or logs one line at the end.

    Use as a context manager (the line is logged only when the stage ends without an exception)::

        with progress(total=len(images), desc="encode query") as bar:
            for batch in batches:
                ...
                bar.update(len(batch))
    """

    def __init__(
        self, total: int | None, desc: str, unit: str = "img", *, enabled: bool = True, summary: Summary = "no_bar"
    ) -> None:
        self.desc = desc
        self.unit = unit
        self.count = 0
        self.summary: Summary = summary if enabled else "never"
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.bar: tqdm | None = None
        if enabled and bars_wanted():
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Extra values shown beside the bar (e.g. the running loss); nothing without a bar."""
        if self.bar is not None:
            self.bar.set_postfix(**values)

    @property
    def elapsed(self) -> float:
        """Seconds from the start of the stage to its end (or to now while it runs)."""
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    @property
    def rate(self) -> float:
        """Items per second since the stage started."""
        return self.count / max(self.elapsed, 1e-9)

    def line(self) -> str:
        """The end-of-stage summary, e.g. ``encode query: 1000 images in 3.1s (322 img/s)``."""
        noun = _NOUNS.get(self.unit, self.unit)
        return f"{self.desc}: {self.count} {noun} in {self.elapsed:.1f}s ({self.rate:.0f} {self.unit}/s)"

    def close(self, log: bool = True) -> None:
        """End the stage: remove the bar and log the summary line (see ``summary``) unless ``log`` is False."""
        if self.ended is None:
            self.ended = time.perf_counter()
        drew = self.bar is not None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if log and self.count and (self.summary == "always" or (self.summary == "no_bar" and not drew)):
            logger.info(self.line())
        self.summary = "never"  # closing twice logs once

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close(log=kind is None)


def progress(
    total: int | None, desc: str, unit: str = "img", *, enabled: bool = True, summary: Summary = "no_bar"
) -> Progress:
    """The progress display of one stage (see the module docstring); ``enabled=False`` shows nothing."""
    return Progress(total, desc, unit, enabled=enabled, summary=summary)

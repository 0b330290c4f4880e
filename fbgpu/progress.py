"""Progress bars for long steps (rich), silenced when not on a terminal or when disabled.

``rich.progress`` (~20 ms of imports) is imported only when a bar is made: :func:`track`
without a bar to show is a plain iteration, so that a command run without a terminal (scripts,
CI, ``fbgpu factors`` in a pipeline) does not pay for it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds between the plain progress lines of a long step when no bar is shown
#: (``FBGPU_PROGRESS_LOG_S``; 0 = none).
PROGRESS_LOG_S = 30.0


def progress_enabled() -> bool:
    """Bars show on a terminal unless ``FBGPU_PROGRESS=0``; ``FBGPU_PROGRESS=1`` forces them."""
    flag = os.environ.get("FBGPU_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no")
    return sys.stderr.isatty()


def make_progress() -> Progress:
    """The rich progress bar of a long step (disabled unless :func:`progress_enabled`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not progress_enabled(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar labelled ``description`` (a plain iteration when
    bars are off: :func:`progress_enabled`)."""
    if not progress_enabled():
        yield from _logged(items, description, total)
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(description, total=total, status="")
        for item in items:
            yield item
            prog.advance(task)


def _logged(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    """Plain iteration with one log line every :data:`PROGRESS_LOG_S` seconds (what a log file
    or CI gets instead of a bar): ``description: k/total done, s elapsed``. Steps shorter than
    that log nothing."""
    every = float(os.environ.get("FBGPU_PROGRESS_LOG_S", PROGRESS_LOG_S))
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    t0 = time.monotonic()
    last = t0
    for k, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if every > 0 and now - last >= every:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s done, %.0f s elapsed", description, k, of, now - t0)

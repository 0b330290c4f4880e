"""Progress bars for long steps (rich), silenced when not on a terminal or when disabled.

``rich.progress`` (~20 ms of imports) is imported only when a bar is made: :func:`track`
without a bar to show is a plain iteration, so that a command run without a terminal (scripts,
CI, ``fbgpu factors`` in a pipeline) does not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")


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
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(description, total=total, status="")
        for item in items:
            yield item
            prog.advance(task)

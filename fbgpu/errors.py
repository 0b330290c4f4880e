"""Exit statuses of the ``fbgpu`` command line, and which errors give which.

One table for every command (README.md and docs/ingest.md, "Exit status"):

======  ===============  ==============================================================  ========
status  name             meaning                                                         run.json
======  ===============  ==============================================================  ========
0       ``OK``           the step finished                                               ok
1       ``USAGE``        usage or configuration: unknown/missing option, bad option      --
                         value, bad config, mapping or factor module, GPU asked for
                         where none is usable; nothing ran
2       ``REJECTED``     the input was rejected: a vendor file fails validation, the     --
                         store lacks what the step needs, a factor module fails
                         ``factors check``; the store is byte-identical
3       ``FAILED``       the step failed while running (an unexpected error; ``-v``      failed
                         logs the traceback)
4       ``BUSY``         another process holds the store's write lock                    --
130     ``INTERRUPTED``  Ctrl-C                                                          failed
======  ===============  ==============================================================  ========

Library errors say which status they mean with an attribute ``exit_status`` (of the class, or of
the instance where it depends on the case); an exception without one is status 3. This module
imports nothing from the package so that every layer can use it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """The command line's exit statuses (see the module docstring for the table)."""

    OK = 0
    USAGE = 1
    REJECTED = 2
    FAILED = 3
    BUSY = 4
    INTERRUPTED = 130


def exit_status_of(error: BaseException) -> ExitStatus:
    """The exit status an error stands for: its ``exit_status`` (the instance's, else its
    class's), else ``FAILED``."""
    status = getattr(error, "exit_status", None)
    return ExitStatus(status) if isinstance(status, int) else ExitStatus.FAILED

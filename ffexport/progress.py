"""Progress for long work: a rich bar on a terminal, plain log lines elsewhere, nothing when quiet."""

from __future__ import annotations

import logging
import sys

from ffexport.faults import fault_point

log = logging.getLogger("ffexport")


class Steps:
    """``with Steps(total, "building") as steps: steps.advance("exported vision")``."""

    def __init__(self, total: int, title: str, *, quiet: bool = False) -> None:
        self.total, self.title, self.quiet = total, title, quiet
        self.done = 0
        self._bar = None
        self._task = None

    def __enter__(self) -> "Steps":
        if not self.quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total)
        return self

    def start(self, what: str) -> None:
        """Say what the next step is (shown while it runs)."""
        fault_point(what)  # scripts/fault_table.py: a fault at a step boundary (no-op otherwise)
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.title}: {what}")
        elif not self.quiet:
            log.info("[%d/%d] %s", self.done + 1, self.total, what)

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

"""Fault injection for the build-directory fault table (``scripts/fault_table.py``, docs/reliability.md).

The only environment variables read here, and only by :func:`fault_point`:

- ``FFEXPORT_FAULT=ACTION@STAGE``: at the first point whose name contains ``STAGE`` (a build's
  progress steps, e.g. ``export vision graph`` or ``parity``, and the commit points of
  ``ffexport/export/builddir.py``: ``locked``, ``before manifest``, ``after manifest``, ``before swap``),
  ``sigint`` sends the process SIGINT (as Ctrl-C does), ``sigkill`` SIGKILL (as a power cut or the OOM
  killer would), ``pause`` sleeps (another process can act meanwhile). Once per process.
- ``FFEXPORT_FAULT_READY=FILE``: with ``pause``, written (the pid) when the pause starts.
- ``FFEXPORT_FAULT_SECONDS=S``: how long ``pause`` sleeps (default 30).

Unset (always, outside these checks), :func:`fault_point` does nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "FFEXPORT_FAULT"


def fault_point(stage: str) -> None:
    """Inject the fault ``$FFEXPORT_FAULT`` asks for when ``stage`` is its point."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or "@" not in spec:
        return
    action, where = spec.split("@", 1)
    if where not in stage:
        return
    os.environ.pop(FAULT_ENV)
    if action == "sigint":
        # as Ctrl-C reaches a build started from a terminal (a background job starts with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # KeyboardInterrupt is raised here
    elif action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "pause":
        ready = os.environ.get("FFEXPORT_FAULT_READY")
        if ready:
            Path(ready).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("FFEXPORT_FAULT_SECONDS", "30")))

"""Peak memory of one call: resident memory on the host, allocated memory on a CUDA device.

On Linux the kernel's high-water mark (``VmHWM``) can be reset to the current resident size by
writing ``5`` to ``/proc/self/clear_refs``; then the peak of exactly one call is measured in
process, weights already resident included. Freed memory is first handed back to the kernel
(``malloc_trim``), so pages an earlier call freed do not hide this call's allocations. Where that is not allowed, the process-lifetime peak
is reported and marked as such.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident memory of this process."""
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident memory (since start, or since the last :func:`reset_peak_rss`)."""
    value = _status_bytes("VmHWM")
    if value is None:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    return value


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current resident size; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> None:
    """Hand memory that earlier work freed back to the kernel (glibc ``malloc_trim``), so that the next
    call's resident peak is its own and not hidden by reused free pages; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class MemoryRecord:
    """``peak``: the largest resident (or CUDA-allocated) bytes during the call; ``before``: bytes
    in use when it started; ``scope``: "call" (reset before it) or "process" (lifetime peak)."""

    kind: str = "host"
    peak: int | None = None
    before: int | None = None
    scope: str = "call"

    @property
    def delta(self) -> int | None:
        return None if self.peak is None or self.before is None else max(self.peak - self.before, 0)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "peak_bytes": self.peak, "before_bytes": self.before,
                "delta_bytes": self.delta, "scope": self.scope}


class PeakMemory:
    """``with PeakMemory() as record: work()`` then ``record.peak``; ``device="cuda"`` measures
    ``torch.cuda.max_memory_allocated`` instead of host memory."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.record = MemoryRecord(kind="cuda" if device == "cuda" else "host")

    def __enter__(self) -> MemoryRecord:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.record.before = torch.cuda.memory_allocated()
        else:
            release_freed_memory()
            self.record.before = rss_bytes()
            if not reset_peak_rss():
                self.record.scope = "process"
        return self.record

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.record.peak = torch.cuda.max_memory_allocated()
        else:
            self.record.peak = peak_rss_bytes()

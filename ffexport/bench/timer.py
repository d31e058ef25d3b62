"""Interleaved timing: every variant runs once per round, in rotating order; median and IQR.

Running the variants side by side in one process, round after round, exposes them to the same
machine state (other processes' load, clocks, caches), so their ratio is meaningful even on a busy
machine where absolute times drift. Never used in timed tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Timing:
    """Wall-clock samples of one variant, in seconds; ``memory`` from its first (measured) call."""

    name: str
    samples: list[float] = field(default_factory=list)
    memory: Any = None

    def _q(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else float("nan")

    @property
    def median(self) -> float:
        return self._q(50)

    @property
    def iqr(self) -> float:
        return self._q(75) - self._q(25)

    def to_json(self) -> dict[str, Any]:
        memory = self.memory.to_json() if hasattr(self.memory, "to_json") else self.memory
        return {"samples_s": self.samples, "median_s": self.median, "iqr_s": self.iqr, "memory": memory}


class Timer:
    """``Timer(warmup=1, repeats=5)({"full": f, "static": g}) -> {"full": Timing, ...}``.

    ``sync`` runs before and after each timed call (``torch.cuda.synchronize`` on a GPU);
    ``memory()`` gives a context manager wrapped around each variant's first call (a warm-up call
    when ``warmup > 0``) whose ``__enter__`` value is kept as ``Timing.memory``;
    ``progress(text)`` is told what runs next.
    """

    def __init__(self, *, warmup: int = 1, repeats: int = 5, sync: Callable[[], None] | None = None,
                 memory: Callable[[], AbstractContextManager] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        if warmup < 0 or repeats < 1:
            raise ValueError(f"warmup must be >= 0 and repeats >= 1, got {warmup}, {repeats}")
        self.warmup, self.repeats = warmup, repeats
        self.sync = sync or (lambda: None)
        self.memory = memory
        self.progress = progress or (lambda text: None)

    def __call__(self, variants: dict[str, Callable[[], Any]]) -> dict[str, Timing]:
        names = list(variants)
        timings = {name: Timing(name) for name in names}
        measured: set[str] = set()
        for r in range(self.warmup + self.repeats):
            shift = r % len(names)
            order = names[shift:] + names[:shift]
            warm = r < self.warmup
            for name in order:
                self.progress(f"{'warm-up' if warm else 'round'} {r + 1 if warm else r - self.warmup + 1}: {name}")
                first = name not in measured and self.memory is not None
                with (self.memory() if first else nullcontext()) as record:
                    self.sync()
                    start = time.perf_counter()
                    variants[name]()
                    self.sync()
                    elapsed = time.perf_counter() - start
                if first:
                    measured.add(name)
                    timings[name].memory = record
                if not warm:
                    timings[name].samples.append(elapsed)
                log.debug("%s %s: %.4f s", "warm-up" if warm else "timed", name, elapsed)
        return timings

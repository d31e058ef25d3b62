"""Interleaved timing: warm-up, rounds in rotating order, statistics (no timing is asserted)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from ffexport.bench.memory import PeakMemory
from ffexport.bench.timer import Timer, Timing


def test_rounds_rotate_and_warm_up_is_not_sampled():
    calls = []
    timer = Timer(warmup=2, repeats=3)
    timings = timer({name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")})
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c", "b", "c", "a"]
    assert [len(t.samples) for t in timings.values()] == [3, 3, 3]


def test_memory_is_measured_on_each_variant_first_call_only():
    entered = []

    @contextmanager
    def memory():
        entered.append(1)
        yield len(entered)

    timings = Timer(warmup=1, repeats=2, memory=memory)({"a": lambda: None, "b": lambda: None})
    assert len(entered) == 2 and {t.memory for t in timings.values()} == {1, 2}


def test_statistics():
    t = Timing("x", [4.0, 1.0, 3.0, 2.0])
    assert t.median == 2.5 and t.iqr == pytest.approx(3.25 - 1.75)
    assert Timing("y", [0.5]).iqr == 0.0


def test_peak_memory_sees_an_allocation():
    import numpy as np

    with PeakMemory() as record:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert record.peak is not None and record.before is not None
    if record.scope == "call":  # the kernel let us reset the high-water mark: the block shows
        assert record.delta >= 60 * 2**20

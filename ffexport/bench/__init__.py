"""Benchmarks of the reduced prefill: ``ffexport bench``.

Variants of one bucket's prefill (the full model, the static FrameFusion schedule, the dynamic
reference) are timed side by side in one run, interleaved (warm-up, then rounds in rotating order,
median and IQR), with the FLOP ratio the schedule implies (the ideal speed-up), the share of the
prefill spent in merge/prune steps, and peak memory. Stages:

- :class:`~ffexport.bench.prefill.PrefillBench`: model + bucket -> inputs, schedule, variants, result;
- :class:`~ffexport.bench.timer.Timer`: interleaved timing of named callables;
- :func:`~ffexport.bench.flops.prefill_flops`: the FLOP model behind the ideal speed-up;
- :class:`~ffexport.bench.memory.PeakMemory`: peak resident (or CUDA) memory of one call.

Benchmarks are never timed tests: the tests check the table's structure and the FLOP arithmetic.
"""

"""The ``ffexport bench`` subcommand: time one bucket's prefill variants side by side.

``ffexport/cli.py`` calls :func:`add_bench_parser`; torch is imported when the command runs.
"""

from __future__ import annotations

import argparse
import logging

from ffexport.argtypes import non_negative_int, positive_int
from ffexport.cliargs import add_fusion_args, add_model_args

log = logging.getLogger(__name__)


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``ffexport`` subcommands and return its parser."""
    bench = subparsers.add_parser(
        "bench", help="benchmark the prefill: full model vs FrameFusion (static graph) vs the dynamic reference",
        description="Time one bucket's prefill variants side by side in one run (warm-up, then interleaved "
                    "rounds; median and IQR): the full model, the static FrameFusion schedule and, with "
                    "--runtime torch, the dynamic reference at the same token budget (on CUDA also CUDA-graphed "
                    "static and full prefills). Prints the FLOP ratio the schedule implies (the ideal speed-up), "
                    "measured/ideal, the share of the prefill spent in merge/prune steps and peak memory, and "
                    "ends with the line `prefill speedup: X.XXx (ideal Y.YYx)`. Never run as a timed test.",
    )
    add_model_args(bench)
    bench.add_argument("--bucket", default="8x112x112", metavar="FxHxW",
                       help="video shape: input frames x height x width in pixels (default 8x112x112)")
    bench.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"],
                       help="torch: ReducedDecoder.prefill (full, static, dynamic); onnxruntime: the exported "
                            "static and full-model prefill graphs (default torch)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    bench.add_argument("--schedule", metavar="SCHEDULE.json",
                       help="static schedule to time (default: the one the dynamic reference realizes on the inputs)")
    add_fusion_args(bench)
    bench.add_argument("--repeats", type=positive_int, default=5, metavar="N", help="timed rounds (default 5)")
    bench.add_argument("--warmup", type=non_negative_int, default=1, metavar="N", help="warm-up rounds (default 1)")
    bench.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="CPU threads for PyTorch and ONNX Runtime (default: every core available)")
    bench.add_argument("--max-text", type=positive_int, default=256, metavar="T",
                       help="onnxruntime: longest text the captured graphs take, as in ffexport build (default 256)")
    bench.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                       help="--device cuda: time eager PyTorch only (no CUDA-graph replays)")
    bench.add_argument("--race", action="store_true",
                       help="race what users run, in one process, interleaved, same inputs and threads: transformers "
                            "Qwen2VLForConditionalGeneration (sdpa, no reduction), the full model in ONNX Runtime, "
                            "ffexport's reduced graphs and the dynamic reference; prefill, time to first token, decode "
                            "tokens/s, end to end for --new-tokens, peak memory (CPU, fp32)")
    bench.add_argument("--new-tokens", type=positive_int, default=64, metavar="N",
                       help="--race: greedy tokens each variant generates (default 64)")
    bench.add_argument("--json", metavar="OUT.json", help="also write every number here")
    bench.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    bench.set_defaults(func=bench_command)
    return bench


def bench_command(args: argparse.Namespace) -> int:
    """Carry out ``ffexport bench``; user mistakes raise :class:`~ffexport.errors.FFExportError`."""
    import torch

    from ffexport.errors import InputError, RunError
    from ffexport.io import check_writable, save_json

    if args.json:
        check_writable(args.json, overwrite=args.overwrite)
    from ffexport.export.buckets import bucket_dims

    bucket_dims(args.bucket)  # the syntax, before a long load
    if args.device == "cuda":  # say so before loading anything
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device cpu")
    from ffexport.bench.prefill import BenchConfig, PrefillBench
    from ffexport.bench.report import render
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.schedule import load_schedule
    from ffexport.models import LoadModel

    if args.race and args.device != "cpu":
        raise InputError("--race runs on the CPU (ONNX Runtime's CPU provider); drop --device cuda")
    fusion = FusionConfig(cost=args.cost, similarity=args.similarity, ratio_lower_bound=args.ratio_lower_bound,
                          budget_layers=args.budget_layers)
    config = BenchConfig(bucket=args.bucket, runtime=args.runtime, device=args.device, fusion=fusion,
                         schedule=load_schedule(args.schedule) if args.schedule else None, repeats=args.repeats,
                         warmup=args.warmup, threads=args.threads, max_text=args.max_text,
                         cuda_graphs=args.cuda_graphs, quiet=args.quiet)
    from ffexport.models import require_stage

    require_stage(args.model, "bench")
    loaded = LoadModel(args.model, random_weights=args.random_weights, weights=args.weights, dtype=args.dtype,
                       layers=args.layers, vision_layers=args.vision_layers,
                       device=args.device if args.random_weights else "cpu")()
    if args.race:
        from ffexport.bench.race import Race, RaceConfig, render_race

        race = Race(loaded, RaceConfig(bucket=args.bucket, fusion=fusion, schedule=config.schedule,
                                       repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                                       max_text=args.max_text, new_tokens=args.new_tokens, quiet=args.quiet))()
        if args.json:
            save_json(race.to_json(), args.json, overwrite=args.overwrite)
            log.info("wrote %s", args.json)
        render_race(race)
        return 0
    try:
        result = PrefillBench(loaded, config)()
    except torch.OutOfMemoryError as e:
        raise RunError(f"out of device memory during the benchmark ({str(e).splitlines()[0]}); use a smaller "
                       "--bucket or a device with more memory") from e
    if args.json:
        save_json(result.to_json(), args.json, overwrite=args.overwrite)
        log.info("wrote %s", args.json)
    render(result)
    return 0

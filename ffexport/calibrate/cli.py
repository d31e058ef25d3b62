"""The ``ffexport calibrate`` and ``ffexport explain`` subcommands.

``ffexport/cli.py`` calls :func:`add_calibrate_parser` and :func:`add_explain_parser`. Only argparse
helpers are imported here (the runtime's CLI must stay torch-free); the work is imported when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path
from typing import Any

from ffexport.argtypes import non_negative_int, positive_int
from ffexport.cliargs import add_fusion_args, add_model_args, bucket_shape, load_model

log = logging.getLogger(__name__)

DEFAULT_KINDS = "static,moving_object,pan,zoom,scene_cut"  # ffexport.calibrate.videos.CALIBRATION_KINDS


def add_calibrate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate", help="choose a bucket's static FrameFusion schedule from data, and measure its fidelity",
        description="Run the dynamic FrameFusion reference on calibration videos resized to the bucket, collect "
                    "the schedules it realizes, and choose one static schedule: per step the --quantile of the "
                    "realized merges, the median prune step, the prune sized so the cost equals --cost "
                    "(docs/calibration.md). Writes the schedule (with its provenance) for `ffexport build "
                    "--schedule`; with --report, also static-vs-dynamic fidelity on held-out videos (JSON + PNG).",
    )
    add_model_args(p)
    add_fusion_args(p)
    p.add_argument("--bucket", required=True, type=bucket_shape, metavar="FxHxW", help="video shape: input frames x height x width")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", metavar="DIR", help="calibrate on the video files in DIR (unreadable ones are skipped)")
    source.add_argument("--synthetic", type=positive_int, metavar="N",
                        help="calibrate on N synthetic videos (the calibration mix: calib/README.md)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="first seed of the synthetic set (default 0)")
    p.add_argument("--kinds", default=DEFAULT_KINDS, help=f"synthetic kinds, comma-separated (default {DEFAULT_KINDS})")
    p.add_argument("--quantile", type=float, default=0.5,
                   help="quantile of the realized merges each static merge step takes (default 0.5: the median)")
    p.add_argument("--out", required=True, metavar="SCHEDULE.json", help="where to write the schedule")
    g = p.add_argument_group("fidelity report")
    g.add_argument("--report", metavar="DIR", help="write DIR/fidelity.json and DIR/fidelity.png")
    held = g.add_mutually_exclusive_group()
    held.add_argument("--report-videos", metavar="DIR", help="held-out video files (default: synthetic)")
    held.add_argument("--report-synthetic", type=positive_int, default=8, metavar="N",
                      help="held-out synthetic videos (default 8)")
    g.add_argument("--report-seed", type=non_negative_int, default=None,
                   help="first seed of the held-out set (default: --seed + 10000)")
    g.add_argument("--report-kinds", default=None, help="held-out synthetic kinds (default: --kinds)")
    g.add_argument("--max-new-tokens", type=positive_int, default=8, metavar="N",
                   help="greedy tokens compared per held-out video (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=calibrate_command)
    return p


def add_explain_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain", help="draw one video's frames with the patches FrameFusion merged and pruned",
        description="Run FrameFusion on one video at a bucket's size (the dynamic reference, or --schedule) and "
                    "draw a frame per temporal group with each visual token's area tinted: merged (blue) or "
                    "pruned (red).",
    )
    add_model_args(p)
    add_fusion_args(p)
    p.add_argument("--video", required=True, help="a video file, or synthetic:KIND[:SEED]")
    p.add_argument("--bucket", default="8x112x112", type=bucket_shape, metavar="FxHxW", help="video shape (default 8x112x112)")
    p.add_argument("--schedule", metavar="SCHEDULE.json", help="show this static schedule instead of the dynamic run")
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=explain_command)
    return p


# ------------------------------------------------------------------------------------------ calibrate
def calibrate_command(args: argparse.Namespace) -> int:
    from ffexport.calibrate.collect import Collect
    from ffexport.calibrate.policy import QuantilePolicy
    from ffexport.calibrate.shipped import bucket_record, fusion_record
    from ffexport.calibrate.videos import HELD_OUT_SEED_OFFSET, folder_videos, synthetic_set
    from ffexport.errors import FusionError, InputError
    from ffexport.export.manifest import now
    from ffexport.fusion.config import FusionConfig
    from ffexport.io import check_writable, save_json

    check_writable(args.out, overwrite=args.overwrite)
    if args.report:
        for name in ("fidelity.json", "fidelity.png"):
            check_writable(Path(args.report) / name, overwrite=args.overwrite)
    fusion = FusionConfig(cost=args.cost, similarity=args.similarity, ratio_lower_bound=args.ratio_lower_bound,
                          budget_layers=args.budget_layers)
    policy = QuantilePolicy(fusion, quantile=args.quantile)
    kinds = _kinds(args.kinds)
    videos = folder_videos(args.videos) if args.videos else synthetic_set(args.synthetic, seed=args.seed, kinds=kinds)
    loaded = load_model(args)
    bucket = _bucket(loaded, args.bucket)
    collection = Collect(loaded, bucket, fusion, quiet=args.quiet)(videos)
    runs = collection.calibrated
    if not runs:
        if not collection.runs:
            raise InputError(f"--videos {args.videos}: no readable video among its {len(videos)} file(s) "
                             f"({', '.join(collection.unreadable[:5])}{', ...' if len(videos) > 5 else ''})")
        first, count = collection.failed[0], len(collection.failed)
        what = ("the cost is too small for every calibration video" if all("cost is too small" in r.error for r in
                collection.failed) else "FrameFusion cannot meet the budget on any calibration video")
        raise FusionError(f"{what} ({count} of {count}; {first.name}: {first.error}); raise --cost, or merge in fewer "
                          "steps (--ratio-lower-bound, --similarity)")
    choice = policy([r.schedule for r in runs], loaded.num_layers)
    record = {
        "format": "ffexport.calibration/1",
        "model": loaded.name, "model_source": loaded.source, "num_layers": loaded.num_layers,
        "bucket": bucket_record(bucket), "fusion": fusion_record(fusion, loaded.num_layers),
        "policy": {"rule": policy.describe(), "quantile": args.quantile, "prune_slot": choice.prune_slot,
                   "notes": list(choice.notes)},
        "cost": {"requested": fusion.cost, "realized": round(choice.cost, 5),
                 "relative_error": round(choice.cost_error, 5)},
        "inputs": {"source": f"folder {args.videos}" if args.videos else "synthetic",
                   "seed": None if args.videos else args.seed, "kinds": None if args.videos else list(kinds),
                   "videos": [r.name for r in runs],
                   "skipped": {"unreadable": collection.unreadable,
                               "cost_too_small": [r.name for r in collection.failed]}},
        "command": _command(args),
        "date": now(), **_versions(),
    }
    save_json({**choice.schedule.to_json(), "calibration": record}, args.out, overwrite=args.overwrite)
    if not args.quiet:
        _summary_table(runs, collection, choice, bucket, loaded)
    log.info("wrote %s: %s", args.out, _describe(choice.schedule))
    if args.report:
        _report(args, loaded, bucket, fusion, choice, runs, kinds, HELD_OUT_SEED_OFFSET, record)
    return 0


def _report(args, loaded, bucket, fusion, choice, runs, kinds, offset, record) -> None:
    from ffexport.calibrate.collect import load_case
    from ffexport.calibrate.report import FIDELITY_FORMAT, Fidelity, plot_report, summarize
    from ffexport.calibrate.videos import folder_videos, probe_set, synthetic_set
    from ffexport.errors import InputError
    from ffexport.io import save_json
    from ffexport.progress import Steps

    seed = args.report_seed if args.report_seed is not None else args.seed + offset
    held = folder_videos(args.report_videos) if args.report_videos else synthetic_set(
        args.report_synthetic, seed=seed, kinds=_kinds(args.report_kinds) if args.report_kinds else kinds)
    probes = probe_set(seed)
    fidelity = Fidelity(loaded, choice.schedule, fusion, max_new_tokens=args.max_new_tokens)
    calibration = [r.redundancy for r in runs]
    records: dict[str, list] = {"held_out": [], "out_of_distribution": []}
    held_runs = []
    with Steps(len(held) + len(probes), "fidelity", quiet=args.quiet) as steps:
        for group, videos in (("held_out", held), ("out_of_distribution", probes)):
            for video in videos:
                steps.start(video.name)
                try:
                    case = load_case(loaded, video, bucket)
                except InputError as e:
                    log.warning("skipped %s: %s", video.name, e)
                    steps.advance()
                    continue
                rec, run = fidelity(video.name, case, calibration)
                records[group].append(rec)
                held_runs.append(run)
                steps.advance()
    out = Path(args.report)
    data = {"format": FIDELITY_FORMAT, "model": loaded.name, "model_source": loaded.source, "bucket": bucket.name,
            "fusion": record["fusion"], "schedule": choice.schedule.to_json(),
            "cost": {"budget": fusion.cost, "static": round(choice.cost, 5), "relative_error": round(choice.cost_error, 5)},
            "calibration": {"videos": len(runs), "layer0_redundancy": _stats(calibration),
                            "cost_dynamic": _stats([r.cost for r in runs])},
            "summary": {"held_out": summarize(records["held_out"]),
                        "out_of_distribution": summarize(records["out_of_distribution"])},
            **records, "calibration_record": record}
    save_json(data, out / "fidelity.json", overwrite=args.overwrite)
    plot_report(out / "fidelity.png", schedule=choice.schedule, calibration=runs, held_out=held_runs,
                records=records["held_out"] + records["out_of_distribution"], num_layers=loaded.num_layers,
                title=f"{loaded.name} ({loaded.source}), bucket {bucket.name}: static schedule calibrated on "
                      f"{len(runs)} videos vs the dynamic reference", requested_cost=fusion.cost,
                budget_layers=fusion.layers_for(loaded.num_layers))
    s = data["summary"]["held_out"]
    if s.get("compared"):
        log.info("fidelity on %d held-out videos: greedy tokens equal on %d, agreement %.2f, first-token KL mean %.3g, "
                 "kept-token overlap %.2f", s["compared"], s["tokens_equal"], s["token_agreement"],
                 s["kl_first_token_mean"], s["kept_overlap"])
    for rec in records["out_of_distribution"]:
        far = rec.get("distance_from_calibration") or {}
        log.info("out of distribution %s: layer-0 redundancy %s (calibration %s..%s, z %s)%s", rec["video"],
                 far.get("value"), far.get("calibration_min"), far.get("calibration_max"), far.get("z"),
                 ", outside the calibration range" if far.get("outside") else "")
    log.info("wrote %s and %s", out / "fidelity.json", out / "fidelity.png")


def _stats(values) -> dict[str, float] | None:
    import numpy as np

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None
    return {"min": round(float(v.min()), 4), "median": round(float(np.median(v)), 4), "max": round(float(v.max()), 4),
            "mean": round(float(v.mean()), 4)}


def _summary_table(runs, collection, choice, bucket, loaded) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"calibration: {loaded.name}, bucket {bucket.name} ({bucket.visual_tokens} visual tokens)")
    for col in ("video", "layer-0 redundancy", "steps (remove)", "tokens left", "cost"):
        table.add_column(col, justify="left" if col in ("video", "steps (remove)") else "right")
    for r in runs:
        table.add_row(r.name, f"{r.redundancy:.3f}" if r.redundancy is not None else "-", _describe(r.schedule),
                      str(r.schedule.final_visual_tokens), f"{r.cost:.3f}")
    table.add_row("STATIC (chosen)", "", _describe(choice.schedule), str(choice.schedule.final_visual_tokens),
                  f"{choice.cost:.3f}", style="bold")
    Console(width=150).print(table)
    print(f"requested cost {choice.requested}, static schedule {choice.cost:.4f} ({100 * choice.cost_error:+.2f}%); "
          f"{len(runs)} video(s) calibrated, {len(collection.failed)} skipped (cost too small), "
          f"{len(collection.unreadable)} unreadable")
    for note in choice.notes:
        print(f"note: {note}")


def _describe(schedule) -> str:
    parts = [f"L{s.layer}{' pre' if s.where == 'before_attention' else ''} {s.op} {s.remove}"
             for s in schedule.stages if s.remove]
    return ", ".join(parts) or "nothing removed"


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _bucket(loaded, text: str):
    from ffexport.export.buckets import model_bucket

    bucket = model_bucket(loaded.adapter, loaded.config, text, video_pixels=loaded.video_pixels)
    if bucket.rounded:
        log.info("bucket %s: %dx%d pixels are resized to %dx%d (the model's resize rule)", bucket.name,
                 bucket.height, bucket.width, *bucket.resized)
    return bucket


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this calibration (options in canonical form)."""
    parts = ["ffexport", "calibrate", "--model", args.model]
    if args.weights:
        parts += ["--weights", args.weights]
    if args.random_weights:
        parts.append("--random-weights")
    for flag, value in (("--layers", args.layers), ("--vision-layers", args.vision_layers),
                        ("--budget-layers", args.budget_layers)):
        if value is not None:
            parts += [flag, str(value)]
    if args.dtype != "float32":
        parts += ["--dtype", args.dtype]
    parts += ["--bucket", args.bucket, "--cost", f"{args.cost:g}", "--similarity", f"{args.similarity:g}",
              "--ratio-lower-bound", f"{args.ratio_lower_bound:g}"]
    parts += ["--videos", args.videos] if args.videos else ["--synthetic", str(args.synthetic), "--seed", str(args.seed),
                                                            "--kinds", args.kinds]
    parts += ["--quantile", f"{args.quantile:g}", "--out", str(args.out)]
    return " ".join(parts)


def _versions() -> dict[str, Any]:
    import ffexport

    root = Path(ffexport.__file__).resolve().parent.parent
    commit, dirty = None, None
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                    timeout=10).stdout.strip() or None
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout
            dirty = bool(status.strip())
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"ffexport": ffexport.__version__, "commit": commit, "uncommitted_changes": dirty}


# ------------------------------------------------------------------------------------------ explain
def explain_command(args: argparse.Namespace) -> int:
    from ffexport.calibrate.explain import Explain, draw_explain
    from ffexport.errors import InputError
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.schedule import load_schedule
    from ffexport.io import check_writable

    check_writable(args.out, overwrite=args.overwrite)
    if not args.out.lower().endswith(".png"):
        raise InputError(f"--out {args.out}: explain writes a PNG picture (name it .png)")
    schedule = load_schedule(args.schedule) if args.schedule else None
    fusion = None if schedule is not None else FusionConfig(
        cost=args.cost, similarity=args.similarity, ratio_lower_bound=args.ratio_lower_bound,
        budget_layers=args.budget_layers)
    loaded = load_model(args)
    bucket = _bucket(loaded, args.bucket)
    frames = _video_frames(args.video, bucket)
    if schedule is not None and (schedule.visual_tokens, schedule.patches_per_frame) != (
            bucket.visual_tokens, bucket.patches_per_frame):
        raise InputError(f"the schedule is for {schedule.visual_tokens} visual tokens; bucket {bucket.name} has "
                         f"{bucket.visual_tokens} (pass the bucket it was made for with --bucket)")
    explained = Explain(loaded, bucket, fusion=fusion, schedule=schedule)(frames, args.video)
    draw_explain(args.out, explained)
    log.info("wrote %s: %s", args.out, _describe(explained.schedule))
    return 0


def _video_frames(video: str, bucket):
    from ffexport.errors import InputError

    if video.startswith("synthetic:"):
        from ffexport.video import synthetic_video

        parts = video.split(":")
        kind = parts[1] if len(parts) > 1 else ""
        try:
            seed = int(parts[2]) if len(parts) > 2 else 0
            h, w = bucket.resized
            return synthetic_video(kind, frames=bucket.frames, height=h, width=w, seed=seed)
        except ValueError as e:
            raise InputError(f"--video {video!r}: {e}") from e
    from ffexport.runtime.video import read_video

    return read_video(video, wanted=bucket.frames)

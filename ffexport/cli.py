"""Command line: wires the pipeline's stages; every user mistake is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from ffexport.argtypes import non_negative_int, pixel_size
from ffexport.cliargs import add_fusion_args, add_model_args, add_verbosity_args, bucket_shape, load_model
from ffexport.errors import FFExportError, InputError
from ffexport.runtime.defaults import DEFAULT_PROMPT  # torch-free

log = logging.getLogger("ffexport")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``ffexport`` parser: every subcommand, or (``command``) only that one, importing only its module.

    With every subcommand, one whose module cannot be imported here (``lint`` without onnx on a
    runtime-only install) is listed with the reason instead of failing the whole help.
    """
    parser = argparse.ArgumentParser(
        prog="ffexport",
        description="Deploy video LLMs with FrameFusion token reduction as static-bucket graphs.",
    )
    add_verbosity_args(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, adder in COMMANDS.items():
        if command is not None and name != command:
            continue
        if isinstance(adder, str):
            module, function = adder.split(":")
            try:
                adder = getattr(importlib.import_module(module), function)
            except ModuleNotFoundError as e:
                if _ours(e) or command is not None:
                    raise
                sub.add_parser(name, help=f"(unavailable here: needs {e.name})")
                continue
        adder(sub)
    for p in sub.choices.values():  # -q/-v also after the verb: `ffexport build ... --quiet`
        add_verbosity_args(p)
    return parser


def _ours(e: ModuleNotFoundError) -> bool:
    """Whether the missing module is part of ffexport (a bug) rather than a package not installed here."""
    return (e.name or "ffexport").split(".")[0] == "ffexport"


def _not_installed(command: str | None, e: ModuleNotFoundError) -> InputError:
    return InputError(f"ffexport {command} needs {e.name}, which is not installed here (a runtime-only install "
                      "runs `ffexport run`; pip install 'ffexport[export]' for the rest)")


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (the first word that is not an option), if it is a known one."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _add_reference_parser(sub: argparse._SubParsersAction) -> None:
    ref = sub.add_parser(
        "reference", help="run the PyTorch reference (dynamic FrameFusion, a static schedule, or none)",
        description="Run one pre-processed case through the PyTorch reference and save logits, per-layer "
                    "KV lengths and greedy tokens. Without --inputs, a synthetic video and a default prompt "
                    "are used.",
    )
    add_model_args(ref)
    add_fusion_args(ref)
    ref.add_argument("--inputs", metavar="CASE.npz",
                     help="input_ids, pixel_values_videos, video_grid_thw (default: a synthetic video)")
    mode = ref.add_mutually_exclusive_group()
    mode.add_argument("--static", metavar="SCHEDULE.json", help="run the static-schedule decoder instead")
    mode.add_argument("--no-reduction", action="store_true", help="run the full model (no FrameFusion)")
    ref.add_argument("--max-new-tokens", type=non_negative_int, default=0, metavar="N",
                     help="greedy tokens to generate (default 0)")
    ref.add_argument("--out", required=True, metavar="OUT.npz", help="where to write the outputs")
    ref.add_argument("--schedule-out", metavar="SCHEDULE.json", help="write the schedule used or realized")
    ref.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ref.set_defaults(func=_cmd_reference)


def _add_case_parser(sub: argparse._SubParsersAction) -> None:
    case = sub.add_parser(
        "case", help="make a pre-processed case (case.npz) from a video and a prompt",
        description="Preprocess a video like the model's processor and tokenize a prompt into case.npz.",
    )
    add_model_args(case)
    case.add_argument("--video", default="synthetic:moving_object",
                      help="a video file (mp4, webm, ...: --frames frames sampled uniformly over it, at its own "
                           "size) or synthetic:KIND (moving_object, pan, scene_cut, static, noise) "
                           "(default: synthetic:moving_object)")
    case.add_argument("--frames", type=non_negative_int, default=8, help="input frames (default 8)")
    case.add_argument("--size", type=pixel_size, default=(112, 112), metavar="HxW",
                      help="frame size in pixels for synthetic videos (default 112x112)")
    case.add_argument("--seed", type=non_negative_int, default=0, help="synthetic video seed (default 0)")
    case.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question about the video")
    case.add_argument("--out", required=True, metavar="CASE.npz|DIR")
    case.add_argument("--format", choices=["npz", "npy"], default=None,
                      help="npz: one case.npz file; npy: a folder of .npy files, for the C++ runtime "
                           "(default: npy when --out ends with '/', else npz)")
    case.add_argument("--overwrite", action="store_true", help="replace an existing file")
    case.set_defaults(func=_cmd_case)


def _add_build_parser(sub: argparse._SubParsersAction) -> None:
    build = sub.add_parser(
        "build", help="export static-bucket ONNX graphs for a model, verified against PyTorch",
        description="Export the vision encoder, the FrameFusion-reduced prefill (one per bucket) and the "
                    "decode step as ONNX graphs sharing one weight file; run each in ONNX Runtime against the "
                    "PyTorch reference (parity gate) and write DIR/manifest.json. Re-running skips finished, "
                    "verified buckets.",
    )
    add_model_args(build)
    build.add_argument("--bucket", action="append", type=bucket_shape, metavar="FxHxW", default=None,
                       help="video shape: input frames x height x width in pixels (repeatable; default 8x112x112)")
    build.add_argument("--schedule", metavar="SCHEDULE.json", help="use this schedule (one bucket only)")
    build.add_argument("--no-shipped-schedule", action="store_true",
                       help="without --schedule, use the default policy even where a calibrated schedule ships for "
                            "this model, bucket and FrameFusion settings (docs/calibration.md)")
    build.add_argument("--fidelity", action="store_true",
                       help="also write <bucket>/fidelity.json: the schedule vs the dynamic reference on the parity "
                            "videos (greedy tokens, first-token KL, kept-token overlap, cost)")
    add_fusion_args(build)
    build.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"],
                       help="graph precision (default fp32); fp16 and bf16 keep norms, softmax and FrameFusion's "
                            "similarity/importance/averages in fp32; bf16 needs --backend tensorrt or --graph-only "
                            "(ONNX Runtime on CPU has no bf16 kernels); int8 (--backend onnxruntime only): the fp32 "
                            "graphs pass their parity gate, then the prefill and decode graphs' weight MatMuls are "
                            "quantized (int8 per output channel, activations per run) and gated against the fp32 "
                            "reference (greedy tokens, logits error, top-5)")
    build.add_argument("--max-text", type=non_negative_int, default=256, metavar="T",
                       help="longest text (prompt tokens outside the video) the graphs take (default 256)")
    build.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "tensorrt-rtx"],
                       help="onnxruntime: ONNX graphs (default); tensorrt: also one TensorRT engine per graph, built "
                            "strongly typed and gated against PyTorch (needs TensorRT and a GPU); tensorrt-rtx: also "
                            "one TensorRT-RTX engine per graph built ahead of time for --compute-capability (no GPU "
                            "needed; built, not run)")
    build.add_argument("--compute-capability", metavar="SM89[,SM120]", default=None,
                       help="--backend tensorrt-rtx: the GPU generations to build engines for (SM75, SM80, SM86, SM89, "
                            "SM120, SM121; comma-separated)")
    build.add_argument("--plugins", action="append", default=[], metavar="LIB.so",
                       help="TensorRT plugin library to load (repeatable; --backend tensorrt)")
    build.add_argument("--ops", default="standard", choices=["standard", "plugin"],
                       help="standard: FrameFusion's merge/prune steps in standard ONNX ops (default); plugin: one "
                            "FrameFusionMerge/FrameFusionPrune node per step (ONNX Runtime runs them through "
                            "onnxruntime-extensions in fp32; TensorRT needs --plugins libffexport_plugins.so)")
    build.add_argument("--attention", default=None, choices=["fused", "explicit"],
                       help="fused: one attention op per layer (ONNX Attention, opset 23; the causal prefill as ONNX "
                            "Runtime's GroupQueryAttention for --backend onnxruntime), memory linear in the length; "
                            "explicit: MatMul+Softmax (L x L per head). Default: fused where the backend builds it "
                            "(not TensorRT fp32); recorded in the manifest")
    build.add_argument("--graph-only", action="store_true",
                       help="capture the graphs' structure without weights (meta device, seconds, little memory) "
                            "for ffexport lint at real sizes; nothing is validated or usable")
    build.add_argument("--streamed", action="store_true",
                       help="capture from a meta-device model and stream the weights tensor by tensor into "
                            "weights.bin; parity on a truncated copy (default: chosen when the parameters need more "
                            "than 40%% of the available memory)")
    build.add_argument("--out", required=True, metavar="DIR", help="build directory")
    build.add_argument("--overwrite", action="store_true", help="replace an existing build in DIR")
    build.set_defaults(func=_cmd_build)



def _add_video_parser(sub: argparse._SubParsersAction) -> None:
    video = sub.add_parser("video", help="write a synthetic test video (mp4, webm or gif)",
                           description="Write one of the synthetic videos ffexport tests with, as a file.")
    video.add_argument("kind", nargs="?", default="moving_object",
                       help="moving_object, pan, scene_cut, static, noise, zoom or slideshow (default moving_object)")
    video.add_argument("--frames", type=non_negative_int, default=16, help="frames (default 16)")
    video.add_argument("--size", type=pixel_size, default=(112, 112), metavar="HxW", help="pixels (default 112x112)")
    video.add_argument("--seed", type=non_negative_int, default=0)
    video.add_argument("--out", required=True, metavar="FILE", help="FILE.mp4, FILE.webm or FILE.gif")
    video.add_argument("--overwrite", action="store_true", help="replace an existing file")
    video.set_defaults(func=_cmd_video)


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list the model presets")
    models.set_defaults(func=_cmd_models)


#: The subcommands in ``ffexport --help`` order: name -> the function adding its parser, here or as
#: "module:function" in the module that carries the command out. A command line imports only its own
#: command's module, so ``ffexport run`` needs only the runtime's packages (``ffexport[runtime]``).
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], object] | str] = {
    "reference": _add_reference_parser,
    "case": _add_case_parser,
    "build": _add_build_parser,
    "run": "ffexport.runtime.cli:add_run_parser",
    "lint": "ffexport.lint.cli:add_lint_parser",
    "check": "ffexport.lint.check:add_check_parser",
    "pack": "ffexport.export.pack:add_pack_parser",
    "calibrate": "ffexport.calibrate.cli:add_calibrate_parser",
    "explain": "ffexport.calibrate.cli:add_explain_parser",
    "bench": "ffexport.bench.cli:add_bench_parser",
    "video": _add_video_parser,
    "models": _add_models_parser,
}


# ---------------------------------------------------------------- commands
def _clip(video: str, *, frames: int, size: tuple[int, int], seed: int):
    """uint8 frames [T, H, W, 3] from ``synthetic:KIND`` or a video file (read before any model is loaded)."""
    from ffexport.video import synthetic_video

    if not video.startswith("synthetic:"):
        return _read_clip(video, frames)
    try:
        return synthetic_video(video.split(":", 1)[1], frames=frames, height=size[0], width=size[1], seed=seed)
    except ValueError as e:
        raise InputError(f"--video {video!r}: {e}") from e


def _make_case(loaded, clip, prompt: str):
    from ffexport.export.policy import video_case

    if loaded.tokenizer is None:
        log.warning("%s has no tokenizer: the case holds synthetic text ids around the video, not the prompt", loaded.name)
    return video_case(loaded, clip, prompt)


def _read_clip(path: str, frames: int):
    """``frames`` frames spread uniformly over a video file (repeated, with a note, when it has fewer)."""
    from ffexport.runtime.video import probe_video, read_video

    if frames < 1:
        raise InputError(f"--frames {frames}: a case needs at least one frame")
    info = probe_video(path)  # a missing or unreadable file: one line, before decoding
    if info.frames < frames:
        log.warning("%s has %d frames; the case needs %d: frames repeated", path, info.frames, frames)
    return read_video(path, wanted=frames)


def _cmd_case(args) -> int:
    clip = _clip(args.video, frames=args.frames, size=args.size, seed=args.seed)
    loaded = load_model(args)
    case = _make_case(loaded, clip, args.prompt)
    if (args.format or ("npy" if args.out.endswith("/") else "npz")) == "npy":
        from ffexport.casedir import save_case_dir

        save_case_dir(case, args.out, overwrite=args.overwrite)
    else:
        case.save(args.out, overwrite=args.overwrite)
    t, h, w = case.grid
    log.info("wrote %s: %d tokens, video grid %dx%dx%d", args.out, case.input_ids.shape[1], t, h, w)
    return 0


def _cmd_reference(args) -> int:
    from ffexport.case import load_case
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.schedule import load_schedule
    from ffexport.io import check_writable, save_npz
    from ffexport.reference import Reference

    check_writable(args.out, overwrite=args.overwrite)
    if args.schedule_out:
        check_writable(args.schedule_out, overwrite=args.overwrite)
    fusion = None
    schedule = load_schedule(args.static) if args.static else None
    if schedule is None and not args.no_reduction:
        fusion = FusionConfig(cost=args.cost, similarity=args.similarity,
                              ratio_lower_bound=args.ratio_lower_bound, budget_layers=args.budget_layers)
    case = load_case(args.inputs) if args.inputs else None
    loaded = load_model(args)
    if case is None:
        case = _make_case(loaded, _clip("synthetic:moving_object", frames=8, size=(112, 112), seed=0), DEFAULT_PROMPT)
    eos = loaded.tokenizer.eos_token_id if loaded.tokenizer is not None else None
    if eos is None:
        eos = loaded.config.text_config.eos_token_id
    reference = Reference(loaded, fusion=fusion, schedule=schedule, max_new_tokens=args.max_new_tokens,
                          eos_token_id=eos if isinstance(eos, int) else None)
    result = reference(case)
    save_npz(result.arrays(), args.out, overwrite=args.overwrite)
    _report(result, loaded, args)
    if args.schedule_out and result.schedule is not None:
        result.schedule.save(args.schedule_out, overwrite=args.overwrite)
        log.info("wrote schedule %s", args.schedule_out)
    return 0


def _report(result, loaded, args) -> None:
    if result.schedule is not None:
        s = result.schedule
        kept = s.final_visual_tokens
        log.info("visual tokens %d -> %d (%.0f%% removed) in %d steps", s.visual_tokens, kept,
                 100 * (1 - kept / s.visual_tokens), len(s.stages))
        for step in result.realized:
            st = step.stage
            log.info("  layer %2d %-16s %-5s remove %5d of %5d  (%s, ratio %.3f, budget %.3f)", st.layer, st.where,
                     st.op, st.remove, step.visual_before, step.branch, step.ratio, step.budget)
    log.info("kv lengths per layer: %s", " ".join(str(int(x)) for x in result.kv_lengths))
    if result.generated_ids.size:
        ids = result.generated_ids[0].tolist()
        text = loaded.tokenizer.decode(ids) if loaded.tokenizer is not None else ""
        log.info("generated %s %r", ids, text)
    log.info("wrote %s", args.out)


def _cmd_build(args) -> int:
    from pathlib import Path

    from ffexport.export.build import BF16_NEEDS_TENSORRT, Build, BuildConfig, check_int8, graph_precision
    from ffexport.export.plugin_mode import check_ops
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.schedule import load_schedule

    from ffexport.models import require_stage

    require_stage(args.model, "build")  # a family without a build path: one line, exit 3, before loading
    check_int8(precision=args.precision, backend=args.backend, plugins=tuple(args.plugins), ops=args.ops,
               graph_only=args.graph_only)
    check_ops(ops=args.ops, precision=graph_precision(args.precision), backend=args.backend,
              plugins=tuple(args.plugins), graph_only=args.graph_only)
    compute_capabilities = ()
    if args.compute_capability and args.backend != "tensorrt-rtx":
        raise InputError("--compute-capability is for --backend tensorrt-rtx (TensorRT builds for the GPU it runs on)")
    if args.backend == "tensorrt":  # say what is missing before loading anything
        from ffexport.export.tensorrt import require_tensorrt

        require_tensorrt()
    elif args.backend == "tensorrt-rtx":
        from ffexport.export.trt_toolkit import parse_compute_capabilities, require_rtx

        compute_capabilities = parse_compute_capabilities(args.compute_capability or "", require_rtx())
        if args.ops == "plugin" or args.plugins:
            raise InputError("--backend tensorrt-rtx builds no plugin layers (TensorRT-RTX has none, docs/tensorrt.md): "
                             "use --ops standard, or --backend tensorrt --plugins LIB.so on a GPU machine")
    if args.precision == "bf16" and args.backend != "tensorrt" and not args.graph_only:
        raise InputError(BF16_NEEDS_TENSORRT)
    from ffexport.export.attention_rewrite import choose_attention

    choose_attention(args.attention, backend=args.backend, precision=graph_precision(args.precision),
                     graph_only=args.graph_only)
    from ffexport.export.builddir import refuse_if_busy, refuse_packed

    refuse_if_busy(Path(args.out))  # another build writing there: one line now, not after loading the model
    refuse_packed(Path(args.out), overwrite=args.overwrite)
    buckets = tuple(args.bucket or ["8x112x112"])
    schedule = load_schedule(args.schedule) if args.schedule else None
    if schedule is not None and len(buckets) != 1:
        raise InputError("--schedule fixes one bucket's shape; give exactly one --bucket with it")
    fusion = FusionConfig(cost=args.cost, similarity=args.similarity, ratio_lower_bound=args.ratio_lower_bound,
                          budget_layers=args.budget_layers)
    if graph_precision(args.precision) != "fp32":
        args.dtype = {"fp16": "float16", "bf16": "bfloat16"}[args.precision]
    if args.graph_only:
        from ffexport.models import LoadModel

        loaded = LoadModel(args.model, dtype=args.dtype, structure_only=True, layers=args.layers,
                           vision_layers=args.vision_layers)()
    else:
        from ffexport.export.streamed import streamed_model

        streamed = streamed_model(model=args.model, random_weights=args.random_weights, weights=args.weights,
                                  dtype=args.dtype, layers=args.layers, vision_layers=args.vision_layers,
                                  force=args.streamed)
        if streamed and args.precision == "int8":
            raise InputError("--precision int8 quantizes graphs whose fp32 gate ran at full depth; a streamed build "
                             "(parity on a truncated copy) is not quantized in this version: build on a machine that "
                             "holds the model, or use --precision fp32")
        loaded = streamed[0] if streamed else load_model(args)
    config = BuildConfig(buckets=buckets, out=Path(args.out), schedule=schedule,
                         schedule_source=f"given: {args.schedule}" if args.schedule else None, fusion=fusion,
                         precision=args.precision, max_text=args.max_text, overwrite=args.overwrite,
                         quiet=args.quiet, graph_only=args.graph_only, backend=args.backend,
                         plugins=tuple(args.plugins), ops=args.ops, compute_capabilities=compute_capabilities,
                         schedule_origin=_given_origin(args.schedule) if args.schedule else None,
                         shipped_schedules=not args.no_shipped_schedule, fidelity=args.fidelity,
                         attention=args.attention)
    if not args.graph_only and streamed:
        from ffexport.export.streamed import StreamedBuild

        report = StreamedBuild(Build(loaded, config), streamed[1])()
    else:
        report = Build(loaded, config)()
    log.info("build %s: %d bucket(s) built, %d already there", args.out, len(report.built), len(report.skipped))
    return 0


def _given_origin(path: str) -> dict:
    from ffexport.calibrate.choose import given_origin

    return given_origin(path)


def _cmd_video(args) -> int:
    from ffexport.io import check_writable
    from ffexport.video import synthetic_video, write_video

    check_writable(args.out, overwrite=args.overwrite)
    try:
        clip = synthetic_video(args.kind, frames=args.frames, height=args.size[0], width=args.size[1], seed=args.seed)
        write_video(clip, args.out)
    except ValueError as e:
        raise InputError(f"ffexport video: {e}") from e
    log.info("wrote %s: %d frames of %dx%d", args.out, args.frames, *args.size)
    return 0


def _cmd_models(args) -> int:
    from ffexport.models import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:14s} {preset.description}" + (f"  [{preset.hub_id}]" if preset.hub_id else ""))
    return 0


# ---------------------------------------------------------------- entry
def _setup_logging(quiet: bool, verbose: bool) -> None:
    """Plain lines on stderr (stdout stays free for results); ``--quiet`` keeps only errors."""
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("ffexport")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


#: exit code of an operating-system error (disk full, permission denied) that no stage turned into its own
OS_ERROR_EXIT = 10


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    try:
        try:
            parser = build_parser(command)
            args = parser.parse_args(argv)
            _setup_logging(args.quiet, args.verbose)
            return args.func(args)
        except ModuleNotFoundError as e:  # torch, onnx, ... missing on a runtime-only install
            if _ours(e):
                raise
            raise _not_installed(command, e) from e
    except FFExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the machine, not the input: a full disk, a permission, a vanished file
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; nothing half-written is left looking valid", file=sys.stderr)
        return OS_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())

"""The ``ffexport run`` subcommand: answer a prompt about a video with a build, without PyTorch.

``ffexport/cli.py`` calls :func:`add_run_parser`; this module imports only torch-free modules, and
the runtime itself is imported when the command runs.
"""

from __future__ import annotations

import argparse
import logging

from ffexport.argtypes import non_negative_int
from ffexport.runtime.defaults import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, FITS

log = logging.getLogger(__name__)


def add_run_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``run`` to the ``ffexport`` subcommands and return its parser."""
    run = subparsers.add_parser(
        "run", help="answer a prompt about a video with a build (ONNX Runtime, no PyTorch)",
        description="Run a build directory made by `ffexport build` with ONNX Runtime. With --video, decode the "
                    "file, pick the bucket that fits it best, keep the bucket's number of frames spread over the "
                    "video, fit the frames to the bucket's aspect ratio (--fit), and print `answer: TEXT` to stdout "
                    "(what was done goes to stderr, a line each). With --inputs, run a pre-processed case (case.npz) "
                    "and write the prefill logits and greedy tokens with --out (the answer is printed too).",
    )
    run.add_argument("build", metavar="DIR", help="build directory (holds manifest.json)")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", metavar="FILE", help="a video file (mp4, webm, mkv, gif, ... anything FFmpeg reads)")
    source.add_argument("--inputs", metavar="CASE.npz", help="a pre-processed case (see `ffexport case`)")
    run.add_argument("--prompt", help=f"the question about the video (with --video; default: {DEFAULT_PROMPT!r})")
    run.add_argument("--max-new-tokens", type=non_negative_int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                     help=f"greedy tokens to generate at most; stops early at EOS (default {DEFAULT_MAX_NEW_TOKENS})")
    run.add_argument("--bucket", metavar="NAME",
                     help="the bucket to use, e.g. 8x112x112 (default: the one that fits the video best)")
    run.add_argument("--fit", choices=FITS, default=None,
                     help="--video: how frames meet the bucket's aspect ratio: crop (cut the centre; default), pad "
                          "(black bars), resize (stretch) or strict (only a bucket within 25%% of the video's aspect "
                          "ratio; else say which bucket to build)")
    run.add_argument("--out", metavar="OUT.npz", help="also write logits and generated_ids here")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    run.add_argument("--provider", action="append", dest="providers", metavar="NAME",
                     help="ONNX Runtime execution provider, repeatable, in order of preference "
                          "(default: CUDAExecutionProvider when available, then CPUExecutionProvider)")
    run.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                     help="check weights.bin's sha256 before running (default; remembered for an unchanged file)")
    run.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"],
                     help="onnxruntime: run the ONNX graphs (default); tensorrt: run the engines of a build made with "
                          "--backend tensorrt (same TensorRT version and GPU architecture as the build)")
    run.add_argument("--plugins", action="append", default=[], metavar="LIB.so",
                     help="TensorRT plugin library to load first (repeatable; --backend tensorrt)")
    run.set_defaults(func=run_command)
    return run


def run_command(args: argparse.Namespace) -> int:
    """Carry out ``ffexport run``; user mistakes raise :class:`~ffexport.errors.InputError`."""
    from ffexport.errors import InputError
    from ffexport.io import check_writable, save_npz
    from ffexport.runtime.session import Runtime

    if args.inputs is not None and args.prompt is not None:
        raise InputError("--prompt goes with --video; a case's prompt is already in its input_ids")
    if args.inputs is not None and args.fit is not None:
        raise InputError("--fit goes with --video; a case's frames are already the bucket's")
    if args.out is not None:
        check_writable(args.out, overwrite=args.overwrite)
    if args.plugins and args.backend != "tensorrt":
        raise InputError("--plugins loads TensorRT plugin libraries; it goes with --backend tensorrt")
    runtime = Runtime(args.build, providers=args.providers, verify=args.verify, backend=args.backend,
                      plugins=args.plugins)
    if args.video is not None:
        runtime.tokenizer  # a build without a tokenizer refuses a prompt before the video is read
        from ffexport.runtime.fit import answer_video

        result = answer_video(runtime, args.video, args.prompt if args.prompt is not None else DEFAULT_PROMPT,
                              fit=args.fit or FITS[0], bucket=args.bucket, max_new_tokens=args.max_new_tokens)
    else:
        from ffexport.case import load_case
        from ffexport.runtime.fit import reduction

        case = load_case(args.inputs)
        result = runtime.generate(case, args.max_new_tokens, bucket=args.bucket)
        log.info("%s -> bucket %s, %s", args.inputs, result.bucket, reduction(runtime.manifest, runtime.bucket(result.bucket)))
    if args.out is not None:
        save_npz(result.arrays(), args.out, overwrite=args.overwrite)
        log.info("wrote %s", args.out)
    ids = result.generated_ids[0].tolist()
    if runtime.manifest.tokenizer_file is None:  # nothing to decode the ids with: print the ids themselves
        print("generated ids: " + " ".join(map(str, ids)))
    else:
        log.info("generated ids: %s", ids)
        print(f"answer: {result.text}")
    return 0

"""Argument groups and helpers shared by the ``ffexport`` subcommands (torch-free).

``ffexport/cli.py`` and the subcommand modules (``bench/cli.py``, ``calibrate/cli.py``, ...) import
from here, never from each other, so there is no import circle and a subcommand's module can be
imported alone. Heavy modules (torch, transformers) are imported inside :func:`load_model` only.
"""

from __future__ import annotations

import argparse

from ffexport.argtypes import positive_int


def add_verbosity_args(p: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """``-q/--quiet`` and ``-v/--verbose``, accepted before the verb (``top_level``) and after it.

    After the verb they default to ``SUPPRESS``, so a subcommand never resets what was given before
    it (argparse copies a subparser's defaults over the parent's values).
    """
    default = False if top_level else argparse.SUPPRESS
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="only errors")
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="qwen2vl-tiny",
                   help="preset (`ffexport models` lists them: qwen2vl-tiny, qwen2vl-7b, qwen2.5vl-7b, qwen3vl-8b, "
                        "llava-video-7b, ...) or a local Hugging Face directory (default: qwen2vl-tiny, random "
                        "weights built in)")
    g.add_argument("--weights", metavar="DIR", help="local directory holding a preset's weights "
                   "(default: the local Hugging Face cache; nothing is downloaded)")
    g.add_argument("--random-weights", action="store_true",
                   help="build the preset's full architecture with random weights (structure and speed work)")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="weights and activations dtype of the PyTorch reference (default: float32)")
    g.add_argument("--layers", type=positive_int, default=None, metavar="N",
                   help="random weights only: keep the first N decoder layers (full width, less depth)")
    g.add_argument("--vision-layers", type=positive_int, default=None, metavar="N",
                   help="random weights only: keep the first N vision blocks")


def add_fusion_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("FrameFusion (dynamic reference)")
    g.add_argument("--cost", type=float, default=0.3, help="compute budget per layer, share of full (default 0.3)")
    g.add_argument("--similarity", type=float, default=0.6,
                   help="cosine similarity at or above which a token merges (default 0.6)")
    g.add_argument("--ratio-lower-bound", type=float, default=0.1,
                   help="a merge step removing a smaller share ends merging (default 0.1)")
    g.add_argument("--budget-layers", type=int, default=None, metavar="N",
                   help="depth the cost formula assumes (default: the model's depth; 28 reproduces the "
                        "authors' code on any model)")


def load_model(args: argparse.Namespace):
    """Load the model :func:`add_model_args` describes (imports torch and transformers)."""
    from ffexport.models import LoadModel, require_stage

    if getattr(args, "command", None):
        require_stage(args.model, args.command)  # a family without this stage: one line, exit 3
    return LoadModel(args.model, random_weights=args.random_weights, weights=args.weights, dtype=args.dtype,
                     layers=args.layers, vision_layers=args.vision_layers)()


def bucket_shape(text: str) -> str:
    """argparse type of ``--bucket FxHxW``: positive frames, height and width (checked before any model loads)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected FRAMESxHEIGHTxWIDTH, e.g. 8x112x112, got {text!r}")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: frames, height and width must be positive")
    return text

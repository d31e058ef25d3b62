"""Run an ``ffexport build`` directory with ONNX Runtime: no torch, no transformers.

Needs numpy, onnxruntime, tokenizers, Pillow and (for video files) PyAV. Entry points:

- :class:`Runtime`: ``Runtime(build_dir).run_video(path, prompt)``, or ``pick_bucket`` ->
  ``prepare_video`` -> ``generate`` step by step (see :mod:`ffexport.runtime.session`);
- :func:`load_manifest`: read and check ``manifest.json`` and the files it lists;
- :func:`read_video`, :func:`probe_video`, :func:`sample_frames`: video files to uint8 frames.

Names load on first use (PEP 562), so ``ffexport.runtime.cli`` (imported by every ``ffexport``
command line) costs nothing until ``ffexport run`` runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MANIFEST_FORMAT": "manifest",
    "Bucket": "manifest",
    "Manifest": "manifest",
    "ModelFacts": "manifest",
    "load_manifest": "manifest",
    "DEFAULT_MAX_NEW_TOKENS": "session",
    "Result": "session",
    "Runtime": "session",
    "BuildTokenizer": "tokenizer",
    "VideoInfo": "video",
    "probe_video": "video",
    "read_video": "video",
    "sample_frames": "video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ffexport.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ffexport.runtime.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

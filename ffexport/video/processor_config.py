"""A model directory's video processor settings, read the way transformers reads them (torch-free).

transformers' ``Qwen2VLVideoProcessor.from_pretrained(directory)`` (5.x) takes its settings from,
in this order of priority:

1. ``processor_config.json``, its nested ``"video_processor"`` object (checkpoints saved by 5.x);
2. ``video_preprocessor_config.json``;
3. ``preprocessor_config.json`` (the IMAGE processor's file: released Qwen2-VL checkpoints ship
   only this one, with ``min_pixels`` 3136 and ``max_pixels`` 12845056, and the video processor
   uses it).

From the chosen object: ``size = {"shortest_edge", "longest_edge"}`` gives the pixel limits and a
top-level ``min_pixels`` / ``max_pixels`` overrides them (the processor's backward-compatible
rule); ``patch_size``, ``temporal_patch_size``, ``merge_size``, ``image_mean``, ``image_std`` take
the file's value when present. Anything absent keeps the class default (:data:`QWEN2_VL_DEFAULTS`).
A directory with none of the three files gives the class defaults, with ``source`` saying so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ffexport.errors import ModelError

PROCESSOR_FILE = "processor_config.json"
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class VideoProcessorConfig:
    """What the preprocessing needs from a video processor, and where it came from.

    ``source`` is the file name the values were read from (``processor_config.json#video_processor``
    for the nested form) or ``"defaults"``; it is recorded in the build's manifest.
    """

    min_pixels: int
    max_pixels: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    source: str = "defaults"

    @property
    def pixels(self) -> tuple[int, int]:
        """``(min_pixels, max_pixels)``: what the loaders call ``video_pixels``."""
        return self.min_pixels, self.max_pixels

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_mean"], data["image_std"] = list(self.image_mean), list(self.image_std)
        return data


#: ``Qwen2VLVideoProcessor``'s class defaults (Qwen2.5-VL's video processor is the same class)
QWEN2_VL_DEFAULTS = VideoProcessorConfig(
    min_pixels=128 * 28 * 28,
    max_pixels=768 * 28 * 28,
    patch_size=14,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=(0.48145466, 0.4578275, 0.40821073),
    image_std=(0.26862954, 0.26130258, 0.27577711),
)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _find(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The processor dict transformers would use and its source name (None: no file)."""
    nested = directory / PROCESSOR_FILE
    if nested.is_file():
        data = _load(nested)
        if isinstance(data.get("video_processor"), dict):
            return data["video_processor"], f"{PROCESSOR_FILE}#video_processor"
    for name in (VIDEO_PROCESSOR_FILE, IMAGE_PROCESSOR_FILE):
        if (directory / name).is_file():
            return _load(directory / name), name
    return None, "defaults"


def _positive_int(data: dict[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _triple(data: dict[str, Any], key: str, default: tuple[float, float, float], where: str):
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
        raise ModelError(f"{where}: {key} must be three numbers (one per RGB channel), got {value!r}")
    return tuple(float(v) for v in value)


def read_processor_config(
    directory: str | Path, *, defaults: VideoProcessorConfig = QWEN2_VL_DEFAULTS
) -> VideoProcessorConfig:
    """The video processor settings of a model directory (see the module docstring for the rule).

    Raises :class:`~ffexport.errors.ModelError` (one line) for an unreadable file or a malformed
    value; the pixel limits must satisfy ``min_pixels <= max_pixels``.
    """
    directory = Path(directory)
    data, source = _find(directory)
    if data is None:
        return defaults
    where = f"{directory / source.split('#')[0]}"
    size = data.get("size") if isinstance(data.get("size"), dict) else {}
    min_pixels = _positive_int(size, "shortest_edge", defaults.min_pixels, where)
    max_pixels = _positive_int(size, "longest_edge", defaults.max_pixels, where)
    min_pixels = _positive_int(data, "min_pixels", min_pixels, where)
    max_pixels = _positive_int(data, "max_pixels", max_pixels, where)
    if min_pixels > max_pixels:
        raise ModelError(f"{where}: min_pixels ({min_pixels}) exceeds max_pixels ({max_pixels})")
    return replace(
        defaults,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=_positive_int(data, "patch_size", defaults.patch_size, where),
        temporal_patch_size=_positive_int(data, "temporal_patch_size", defaults.temporal_patch_size, where),
        merge_size=_positive_int(data, "merge_size", defaults.merge_size, where),
        image_mean=_triple(data, "image_mean", defaults.image_mean, where),
        image_std=_triple(data, "image_std", defaults.image_std, where),
        source=source,
    )

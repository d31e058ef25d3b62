"""Buckets: ``FRAMESxHEIGHTxWIDTH`` (input frames, pixels) and the grid the model sees for them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ffexport.errors import InputError
from ffexport.video.preprocess import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, smart_resize

_BUCKET = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Bucket:
    """A video shape the build serves: ``frames`` input frames resized to ``resized`` pixels,
    which gives the patch grid ``grid_thw`` and ``visual_tokens`` = t*h*w / merge^2."""

    frames: int
    height: int
    width: int
    resized: tuple[int, int]
    grid_thw: tuple[int, int, int]
    visual_tokens: int
    patches_per_frame: int

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    @property
    def rounded(self) -> bool:
        return self.resized != (self.height, self.width)


def parse_bucket(
    text: str,
    *,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    video_pixels: tuple[int, int] | None = None,
) -> Bucket:
    """Parse ``FRAMESxHEIGHTxWIDTH`` and apply the model's resize rule."""
    frames, height, width = _shape(text)
    min_pixels, max_pixels = video_pixels or (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    try:
        resized = smart_resize(height, width, factor=patch_size * merge_size, min_pixels=min_pixels,
                               max_pixels=max_pixels)
    except ValueError as e:
        raise InputError(f"bucket {text!r}: the model cannot take this size ({e})") from e
    t = -(-frames // temporal_patch_size)
    h, w = resized[0] // patch_size, resized[1] // patch_size
    per_frame = (h // merge_size) * (w // merge_size)
    return Bucket(frames, height, width, resized, (t, h, w), t * per_frame, per_frame)


def _shape(text: str) -> tuple[int, int, int]:
    """``(frames, height, width)`` of ``FRAMESxHEIGHTxWIDTH``, all positive, or one-line :class:`InputError`."""
    m = _BUCKET.match(text)
    if not m:
        raise InputError(f"bucket {text!r} is not FRAMESxHEIGHTxWIDTH (e.g. 8x112x112: 8 frames of 112x112 pixels)")
    frames, height, width = (int(g) for g in m.groups())
    if min(frames, height, width) <= 0:
        raise InputError(f"bucket {text!r}: frames, height and width must be positive")
    return frames, height, width


def parse_fixed_bucket(text: str, *, size: int, tokens_per_frame: int) -> Bucket:
    """``FRAMESxHEIGHTxWIDTH`` for a fixed-size tower (LLaVA-style): every frame is brought to
    ``size`` x ``size`` whatever the video's size, and gives ``tokens_per_frame`` tokens, one per cell
    of a square token grid; ``grid_thw`` is that grid per frame, ``(frames, side, side)``."""
    frames, height, width = _shape(text)
    side = int(round(tokens_per_frame ** 0.5))
    if side * side != tokens_per_frame:
        raise InputError(f"bucket {text!r}: {tokens_per_frame} tokens per frame is not a square grid")
    return Bucket(frames, height, width, (size, size), (frames, side, side), frames * tokens_per_frame,
                  tokens_per_frame)

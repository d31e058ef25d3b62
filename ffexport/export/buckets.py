"""Buckets: ``FRAMESxHEIGHTxWIDTH`` (input frames, pixels) and the grid the model sees for them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ffexport.errors import InputError
from ffexport.video.preprocess import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, smart_resize, video_smart_resize

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
    clip_budget: bool = False,
) -> Bucket:
    """Parse ``FRAMESxHEIGHTxWIDTH`` and apply the model's resize rule: the pixel limits hold per frame
    (Qwen2-VL, Qwen2.5-VL) or, with ``clip_budget``, for the whole clip (Qwen3-VL's video processor)."""
    frames, height, width = bucket_dims(text)
    min_pixels, max_pixels = video_pixels or (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    try:
        if clip_budget:
            resized = video_smart_resize(frames, height, width, temporal_factor=temporal_patch_size,
                                         factor=patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
        else:
            resized = smart_resize(height, width, factor=patch_size * merge_size, min_pixels=min_pixels,
                                   max_pixels=max_pixels)
    except ValueError as e:
        raise InputError(f"bucket {text!r}: the model cannot take this size ({e})") from e
    t = -(-frames // temporal_patch_size)
    h, w = resized[0] // patch_size, resized[1] // patch_size
    per_frame = (h // merge_size) * (w // merge_size)
    return Bucket(frames, height, width, resized, (t, h, w), t * per_frame, per_frame)


def bucket_dims(text: str) -> tuple[int, int, int]:
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
    frames, height, width = bucket_dims(text)
    side = int(round(tokens_per_frame ** 0.5))
    if side * side != tokens_per_frame:
        raise InputError(f"bucket {text!r}: {tokens_per_frame} tokens per frame is not a square grid")
    return Bucket(frames, height, width, (size, size), (frames, side, side), frames * tokens_per_frame,
                  tokens_per_frame)


def fixed_size_tower(adapter) -> bool:
    """Whether a family's adapter declares a fixed-size tower: every frame brought to ``frame_size``
    and giving ``tokens_per_frame`` tokens (LLaVA-style, InternVL), rather than a patch grid that
    follows the video's size (the Qwen families)."""
    return hasattr(adapter, "frame_size") and hasattr(adapter, "tokens_per_frame")


def model_bucket(adapter, config, text: str, *, video_pixels: tuple[int, int] | None = None) -> Bucket:
    """``FRAMESxHEIGHTxWIDTH`` for the model ``adapter`` drives: :func:`parse_fixed_bucket` with the
    adapter's frame size and tokens per frame for a fixed-size tower, else :func:`parse_bucket` with the
    vision config's patch, temporal patch and merge sizes and the model's pixel limits."""
    if fixed_size_tower(adapter):
        return parse_fixed_bucket(text, size=adapter.frame_size(config), tokens_per_frame=adapter.tokens_per_frame(config))
    vision = config.vision_config
    return parse_bucket(text, patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                        merge_size=vision.spatial_merge_size, video_pixels=video_pixels,
                        clip_budget=getattr(adapter, "pixel_budget", "frame") == "clip")

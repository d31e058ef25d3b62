"""Qwen2-VL video preprocessing in numpy (no torch, no torchvision).

This reproduces what transformers' Qwen2-VL video processor (``Qwen2VLVideoProcessor``) feeds the
vision tower:

1. resize every frame to a size whose sides are multiples of ``patch_size * merge_size``
   (``smart_resize``: keep the aspect ratio, stay within ``[min_pixels, max_pixels]``), with the
   antialiased bicubic filter on uint8 pixels that torchvision applies
   (:mod:`ffexport.video.resize`, bit-identical to it; Pillow's differs by a grey level here and there);
2. rescale by 1/255 (in float64, then cast to float32) and normalize with the OpenAI CLIP mean/std
   (in float32) (transformers fuses the two in float32: the same values within 3e-7);
3. pad the frame count to a multiple of ``temporal_patch_size`` by repeating the last frame;
4. cut into ``temporal_patch_size x patch_size x patch_size`` patches and flatten them in the
   order transformers uses: tokens ordered by (t, block row, block col, row in block, col in
   block) with ``merge_size x merge_size`` blocks contiguous, features ordered by
   (channel, frame in patch, row in patch, col in patch).

Defaults follow ``Qwen2VLVideoProcessor``'s class defaults (``min_pixels = 128 * 28 * 28``,
``max_pixels = 768 * 28 * 28``), which differ from the image processor's. Note that a checkpoint's
saved processor config overrides them: :func:`ffexport.video.processor_config.read_processor_config`
reads a model directory's limits, sizes and mean/std exactly as transformers does.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from ffexport.video.resize import resize_frames

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Qwen2VLImageProcessor(Pil) class defaults (also the defaults of transformers' smart_resize).
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280
# Qwen2VLVideoProcessor class defaults. Released Qwen2-VL checkpoints ship only an image
# ``preprocessor_config.json`` (min_pixels=3136, max_pixels=12845056), and transformers' video
# processor falls back to that file when there is no video config, so for those checkpoints the
# effective video limits are the checkpoint's, not these. Pass min_pixels/max_pixels explicitly
# to reproduce a specific checkpoint.
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28

_MAX_ASPECT_RATIO = 200


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 28,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """Return ``(new_height, new_width)``: multiples of ``factor``, area in ``[min_pixels, max_pixels]``.

    Same rule (and defaults) as transformers' ``qwen2_vl`` ``smart_resize``: round each side to
    the nearest multiple of ``factor``; if the area is then too large, scale both sides down by
    ``sqrt(area / max_pixels)`` and floor to multiples of ``factor`` (at least ``factor``); if too
    small, scale up by ``sqrt(min_pixels / area)`` and ceil. The aspect ratio is kept as well as
    the rounding allows. Raises ``ValueError`` for non-positive sizes or an aspect ratio over 200.
    """
    if height < 1 or width < 1 or factor < 1:
        raise ValueError(f"height, width and factor must be positive, got {height=}, {width=}, {factor=}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be at most {_MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)} for {height}x{width}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_smart_resize(
    num_frames: int,
    height: int,
    width: int,
    *,
    temporal_factor: int = 2,
    factor: int = 32,
    min_pixels: int = 128 * 32 * 32,
    max_pixels: int = 768 * 32 * 32,
) -> tuple[int, int]:
    """Qwen3-VL's video resize rule: like :func:`smart_resize`, but the pixel budget covers the whole
    clip (``frames x height x width``, frames rounded to ``temporal_factor``), and sides shorter than
    ``factor`` are first scaled up to it. Defaults are ``Qwen3VLVideoProcessor``'s (patch 16, merge 2).
    """
    if num_frames < temporal_factor:
        raise ValueError(f"{num_frames} frames: Qwen3-VL's video resize needs at least {temporal_factor}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height=}, {width=}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be at most {_MAX_ASPECT_RATIO}, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def preprocess_video(
    frames: np.ndarray,
    *,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    size: tuple[int, int] | None = None,
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn uint8 RGB frames ``[T, H, W, 3]`` into Qwen2-VL's ``(pixel_values_videos, video_grid_thw)``.

    Returns ``pixel_values_videos`` float32 ``[grid_t * grid_h * grid_w, 3 * temporal_patch_size
    * patch_size**2]`` and ``video_grid_thw`` int64 ``[[grid_t, grid_h, grid_w]]``. The number of
    LLM video tokens is ``grid_t * grid_h * grid_w // merge_size**2``.

    ``min_pixels``/``max_pixels`` default to the video processor's (``VIDEO_MIN_PIXELS``,
    ``VIDEO_MAX_PIXELS``). ``size=(height, width)`` skips ``smart_resize`` and resizes to exactly
    that size, which must be a multiple of ``patch_size * merge_size`` on both sides.
    ``image_mean``/``image_std`` default to OpenAI CLIP's (Qwen2-VL, Qwen2.5-VL); a model
    directory's processor config may say otherwise (Qwen3-VL uses 0.5).
    """
    frames = check_video(frames)
    _check_patch_args(patch_size, temporal_patch_size, merge_size)
    factor = patch_size * merge_size
    target = _target_size(frames.shape[1], frames.shape[2], factor, min_pixels, max_pixels, size)
    normalized = np.stack([_normalize(frame, image_mean, image_std) for frame in resize_frames(frames, target)])
    normalized = _pad_frames(normalized, temporal_patch_size)
    pixel_values, grid_thw = _patchify(normalized, patch_size, temporal_patch_size, merge_size)
    logger.debug(
        "preprocessed video %s -> resized %s, grid_thw %s, pixel_values %s",
        frames.shape,
        target,
        grid_thw.tolist(),
        pixel_values.shape,
    )
    return pixel_values, grid_thw


def sample_frame_indices(total: int, wanted: int) -> np.ndarray:
    """Pick ``wanted`` frame indices spread uniformly over ``total`` frames (int64).

    Index ``k`` is ``floor(k * total / wanted)``: the same uniform rule as transformers'
    ``Qwen2VLVideoProcessor.sample_frames`` (``arange(0, total, total / wanted)``), computed in
    integers so no float rounding can add or drop a frame. It starts at frame 0; when
    ``total < wanted`` frames repeat (each appears ``wanted / total`` times, in order).
    """
    if total < 1 or wanted < 1:
        raise ValueError(f"total and wanted must be positive frame counts, got {total=}, {wanted=}")
    return (np.arange(wanted, dtype=np.int64) * total) // wanted


# --------------------------------------------------------------------------------------------
# Steps


def _target_size(
    height: int,
    width: int,
    factor: int,
    min_pixels: int | None,
    max_pixels: int | None,
    size: tuple[int, int] | None,
) -> tuple[int, int]:
    """The ``(height, width)`` every frame is resized to: ``size`` if given, else ``smart_resize``."""
    if size is not None:
        if min_pixels is not None or max_pixels is not None:
            raise ValueError("pass either size or min_pixels/max_pixels, not both")
        target_h, target_w = (int(s) for s in size)
        if target_h < factor or target_w < factor or target_h % factor or target_w % factor:
            raise ValueError(
                f"size must be positive multiples of patch_size * merge_size = {factor} "
                f"on both sides, got {tuple(size)}"
            )
        return target_h, target_w
    return smart_resize(
        height,
        width,
        factor=factor,
        min_pixels=VIDEO_MIN_PIXELS if min_pixels is None else min_pixels,
        max_pixels=VIDEO_MAX_PIXELS if max_pixels is None else max_pixels,
    )


def _normalize(
    frame: np.ndarray,
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD,
) -> np.ndarray:
    """Rescale to [0, 1] and normalize with the mean/std (CLIP's by default); float32 ``[3, H, W]``.

    The arithmetic mirrors transformers' numpy path so results match bit for bit: the 1/255 rescale
    is done in float64 then cast to float32, and ``(x - mean) / std`` is done in float32.
    """
    rescaled = (frame.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(image_mean, dtype=np.float32)
    std = np.asarray(image_std, dtype=np.float32)
    return np.ascontiguousarray(((rescaled - mean) / std).transpose(2, 0, 1))


def _pad_frames(video: np.ndarray, temporal_patch_size: int) -> np.ndarray:
    """Repeat the last frame until the frame count is a multiple of ``temporal_patch_size``."""
    pad = -video.shape[0] % temporal_patch_size
    if pad:
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)], axis=0)
    return video


def _patchify(
    video: np.ndarray,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a normalized ``[T, C, H, W]`` video into Qwen2-VL patch rows (see module docstring)."""
    frames, channels, height, width = video.shape
    grid_t = frames // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = video.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> (t, block row, block col, row in block, col in block, channel, frame in patch, py, px)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    grid_thw = np.array([[grid_t, grid_h, grid_w]], dtype=np.int64)
    return np.ascontiguousarray(flat, dtype=np.float32), grid_thw


# --------------------------------------------------------------------------------------------
# Validation


def check_video(frames: np.ndarray) -> np.ndarray:
    """Require a uint8 RGB video ``[T>=1, H, W, 3]``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be a uint8 array of shape [T>=1, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB (0..255), got dtype {frames.dtype}")
    return frames


def _check_patch_args(patch_size: int, temporal_patch_size: int, merge_size: int) -> None:
    """Require positive patch, temporal patch and merge sizes."""
    for name, value in (
        ("patch_size", patch_size),
        ("temporal_patch_size", temporal_patch_size),
        ("merge_size", merge_size),
    ):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")

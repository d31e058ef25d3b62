"""Antialiased resize of uint8 frames, bit-identical to what transformers' video processors compute.

transformers' video processors (``Qwen2VLVideoProcessor``, ``LlavaOnevisionVideoProcessor``, ...)
resize uint8 frame tensors with torchvision, which on the CPU calls PyTorch's uint8 antialiased
interpolation (``F.interpolate(x_uint8, mode="bicubic" | "bilinear", antialias=True)``). That kernel
is Pillow's separable resampling in fixed point, but not Pillow's fixed point: the weights are
rounded to int16 at a precision chosen per axis from the largest weight, so results differ from
Pillow's by one or two grey levels on a fraction of a percent of the pixels. This module computes
PyTorch's result exactly, in numpy (the runtime stays torch-free):

1. per axis, PIL's support and centres (``support = 2 * scale`` for bicubic when shrinking, 2
   otherwise; a = -0.5 for the cubic), weights normalised in float64;
2. weights rounded half away from zero to int16 at the largest precision (< 22 bits) under which
   the axis's largest weight doubled still fits in 15 bits;
3. width first, then height (an axis whose size does not change is skipped); each pass sums
   ``weight * pixel`` in integers, adds half an LSB, shifts right (floor) and clamps to 0..255.

``tests/video/test_resize.py`` checks equality with ``torch.nn.functional.interpolate`` on up-,
down- and mixed-scale shapes; ``tests/video/test_transformers_processors.py`` checks whole
preprocessing against fixtures of the real transformers video processors.
"""

from __future__ import annotations

import math

import numpy as np

#: the filters transformers' processors use for video (PIL resample codes 3 and 2)
FILTERS = ("bicubic", "bilinear")
_SUPPORT = {"bicubic": 4, "bilinear": 2}  # interp_size: taps of the filter at scale 1
_MAX_PRECISION = 22


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic with a = -0.5 (Pillow's and PyTorch's antialias filter), evaluated as PyTorch does."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def axis_taps(size_in: int, size_out: int, resample: str = "bicubic") -> tuple[np.ndarray, np.ndarray, int]:
    """One axis's taps: source indices ``[size_out, K]``, int32 weights ``[size_out, K]``, precision bits.

    Taps past a row's support have weight 0 (and a clamped, harmless index)."""
    if resample not in FILTERS:
        raise ValueError(f"resample must be one of {FILTERS}, got {resample!r}")
    if size_in < 1 or size_out < 1:
        raise ValueError(f"sizes must be positive, got {size_in} -> {size_out}")
    scale = size_in / size_out
    support = _SUPPORT[resample] * 0.5 * (scale if scale >= 1.0 else 1.0)
    taps = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(size_out, dtype=np.float64) + 0.5)
    first = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)  # C++ casts truncate
    count = np.clip(np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), size_in) - first, 0, taps)
    k = np.arange(taps)
    filter_fn = _cubic if resample == "bicubic" else _triangle
    weights = filter_fn((k[None, :] + first[:, None] - centre[:, None] + 0.5) * invscale)
    weights = np.where(k[None, :] < count[:, None], weights, 0.0)
    total = np.zeros(size_out)
    for j in range(taps):  # summed tap by tap, in PyTorch's order
        total = total + weights[:, j]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    largest = float(weights.max())
    precision = 0
    while precision < _MAX_PRECISION and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int32)
    index = np.minimum(first[:, None] + k[None, :], size_in - 1)
    return index, fixed, precision


def _resample_axis(frames: np.ndarray, size_out: int, axis: int, resample: str) -> np.ndarray:
    index, weights, precision = axis_taps(frames.shape[axis], size_out, resample)
    shape = list(frames.shape)
    shape[axis] = size_out
    acc = np.full(shape, 1 << (precision - 1) if precision else 0, dtype=np.int32)
    along = [1] * frames.ndim
    along[axis] = size_out
    for j in range(index.shape[1]):
        w = weights[:, j]
        if w.any():
            acc += np.take(frames, index[:, j], axis=axis).astype(np.int32) * w.reshape(along)
    np.right_shift(acc, precision, out=acc)
    return np.clip(acc, 0, 255).astype(np.uint8)


def resize_frames(frames: np.ndarray, size: tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """uint8 ``[T, H, W, C]`` (or one ``[H, W, C]`` frame) resized to ``size = (height, width)``."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"expected uint8 frames [T, H, W, C] or [H, W, C], got {frames.dtype} {frames.shape}")
    single = frames.ndim == 3
    video = frames[None] if single else frames
    height, width = (int(s) for s in size)
    if video.shape[2] != width:
        video = _resample_axis(video, width, 2, resample)
    if video.shape[1] != height:
        video = _resample_axis(video, height, 1, resample)
    return video[0] if single else video

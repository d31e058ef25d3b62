"""Preprocessing for fixed-size vision towers (CLIP 336, SigLIP 384, InternViT 448): numpy + Pillow.

Every frame becomes one ``[3, S, S]`` float32 image, the way transformers' video processors of
these families prepare it:

* ``"shortest_edge_crop"`` (LLaVA-NeXT-Video): resize so the short side is ``S`` (the long side
  ``int(S * long / short)``), then center-crop ``S x S`` (top/left offsets ``(size - S) // 2``);
* ``"square"`` (LLaVA-OneVision, InternVL): resize straight to ``S x S`` (aspect ratio not kept).

Resizing is the antialiased filter torchvision applies to uint8 frames in transformers' video
processors (:mod:`ffexport.video.resize`, bit-identical to it; Pillow's differs by a grey level
here and there), then rescale by 1/255 (float64 -> float32) and ``(x - mean) / std`` in float32;
the result is ``pixel_values_videos`` ``[1, T, 3, S, S]``. The tests compare with fixtures of the
real video processors (``tests/video/test_transformers_processors.py``; they need torchvision, not
installed here) and with the Pillow image processors for the normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ffexport.video.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_video
from ffexport.video.resize import FILTERS, resize_frames

#: SigLIP / InternViT normalisation
HALF_MEAN_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

RESIZE_MODES = ("shortest_edge_crop", "square")


def shortest_edge_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) with the short side ``short`` and the long side ``int(short * long / short_side)``."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


@dataclass(frozen=True)
class FixedFramePreprocess:
    """uint8 frames ``[T, H, W, 3]`` -> ``pixel_values_videos`` ``[1, T, 3, size, size]`` float32."""

    size: int
    mode: str = "square"
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"mode must be one of {RESIZE_MODES}, got {self.mode!r}")
        if self.resample not in FILTERS:
            raise ValueError(f"resample must be one of {sorted(FILTERS)}, got {self.resample!r}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """One uint8 ``[H, W, 3]`` frame -> float32 ``[3, size, size]``."""
        height, width = frame.shape[:2]
        if self.mode == "square":
            target = (self.size, self.size)
        else:
            target = shortest_edge_size(height, width, self.size)
        pixels = resize_frames(np.ascontiguousarray(frame), target, self.resample)
        if self.mode == "shortest_edge_crop":
            top, left = (target[0] - self.size) // 2, (target[1] - self.size) // 2
            pixels = pixels[top: top + self.size, left: left + self.size]
        rescaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
        mean, std = np.asarray(self.mean, dtype=np.float32), np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((rescaled - mean) / std).transpose(2, 0, 1))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = check_video(frames)
        return np.stack([self.frame(f) for f in frames])[None].astype(np.float32)

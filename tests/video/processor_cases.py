"""ffexport's preprocessing per family, as the runtime applies it for each family's released checkpoint.

Shared by tests/video/test_transformers_processors.py and scripts/transformers_video_processors.py
(which runs transformers' real video processors on the same clips), so both call exactly this."""

from __future__ import annotations

import numpy as np

from ffexport.video.fixed import HALF_MEAN_STD, IMAGENET_MEAN, IMAGENET_STD, FixedFramePreprocess
from ffexport.video.preprocess import preprocess_video, video_smart_resize

#: family -> FixedFramePreprocess of its released checkpoint (frame size from its vision config)
FIXED = {
    "llava-next-video": FixedFramePreprocess(336, mode="shortest_edge_crop"),
    "llava-onevision": FixedFramePreprocess(384, mode="square", mean=HALF_MEAN_STD, std=HALF_MEAN_STD),
    "internvl": FixedFramePreprocess(448, mode="square", mean=IMAGENET_MEAN, std=IMAGENET_STD),
}


def ffexport_preprocess(family: str, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pixel_values_videos, video_grid_thw)``; the grid is empty ``[0, 3]`` for fixed-size towers."""
    if family == "qwen2-vl":
        return preprocess_video(frames)
    if family == "qwen3-vl":
        target = video_smart_resize(len(frames), frames.shape[1], frames.shape[2])
        return preprocess_video(frames, size=target, patch_size=16, image_mean=HALF_MEAN_STD, image_std=HALF_MEAN_STD)
    return FIXED[family](frames), np.zeros((0, 3), np.int64)

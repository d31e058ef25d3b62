"""Video inputs for ffexport: synthetic test videos and Qwen2-VL preprocessing (numpy + Pillow, no torch)."""

from ffexport.video.preprocess import (
    IMAGE_MAX_PIXELS,
    IMAGE_MIN_PIXELS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    preprocess_video,
    sample_frame_indices,
    smart_resize,
)
from ffexport.video.synthetic import SYNTHETIC_KINDS, synthetic_video, write_video

__all__ = [
    "IMAGE_MAX_PIXELS",
    "IMAGE_MIN_PIXELS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "SYNTHETIC_KINDS",
    "VIDEO_MAX_PIXELS",
    "VIDEO_MIN_PIXELS",
    "preprocess_video",
    "sample_frame_indices",
    "smart_resize",
    "synthetic_video",
    "write_video",
]

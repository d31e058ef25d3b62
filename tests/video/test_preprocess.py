"""Tests for ffexport.video.preprocess against transformers' Qwen2-VL Pillow image processor.

transformers' Qwen2-VL *video* processor needs torchvision (not installed here; it is compared
through recorded fixtures in test_transformers_processors.py). Here the reference is
``Qwen2VLImageProcessorPil`` given each frame already resized the way the video processor resizes
(PyTorch's uint8 antialiased bicubic, which torchvision calls): it rescales, normalizes and
patchifies one frame, repeating it ``temporal_patch_size`` times. Our numpy path does the same
arithmetic, so we expect equality to within ATOL = 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffexport.video.preprocess import (
    IMAGE_MAX_PIXELS,
    IMAGE_MIN_PIXELS,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    preprocess_video,
    sample_frame_indices,
    smart_resize,
)
from ffexport.video.synthetic import synthetic_video

ATOL = 1e-5

qwen2_vl_pil = pytest.importorskip(
    "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
    reason="transformers' Qwen2-VL Pillow image processor is the reference implementation",
)


def _reference(frame: np.ndarray, resize, **kwargs: int) -> tuple[np.ndarray, np.ndarray]:
    """transformers' output for one frame, resized as the video processor resizes: (pixel_values, image_grid_thw)."""
    target = smart_resize(frame.shape[0], frame.shape[1], min_pixels=kwargs["min_pixels"], max_pixels=kwargs["max_pixels"])
    frame = resize(frame, target)  # the Pil processor's own resize is then the identity
    processor = qwen2_vl_pil.Qwen2VLImageProcessorPil(**kwargs)
    out = processor(images=frame, return_tensors="np")
    return np.asarray(out["pixel_values"]), np.asarray(out["image_grid_thw"])


@pytest.mark.parametrize(
    "height, width, min_pixels, max_pixels",
    [
        (112, 112, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS),  # upscaled by the video min_pixels
        (100, 150, 56 * 56, 28 * 28 * 64),  # non-multiple sides, downscaled by max_pixels
        (90, 60, 56 * 56, 28 * 28 * 1280),  # portrait, rounded to multiples of 28
        (56, 84, 56 * 56, 28 * 28 * 1280),  # already a multiple: no resize at all
    ],
)
def test_two_identical_frames_equal_the_image_processor(
    height: int, width: int, min_pixels: int, max_pixels: int, video_resize
) -> None:
    frame = synthetic_video("moving_object", frames=1, height=height, width=width, seed=1)[0]
    video = np.stack([frame, frame])
    pixel_values, grid_thw = preprocess_video(video, min_pixels=min_pixels, max_pixels=max_pixels)
    expected, expected_grid = _reference(frame, video_resize, min_pixels=min_pixels, max_pixels=max_pixels)
    np.testing.assert_array_equal(grid_thw, expected_grid)
    assert pixel_values.dtype == np.float32 and grid_thw.dtype == np.int64
    assert pixel_values.shape == expected.shape
    np.testing.assert_allclose(pixel_values, expected, rtol=0, atol=ATOL)


def test_each_frame_matches_the_image_processor_in_its_temporal_slot(video_resize) -> None:
    """Distinct frames: frame f must sit at temporal patch f // 2, temporal slot f % 2.

    This pins the feature order (channel, frame-in-patch, row, col) that the identical-frame test
    cannot see, and checks per-frame resize + normalize on every frame.
    """
    video = synthetic_video("pan", frames=4, height=70, width=130, seed=2)
    kwargs = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}
    pixel_values, grid_thw = preprocess_video(video, **kwargs)
    grid_t, grid_h, grid_w = grid_thw[0].tolist()
    assert grid_t == 2
    per_patch = pixel_values.reshape(grid_t, grid_h * grid_w, 3, 2, 14 * 14)
    for f, frame in enumerate(video):
        expected, expected_grid = _reference(frame, video_resize, **kwargs)
        assert expected_grid[0].tolist() == [1, grid_h, grid_w]
        expected = expected.reshape(grid_h * grid_w, 3, 2, 14 * 14)[:, :, 0]
        np.testing.assert_allclose(per_patch[f // 2, :, :, f % 2], expected, rtol=0, atol=ATOL)


def test_token_order_is_merge_blocks_then_rows() -> None:
    """Rows come in 2x2 merge blocks: rows 0..3 are the top-left block's patches (row-major)."""
    height, width = 56, 84  # multiples of 28: no resize, so patches can be located in the input
    video = synthetic_video("noise", frames=2, height=height, width=width, seed=5)
    pixel_values, grid_thw = preprocess_video(video, size=(height, width))
    assert grid_thw[0].tolist() == [1, 4, 6]
    patches = pixel_values.reshape(-1, 3, 2, 14, 14)
    # unnormalize the red channel of frame 0 and compare with the raw pixels
    red = patches[:, 0, 0] * 0.26862954 + 0.48145466
    raw = video[0, :, :, 0].astype(np.float32) / 255
    block_w = 6 // 2
    for row in range(4 * 6):
        block, within = divmod(row, 4)
        patch_r = (block // block_w) * 2 + within // 2
        patch_c = (block % block_w) * 2 + within % 2
        expected = raw[patch_r * 14 : (patch_r + 1) * 14, patch_c * 14 : (patch_c + 1) * 14]
        np.testing.assert_allclose(red[row], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_odd_frame_counts_repeat_the_last_frame(frames: int) -> None:
    video = synthetic_video("pan", frames=frames, height=56, width=56, seed=0)
    pixel_values, grid_thw = preprocess_video(video, size=(56, 56))
    assert grid_thw.tolist() == [[math.ceil(frames / 2), 4, 4]]
    padded = np.concatenate([video, video[-1:]])
    expected, _ = preprocess_video(padded, size=(56, 56))
    np.testing.assert_array_equal(pixel_values, expected)
    last = pixel_values.reshape(grid_thw[0, 0], 16, 3, 2, 196)[-1]
    np.testing.assert_array_equal(last[:, :, 0], last[:, :, 1])


@pytest.mark.parametrize(
    "height, width, frames, size, expected_grid",
    [
        (112, 112, 8, None, (4, 24, 24)),  # 112x112 is upscaled to 336x336 by VIDEO_MIN_PIXELS
        (480, 640, 2, None, (1, 34, 46)),  # 476x644: sides rounded to multiples of 28, area in limits
        (1080, 1920, 4, None, (2, 40, 72)),  # 560x1008 capped by VIDEO_MAX_PIXELS = 602112
        (112, 112, 6, (56, 84), (3, 4, 6)),  # forced size, aspect ratio not kept
        (30, 40, 2, (28, 28), (1, 2, 2)),
    ],
)
def test_grid_and_shapes(height: int, width: int, frames: int, size, expected_grid) -> None:
    video = synthetic_video("static", frames=frames, height=height, width=width)
    pixel_values, grid_thw = preprocess_video(video, size=size)
    assert tuple(grid_thw[0].tolist()) == expected_grid
    assert pixel_values.shape == (int(np.prod(expected_grid)), 3 * 2 * 14 * 14)
    assert np.isfinite(pixel_values).all()


def test_default_limits_are_the_video_processor_defaults() -> None:
    assert (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS) == (100352, 602112)
    assert (IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS) == (3136, 1003520)
    video = synthetic_video("static", frames=2, height=1080, width=1920)
    _, grid_default = preprocess_video(video)
    _, grid_explicit = preprocess_video(video, min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS)
    np.testing.assert_array_equal(grid_default, grid_explicit)
    h, w = (int(n) * 14 for n in grid_default[0, 1:])
    assert h * w <= VIDEO_MAX_PIXELS


def test_smart_resize_matches_transformers() -> None:
    reference = qwen2_vl_pil.smart_resize
    rng = np.random.default_rng(0)
    limits = [(IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS), (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS), (3136, 12845056)]
    for _ in range(300):
        height, width = (int(x) for x in rng.integers(20, 4000, size=2))
        if max(height, width) / min(height, width) > 200:
            continue
        for min_pixels, max_pixels in limits:
            ours = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
            assert ours == reference(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
            assert ours[0] % 28 == 0 and ours[1] % 28 == 0
    assert smart_resize(500, 700) == reference(500, 700)  # same defaults as transformers' function


def test_smart_resize_rejects_extreme_aspect_ratio() -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(28, 28 * 201)


def test_bad_inputs_raise_clear_errors() -> None:
    video = synthetic_video("static", frames=2, height=56, width=56)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_video(video.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        preprocess_video(video[0])
    with pytest.raises(ValueError, match="multiples of patch_size"):
        preprocess_video(video, size=(56, 60))
    with pytest.raises(ValueError, match="either size or"):
        preprocess_video(video, size=(56, 56), max_pixels=10**6)
    with pytest.raises(ValueError, match="merge_size"):
        preprocess_video(video, merge_size=0)


def test_sample_frame_indices_uniform() -> None:
    np.testing.assert_array_equal(sample_frame_indices(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(sample_frame_indices(8, 8), np.arange(8))
    np.testing.assert_array_equal(sample_frame_indices(3, 8), [0, 0, 0, 1, 1, 1, 2, 2])
    assert sample_frame_indices(5, 1).tolist() == [0]
    assert sample_frame_indices(10, 4).dtype == np.int64


def test_sample_frame_indices_matches_transformers_rule() -> None:
    """Same indices as transformers' ``arange(0, total, total / wanted)`` truncated to int."""
    for total in range(1, 60):
        for wanted in range(1, total + 1):
            reference = np.arange(0, total, total / wanted).astype(np.int64)[:wanted]
            ours = sample_frame_indices(total, wanted)
            assert len(ours) == wanted
            assert np.all(np.diff(ours) > 0)  # no repeats when downsampling
            # float arange can land a hair below an integer; allow only that off-by-one
            assert np.all((ours - reference >= 0) & (ours - reference <= 1)), (total, wanted)


def test_sample_frame_indices_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="positive"):
        sample_frame_indices(0, 4)
    with pytest.raises(ValueError, match="positive"):
        sample_frame_indices(4, 0)

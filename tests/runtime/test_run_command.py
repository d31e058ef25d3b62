"""`ffexport run` on the toy build: outputs on success; one `error:` line and a non-zero exit otherwise."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.video import synthetic_video, write_video
from toy_build import DEFAULT_BUCKETS, oracle, toy_case

SQUARE = DEFAULT_BUCKETS[0]


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("case") / "case.npz"
    toy_case(SQUARE, seed=5).save(path)
    return path



def test_inputs_writes_logits_and_tokens(toy_build_dir, case_file, tmp_path, capsys):
    out = tmp_path / "out.npz"
    assert main(["-q", "run", str(toy_build_dir), "--inputs", str(case_file), "--max-new-tokens", "6",
                    "--out", str(out)]) == 0
    case = toy_case(SQUARE, seed=5)
    logits, tokens = oracle(case.input_ids, case.pixel_values_videos, case.video_grid_thw, 6)
    with np.load(out) as saved:
        assert set(saved.files) == {"logits", "generated_ids"}
        np.testing.assert_array_equal(saved["logits"], logits)
        assert saved["generated_ids"].tolist() == [tokens]
    captured = capsys.readouterr()
    assert captured.err == ""  # -q
    from ffexport.runtime.tokenizer import BuildTokenizer

    assert captured.out == "answer: " + BuildTokenizer(toy_build_dir / "tokenizer" / "tokenizer.json").decode(tokens) + "\n"


def test_video_prints_the_answer(toy_build_dir, tmp_path, capsys):
    video = write_video(synthetic_video("pan", frames=12, height=120, width=240), tmp_path / "v.mp4")
    assert main(["run", str(toy_build_dir), "--video", str(video), "--prompt", "What moves?",
                    "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("answer: ") and captured.out.endswith("\n")
    err = captured.err.splitlines()  # what was done goes to stderr, never stdout
    assert f"{video}: 12 frames of 120x240 -> bucket 4x112x224, 64 visual tokens" in err
    assert "frames: sampled 4 of 12 frames: 0 3 6 9" in err
    assert "fit crop: 120x240 kept whole (the bucket's aspect ratio)" in err


def test_refuses_to_overwrite(toy_build_dir, case_file, tmp_path, capsys, error_line):
    out = tmp_path / "o.npz"
    out.write_bytes(b"user data")
    assert main(["-q", "run", str(toy_build_dir), "--inputs", str(case_file), "--out", str(out)]) == InputError.exit_code
    assert "--overwrite" in error_line()
    assert out.read_bytes() == b"user data"
    assert main(["-q", "run", str(toy_build_dir), "--inputs", str(case_file), "--max-new-tokens", "1",
                    "--out", str(out), "--overwrite"]) == 0


def _damage(build, how):
    if how == "truncated weights":
        data = (build / "weights.bin").read_bytes()
        (build / "weights.bin").write_bytes(data[:-10])
    elif how == "flipped onnx":
        data = bytearray((build / "8x112x112.prefill.onnx").read_bytes())
        for i in range(40, 48):
            data[i] ^= 0xFF
        (build / "8x112x112.prefill.onnx").write_bytes(bytes(data))
    elif how == "no manifest":
        (build / "manifest.json").unlink()


@pytest.mark.parametrize(("how", "words"), [
    ("truncated weights", "weights.bin is"),
    ("flipped onnx", "8x112x112.prefill.onnx does not match its sha256"),
    ("no manifest", "has no manifest.json"),
])
def test_damaged_build(toy_build_dir, case_file, tmp_path, capsys, how, words, error_line):
    build = tmp_path / "b"
    shutil.copytree(toy_build_dir, build)
    _damage(build, how)
    assert main(["-q", "run", str(build), "--inputs", str(case_file), "--max-new-tokens", "2"]) == InputError.exit_code
    line = error_line()
    assert words in line and "rebuild" in line


def test_bad_arguments(toy_build_dir, case_file, tmp_path, capsys, error_line):
    build = str(toy_build_dir)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    cases = [
        (["--inputs", str(case_file), "--prompt", "hi"], "--prompt goes with --video"),
        (["--inputs", str(case_file), "--fit", "pad"], "--fit goes with --video"),
        (["--inputs", str(case_file), "--bucket", "4x112x224"], "not bucket 4x112x224's"),
        (["--inputs", str(case_file), "--bucket", "2x2x2"], "no bucket '2x2x2'"),
        (["--inputs", str(tmp_path / "missing.npz")], "no such file"),
        (["--video", str(not_video)], "is not a readable video"),
        (["--inputs", str(case_file), "--provider", "NoSuchExecutionProvider"], "NoSuchExecutionProvider"),
    ]
    for args, words in cases:
        assert main(["-q", "run", build, *args]) == InputError.exit_code, args
        assert words in error_line()
    assert main(["-q", "run", str(tmp_path / "nowhere"), "--inputs", str(case_file)]) == InputError.exit_code
    assert "not a build directory" in error_line()


@pytest.fixture(scope="module")
def wide_video(tmp_path_factory):
    """12 frames of 120x360 (aspect 3): no bucket of the toy build is within 25% of it."""
    return write_video(synthetic_video("moving_object", frames=12, height=120, width=360, seed=4),
                       tmp_path_factory.mktemp("wide") / "wide.mp4")


def _expected(build, frames, max_new_tokens=2):
    """The logits of the runtime's own steps on frames fitted by hand for the 4x112x224 bucket (real
    pixels are not small integers, so the toy graphs' sums are not exact: compare like with like)."""
    from ffexport.runtime import Runtime

    rt = Runtime(build)
    return rt.generate(rt.prepare_video(frames, "What moves?", "4x112x224"), max_new_tokens).logits


@pytest.mark.parametrize("fit", ["crop", "pad", "resize"])
def test_fit_a_video_of_no_bucket_shape(toy_build_dir, wide_video, tmp_path, capsys, fit):
    from ffexport.runtime.video import read_video

    out = tmp_path / "o.npz"
    args = ["run", str(toy_build_dir), "--video", str(wide_video), "--prompt", "What moves?", "--max-new-tokens", "2",
            "--out", str(out)]
    assert main(args + (["--fit", fit] if fit != "crop" else [])) == 0  # crop is the default
    err = capsys.readouterr().err
    assert "-> bucket 4x112x224" in err  # the closest aspect ratio (2 against the video's 3)
    assert "a bucket of this video's shape: ffexport build --bucket 4x112x336" in err
    frames = read_video(wide_video, wanted=4)
    if fit == "crop":
        assert "fit crop: centre-cropped 120x360 to 120x240" in err
        fitted = frames[:, :, 60:300]
    elif fit == "pad":
        assert "fit pad: padded 120x360 to 180x360 with black bars" in err
        fitted = np.zeros((4, 180, 360, 3), np.uint8)
        fitted[:, 30:150] = frames
    else:
        assert "fit resize: 120x360 stretched to the bucket's aspect ratio 2.00" in err
        fitted = frames
    with np.load(out) as saved:
        np.testing.assert_array_equal(saved["logits"], _expected(toy_build_dir, fitted))


def test_fit_strict_names_the_bucket_to_build(toy_build_dir, wide_video, capsys, error_line):
    assert main(["-q", "run", str(toy_build_dir), "--video", str(wide_video), "--fit", "strict"]) == InputError.exit_code
    line = error_line()
    assert "fits a video of 12 frames at 120x360 with --fit strict" in line
    assert "build one: ffexport build --bucket 8x112x336" in line
    assert main(["-q", "run", str(toy_build_dir), "--video", str(wide_video), "--fit", "strict",
                 "--bucket", "8x112x112"]) == InputError.exit_code
    assert "bucket 8x112x112 does not fit a video of 12 frames at 120x360 with --fit strict" in error_line()


def test_answer_video_resize_is_run_video(toy_build_dir, wide_video):
    """README: Runtime.run_video resizes to the bucket, as answer_video(fit="resize") does; crop differs."""
    from ffexport.runtime import Runtime
    from ffexport.runtime.fit import answer_video

    rt = Runtime(toy_build_dir)
    plain = rt.run_video(wide_video, "What moves?", max_new_tokens=2, bucket="4x112x224")
    resized = answer_video(rt, wide_video, "What moves?", fit="resize", max_new_tokens=2)
    cropped = answer_video(rt, wide_video, "What moves?", max_new_tokens=2)
    assert resized.bucket == plain.bucket == cropped.bucket == "4x112x224"
    np.testing.assert_array_equal(resized.logits, plain.logits)
    assert not np.array_equal(cropped.logits, plain.logits)

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

    assert captured.out == BuildTokenizer(toy_build_dir / "tokenizer" / "tokenizer.json").decode(tokens) + "\n"


def test_video_prints_the_answer(toy_build_dir, tmp_path, capsys):
    video = write_video(synthetic_video("pan", frames=12, height=120, width=240), tmp_path / "v.mp4")
    assert main(["run", str(toy_build_dir), "--video", str(video), "--prompt", "What moves?",
                    "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("\n") and captured.out.count("\n") >= 1
    assert "bucket 4x112x224" in captured.err  # progress goes to stderr, never stdout


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

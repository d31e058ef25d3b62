"""The command line: outputs on success; one clear line and a non-zero exit on bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ffexport.cli import main
from ffexport.errors import InputError, ModelError, ScheduleError
from ffexport.models.tiny_tokenizer import tiny_special_token_ids

VIDEO = tiny_special_token_ids()["video_token_id"]


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("case") / "case.npz"
    assert main(["-q", "case", "--video", "synthetic:pan", "--out", str(path)]) == 0
    return path



def test_reference_dynamic_then_static(tmp_path, case_file):
    out, sched = tmp_path / "dyn.npz", tmp_path / "s.json"
    args = ["-q", "reference", "--inputs", str(case_file), "--max-new-tokens", "3"]
    assert main(args + ["--out", str(out), "--schedule-out", str(sched)]) == 0
    dyn = np.load(out)
    assert dyn["logits"].dtype == np.float32 and dyn["logits"].shape[0] == 1
    assert dyn["generated_ids"].shape == (1, 3)
    assert json.loads(sched.read_text())["format"] == "ffexport.schedule/1"
    assert main(args + ["--static", str(sched), "--out", str(tmp_path / "st.npz")]) == 0
    st = np.load(tmp_path / "st.npz")
    assert np.abs(st["logits"] - dyn["logits"]).max() <= 1e-5
    np.testing.assert_array_equal(st["kv_lengths"], dyn["kv_lengths"])
    np.testing.assert_array_equal(st["generated_ids"], dyn["generated_ids"])
    assert main(args + ["--no-reduction", "--out", str(tmp_path / "full.npz")]) == 0
    full = np.load(tmp_path / "full.npz")
    assert (full["kv_lengths"] > dyn["kv_lengths"]).all()


def test_default_case_runs_without_inputs(tmp_path):
    assert main(["-q", "reference", "--out", str(tmp_path / "o.npz")]) == 0
    assert "logits" in np.load(tmp_path / "o.npz")


def test_refuses_to_overwrite(tmp_path, case_file, capsys, error_line):
    out = tmp_path / "o.npz"
    out.write_bytes(b"user data")
    assert main(["-q", "reference", "--inputs", str(case_file), "--out", str(out)]) == InputError.exit_code
    assert "--overwrite" in error_line()
    assert out.read_bytes() == b"user data"


def _write_case(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.pop("video_grid_thw"), "lacks video_grid_thw"),
        (lambda a: a.update(video_grid_thw=np.array([[2, 8, 8]])), "video span"),
        (lambda a: a.update(input_ids=np.delete(a["input_ids"], np.flatnonzero(a["input_ids"][0] == VIDEO)[:3], 1)),
         "video span"),
        (lambda a: a.update(input_ids=np.where(a["input_ids"] == VIDEO, 1, a["input_ids"])), "exactly one"),
        (lambda a: a.update(pixel_values_videos=a["pixel_values_videos"][:-4]), "rows"),
        (lambda a: a.update(pixel_values_videos=np.full_like(a["pixel_values_videos"], np.nan)), "NaN"),
        (lambda a: a.update(input_ids=a["input_ids"].astype(np.float32)), "integers"),
        (lambda a: a.update(pixel_values_videos=a["pixel_values_videos"][:, :10]), "the model expects"),
    ],
)
def test_malformed_cases(tmp_path, case_file, capsys, mutate, message, error_line):
    arrays = dict(np.load(case_file))
    mutate(arrays)
    bad = _write_case(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "o.npz"
    assert main(["-q", "reference", "--inputs", str(bad), "--out", str(out)]) == InputError.exit_code
    assert message in error_line()
    assert not out.exists()


def test_not_an_npz(tmp_path, capsys, error_line):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    assert main(["-q", "reference", "--inputs", str(bad), "--out", str(tmp_path / "o.npz")]) == InputError.exit_code
    assert "not a readable .npz" in error_line()


@pytest.mark.parametrize(
    "visual_tokens, stages, message",
    [
        (64, [{"layer": 0, "where": "before_attention", "op": "merge", "remove": 60}], "at most 48"),
        (32, [], "schedule is for 32 visual tokens"),
        (64, [{"layer": 9, "where": "after_attention", "op": "prune", "remove": 1}], "unknown layer 9"),
    ],
)
def test_bad_schedules(tmp_path, case_file, capsys, visual_tokens, stages, message, error_line):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"format": "ffexport.schedule/1", "visual_tokens": visual_tokens,
                                "patches_per_frame": 16, "stages": stages}))
    out = tmp_path / "o.npz"
    code = main(["-q", "reference", "--inputs", str(case_file), "--static", str(path), "--out", str(out)])
    assert code == ScheduleError.exit_code
    assert message in error_line()
    assert not out.exists()


def test_unknown_model_and_missing_weights(tmp_path, capsys, monkeypatch, error_line):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["-q", "reference", "--model", "nope", "--out", str(tmp_path / "o.npz")]) == ModelError.exit_code
    assert "unknown model 'nope'" in error_line()
    assert main(["-q", "reference", "--model", "qwen2vl-7b", "--out", str(tmp_path / "o.npz")]) == ModelError.exit_code
    line = error_line()
    assert "weights for qwen2vl-7b not found" in line and "empty-cache" in line


def test_bad_option_values(tmp_path, capsys, error_line):
    assert main(["-q", "reference", "--cost", "0", "--out", str(tmp_path / "o.npz")]) == InputError.exit_code
    assert "--cost" in error_line()


def test_cost_too_small_is_one_line(tmp_path, case_file, capsys, error_line):
    # many tiny merge steps against a 1-layer budget exhaust it, as in the authors' code
    code = main(["-q", "reference", "--inputs", str(case_file), "--similarity", "0.9", "--out", str(tmp_path / "o.npz")])
    assert code == 5
    line = error_line()
    assert "cost is too small" in line
    assert not (tmp_path / "o.npz").exists()
    # the remedies are computed: each one, applied alone, makes the same run succeed
    cost = re.search(r"--cost (\d\.\d\d) or more", line).group(1)
    bound = float(re.search(r"--ratio-lower-bound above (\d\.\d+)", line).group(1)) + 0.001
    for change in (["--cost", cost], ["--ratio-lower-bound", f"{bound:.3f}"]):
        code = main(["-q", "reference", "--inputs", str(case_file), "--similarity", "0.9", *change,
                     "--out", str(tmp_path / "o.npz"), "--overwrite"])
        assert code == 0, (change, capsys.readouterr().err)


def test_quiet_and_verbose_after_the_verb(tmp_path, capsys):
    out = tmp_path / "v.gif"
    assert main(["video", "static", "--frames", "2", "--size", "16x16", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["video", "static", "--frames", "2", "--size", "16x16", "--out", str(out), "--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert main(["-q", "video", "static", "--frames", "2", "--size", "16x16", "--out", str(out), "--overwrite"]) == 0
    assert capsys.readouterr().err == ""  # the subcommand's default does not undo -q given before it
    from ffexport.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert "-q, --quiet" in parser.format_help() and "-v, --verbose" in parser.format_help(), name


@pytest.mark.parametrize("command", [["build"], ["reference"], ["calibrate", "--synthetic", "1"],
                                     ["explain", "--video", "synthetic:pan"], ["bench"]])
def test_bad_arguments_come_before_the_model_loads(tmp_path, capsys, command, error_line):
    # a model that cannot load: had the model loaded first, the exit code would be ModelError's
    out = ["--out", str(tmp_path / ("o.png" if command[0] == "explain" else "o.json"))] if command[0] != "bench" else []
    base = ["-q", *command, "--model", "no-such-model", *out]
    assert main([*base, "--cost", "0", *(["--bucket", "8x112x112"] if command[0] == "calibrate" else [])]) == 2
    assert "--cost must be in (0, 1]" in error_line()
    if command[0] != "reference":
        try:  # argparse's own error (exit 2), or ffexport's InputError line (exit 2)
            code = main([*base, "--bucket", "0x112x112"])
        except SystemExit as e:
            code = e.code
        assert code == 2
        err = capsys.readouterr().err
        assert "0x112x112" in err and "must be positive" in err
    assert main([*base, *(["--bucket", "8x112x112"] if command[0] == "calibrate" else [])]) == ModelError.exit_code
    assert "unknown model 'no-such-model'" in error_line()


def test_subcommand_modules_import_without_the_cli():
    """bench/ and calibrate/ take their argument groups from ffexport.cliargs, not from ffexport.cli (no circle)."""
    import subprocess
    import sys

    code = ("import sys, ffexport.bench.cli, ffexport.calibrate.cli, ffexport.runtime.cli\n"
            "assert 'ffexport.cli' not in sys.modules, 'imports ffexport.cli'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_build_says_how_to_fit_the_budget(tmp_path, capsys, error_line):
    # issue 12 item 9: 2 temporal frames on the 4-layer tiny model overrun cost 0.3; the line says what to change
    assert main(["-q", "build", "--bucket", "4x112x140", "--out", str(tmp_path / "b")]) == 5
    line = error_line()
    assert "the cost is too small" in line
    assert re.search(r"--cost 0\.\d\d or more ends merging in time", line)
    assert re.search(r"--ratio-lower-bound above 0\.\d{3} stops merging", line)


def test_an_operating_system_error_is_one_line(tmp_path, monkeypatch, capsys):
    """A full disk mid-write (injected) ends with one line and exit 10, not a traceback."""
    import errno

    import ffexport.video as video

    out = tmp_path / "clip.mp4"

    def disk_full(clip, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(video, "write_video", disk_full)
    assert main(["video", "--out", str(out)]) == 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: No space left on device") and str(out) in err[0]


def test_case_from_a_real_clip(tmp_path, real_clips):
    """``case --video FILE``: --frames frames sampled uniformly over the file at its own size, then the
    model's preprocessing (issue 13: cases from real clips, not only synthetic videos)."""
    from ffexport.runtime.video import read_video
    from ffexport.video import preprocess_video

    out = tmp_path / "bikes.npz"
    assert main(["-q", "case", "--video", str(real_clips["bikes.mp4"]), "--frames", "4", "--out", str(out)]) == 0
    case = np.load(out)
    from ffexport.models import LoadModel

    low, high = LoadModel("qwen2vl-tiny")().video_pixels
    pixels, grid = preprocess_video(read_video(real_clips["bikes.mp4"], wanted=4), min_pixels=low, max_pixels=high)
    np.testing.assert_array_equal(case["video_grid_thw"], grid)
    np.testing.assert_array_equal(case["pixel_values_videos"], pixels)
    visual = int(np.prod(grid)) // 4
    assert (case["input_ids"] == tiny_special_token_ids()["video_token_id"]).sum() == visual


def test_case_from_a_short_or_missing_file(tmp_path, capsys, error_line, monkeypatch):
    import ffexport.cli as cli
    from ffexport.video import synthetic_video, write_video

    short = tmp_path / "short.mp4"
    write_video(synthetic_video("pan", frames=3, height=64, width=64), short)
    assert main(["case", "--video", str(short), "--frames", "8", "--out", str(tmp_path / "s.npz")]) == 0
    assert "has 3 frames; the case needs 8: frames repeated" in capsys.readouterr().err

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the video was checked")

    monkeypatch.setattr(cli, "load_model", no_load)
    code = main(["-q", "case", "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "n.npz")])
    assert code == InputError.exit_code
    assert "none.mp4" in error_line() and not (tmp_path / "n.npz").exists()

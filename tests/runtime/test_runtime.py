"""The Runtime on a hand-written toy build: generation against an independent numpy oracle, bucket
picking, video preparation, and every refusal as one InputError line."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest

from ffexport.case import Case
from ffexport.errors import InputError, RunError
from ffexport.mrope import mrope_position_ids
from ffexport.runtime import Runtime
from ffexport.video import synthetic_video, write_video
from toy_build import DEFAULT_BUCKETS, MERGE, VIDEO, ToyBucket, oracle, toy_case, write_toy_build

SQUARE, WIDE, UNUSABLE = DEFAULT_BUCKETS


@pytest.fixture(scope="module")
def rt(toy_build_dir) -> Runtime:
    return Runtime(toy_build_dir)


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text.startswith(("input: ", "run: "))
    return text


# ---------------------------------------------------------------- generation
@pytest.mark.parametrize("bucket", [SQUARE, WIDE], ids=lambda b: b.name)
def test_generate_matches_the_oracle(rt, bucket):
    case = toy_case(bucket, seed=1)
    start = int(np.flatnonzero(case.input_ids[0] == VIDEO)[0])
    _, delta = mrope_position_ids(case.input_ids, case.video_grid_thw, video_token_id=VIDEO, spatial_merge_size=MERGE)
    assert start > 0 and delta != 0  # so a wrong video_start or decode position would change the tokens
    result = rt.generate(case, 12)
    logits, tokens = oracle(case.input_ids, case.pixel_values_videos, case.video_grid_thw, 12)
    assert result.bucket == bucket.name
    assert result.logits.dtype == np.float32 and result.logits.shape == (1, 272)
    np.testing.assert_array_equal(result.logits, logits)
    assert result.generated_ids.dtype == np.int64 and result.generated_ids.tolist() == [tokens]
    assert len(tokens) == 12 and len(set(tokens)) > 3
    assert result.text == rt.tokenizer.decode(tokens)
    assert set(result.arrays()) == {"logits", "generated_ids"}


def test_fp16_build_matches_the_oracle(tmp_path):
    rt16 = Runtime(write_toy_build(tmp_path / "b16", precision="fp16", buckets=(SQUARE,)))
    case = toy_case(SQUARE, seed=2)
    result = rt16.generate(case, 8)
    logits, tokens = oracle(case.input_ids, case.pixel_values_videos, case.video_grid_thw, 8)
    np.testing.assert_array_equal(result.logits, logits)
    assert result.generated_ids.tolist() == [tokens]


def test_stops_at_eos(tmp_path):
    case = toy_case(SQUARE, seed=1)
    _, free = oracle(case.input_ids, case.pixel_values_videos, case.video_grid_thw, 12, eos=set())
    k = next(i for i in range(2, 12) if free[i] not in free[:i])
    rt_eos = Runtime(write_toy_build(tmp_path / "eos", buckets=(SQUARE,), eos=[999, free[k]]))
    result = rt_eos.generate(case, 12)
    assert result.generated_ids.tolist() == [free[: k + 1]]  # the EOS token is kept, nothing after it


def test_budget_zero_and_one_never_load_decode(tmp_path):
    rt_fresh = Runtime(write_toy_build(tmp_path / "b", buckets=(SQUARE,)))
    case = toy_case(SQUARE)
    none = rt_fresh.generate(case, 0)
    assert none.generated_ids.shape == (1, 0) and none.text == ""
    one = rt_fresh.generate(case, 1)
    _, tokens = oracle(case.input_ids, case.pixel_values_videos, case.video_grid_thw, 1)
    assert one.generated_ids.tolist() == [tokens]
    np.testing.assert_array_equal(none.logits, one.logits)
    assert "decode.onnx" not in rt_fresh._graphs


def test_sessions_are_created_once(rt):
    case = toy_case(SQUARE)
    rt.generate(case, 3)
    sessions = {name: g.session for name, g in rt._graphs.items()}
    rt.generate(case, 3)
    assert {name: g.session for name, g in rt._graphs.items()} == sessions
    assert "embed.onnx" in sessions and "8x112x112.prefill.onnx" in sessions


# ---------------------------------------------------------------- refusals
def test_case_for_a_bucket_that_does_not_exist(rt):
    with pytest.raises(InputError) as e:
        rt.generate(toy_case(ToyBucket(4, 56, 56)), 2)
    msg = _one_line(e)
    assert "grid 2x4x4 matches no usable bucket" in msg and "8x112x112 (8 frames, 112x112) grid 4x8x8" in msg


def test_case_for_an_unusable_bucket(rt):
    with pytest.raises(InputError) as e:
        rt.generate(toy_case(UNUSABLE), 2)
    assert "16x112x112 (16 frames, 112x112) [not usable" in _one_line(e)


def test_case_with_the_wrong_explicit_bucket(rt):
    with pytest.raises(InputError) as e:
        rt.generate(toy_case(SQUARE), 2, bucket=WIDE.name)
    assert "not bucket 4x112x224's (2x8x16)" in _one_line(e)


def test_prompt_longer_than_max_text(rt):
    case = toy_case(SQUARE, text="x" * 200)
    text_tokens = case.input_ids.shape[1] - SQUARE.visual_tokens
    with pytest.raises(InputError) as e:
        rt.generate(case, 2)
    assert _one_line(e) == f"input: prompt is {text_tokens} tokens; this build takes at most 128"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels(rt, bad):
    case = toy_case(SQUARE)
    pixels = case.pixel_values_videos.copy()
    pixels[3, 5] = bad
    with pytest.raises(InputError) as e:
        rt.generate(replace(case, pixel_values_videos=pixels), 2)
    assert "NaN or infinite" in _one_line(e)


def test_ids_outside_the_vocabulary_and_bad_budgets(rt):
    case = toy_case(SQUARE)
    ids = case.input_ids.copy()
    ids[0, 0] = 5000
    with pytest.raises(InputError, match=r"outside the model's vocabulary \[0, 272\)"):
        rt.generate(replace(case, input_ids=ids), 2)
    for budget in (-1, 2.5, True):
        with pytest.raises(InputError, match="max_new_tokens"):
            rt.generate(case, budget)


def test_malformed_video_span(rt):
    case = toy_case(SQUARE)
    ids = case.input_ids.copy()
    start = int(np.flatnonzero(ids[0] == VIDEO)[0])
    ids[0, start + 10] = 65  # splits the video span in two
    with pytest.raises(InputError, match="exactly one contiguous run"):
        rt.generate(replace(case, input_ids=ids), 2)


def test_unknown_provider(toy_build_dir):
    with pytest.raises(InputError) as e:
        Runtime(toy_build_dir, providers=["NoSuchExecutionProvider"])
    assert "NoSuchExecutionProvider" in _one_line(e) and "CPUExecutionProvider" in _one_line(e)


def test_graph_onnx_runtime_cannot_load(tmp_path, toy_build_dir):
    build = tmp_path / "b"
    shutil.copytree(toy_build_dir, build)
    garbage = b"\x08\x07" + b"\xff" * 64
    (build / "embed.onnx").write_bytes(garbage)
    raw = json.loads((build / "manifest.json").read_text())
    raw["files"]["embed.onnx"] = {"bytes": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
    (build / "manifest.json").write_text(json.dumps(raw))
    rt_bad = Runtime(build)  # the manifest agrees with the file: only ONNX Runtime can tell
    with pytest.raises(RunError) as e:
        rt_bad.generate(toy_case(SQUARE), 2)
    assert f"ONNX Runtime cannot load {build / 'embed.onnx'}" in _one_line(e) and "rebuild" in _one_line(e)


def test_graph_replaced_after_the_manifest_check(tmp_path, toy_build_dir):
    build = tmp_path / "b"
    shutil.copytree(toy_build_dir, build)
    rt_late = Runtime(build)
    data = (build / "decode.onnx").read_bytes()
    (build / "decode.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(InputError, match="changed since the build was checked"):
        rt_late.generate(toy_case(SQUARE), 3)


# ---------------------------------------------------------------- buckets
@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Runtime:
    buckets = (ToyBucket(4, 112, 112), ToyBucket(8, 112, 112), ToyBucket(16, 112, 112), ToyBucket(8, 112, 140),
               ToyBucket(32, 112, 112, usable=False), ToyBucket(8, 112, 224))
    return Runtime(write_toy_build(tmp_path_factory.mktemp("many") / "b", buckets=buckets))


@pytest.mark.parametrize(("frames", "height", "width", "expected"), [
    (8, 112, 112, "8x112x112"),
    (10, 112, 112, "8x112x112"),  # the most frames not above the video's
    (16, 480, 480, "16x112x112"),
    (1000, 480, 480, "16x112x112"),  # 32x112x112 is not usable
    (3, 112, 112, "4x112x112"),  # every bucket needs more: the fewest frames
    (8, 100, 125, "8x112x140"),  # aspect 1.25: both square (1.25) and 112x140 (1.0) fit; the closer wins
    (8, 360, 640, "8x112x224"),  # 16:9 -> 2:1 is within 25%
    (8, 640, 360, None),  # portrait: nothing fits
])
def test_pick_bucket(many, frames, height, width, expected):
    if expected is None:
        with pytest.raises(InputError) as e:
            many.pick_bucket(frames, height, width)
        msg = _one_line(e)
        assert "no bucket" in msg and "aspect 0.56" in msg and "8x112x224 (8 frames, 112x224)" in msg
        assert "32x112x112 (32 frames, 112x112) [not usable" in msg
    else:
        assert many.pick_bucket(frames, height, width).name == expected


def test_buckets_are_the_usable_names(rt):
    assert rt.buckets == ("8x112x112", "4x112x224")
    with pytest.raises(InputError, match="parity"):
        rt.bucket("16x112x112")


# ---------------------------------------------------------------- preparing videos
def test_prepare_video_matches_the_case_command_preprocessing(rt):
    from ffexport.case import case_from_video
    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer

    frames = synthetic_video("pan", frames=8, height=112, width=112, seed=4)
    case = rt.prepare_video(frames, "What moves?")
    expected = case_from_video(frames, "What moves?", tokenizer=build_tiny_tokenizer(), patch_size=14,
                               temporal_patch_size=2, merge_size=2, video_pixels=(3136, 50176))
    np.testing.assert_array_equal(case.input_ids, expected.input_ids)
    np.testing.assert_array_equal(case.pixel_values_videos, expected.pixel_values_videos)
    np.testing.assert_array_equal(case.video_grid_thw, expected.video_grid_thw)
    assert rt.generate(case, 2).bucket == "8x112x112"


def test_prepare_video_resizes_to_the_bucket_and_repeats_short_videos(rt, caplog):
    frames = synthetic_video("moving_object", frames=3, height=90, width=200)
    with caplog.at_level(logging.WARNING, logger="ffexport"):
        case = rt.prepare_video(frames, "hi")
    assert case.grid == WIDE.grid
    assert "video has 3 frames; bucket 4x112x224 needs 4: frames repeated" in caplog.text
    forced = rt.prepare_video(frames, "hi", bucket="8x112x112")  # an explicit bucket skips the aspect rule
    assert forced.grid == SQUARE.grid


def test_prepare_video_refusals(rt):
    frames = synthetic_video("static", frames=8, height=112, width=112)
    with pytest.raises(InputError, match="uint8 RGB"):
        rt.prepare_video(frames.astype(np.float32), "hi")
    with pytest.raises(InputError, match="cannot build the prompt"):
        rt.prepare_video(frames, "look: <|video_pad|>")
    with pytest.raises(InputError) as e:
        rt.prepare_video(frames, "y" * 300)
    assert "this build takes at most 128" in _one_line(e)


def test_run_video_file(rt, tmp_path, caplog):
    path = write_video(synthetic_video("moving_object", frames=6, height=112, width=112), tmp_path / "v.mp4")
    with caplog.at_level(logging.WARNING, logger="ffexport"):
        result = rt.run_video(path, "What happens?", max_new_tokens=5)
    assert result.bucket == "8x112x112" and result.generated_ids.shape[1] >= 1
    assert "video has 6 frames; bucket 8x112x112 needs 8: frames repeated" in caplog.text
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    with pytest.raises(InputError, match="is not a readable video"):
        rt.run_video(not_video, "hi")


def test_case_type_is_checked(rt):
    with pytest.raises(InputError, match="expected an ffexport.case.Case"):
        rt.generate({"input_ids": np.zeros((1, 3))}, 1)
    assert isinstance(toy_case(SQUARE), Case)


def test_graph_that_fails_at_run_time(tmp_path, toy_build_dir):
    build = tmp_path / "b"
    shutil.copytree(toy_build_dir, build)
    # Give bucket 8x112x112 the vision graph of 16x112x112 (twice the patches): it loads, then cannot run.
    shutil.copyfile(build / "16x112x112.vision.onnx", build / "8x112x112.vision.onnx")
    raw = json.loads((build / "manifest.json").read_text())
    raw["files"]["8x112x112.vision.onnx"] = raw["files"]["16x112x112.vision.onnx"]
    (build / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(RunError) as e:
        Runtime(build).generate(toy_case(SQUARE), 2)
    msg = _one_line(e)
    assert f"ONNX Runtime failed running {build / '8x112x112.vision.onnx'} on pixel_values_videos [256, 1176]" in msg

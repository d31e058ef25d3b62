"""``calibrate``, ``explain`` and ``bench`` for the fixed-size-tower families (LLaVA-NeXT-Video, LLaVA-OneVision).

The commands take the bucket and the cases from the family's adapter (``model_bucket``, the adapter's
case builder, its 1D positions), as ``ffexport build`` does; nothing in them names a family.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ffexport.cli import main
from ffexport.export.buckets import model_bucket, parse_bucket, parse_fixed_bucket
from ffexport.fusion.schedule import load_schedule
from ffexport.reference import Reference
from ffexport.video import synthetic_video

BUCKET = "8x112x112"  # the tiny presets' tower: 112 px, 16 tokens per frame -> 128 visual tokens
FINAL = re.compile(r"^prefill speedup: \d+\.\d\dx \(ideal \d+\.\d\dx\)$")


@pytest.fixture(scope="module")
def next_video():
    from ffexport.models import LoadModel

    return LoadModel("llava-next-video-tiny")()


# ------------------------------------------------------------------ buckets
def test_the_bucket_comes_from_the_adapter(next_video, tiny):
    fixed = model_bucket(next_video.adapter, next_video.config, "8x90x160")
    assert fixed == parse_fixed_bucket("8x90x160", size=112, tokens_per_frame=16)
    assert (fixed.resized, fixed.grid_thw, fixed.visual_tokens) == ((112, 112), (8, 4, 4), 128)
    grid = model_bucket(tiny.adapter, tiny.config, "8x112x140", video_pixels=tiny.video_pixels)
    assert grid == parse_bucket("8x112x140", patch_size=14, temporal_patch_size=2, merge_size=2,
                                video_pixels=tiny.video_pixels)
    assert (grid.visual_tokens, grid.patches_per_frame) == (80, 20)


def test_explain_token_grid_from_the_bucket(next_video, tiny):
    from ffexport.calibrate.explain import token_grid

    assert token_grid(model_bucket(next_video.adapter, next_video.config, BUCKET)) == ((8, 4, 4), 1)
    # Qwen2-VL: two input frames per token frame, 28-pixel tokens over 112x140
    assert token_grid(model_bucket(tiny.adapter, tiny.config, "8x112x140", video_pixels=tiny.video_pixels)) == (
        (4, 4, 5), 2)


# ------------------------------------------------------------------ calibrate
@pytest.mark.slow
def test_calibrate_writes_a_schedule_that_drives_the_static_reference(next_video, tmp_path):
    out = tmp_path / "s.json"
    assert main(["-q", "calibrate", "--model", "llava-next-video-tiny", "--bucket", BUCKET, "--synthetic", "3",
                 "--out", str(out), "--report", str(tmp_path / "report"), "--report-synthetic", "2",
                 "--max-new-tokens", "2"]) == 0
    record = json.loads(out.read_text())["calibration"]
    assert record["model"] == "llava-next-video-tiny" and record["bucket"]["name"] == BUCKET
    assert record["bucket"]["grid_thw"] == [8, 4, 4] and record["bucket"]["visual_tokens"] == 128
    assert len(record["inputs"]["videos"]) == 3
    schedule = load_schedule(out).validate(next_video.num_layers)
    assert (schedule.visual_tokens, schedule.patches_per_frame) == (128, 16)
    assert 1 <= schedule.final_visual_tokens < 128
    case = next_video.case_from_video(synthetic_video("pan", frames=8, height=96, width=128, seed=7),
                                      "What happens?")
    result = Reference(next_video, schedule=schedule)(case)
    assert result.schedule == schedule
    # the layers from the schedule's last step on hold the text and the final visual tokens
    text = case.input_ids.shape[1] - 128
    assert int(result.kv_lengths[-1]) == text + schedule.final_visual_tokens
    assert int(result.kv_lengths[0]) <= text + 128
    report = json.loads((tmp_path / "report" / "fidelity.json").read_text())
    held = report["held_out"]
    assert len(held) == 2 and all(len(r["static_tokens"]) == 2 for r in held)
    assert {r["video"].split(":")[1] for r in report["out_of_distribution"]} == {"slideshow", "noise"}


@pytest.mark.slow
def test_calibrate_onevision_without_its_build(tmp_path):
    """LLaVA-OneVision shares the fixed-tower path: its trailing newline token is text after the span."""
    out = tmp_path / "s.json"
    assert main(["-q", "calibrate", "--model", "llava-onevision-tiny", "--bucket", "4x96x128", "--synthetic", "2",
                 "--out", str(out)]) == 0
    schedule = load_schedule(out).validate(4)
    # 4 frames at the tiny SigLIP's 98 px: 7x7 patches pooled to 4x4 -> 16 tokens per frame
    assert (schedule.visual_tokens, schedule.patches_per_frame) == (64, 16)
    assert json.loads(out.read_text())["calibration"]["bucket"]["resized"] == [98, 98]


# ------------------------------------------------------------------ explain
def test_explain_draws_every_frame_of_a_fixed_tower(next_video, tmp_path):
    from PIL import Image

    from ffexport.calibrate.explain import Explain
    from ffexport.calibrate.trace import KEPT, MERGED

    out = tmp_path / "explain.png"
    assert main(["-q", "explain", "--model", "llava-next-video-tiny", "--video", "synthetic:moving_object:0",
                 "--out", str(out)]) == 0
    # one frame per token frame: 8 frames of 112 px in one row (2.2 in each at 130 dpi)
    assert np.asarray(Image.open(out)).shape[:2] == (455, 2288)
    bucket = model_bucket(next_video.adapter, next_video.config, BUCKET)
    e = Explain(next_video, bucket)(synthetic_video("moving_object", frames=8, height=112, width=112, seed=0), "clip")
    fates = e.trace.fates()
    assert fates.size == 128 and (fates == KEPT).sum() == e.schedule.final_visual_tokens < 128
    assert (fates[:16] != MERGED).all()  # the first frame starts every patch chain
    assert (fates[16:] == MERGED).any()


# ------------------------------------------------------------------ bench
def _expected_ideal(data, next_video) -> float:
    from ffexport.bench.flops import ModelDims, prefill_flops
    from ffexport.fusion.schedule import Schedule

    dims = ModelDims.from_config(next_video.config.text_config)
    schedule, text = Schedule.from_json(data["schedule"]), data["text_tokens"]
    return (prefill_flops(dims, None, text_tokens=text, visual_tokens=128).total
            / prefill_flops(dims, schedule, text_tokens=text, visual_tokens=128).total)


@pytest.mark.slow
@pytest.mark.parametrize("runtime, variants", [("torch", {"full", "static", "dynamic"}),
                                               ("onnxruntime", {"full", "static"})])
def test_bench_runs_and_reports(next_video, tmp_path, capsys, runtime, variants):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "llava-next-video-tiny", "--runtime", runtime, "--repeats", "1", "--warmup", "0",
                 "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert FINAL.match(lines[-1]), lines[-1]
    data = json.loads(out.read_text())
    assert data["model"] == "llava-next-video-tiny" and data["bucket"] == BUCKET
    assert (data["visual_tokens"], data["patches_per_frame"], data["grid_thw"]) == (128, 16, [8, 4, 4])
    from ffexport.export.policy import calibration_case

    case = calibration_case(next_video, model_bucket(next_video.adapter, next_video.config, BUCKET))
    assert data["text_tokens"] == case.input_ids.shape[1] - 128 > 0  # the family's chat prompt around the video
    assert {v["name"] for v in data["variants"]} == variants
    assert data["same_token_budget"] and data["ideal_speedup"] == pytest.approx(_expected_ideal(data, next_video))
    assert data["ideal_speedup"] > 1 and 0 < data["merge_prune_share"]["steps"] < 1


def test_bench_race_refuses_1d_positions_in_one_line(error_line):
    assert main(["-q", "bench", "--model", "llava-next-video-tiny", "--race"]) == 2
    line = error_line()
    assert "--race" in line and "'1d' positions" in line


# ------------------------------------------------------------------ frame blocks (InternVL: text between frames)
@pytest.fixture(scope="module")
def internvl():
    from ffexport.models import LoadModel

    return LoadModel("internvl-tiny")()


@pytest.mark.slow
def test_calibrate_internvl_writes_the_buckets_frame_blocks(internvl, tmp_path):
    """The static schedule carries the prompts' frame blocks (format 2), so a build takes it; the held-out
    report's token trace follows the visual rows only (the text between frames is never removed)."""
    out = tmp_path / "s.json"
    assert main(["-q", "calibrate", "--model", "internvl-tiny", "--bucket", BUCKET, "--synthetic", "3",
                 "--out", str(out), "--report", str(tmp_path / "report"), "--report-synthetic", "1",
                 "--max-new-tokens", "2"]) == 0
    schedule = load_schedule(out).validate(internvl.num_layers)
    assert json.loads(out.read_text())["format"] == "ffexport.schedule/2"
    case = internvl.case_from_video(synthetic_video("pan", frames=8, height=96, width=128, seed=7), "What happens?")
    _, layout = internvl.adapter.layout(internvl.config, case.input_ids)
    assert len(layout.blocks) == 8 and schedule.frame_layout == layout
    result = Reference(internvl, schedule=schedule)(case)
    assert int(result.kv_lengths[-1]) == case.input_ids.shape[1] - 128 + schedule.final_visual_tokens
    (held,) = json.loads((tmp_path / "report" / "fidelity.json").read_text())["held_out"]
    assert 0.0 <= held["kept_overlap"] <= 1.0


def test_internvl_without_a_tokenizer_is_refused_in_one_line(internvl):
    """A fixed-size tower's frame blocks have no stand-in prompt yet (internvl3-8b without its tokenizer)."""
    from dataclasses import replace

    from ffexport.calibrate.collect import bucket_case
    from ffexport.errors import InputError

    bucket = model_bucket(internvl.adapter, internvl.config, BUCKET)
    with pytest.raises(InputError, match="no tokenizer here and writes its video in frame blocks"):
        bucket_case(replace(internvl, tokenizer=None), synthetic_video("pan", frames=8, seed=0), bucket)


def test_the_trace_follows_visual_rows_across_frame_blocks(internvl):
    """Explain on InternVL: every one of the 128 visual tokens gets a fate, the survivors are visual ids
    (no text row), and a frame's tokens merge into the previous frame's block across the text between."""
    from ffexport.calibrate.explain import Explain
    from ffexport.calibrate.trace import KEPT, MERGED

    bucket = model_bucket(internvl.adapter, internvl.config, BUCKET)
    e = Explain(internvl, bucket)(synthetic_video("static", frames=8, height=112, width=112, seed=0), "clip")
    fates = e.trace.fates()
    assert fates.size == 128 and (fates == KEPT).sum() == e.schedule.final_visual_tokens < 128
    survivors = e.trace.survivors
    assert survivors.min() >= 0 and survivors.max() < 128 and survivors.size == e.schedule.final_visual_tokens
    assert (fates[:16] != MERGED).all() and (fates[16:] == MERGED).any()


# ------------------------------------------------------------------ a preset without its tokenizer
def test_the_stand_in_prompt_is_the_family_template_in_byte_ids(next_video):
    """Without a tokenizer (a random-weight 7B preset not cached here) the case is the adapter's chat
    template in the tiny byte tokenizer's ids: for the tiny preset, whose tokenizer is that one, it is the
    real case exactly."""
    import dataclasses

    from ffexport.calibrate.collect import bucket_case

    bucket = model_bucket(next_video.adapter, next_video.config, BUCKET)
    clip = synthetic_video("zoom", frames=8, height=112, width=112, seed=2)
    real = bucket_case(next_video, clip, bucket)
    stand_in = bucket_case(dataclasses.replace(next_video, tokenizer=None), clip, bucket)
    assert all(np.array_equal(getattr(real, k), getattr(stand_in, k)) for k in real.keys)


def test_the_stand_in_prompt_fits_the_7b_preset():
    from ffexport.calibrate.collect import bucket_case
    from ffexport.models import LoadModel

    loaded = LoadModel("llava-next-video-7b", structure_only=True)()  # meta device: no weights, no tokenizer
    assert loaded.tokenizer is None
    bucket = model_bucket(loaded.adapter, loaded.config, "8x240x320")
    case = bucket_case(loaded, synthetic_video("pan", frames=8, height=240, width=320, seed=1), bucket)
    assert case.pixel_values_videos.shape == (1, 8, 3, 336, 336) and bucket.visual_tokens == 8 * 144
    assert int((case.input_ids == loaded.config.video_token_id).sum()) == 1152
    loaded.adapter.check_case(loaded.config, case)  # the family's own check: ids in the vocabulary, span, pixels

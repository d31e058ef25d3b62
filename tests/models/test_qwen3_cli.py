"""Qwen3-VL through the CLI (issue 13): ``ffexport case`` writes what transformers' processor returns,
``ffexport reference`` runs it with DeepStack on frame blocks (no reduction, dynamic, static). Calibrate,
explain and bench: tests/export/test_build_qwen3.py and tests/bench/test_bench_cli.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffexport.cli import main

MODEL = ["--model", "qwen3vl-tiny"]


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3") / "case.npz"
    assert main(["-q", "case", *MODEL, "--video", "synthetic:pan", "--frames", "8", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def qwen3():
    from ffexport.models import LoadModel

    return LoadModel("qwen3vl-tiny")()


def test_the_case_holds_the_processor_names_and_its_prompt(case_file, qwen3):
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    case = np.load(case_file)
    assert sorted(case.files) == ["input_ids", "pixel_values_videos", "video_grid_thw"]
    t, h, w = case["video_grid_thw"][0].tolist()
    assert t == 4 and case["pixel_values_videos"].shape == (t * h * w, 3 * 2 * 16 * 16)
    # transformers writes "<{t:.1f} seconds><|vision_start|>pads<|vision_end|>" per group, at its timestamps
    stamps = Qwen3VLProcessor._calculate_timestamps(None, list(range(8)), 24, 2)
    text = qwen3.tokenizer.decode(case["input_ids"][0].tolist())
    pads = "<|video_pad|>" * (h * w // 4)
    assert "".join(f"<{s:.1f} seconds><|vision_start|>{pads}<|vision_end|>" for s in stamps) in text


def _reference(tmp_path, case_file, name, *extra):
    out = tmp_path / f"{name}.npz"
    assert main(["-q", "reference", *MODEL, "--inputs", str(case_file), "--out", str(out), "--max-new-tokens", "4",
                 *extra]) == 0
    return np.load(out)


def test_no_reduction_equals_transformers_forward_on_the_case(tmp_path, case_file, qwen3):
    """The independent oracle: transformers' own Qwen3-VL forward (its own positions, DeepStack) on the
    case's arrays, as a user would feed them."""
    ours = _reference(tmp_path, case_file, "full", "--no-reduction")
    case = np.load(case_file)
    ids = torch.from_numpy(case["input_ids"])
    with torch.no_grad():
        theirs = qwen3.model(input_ids=ids, pixel_values_videos=torch.from_numpy(case["pixel_values_videos"]),
                             video_grid_thw=torch.from_numpy(case["video_grid_thw"]),
                             mm_token_type_ids=(ids == qwen3.config.video_token_id).long() * 2).logits[:, -1]
    assert np.abs(ours["logits"] - theirs.numpy()).max() <= 1e-4
    assert int(ours["generated_ids"][0, 0]) == int(theirs.argmax())
    assert (ours["kv_lengths"] == ids.shape[1]).all()


def test_static_equals_dynamic_with_deepstack_on_blocks(tmp_path, case_file):
    schedule = tmp_path / "schedule.json"
    dynamic = _reference(tmp_path, case_file, "dynamic", "--schedule-out", str(schedule))
    static = _reference(tmp_path, case_file, "static", "--static", str(schedule))
    full = _reference(tmp_path, case_file, "full", "--no-reduction")
    assert np.abs(static["logits"] - dynamic["logits"]).max() <= 1e-5
    np.testing.assert_array_equal(static["generated_ids"], dynamic["generated_ids"])
    np.testing.assert_array_equal(static["kv_lengths"], dynamic["kv_lengths"])
    assert dynamic["kv_lengths"][-1] < full["kv_lengths"][-1]  # FrameFusion removed tokens

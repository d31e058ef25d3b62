"""``ffexport build`` and ``ffexport run`` for Qwen3-VL (docs/families.md, "Qwen3-VL: build and run").

The vision graph returns the visual tokens and the DeepStack levels; the prefill graph takes the
levels as an input and reduces them in-graph with the hidden states' indices; the video is one
frame block per temporal group with the timestamp text between blocks; positions are recorded as
``mrope_blocks`` and rebuilt by the torch-free runtime. The build's gate (graphs vs PyTorch, the
pipeline vs the static reference, the contract and the oracle) must pass, and ``run`` must give
PyTorch's greedy tokens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ffexport.video import synthetic_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_build_families import (  # noqa: E402  (the families' shared run-vs-PyTorch checks)
    FP32_ATOL, PROMPT, _run_clip_gives_pytorchs_tokens, _run_inputs_gives_pytorchs_tokens, assert_gate_passed,
    build_once,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpp"))
from cpp_support import build_cpp, cpp_against_python  # noqa: E402  (the C++ runtime's plan vs the Python runtime)

#: 8 frames of 128x128: 4 temporal groups (blocks) of 4x4 merged tokens (patch 16, merge 2)
BUCKET = "8x128x128"


@pytest.fixture(scope="module")
def qwen3_build(tmp_path_factory) -> Path:
    """``ffexport build --model qwen3vl-tiny --bucket 8x128x128`` once for the module. Do not modify."""
    return build_once(tmp_path_factory, "qwen3vl-tiny", BUCKET)


@pytest.fixture(scope="module")
def qwen3():
    from ffexport.models import LoadModel

    return LoadModel("qwen3vl-tiny")()


def _manifest(build: Path) -> dict:
    return json.loads((build / "manifest.json").read_text())


# ------------------------------------------------------------------ the build
def test_qwen3_build_passes_its_gate(qwen3_build):
    manifest = _manifest(qwen3_build)
    model = manifest["model"]
    assert model["family"] == "qwen3_vl" and model["positions"] == {"rule": "mrope_blocks"}
    assert model["video_input"] == {"prompt": "timestamped_blocks", "fps": 24.0, "mean": [0.5] * 3, "std": [0.5] * 3}
    (bucket,) = manifest["buckets"]
    assert (bucket["visual_tokens"], bucket["patches_per_frame"], bucket["grid_thw"]) == (64, 16, [4, 8, 8])
    assert bucket["usable"] and bucket["parity"]["passed"]
    # one frame block per temporal group, the timestamp text between blocks
    blocks = bucket["schedule"]["blocks"]
    assert [length for _, length in blocks] == [16] * 4 and blocks[1][0] > blocks[0][0] + 16
    vision, prefill = bucket["graphs"]["vision"], bucket["graphs"]["prefill"]
    assert [(o["name"], o["shape"]) for o in vision["outputs"]] == [
        ("video_features", [64, 64]), ("deepstack_features", [2, 64, 64])]
    assert [(i["name"], i["shape"]) for i in prefill["inputs"]][3] == ("deepstack_features", [2, 64, 64])
    # the oracle carries the DeepStack rows per token itself (ffexport/oracle), blocks from the schedule
    parity = assert_gate_passed(qwen3_build, BUCKET, manifest)
    vision_outputs = next(g for g in parity["graphs"] if g["graph"] == "vision")["outputs"]
    assert {o["name"] for o in vision_outputs} == {"video_features", "deepstack_features"}


def test_qwen3_vision_graph_equals_transformers_tower(qwen3_build, qwen3):
    """The exported tower (features and DeepStack levels) against transformers' own get_video_features."""
    from ffexport.export.parity import OrtRunner

    case = qwen3.case_from_video(synthetic_video("zoom", frames=8, height=128, width=128, seed=3), "hi")
    assert tuple(case.grid) == (4, 8, 8)
    graph = qwen3_build / _manifest(qwen3_build)["buckets"][0]["graphs"]["vision"]["file"]
    got = OrtRunner().run(graph, {"pixel_values_videos": case.pixel_values_videos})
    with torch.no_grad():
        features, deepstack = qwen3.adapter.video_features(qwen3.model, torch.from_numpy(case.pixel_values_videos),
                                                           torch.from_numpy(case.video_grid_thw))
    assert np.abs(got["video_features"] - features.numpy()).max() <= FP32_ATOL
    assert np.abs(got["deepstack_features"] - deepstack.numpy()).max() <= FP32_ATOL


def test_qwen3_prefill_graph_uses_its_deepstack_input(qwen3_build, qwen3):
    """The same prefill inputs with the DeepStack levels zeroed give other logits (so the gate's
    comparison with PyTorch, which adds the levels, could fail without them)."""
    from ffexport.export.parity import OrtRunner
    from ffexport.reference import Reference

    case = qwen3.case_from_video(synthetic_video("pan", frames=8, height=128, width=128, seed=4), PROMPT)
    p = Reference(qwen3).prepare(case)
    feeds = {"inputs_embeds": p.inputs_embeds.numpy(), "position_ids": p.position_ids.numpy(),
             "video_start": p.video_start.numpy(), "deepstack_features": p.deepstack.numpy()}
    runner = OrtRunner()
    graph = qwen3_build / _manifest(qwen3_build)["buckets"][0]["graphs"]["prefill"]["file"]
    right = runner.run(graph, feeds)["logits"]
    wrong = runner.run(graph, {**feeds, "deepstack_features": np.zeros_like(feeds["deepstack_features"])})["logits"]
    assert np.abs(right - wrong).max() > 1e-3


def test_qwen3_build_parses_and_builds_for_sm89(qwen3_build, tensorrt_rtx, capsys):
    """NVIDIA's parser and ahead-of-time builder (TensorRT-RTX) take every graph of the build."""
    from ffexport.cli import main

    assert main(["check", str(qwen3_build), "--build-for", "SM89"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if ": built for SM89 (" in line]) == 5
    assert out[-1] == f"check (TensorRT-RTX {tensorrt_rtx.version}): 5 graphs: 5 built"


# ------------------------------------------------------------------ run (torch-free)
def test_qwen3_runtime_prepares_the_adapters_case(qwen3_build, qwen3):
    """The torch-free runtime's pixels (mean/std from the manifest) and prompt (a timestamp before each
    frame block, at the processor's fps) are the adapter's, array for array."""
    from ffexport.runtime import Runtime

    frames = synthetic_video("pan", frames=8, height=128, width=128, seed=6)
    got = Runtime(qwen3_build).prepare_video(frames, PROMPT, BUCKET)
    want = qwen3.case_from_video(frames, PROMPT)
    np.testing.assert_array_equal(got.input_ids, want.input_ids)
    np.testing.assert_array_equal(got.pixel_values_videos, want.pixel_values_videos)
    np.testing.assert_array_equal(got.video_grid_thw, want.video_grid_thw)


def test_qwen3_run_on_a_real_clip_gives_pytorchs_tokens(qwen3_build, qwen3, tmp_path):
    _run_clip_gives_pytorchs_tokens(qwen3_build, qwen3, tmp_path, BUCKET)


def test_qwen3_run_inputs_gives_pytorchs_tokens(qwen3_build, qwen3, tmp_path):
    _run_inputs_gives_pytorchs_tokens(qwen3_build, qwen3, tmp_path, "qwen3vl-tiny", "synthetic:pan", 5)


# ------------------------------------------------------------------ calibrate and explain (frame blocks, DeepStack)
@pytest.mark.slow
def test_qwen3_calibrated_schedule_builds_and_passes_its_gate(qwen3, tmp_path_factory):
    """``ffexport calibrate`` makes its cases through the adapter (the timestamped frame blocks): the schedule
    carries the prompt's 4 blocks (format 2) and the held-out report is measured on them; ``build
    --schedule`` deploys it and passes its gate, and the contract's fidelity (static vs dynamic) is measured
    on the blocks for every parity video."""
    from ffexport.cli import main
    from ffexport.fusion.schedule import load_schedule

    out = tmp_path_factory.mktemp("calibrate") / "s.json"
    report = out.parent / "report"
    assert main(["-q", "calibrate", "--model", "qwen3vl-tiny", "--bucket", BUCKET, "--synthetic", "3",
                 "--out", str(out), "--report", str(report), "--report-synthetic", "1", "--max-new-tokens", "2"]) == 0
    assert json.loads(out.read_text())["format"] == "ffexport.schedule/2"
    (held,) = json.loads((report / "fidelity.json").read_text())["held_out"]  # the trace on the blocks' rows
    assert 0.0 <= held["kept_overlap"] <= 1.0 and held["visual_tokens_static"] < 64
    schedule = load_schedule(out).validate(qwen3.num_layers)
    assert 1 <= schedule.final_visual_tokens < 64
    case = qwen3.case_from_video(synthetic_video("pan", frames=8, height=128, width=128, seed=7), PROMPT)
    _, layout = qwen3.adapter.layout(qwen3.config, case.input_ids, case.grid)
    assert len(layout.blocks) == 4 and schedule.frame_layout == layout

    build = build_once(tmp_path_factory, "qwen3vl-tiny", BUCKET, extra=("--schedule", str(out)))
    manifest = _manifest(build)
    assert load_schedule(build / BUCKET / "schedule.json") == schedule
    contract = assert_gate_passed(build, BUCKET, manifest)["contract"]
    assert contract["schedule_kind"] == "calibrated"
    for video in contract["videos"]:
        fidelity = video["fidelity"]
        assert fidelity["visual_tokens_static"] == schedule.final_visual_tokens
        assert 0.0 <= fidelity["kept_overlap"] <= 1.0 and 0.0 <= fidelity["token_agreement"] <= 1.0


def test_qwen3_calibration_runs_the_reference_with_its_deepstack_levels(qwen3):
    """Calibration's run on a bucket's case (the traced dynamic reference) is the oracle's FrameFusion with
    the DeepStack levels (same steps and logits), not the oracle's without them: the reduction's indices
    apply to the levels in calibration too."""
    from ffexport.calibrate.collect import Collect, bucket_case
    from ffexport.export.buckets import model_bucket
    from ffexport.fusion.config import FusionConfig
    from ffexport.oracle import NaiveFrameFusion
    from ffexport.reference import Reference

    fusion = FusionConfig()
    bucket = model_bucket(qwen3.adapter, qwen3.config, BUCKET, video_pixels=qwen3.video_pixels)
    case = bucket_case(qwen3, synthetic_video("moving_object", frames=8, height=128, width=128, seed=0), bucket)
    run = Collect(qwen3, bucket, fusion, quiet=True).run_case("clip", case, qwen3.num_layers,
                                                             fusion.layers_for(qwen3.num_layers))
    assert run.error is None and run.trace.fates().size == 64
    p = Reference(qwen3).prepare(case)
    oracle = NaiveFrameFusion(qwen3.model, cost=fusion.cost, similarity=fusion.similarity,
                              ratio_lower_bound=fusion.ratio_lower_bound, budget_layers=fusion.budget_layers)

    def naive(deepstack):
        return oracle.prefill(p.inputs_embeds[0], p.position_ids, int(p.video_start), p.visual_tokens,
                              p.patches_per_frame, blocks=p.layout.to_json(), deepstack=deepstack)

    with_levels, without = naive(p.deepstack), naive(None)
    steps = [(s.layer, s.where, s.op, s.remove) for s in run.schedule.stages if s.remove]
    assert [tuple(s) for s in with_levels.steps if s[3]] == steps
    assert np.abs(with_levels.logits.numpy() - run.result.logits[0]).max() <= FP32_ATOL
    assert np.abs(without.logits.numpy() - run.result.logits[0]).max() > 1e-3


def test_qwen3_explain_follows_the_visual_rows_of_every_block(qwen3, tmp_path):
    """``ffexport explain`` on Qwen3-VL draws the dynamic reference's steps; every one of the 64 visual tokens
    gets a fate, survivors are visual ids (the timestamps between blocks are never removed), and a block's
    tokens merge into the previous block's across the text between them."""
    from ffexport.calibrate.explain import Explain, token_grid
    from ffexport.calibrate.trace import KEPT, MERGED
    from ffexport.cli import main
    from ffexport.export.buckets import model_bucket

    out = tmp_path / "explain.png"
    assert main(["-q", "explain", "--model", "qwen3vl-tiny", "--bucket", BUCKET, "--video", "synthetic:static:0",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 5_000
    bucket = model_bucket(qwen3.adapter, qwen3.config, BUCKET, video_pixels=qwen3.video_pixels)
    assert token_grid(bucket) == ((4, 4, 4), 2)
    e = Explain(qwen3, bucket)(synthetic_video("static", frames=8, height=128, width=128, seed=0), "clip")
    fates = e.trace.fates()
    assert fates.size == 64 and (fates == KEPT).sum() == e.schedule.final_visual_tokens < 64
    survivors = e.trace.survivors
    assert survivors.min() >= 0 and survivors.max() < 64 and survivors.size == e.schedule.final_visual_tokens
    assert (fates[:16] != MERGED).all() and (fates[16:] == MERGED).any()


def test_without_a_tokenizer_the_blocks_are_stood_in_by_the_byte_tokenizer(qwen3):
    """A random-weight preset whose tokenizer is not here (qwen3vl-8b): calibrate's and bench's cases go
    through the adapter's builder with the tiny byte tokenizer, its video token mapped to the model's. For
    the tiny preset (whose tokenizer is that one) this is the real case exactly; with another video id
    the blocks carry the model's id and nothing else changes."""
    import copy
    from dataclasses import replace

    from ffexport.bench.prefill import bench_case
    from ffexport.calibrate.collect import bucket_case
    from ffexport.export.buckets import model_bucket

    bucket = model_bucket(qwen3.adapter, qwen3.config, BUCKET, video_pixels=qwen3.video_pixels)
    frames = synthetic_video("pan", frames=8, height=128, width=128, seed=0)
    real = bucket_case(qwen3, frames, bucket)
    stood_in = bucket_case(replace(qwen3, tokenizer=None), frames, bucket)
    for key in real.keys:
        np.testing.assert_array_equal(getattr(stood_in, key), getattr(real, key))
    case, source = bench_case(replace(qwen3, tokenizer=None), bucket)
    assert "stand-in byte ids" in source and case.input_ids.shape == real.input_ids.shape

    config = copy.deepcopy(qwen3.config)
    config.video_token_id = 7  # an id the byte prompt never holds (BEL)
    other = bucket_case(SimpleNamespace(adapter=qwen3.adapter, config=config, tokenizer=None, name="x"), frames, bucket)
    video = real.input_ids == qwen3.config.video_token_id
    assert (other.input_ids[video] == 7).all() and (other.input_ids[~video] == real.input_ids[~video]).all()


def test_qwen3_bucket_layout_is_the_prompts(qwen3):
    """Graph-only builds lay out the bucket's blocks from the tokenizer as the case's prompt has them
    (without a tokenizer: a nominal gap, structure only)."""
    from ffexport.fusion.layout import FrameLayout

    case = qwen3.case_from_video(synthetic_video("pan", frames=8, height=128, width=128, seed=1), PROMPT)
    _, want = FrameLayout.from_token_ids(case.input_ids, qwen3.config.video_token_id, 16)
    got = qwen3.adapter.bucket_layout(qwen3.config, 8, qwen3.tokenizer, patches_per_frame=16)
    assert got == want and len(got.blocks) == 4
    nominal = qwen3.adapter.bucket_layout(qwen3.config, 8, None, patches_per_frame=16)
    assert [b.length for b in nominal.blocks] == [16] * 4


# ------------------------------------------------------------------ the C++ runtime on the same build
@pytest.mark.slow
def test_cpp_plan_of_the_qwen3_build_equals_the_python_runtime(qwen3_build, tmp_path, tmp_path_factory, monkeypatch):
    """The C++ runtime (cpp/, ``ffexport-inspect``) on a case folder of ``ffexport case --format npy``: positions by
    the manifest's ``mrope_blocks`` rule (one (1, h, w) grid per frame block, timestamps between) equal what the
    Python runtime fed its prefill and the adapter's own; the blocks are the manifest's ``frame_blocks``; the
    prefill takes the vision graph's DeepStack levels [2, N, D]; and ONNX Runtime driven by the C++ plan alone
    (those levels passed as they are) gives the Python runtime's tokens."""
    from ffexport.case import load_case
    from ffexport.cli import main
    from ffexport.models.qwen3_vl import Qwen3VLAdapter, qwen3_vl_tiny_config

    case = tmp_path / "case"
    assert main(["-q", "case", "--model", "qwen3vl-tiny", "--video", "synthetic:pan", "--seed", "2", "--frames", "8",
                 "--size", "128x128", "--format", "npy", "--out", str(case)]) == 0
    out, seen, _ = cpp_against_python(build_cpp(tmp_path_factory), qwen3_build, case, tmp_path, monkeypatch)
    assert out["manifest"]["model"]["position_rule"] == "mrope_blocks"
    bucket = _manifest(qwen3_build)["buckets"][0]
    start = out["plan"]["video_start"]
    assert out["layout"]["blocks"] == [[start + o, start + o + n] for o, n in bucket["frame_blocks"]]
    assert out["layout"]["deepstack"] == [2, 64, 64] == out["manifest"]["buckets"][0]["deepstack"]
    c = load_case(case)
    positions, delta = Qwen3VLAdapter().position_ids(qwen3_vl_tiny_config(), c.input_ids, c.video_grid_thw)
    assert np.array_equal(seen["positions"], positions) and delta == out["plan"]["delta"] < 0

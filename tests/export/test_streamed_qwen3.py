"""``ffexport build --streamed`` for Qwen3-VL (DeepStack): the truncated parity copy keeps the DeepStack
levels of the vision blocks it keeps, the full-depth graphs carry every level (the vision graph's second
output, the prefill graph's fourth input) and compute what a normal capture of the same per-name weights
computes, and transformers' own tower gives the same features (the independent oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ffexport.cli import main
from ffexport.export.attention_rewrite import choose_attention
from ffexport.export.capture import CaptureOnnx, GraphSpec, save_checked
from ffexport.export.graphs import DeepStackPrefillGraph
from ffexport.export.parity import OrtRunner
from ffexport.export.streamed import RandomWeights, copy_vision_depth, deepstack_note, truncated_copy
from ffexport.export.vision import VisionEncoder
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.schedule import Schedule
from ffexport.models import LoadModel
from ffexport.video import synthetic_video

#: 8 frames of 128x128: 4 frame blocks of 4x4 merged tokens, timestamps between them
BUCKET = "8x128x128"
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def meta():
    """The tiny model on the meta device with its built-in tokenizer, as ``streamed_model`` loads it."""
    from ffexport.models.tiny_tokenizer import build_tiny_tokenizer

    loaded = LoadModel("qwen3vl-tiny", structure_only=True)()
    loaded.tokenizer = build_tiny_tokenizer()
    return loaded


@pytest.fixture(scope="module")
def streamed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("streamed-qwen3") / "b"
    assert main(["-q", "build", "--model", "qwen3vl-tiny", "--streamed", "--bucket", BUCKET, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def full(meta):
    """The tiny model at full depth, materialized with the streamed build's per-name weights (seed 0)."""
    return truncated_copy(meta, RandomWeights(meta.model, seed=0), layers=4, vision_layers=2)


def test_copy_keeps_the_deepstack_levels_of_its_blocks(meta):
    # Qwen3-VL-8B (levels after blocks 8, 16, 24 of 27): the copy goes on to block 8 to keep level 0
    assert copy_vision_depth(27, [8, 16, 24], 2) == 9
    assert deepstack_note([8, 16, 24], 9) == "0 of 3 (blocks 8)"
    assert copy_vision_depth(27, [], 2) == 2 and copy_vision_depth(2, [0, 1], 2) == 2
    # the tiny model cut to one vision block keeps level 0 (block 0) and its merger, by the full model's name
    source = RandomWeights(meta.model, seed=0)
    copy = truncated_copy(meta, source, layers=1, vision_layers=1)
    visual = copy.model.model.visual
    assert len(visual.blocks) == 1 and list(copy.config.vision_config.deepstack_visual_indexes) == [0]
    assert len(visual.deepstack_merger_list) == 1 and "DeepStack levels 0 of 2 (blocks 0)" in copy.source
    name = "model.visual.deepstack_merger_list.0.linear_fc1.weight"
    weight = dict(copy.model.named_parameters())[name]
    assert torch.equal(weight, source(name, tuple(weight.shape), weight.dtype))
    tower = copy.adapter.vision_tower(copy.config.vision_config)
    encoder = VisionEncoder(visual, (2, 8, 8), tower).eval()
    with torch.no_grad():
        features, levels = encoder(encoder.example_input(seed=0))
    assert tuple(features.shape) == (32, 64) and tuple(levels.shape) == (1, 32, 64)


def test_vision_layers_keep_the_levels_of_the_kept_blocks():
    """``--vision-layers`` (benchmarks, ``--streamed --random-weights``) cuts Qwen3-VL's DeepStack levels with
    the blocks: the vision graph can be made for the cut tower (before, it raised for a level past its blocks)."""
    loaded = LoadModel("qwen3vl-tiny", structure_only=True, vision_layers=1)()
    assert list(loaded.config.vision_config.deepstack_visual_indexes) == [0]
    assert loaded.source.endswith("first 1 vision blocks, DeepStack levels 1 of 2")
    tower = loaded.adapter.vision_tower(loaded.config.vision_config)
    encoder = VisionEncoder(loaded.model.model.visual, (2, 8, 8), tower)
    assert encoder.output_names == ["video_features", "deepstack_features"] and encoder.deepstack == (0,)


def test_vision_layers_that_keep_no_deepstack_level_are_one_error_line():
    """``qwen3vl-8b --vision-layers 4`` (levels after blocks 8, 16, 24): no level survives, and Qwen3-VL's
    decoder adds at least one; one ModelError line naming the blocks needed (before: a traceback in
    ``video_features``, ``torch.stack`` of no levels)."""
    from ffexport.errors import ModelError

    with pytest.raises(ModelError, match=r"keeps none of the tower's DeepStack levels .*keep at least 9 vision blocks"):
        LoadModel("qwen3vl-8b", structure_only=True, vision_layers=4)()


@pytest.mark.slow
def test_qwen3_streamed_gate_runs_deepstack_on_the_copy(streamed_dir):
    manifest = json.loads((streamed_dir / "manifest.json").read_text())
    (bucket,) = manifest["buckets"]
    parity = bucket["parity"]
    assert parity["on"] == ("truncated copy: first 2 decoder layers, first 2 vision blocks, "
                            "DeepStack levels 0-1 of 2 (blocks 0, 1)")
    assert parity["validated"] and parity["passed"] and parity["full_depth_run"] is False
    assert bucket["usable"] is False  # the full-depth graphs were never executed
    contract = parity["contract"]
    assert contract["passed"] and contract["compared"] == 3
    assert contract["oracle"]["passed"] and contract["oracle"]["compared"] >= 1  # the oracle carries the levels itself
    report = json.loads((streamed_dir / parity["file"]).read_text())
    vision = next(g for g in report["graphs"] if g["graph"] == "vision")
    assert report["passed"] and {o["name"] for o in vision["outputs"]} == {"video_features", "deepstack_features"}
    # the copy's graphs take the copy's levels (2 of 2 here) through the streamed path
    copy = json.loads((streamed_dir / BUCKET / "parity-copy" / "manifest.json").read_text())
    (copy_bucket,) = copy["buckets"]
    assert [i["shape"] for i in copy_bucket["graphs"]["prefill"]["inputs"]][3] == [2, 64, 64]
    # the frame blocks (timestamps between them) are the prompt's, recorded for the runtime
    assert bucket["frame_blocks"] == bucket["schedule"]["blocks"] == copy_bucket["schedule"]["blocks"]
    assert [length for _, length in bucket["frame_blocks"]] == [16] * 4
    graphs = bucket["graphs"]
    assert [(o["name"], o["shape"]) for o in graphs["vision"]["outputs"]] == [
        ("video_features", [64, 64]), ("deepstack_features", [2, 64, 64])]
    assert [i["name"] for i in graphs["prefill"]["inputs"]] == [
        "inputs_embeds", "position_ids", "video_start", "deepstack_features"]  # no input left without a value
    assert manifest["lint"]["findings"] == 0 and manifest["lint"]["graphs"] == 4


@pytest.mark.slow
def test_qwen3_streamed_graphs_equal_a_normal_capture_of_the_same_weights(streamed_dir, full, tmp_path):
    """The streamed vision and prefill graphs against the same modules captured the normal way (weights
    inline, as a non-streamed build captures them) from the model holding the same per-name weights (equal
    outputs, bit for bit), and against PyTorch; the vision graph also against transformers' own
    ``get_video_features`` (the independent oracle)."""
    from ffexport.reference import Reference

    manifest = json.loads((streamed_dir / "manifest.json").read_text())
    (bucket,) = manifest["buckets"]
    runner = OrtRunner()
    case = full.case_from_video(synthetic_video("pan", frames=8, height=128, width=128, seed=5), "what moves?")
    assert list(case.grid) == bucket["grid_thw"]
    capture = CaptureOnnx(attention=choose_attention(None, backend="onnxruntime", precision="fp32", graph_only=False))

    tower = full.adapter.vision_tower(full.config.vision_config)
    vision = VisionEncoder(full.model.model.visual, tuple(bucket["grid_thw"]), tower).eval()
    pixels = torch.from_numpy(case.pixel_values_videos)
    normal = save_checked(capture(GraphSpec("vision", vision, (pixels,), ["pixel_values_videos"], vision.output_names)),
                          tmp_path, "vision.onnx")
    feeds = {"pixel_values_videos": case.pixel_values_videos}
    streamed = runner.run(streamed_dir / bucket["graphs"]["vision"]["file"], feeds)
    captured = runner.run(normal, feeds)
    with torch.no_grad():
        features, levels = full.adapter.video_features(full.model, pixels, torch.from_numpy(case.video_grid_thw))
    for name, oracle in (("video_features", features), ("deepstack_features", levels)):
        np.testing.assert_array_equal(streamed[name], captured[name])  # the same computation, bit for bit
        assert np.abs(streamed[name] - oracle.numpy()).max() <= FP32_ATOL

    p = Reference(full).prepare(case)
    assert tuple(p.deepstack.shape) == (2, 64, 64)
    feeds = {"inputs_embeds": p.inputs_embeds.numpy(), "position_ids": p.position_ids.numpy(),
             "video_start": p.video_start.numpy(), "deepstack_features": p.deepstack.numpy()}
    schedule = Schedule.from_json(bucket["schedule"])
    prefill = DeepStackPrefillGraph(ReducedDecoder(full.adapter.decoder_parts(full.model)), schedule).eval()
    n = bucket["visual_tokens"]
    length = torch.export.Dim("L", min=schedule.frame_layout.region_length + 1, max=n + 128)
    spec = GraphSpec("prefill", prefill, tuple(torch.from_numpy(v) for v in feeds.values()), list(feeds),
                     ["logits", *(f"present.{i}.{kv}" for i in range(4) for kv in ("key", "value"))],
                     ({1: length}, {1: length}, None, None))
    normal = save_checked(capture(spec), tmp_path, "prefill.onnx")
    streamed = runner.run(streamed_dir / bucket["graphs"]["prefill"]["file"], feeds)
    captured = runner.run(normal, feeds)
    with torch.no_grad():
        logits, *presents = prefill(*(torch.from_numpy(v) for v in feeds.values()))
    for name in streamed:
        np.testing.assert_array_equal(streamed[name], captured[name])
    for name, expected in (("logits", logits), ("present.3.value", presents[-1])):
        assert np.abs(streamed[name] - expected.numpy()).max() <= FP32_ATOL
    # the levels matter: without them the streamed prefill gives other logits
    zeroed = runner.run(streamed_dir / bucket["graphs"]["prefill"]["file"],
                        {**feeds, "deepstack_features": np.zeros_like(feeds["deepstack_features"])})
    assert np.abs(zeroed["logits"] - streamed["logits"]).max() > 1e-3


def test_qwen3_streamed_without_a_tokenizer_is_refused_in_one_line(tmp_path, error_line):
    """The text between Qwen3-VL's frame blocks comes from the tokenizer, so a streamed build of a preset
    whose tokenizer is not in the local cache stops before materializing anything."""
    from ffexport.models.loading import _hub_snapshot

    if _hub_snapshot("Qwen/Qwen3-VL-8B-Instruct") is not None:
        pytest.skip("Qwen3-VL-8B-Instruct is in the local Hugging Face cache (this checks the case without it)")
    code = main(["-q", "build", "--model", "qwen3vl-8b", "--streamed", "--random-weights", "--out", str(tmp_path / "b")])
    assert code == 3
    assert "no tokenizer here" in error_line()
    assert not (tmp_path / "b" / "weights.bin").exists()

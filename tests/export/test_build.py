"""``ffexport build`` on the tiny model: graphs, shared weights, manifest, parity gate, resume, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from ffexport.cli import main
from ffexport.errors import InputError, ScheduleError
from ffexport.export.build import run_graphs
from ffexport.export.parity import OrtRunner
from ffexport.fusion.config import FusionConfig
from ffexport.reference import Reference
from ffexport.video import synthetic_video

BUCKET = "8x112x112"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "b"
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out), "--max-text", "128"]) == 0
    return out



def test_manifest_describes_the_build(build_dir, tiny):
    manifest = json.loads((build_dir / "manifest.json").read_text())
    assert manifest["format"] == "ffexport.manifest/1"
    assert manifest["model"]["name"] == "qwen2vl-tiny" and manifest["model"]["num_layers"] == tiny.num_layers
    (bucket,) = manifest["buckets"]
    assert bucket["name"] == BUCKET and bucket["usable"] and bucket["parity"]["passed"]
    assert bucket["grid_thw"] == [4, 8, 8] and bucket["visual_tokens"] == 64
    prefill = bucket["graphs"]["prefill"]
    assert [i["name"] for i in prefill["inputs"]] == ["inputs_embeds", "position_ids", "video_start"]
    outputs = [o["name"] for o in prefill["outputs"]]
    assert outputs[0] == "logits" and outputs[1:3] == ["present.0.key", "present.0.value"]
    assert len(outputs) == 1 + 2 * tiny.num_layers
    decode = manifest["graphs"]["decode"]
    assert [i["name"] for i in decode["inputs"]][:3] == ["input_ids", "position_ids", "past_key_values.0.key"]
    # every listed file exists with the recorded size
    for name, record in manifest["files"].items():
        assert (build_dir / name).stat().st_size == record["bytes"], name
    assert {"torch", "transformers", "onnx", "onnxruntime", "opset"} <= set(manifest["tools"])


def test_manifest_records_where_the_schedule_came_from(build_dir):
    from ffexport.calibrate.shipped import SHIPPED_DIR, read_calibrated

    (bucket,) = json.loads((build_dir / "manifest.json").read_text())["buckets"]
    shipped = read_calibrated(SHIPPED_DIR / "qwen2vl-tiny" / f"{BUCKET}.json")
    origin = bucket["schedule_origin"]  # the tiny preset's default settings: the shipped calibrated schedule
    assert origin["kind"] == "shipped" and origin["file"].endswith(f"qwen2vl-tiny/{BUCKET}.json")
    assert origin["calibration"] == shipped.calibration and bucket["schedule"] == shipped.schedule.to_json()
    assert bucket["schedule_source"].startswith("shipped calibrated schedule")


def test_graphs_pass_the_checker_and_share_one_weight_file(build_dir, tiny):
    manifest = json.loads((build_dir / "manifest.json").read_text())
    files = [g["file"] for g in manifest["graphs"].values()]
    files += [g["file"] for b in manifest["buckets"] for g in b["graphs"].values()]
    for name in files:
        path = str(build_dir / name)
        onnx.checker.check_model(path, full_check=True)
        model = onnx.load(path, load_external_data=False)
        for t in model.graph.initializer:  # no large tensor left inline: weights live in weights.bin
            inline = len(t.raw_data) if t.data_location != onnx.TensorProto.EXTERNAL else 0
            assert inline < 1024, (name, t.name)
            if t.data_location == onnx.TensorProto.EXTERNAL:
                assert {e.key: e.value for e in t.external_data}["location"] == "weights.bin"
    params = sum(p.numel() * p.element_size() for p in tiny.model.parameters())
    stored = (build_dir / "weights.bin").stat().st_size
    assert stored < 1.1 * params  # stored once, not once per graph (4 graphs here)


def test_prefill_text_length_varies_without_rebuild(build_dir):
    manifest = json.loads((build_dir / "manifest.json").read_text())
    shape = manifest["buckets"][0]["graphs"]["prefill"]["inputs"][0]["shape"]
    assert shape[0] == 1 and isinstance(shape[1], str) and shape[2] == 64


def test_parity_report_and_polygraphy_replay(build_dir):
    report = json.loads((build_dir / BUCKET / "parity.json").read_text())
    assert report["passed"]
    for graph in report["graphs"]:
        for out in graph["outputs"]:
            assert out["max_abs"] <= out["atol"] == 1e-4
    assert all(e["tokens_equal"] and e["logits"]["passed"] for e in report["end_to_end"])
    assert {c["case"].split(":")[1] for c in report["end_to_end"]} == {"moving_object", "pan", "static"}
    # the parity contract, proven on every parity video whatever schedule is deployed: the static graph
    # with the schedule the dynamic reference realizes there equals the dynamic reference
    contract = report["contract"]
    assert report["schedule_kind"] == contract["schedule_kind"] == "calibrated"  # the shipped schedule
    assert contract["passed"] and contract["compared"] == 3
    for video in contract["videos"]:
        assert video["passed"] and video["tokens_equal"] and video["graph_tokens"] == video["dynamic_tokens"]
        assert video["logits"]["max_abs"] <= video["logits"]["atol"] == 1e-5
        assert not video["deployed_equals_realized"] and video["graph"].startswith("exported for this check")
        assert {"token_agreement", "kl_first_token", "kept_overlap"} <= set(video["fidelity"])  # measured
    assert contract["videos"][0]["realized"] == [  # the dynamic reference on the calibration clip: 42 / 6
        {"layer": 0, "where": "before_attention", "op": "merge", "remove": 42},
        {"layer": 0, "where": "after_attention", "op": "merge", "remove": 0},
        {"layer": 1, "where": "after_attention", "op": "prune", "remove": 6}]
    # the oracle compared the moving clip and the pan; the static clip's top-k cut is an exact tie
    oracle = contract["oracle"]
    assert oracle["passed"] and oracle["compared"] == 2 and oracle["ambiguous"] == 1 and oracle["logits_max_abs"] <= 1e-5
    assert [v["oracle"]["compared"] for v in contract["videos"]] == [True, True, False]
    manifest = json.loads((build_dir / "manifest.json").read_text())
    (bucket,) = manifest["buckets"]
    assert bucket["schedule_kind"] == "calibrated" and bucket["parity"]["contract"]["passed"]
    assert bucket["parity"]["contract"]["fidelity"]["videos"] == 3
    polygraphy = shutil.which("polygraphy")
    if polygraphy is None:
        pytest.skip("polygraphy CLI not installed: replay not checked")
    replay = subprocess.run(
        [polygraphy, "run", f"{BUCKET}.prefill.onnx", "--onnxrt", "--load-inputs", f"{BUCKET}/parity/prefill.inputs.json",
         "--load-outputs", f"{BUCKET}/parity/prefill.outputs.json", "--atol", "1e-4", "--rtol", "0"],
        cwd=build_dir, capture_output=True, text=True, timeout=300,
    )
    assert replay.returncode == 0 and "PASSED" in replay.stdout + replay.stderr, replay.stdout[-2000:]


@pytest.mark.parametrize("kind, seed", [("moving_object", 11), ("scene_cut", 12), ("noise", 13)])
def test_onnx_runtime_equals_the_static_reference_on_new_videos(build_dir, tiny, kind, seed):
    manifest = json.loads((build_dir / "manifest.json").read_text())
    bucket = manifest["buckets"][0]
    from ffexport.fusion.schedule import Schedule

    schedule = Schedule.from_json(bucket["schedule"])
    case = tiny.case_from_video(synthetic_video(kind, frames=8, seed=seed), "Is anything moving here?")
    logits, tokens = run_graphs(OrtRunner(), build_dir, case, bucket["graphs"]["vision"]["file"],
                                bucket["graphs"]["prefill"]["file"], tiny.config, tiny.adapter, 5)
    static = Reference(tiny, schedule=schedule, max_new_tokens=5)(case)
    assert np.abs(logits - static.logits).max() <= 1e-4
    assert tokens == static.generated_ids[0].tolist()


def test_parity_contract_through_onnx_runtime(tmp_path, tiny):
    """A build with the schedule the dynamic reference realized for a video reproduces the dynamic
    reference's logits for that video."""
    case = tiny.case_from_video(synthetic_video("pan", frames=8, seed=21), "What moves?")
    dynamic = Reference(tiny, fusion=FusionConfig(similarity=0.8, budget_layers=28), max_new_tokens=4)(case)
    schedule_file = tmp_path / "s.json"
    dynamic.schedule.save(schedule_file)
    out = tmp_path / "b"
    assert main(["-q", "build", "--bucket", BUCKET, "--schedule", str(schedule_file), "--out", str(out),
                 "--fidelity", "--similarity", "0.8", "--budget-layers", "28"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    bucket = manifest["buckets"][0]
    assert bucket["schedule_source"].startswith("given")
    assert bucket["schedule_origin"] == {"kind": "given", "file": str(schedule_file)}
    # --fidelity: the schedule vs the dynamic reference (same settings) on the three parity videos
    fidelity = json.loads((out / bucket["fidelity"]["file"]).read_text())
    assert [v["video"].split(":")[1] for v in fidelity["videos"]] == ["moving_object", "pan", "static"]
    assert bucket["fidelity"]["compared"] == 3 and fidelity["fusion"]["budget_layers"] == 28
    logits, tokens = run_graphs(OrtRunner(), out, case, bucket["graphs"]["vision"]["file"],
                                bucket["graphs"]["prefill"]["file"], tiny.config, tiny.adapter, 4)
    assert np.abs(logits - dynamic.logits).max() <= 1e-4
    assert tokens == dynamic.generated_ids[0].tolist()


def test_contract_fails_when_the_static_graph_is_not_the_realized_schedule(build_dir, tiny):
    """The contract check itself can fail: hand it the deployed graph (shipped 41/8) as if it were the
    graph of the schedule the dynamic reference realizes (42/6): logits differ, the check says so."""
    from ffexport.export.build import Build, BuildConfig
    from ffexport.export.contract import CALIBRATED, ParityVideo, ScheduleContract
    from ffexport.export.parity import FP32
    from ffexport.fusion.schedule import Schedule

    (bucket,) = json.loads((build_dir / "manifest.json").read_text())["buckets"]
    build = Build(tiny, BuildConfig(buckets=(BUCKET,), out=build_dir))
    (b,) = build.buckets
    case = build._parity_cases(b)[0]
    ti = build._torch_inputs(case)
    deployed = build_dir / bucket["graphs"]["prefill"]["file"]
    contract = ScheduleContract(
        tiny, fusion=FusionConfig(), runner=OrtRunner(), out=build_dir, vision_file=bucket["graphs"]["vision"]["file"],
        prefill_file=bucket["graphs"]["prefill"]["file"], export_prefill=lambda schedule, directory: deployed,
        tolerance=FP32, precision="fp32", tokens=4, visual_tokens=64, patches_per_frame=16,
    )(Schedule.from_json(bucket["schedule"]), CALIBRATED, [ParityVideo("moving", case, ti.embeds, ti.positions, ti.start)])
    (video,) = contract["videos"]
    assert not contract["passed"] and not contract["contract_passed"] and video["passed"] is False
    assert video["logits"]["max_abs"] > 1e-2  # 41/8 against 42/6
    assert video["oracle"]["compared"] and video["oracle"]["passed"] is False  # the oracle sees it too


def test_rerun_skips_verified_buckets_and_rebuilds_damaged_ones(build_dir, capsys):
    before = (build_dir / "manifest.json").read_text()
    assert main(["build", "--bucket", BUCKET, "--out", str(build_dir), "--max-text", "128"]) == 0
    assert "already built and verified" in capsys.readouterr().err
    assert json.loads((build_dir / "manifest.json").read_text()) == json.loads(before)
    (build_dir / f"{BUCKET}.prefill.onnx").write_bytes(b"damaged")
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(build_dir), "--max-text", "128"]) == 0
    manifest = json.loads((build_dir / "manifest.json").read_text())
    assert manifest["buckets"][0]["usable"]
    onnx.checker.check_model(str(build_dir / f"{BUCKET}.prefill.onnx"), full_check=True)


def test_build_refuses_another_configuration_in_the_same_directory(build_dir, capsys, error_line):
    code = main(["-q", "build", "--bucket", BUCKET, "--out", str(build_dir), "--max-text", "200"])
    assert code == InputError.exit_code
    assert "--overwrite" in error_line()


@pytest.mark.parametrize(
    "bucket, message",
    [("8x112", "expected FRAMESxHEIGHTxWIDTH"), ("0x112x112", "must be positive")],
)
def test_malformed_buckets_are_usage_errors(tmp_path, capsys, bucket, message):
    """Checked by argparse, before any model loads: a usage error (exit 2) naming the bucket."""
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "build", "--bucket", bucket, "--out", str(out)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_a_bucket_the_model_cannot_take(tmp_path, capsys, error_line):
    out = tmp_path / "b"
    assert main(["-q", "build", "--bucket", "8x28x9000", "--out", str(out)]) == InputError.exit_code
    assert "cannot take this size" in error_line()
    assert not out.exists()


def test_unknown_precision_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "build", "--precision", "int4", "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_schedule_for_another_bucket_is_refused(tmp_path, capsys, error_line):
    schedule = tmp_path / "s.json"
    schedule.write_text(json.dumps({"format": "ffexport.schedule/1", "visual_tokens": 32, "patches_per_frame": 16,
                                    "stages": []}))
    code = main(["-q", "build", "--bucket", BUCKET, "--schedule", str(schedule), "--out", str(tmp_path / "b")])
    assert code == InputError.exit_code
    assert "bucket 8x112x112 has 64" in error_line()
    schedule.write_text(json.dumps({"format": "ffexport.schedule/1", "visual_tokens": 64, "patches_per_frame": 16,
                                    "stages": [{"layer": 1, "where": "after_attention", "op": "prune", "remove": 64}]}))
    code = main(["-q", "build", "--bucket", BUCKET, "--schedule", str(schedule), "--out", str(tmp_path / "b")])
    assert code == ScheduleError.exit_code
    assert "removes all 64 visual tokens" in error_line()


def test_foreign_directory_is_not_touched(tmp_path, capsys, error_line):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["-q", "build", "--out", str(out)]) == InputError.exit_code
    assert "holds no ffexport build" in error_line()
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_fp16_build_keeps_fp32_where_numerics_need_it(tmp_path, tiny):
    out = tmp_path / "b16"
    assert main(["-q", "build", "--precision", "fp16", "--bucket", BUCKET, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    bucket = manifest["buckets"][0]
    assert manifest["precision"] == "fp16" and bucket["usable"] and bucket["parity"]["validated"]
    prefill = bucket["graphs"]["prefill"]
    assert prefill["inputs"][0]["dtype"] == "float16" and prefill["outputs"][0]["dtype"] == "float32"
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out / prefill["file"]), load_external_data=False))
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    softmax_inputs = {types.get(n.input[0]) for n in model.graph.node if n.op_type == "Softmax"}
    assert softmax_inputs == {onnx.TensorProto.FLOAT}  # attention and importance softmax in fp32
    norms = {types.get(n.input[0]) for n in model.graph.node if n.op_type == "ReduceL2"}
    assert norms == {onnx.TensorProto.FLOAT}  # cosine similarity in fp32
    # fidelity of the fp16 graphs against the fp32 PyTorch static reference (reported, loose bound)
    from ffexport.fusion.schedule import Schedule

    case = tiny.case_from_video(synthetic_video("moving_object", frames=8, seed=0), "Describe what happens in this video.")
    logits, _ = run_graphs(OrtRunner(), out, case, bucket["graphs"]["vision"]["file"], prefill["file"], tiny.config,
                           tiny.adapter, 1)
    fp32 = Reference(tiny, schedule=Schedule.from_json(bucket["schedule"]))(case)
    assert np.abs(logits - fp32.logits).max() < 0.05


def test_a_bucket_that_fails_parity_fails_the_build_and_is_not_usable(tmp_path, monkeypatch, error_line):
    import ffexport.export.build as build_module
    from ffexport.errors import ValidationError
    from ffexport.export.parity import Tolerance

    monkeypatch.setitem(build_module.TOLERANCES, "fp32", Tolerance(atol=0.0))  # nothing can pass a zero tolerance
    out = tmp_path / "b"
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out)]) == ValidationError.exit_code
    assert "failed the parity gate" in error_line()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["buckets"][0]["usable"] is False
    assert json.loads((out / BUCKET / "parity.json").read_text())["passed"] is False


def test_an_interrupted_build_claims_no_usable_bucket(tmp_path, monkeypatch):
    import ffexport.export.build as build_module

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module.Build, "_bucket_parity", interrupt)
    out = tmp_path / "b"
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out)]) == 130
    manifest = out / "manifest.json"
    assert not manifest.exists() or not any(b["usable"] for b in json.loads(manifest.read_text())["buckets"])
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.partial"))
    monkeypatch.undo()
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out)]) == 0  # the re-run finishes it
    assert json.loads(manifest.read_text())["buckets"][0]["usable"]


def test_graph_only_build_captures_structure_without_weights(tmp_path):
    out = tmp_path / "g"
    assert main(["-q", "build", "--graph-only", "--bucket", BUCKET, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["graph_only"] and not manifest["buckets"][0]["usable"]
    assert manifest["buckets"][0]["parity"]["validated"] is False
    assert not (out / "weights.bin").exists()
    model = onnx.load(str(out / f"{BUCKET}.prefill.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert {"CumSum", "ScatterElements"} <= ops and not ops & {"TopK", "ScatterND", "NonZero", "Sort"}


def test_bf16_graphs_keep_fp32_where_numerics_need_it(tmp_path, error_line):
    # ONNX Runtime's CPU provider has no bf16 kernels: bf16 builds are validated by TensorRT only
    assert main(["build", "--precision", "bf16", "--bucket", BUCKET, "--out", str(tmp_path / "x")]) == 2
    assert "no bfloat16 kernels" in error_line() and not (tmp_path / "x").exists()
    out = tmp_path / "g"
    assert main(["-q", "build", "--graph-only", "--precision", "bf16", "--bucket", BUCKET, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    prefill = manifest["buckets"][0]["graphs"]["prefill"]
    assert prefill["inputs"][0]["dtype"] == "bfloat16" and prefill["outputs"][0]["dtype"] == "float32"
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out / prefill["file"]), load_external_data=False))
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    softmax_inputs = {types.get(n.input[0]) for n in model.graph.node if n.op_type == "Softmax"}
    assert softmax_inputs == {onnx.TensorProto.FLOAT}
    assert {types.get(n.input[0]) for n in model.graph.node if n.op_type == "ReduceL2"} == {onnx.TensorProto.FLOAT}
    assert onnx.TensorProto.BFLOAT16 in set(types.values())
    from ffexport.lint import lint_model

    assert lint_model(model, target="trt11") == []

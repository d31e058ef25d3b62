"""``ffexport build --precision int8`` on the tiny model: the fp32 gate first, then quantized prefill and
decode graphs with their own gate against the PyTorch fp32 reference; refusals; the runtime runs it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from ffexport.cli import main
from ffexport.errors import InputError, ValidationError

pytestmark = pytest.mark.slow

BUCKET = "8x112x112"
INT8_OPS = {"MatMulInteger", "DynamicQuantizeMatMul"}


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "b"
    assert main(["-q", "build", "--precision", "int8", "--bucket", BUCKET, "--out", str(out), "--max-text", "128"]) == 0
    return out


def _manifest(directory):
    return json.loads((directory / "manifest.json").read_text())


def _int8_graphs(manifest):
    (bucket,) = manifest["buckets"]
    return {"prefill": bucket["graphs"]["prefill"], "decode_static": bucket["graphs"]["decode_static"],
            "decode": manifest["graphs"]["decode"]}


def test_int8_build_passes_its_gate_and_records_the_figures(int8_build):
    manifest = _manifest(int8_build)
    assert manifest["precision"] == "int8"
    (bucket,) = manifest["buckets"]
    assert bucket["usable"] and bucket["parity"]["passed"] and bucket["parity"]["precision"] == "int8"
    summary = bucket["parity"]["int8"]
    assert summary["passed"] and set(summary["thresholds"]) == {"logits_rel", "top5", "first_token", "tokens_equal"}
    report = json.loads((int8_build / BUCKET / "parity.json").read_text())
    assert report["precision"] == "int8" and report["fp32_graphs_passed"] and report["passed"]
    assert report["tolerance"] == {"atol": 1e-4, "rtol": 0.0}  # the fp32 graphs' gate, unchanged
    cases = report["int8"]["cases"]
    assert [c["case"] for c in cases] == report["cases"]  # every parity video
    for case in cases:
        # quantized for real (the logits moved), within the thresholds, same first token
        assert 0 < case["logits_rel"] <= summary["thresholds"]["logits_rel"]
        assert case["top5_overlap"] >= summary["thresholds"]["top5"] and case["argmax_equal"]
        assert len(case["generated_ids"]) == len(case["reference_ids"]) == 4 and case["static_decode_equal"]
        assert case["tokens_equal"] == (case["first_divergence"] is None)
    assert summary["worst"]["logits_rel"] == max(c["logits_rel"] for c in cases)


def test_int8_graphs_quantize_every_weight_matmul_and_share_the_weight_file(int8_build, tiny):
    manifest = _manifest(int8_build)
    layers = tiny.num_layers
    for kind, record in _int8_graphs(manifest).items():
        assert record["file"].endswith(".int8.onnx") and record["quantized"]["from"] == record["file"].replace(
            ".int8.onnx", ".onnx")
        assert record["file"] in manifest["files"] and record["quantized"]["from"] in manifest["files"]
        path = str(int8_build / record["file"])
        onnx.checker.check_model(path, full_check=True)
        model = onnx.load(path, load_external_data=False)
        initializers = {t.name for t in model.graph.initializer}
        # 7 projections per layer and lm_head in int8; no MatMul over a weight left in fp32
        assert sum(n.op_type in INT8_OPS for n in model.graph.node) == 7 * layers + 1 == record["quantized"]["matmuls_int8"]
        assert not [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in initializers]
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                assert {e.key: e.value for e in t.external_data}["location"] == "weights.bin", (kind, t.name)
    # the three int8 graphs store their int8 weights once: the fp32 build plus about a quarter
    params = sum(p.numel() * p.element_size() for p in tiny.model.parameters())
    assert (int8_build / "weights.bin").stat().st_size < 1.45 * params


def test_a_rerun_skips_the_verified_int8_bucket(int8_build, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(int8_build, out)
    before = (out / "manifest.json").read_bytes()
    assert main(["-q", "build", "--precision", "int8", "--bucket", BUCKET, "--out", str(out), "--max-text", "128"]) == 0
    assert (out / "manifest.json").read_bytes() == before  # nothing rebuilt, nothing re-quantized
    # an fp32 build into the same directory is another configuration: refused, nothing touched
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out), "--max-text", "128"]) == InputError.exit_code
    assert (out / "manifest.json").read_bytes() == before


def test_the_runtime_runs_an_int8_build(int8_build, tmp_path, tiny):
    from ffexport.fusion.schedule import Schedule
    from ffexport.reference import Reference

    case = tmp_path / "case.npz"
    assert main(["-q", "case", "--video", "synthetic:moving_object", "--out", str(case)]) == 0
    run = tmp_path / "run.npz"
    assert main(["-q", "run", str(int8_build), "--inputs", str(case), "--max-new-tokens", "4", "--out", str(run)]) == 0
    from ffexport.case import load_case

    (bucket,) = _manifest(int8_build)["buckets"]
    reference = Reference(tiny, schedule=Schedule.from_json(bucket["schedule"]), max_new_tokens=4)(load_case(case))
    with np.load(run) as o:
        logits = o["logits"].reshape(-1)
        expected = reference.logits.reshape(-1)
        spread = expected.max() - expected.min()
        assert 0 < np.abs(logits - expected).max() <= 0.05 * spread  # int8 arithmetic, within the gate's bound
        # greedy tokens equal to fp32's on this case (measured: the tiny model's four tokens agree)
        np.testing.assert_array_equal(o["generated_ids"], reference.generated_ids)


def test_pack_keeps_only_the_int8_graphs_and_their_weights(int8_build, tmp_path):
    """`ffexport pack` of an int8 build: the fp32 graphs the int8 ones came from and the fp32 decoder/lm_head
    bytes stay behind; the packed folder runs to the same logits and tokens as the build, bit for bit."""
    out = tmp_path / "deploy"
    assert main(["-q", "pack", str(int8_build), "--out", str(out)]) == 0
    manifest, source = _manifest(out), _manifest(int8_build)
    sources = {g["quantized"]["from"] for g in _int8_graphs(source).values()}
    assert sources and not any((out / name).exists() for name in sources)
    assert set(manifest["packed"]["left_out"]) == sources | {f"{BUCKET}/parity/"}
    assert not set(manifest["files"]) & sources
    weights = manifest["packed"]["weights_bytes"]
    # measured on the tiny preset: 1,228,160 -> 568,696 bytes (the fp32 decoder and lm_head stay behind)
    assert weights["packed"] == manifest["files"]["weights.bin"]["bytes"] < 0.75 * weights["build"]
    for graph in _int8_graphs(manifest).values():
        model = onnx.load(str(out / graph["file"]), load_external_data=False)
        assert INT8_OPS & {n.op_type for n in model.graph.node}
    case = tmp_path / "case.npz"
    assert main(["-q", "case", "--video", "synthetic:pan", "--out", str(case)]) == 0
    runs = []
    for directory in (int8_build, out):
        path = tmp_path / f"{directory.name}.npz"
        assert main(["-q", "run", str(directory), "--inputs", str(case), "--max-new-tokens", "4", "--out",
                     str(path)]) == 0
        with np.load(path) as o:
            runs.append((o["logits"].copy(), o["generated_ids"].copy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_a_failing_int8_gate_fails_the_build_and_leaves_no_usable_bucket(int8_build, tmp_path, monkeypatch,
                                                                         error_line, capsys):
    """Scales corrupted after quantization (x50 on one projection of the prefill) must fail the int8 gate
    (the fixture, the same build without the corruption, passes it): exit 7, the bucket recorded as not
    usable, and the runtime refuses the directory. To keep this test short it checks the calibration clip
    only, and the fp32 contract check is the fixture build's (same model, bucket and schedule), reused;
    everything else runs again."""
    import ffexport.export.build as build_module
    from ffexport.export.quantize import QuantizeInt8

    contract = json.loads((int8_build / BUCKET / "parity.json").read_text())["contract"]
    monkeypatch.setattr(build_module.Build, "_contract", lambda self, *args, **kwargs: contract)
    monkeypatch.setattr(build_module, "PARITY_VIDEOS", ())  # the calibration clip only
    quantize = QuantizeInt8.__call__

    def corrupt(self, graph, target):
        record = quantize(self, graph, target)
        if ".prefill." in graph.name:  # the per-channel scales of one int8 weight, x50
            model = onnx.load(str(target), load_external_data=True)
            scale = next(t for t in model.graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1)
            scale.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(scale) * 50, scale.name))
            onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")
        return record

    monkeypatch.setattr(QuantizeInt8, "__call__", corrupt)
    out = tmp_path / "b"
    assert main(["-q", "build", "--precision", "int8", "--bucket", BUCKET, "--out", str(out), "--max-text", "128"]) \
        == ValidationError.exit_code
    assert "failed the parity gate" in error_line()
    (bucket,) = _manifest(out)["buckets"]
    assert bucket["usable"] is False and bucket["parity"]["int8"]["passed"] is False
    report = json.loads((out / BUCKET / "parity.json").read_text())
    assert report["fp32_graphs_passed"] and not report["passed"]  # the fp32 graphs passed; int8 failed
    failures = [f for c in report["int8"]["cases"] for f in c["failures"]]
    assert any("of their range" in f for f in failures), failures
    case = tmp_path / "case.npz"
    assert main(["-q", "case", "--video", "synthetic:pan", "--out", str(case)]) == 0
    assert main(["-q", "run", str(out), "--inputs", str(case)]) != 0
    assert "not usable" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--backend", "tensorrt-rtx", "--compute-capability", "SM89"], "not TensorRT paths"),
    (["--backend", "tensorrt"], "not TensorRT paths"),
    (["--plugins", "libffexport_plugins.so"], "TensorRT int8 needs QDQ"),
    (["--graph-only"], "--graph-only has none"),
    (["--ops", "plugin"], "use --ops standard"),
    (["--streamed"], "a streamed build (parity on a truncated copy) is not quantized"),
])
def test_int8_refusals_are_one_line(tmp_path, error_line, extra, message):
    out = tmp_path / "x"
    assert main(["-q", "build", "--precision", "int8", "--out", str(out), *extra]) == InputError.exit_code
    assert message in error_line() and not out.exists()

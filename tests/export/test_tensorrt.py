"""The TensorRT engine path: real builds where TensorRT exists; the error path everywhere."""

from __future__ import annotations

import json

import pytest

from ffexport.cli import main
from ffexport.export.parity import FP32
from ffexport.errors import BuildError
from ffexport.export import tensorrt as trt_backend

HAS_TENSORRT = trt_backend.tensorrt_version() is not None


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the missing-TensorRT message cannot be shown")
def test_backend_tensorrt_without_tensorrt_is_one_line_and_builds_nothing(tmp_path, error_line):
    out = tmp_path / "b"
    assert main(["-q", "build", "--backend", "tensorrt", "--out", str(out)]) == BuildError.exit_code
    line = error_line()
    assert "TensorRT is not installed" in line and "ffexport[tensorrt]" in line
    assert not out.exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed")
def test_engine_records_cannot_be_checked_without_tensorrt():
    with pytest.raises(BuildError, match="TensorRT is not installed"):
        trt_backend.check_engine_record({"file": "x.engine", "tensorrt": "10.14.1", "gpu": {}})


def test_profile_shapes_are_plain_values():
    shape = trt_backend.ProfileShape("inputs_embeds", (1, 65, 64), (1, 128, 64), (1, 320, 64))
    assert shape.min[1] < shape.opt[1] < shape.max[1]


@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT not installed")
def test_tensorrt_engines_match_pytorch(tmp_path):
    out = tmp_path / "b"
    assert main(["-q", "build", "--backend", "tensorrt", "--bucket", "8x112x112", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    bucket = manifest["buckets"][0]
    for graph in ("vision", "prefill", "decode_static"):
        record = bucket["engines"][graph]
        assert record["tensorrt"] == trt_backend.tensorrt_version() and record["gpu"]["compute_capability"]
        assert record["parity"]["passed"]
        assert (out / record["file"]).stat().st_size == manifest["files"][record["file"]]["bytes"]
    assert set(manifest["engines"]) == {"embed", "decode"}
    trt_backend.check_engine_record(bucket["engines"]["prefill"])
    stale = dict(bucket["engines"]["prefill"], tensorrt="0.0.0")
    with pytest.raises(BuildError, match="built by TensorRT 0.0.0"):
        trt_backend.check_engine_record(stale)


class _FakeTensorRT:
    """Stands in for TensorRT on a GPU (``runs_here``): the "engine" is a copy of the ONNX graph, run by ONNX
    Runtime, so the build's engine step (which graphs get an engine, the feeds and PyTorch outputs each is
    gated against) runs here. ``skew`` adds to one graph's logits, to show the gate can fail."""

    runs_here = True
    skew: dict[str, float] = {}

    def __init__(self, **_options):
        pass

    def __call__(self, onnx_path, engine_path, dims):
        import shutil

        shutil.copyfile(onnx_path, engine_path)
        return {"file": engine_path.name, "bytes": engine_path.stat().st_size, "runtime": "tensorrt",
                "tensorrt": "fake", "profile": {} if dims is None else {"dims": [dims.min, dims.opt, dims.max]}}

    @classmethod
    def run(cls, engine_path, feeds):
        import onnxruntime as ort

        session = ort.InferenceSession(str(engine_path), providers=["CPUExecutionProvider"])
        outs = session.run(None, {k: v.numpy() if hasattr(v, "numpy") else v for k, v in feeds.items()})
        got = dict(zip([o.name for o in session.get_outputs()], outs))
        for suffix, delta in cls.skew.items():
            if engine_path.name.endswith(suffix):
                got["logits"] = got["logits"] + delta
        return got


@pytest.fixture
def fake_tensorrt(monkeypatch):
    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: "fake")
    monkeypatch.setattr(trt_backend, "gpu_record", lambda: {"name": "fake", "compute_capability": "8.9"})
    monkeypatch.setattr(trt_backend, "EngineFromGraph", _FakeTensorRT)
    monkeypatch.setattr(trt_backend, "run_engine", _FakeTensorRT.run)
    monkeypatch.setattr(_FakeTensorRT, "skew", {})
    return _FakeTensorRT


@pytest.mark.slow
def test_a_tensorrt_build_builds_and_gates_the_static_decode_engine(tmp_path, fake_tensorrt):
    out = tmp_path / "b"
    assert main(["-q", "build", "--backend", "tensorrt", "--bucket", "8x112x112", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    bucket = manifest["buckets"][0]
    assert set(bucket["engines"]) == {"vision", "prefill", "decode_static"}
    record = bucket["engines"]["decode_static"]
    assert record["file"] == "8x112x112.decode_static.engine" and record["profile"] == {}  # static: no profile
    assert record["file"] in manifest["files"]
    outputs = {o["name"]: o for o in record["parity"]["outputs"]}
    layers = manifest["model"]["num_layers"]
    assert set(outputs) == {"logits", *(f"present.{i}.{k}" for i in range(layers) for k in ("key", "value"))}
    assert record["parity"]["passed"] and all(o["max_abs"] <= FP32.atol for o in outputs.values())
    assert bucket["usable"]


@pytest.mark.slow
def test_a_static_decode_engine_off_pytorch_fails_the_bucket(tmp_path, fake_tensorrt, monkeypatch):
    monkeypatch.setattr(fake_tensorrt, "skew", {".decode_static.engine": 1e-2})
    out = tmp_path / "b"
    main(["-q", "build", "--backend", "tensorrt", "--bucket", "8x112x112", "--out", str(out)])
    bucket = json.loads((out / "manifest.json").read_text())["buckets"][0]
    engines = bucket["engines"]
    assert engines["prefill"]["parity"]["passed"] and not engines["decode_static"]["parity"]["passed"]
    assert not bucket["usable"]

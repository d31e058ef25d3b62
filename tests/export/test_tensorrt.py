"""The TensorRT engine path: real builds where TensorRT exists; the error path everywhere."""

from __future__ import annotations

import json

import pytest

from ffexport.cli import main
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
    for graph in ("vision", "prefill"):
        record = bucket["engines"][graph]
        assert record["tensorrt"] == trt_backend.tensorrt_version() and record["gpu"]["compute_capability"]
        assert record["parity"]["passed"]
        assert (out / record["file"]).stat().st_size == manifest["files"][record["file"]]["bytes"]
    assert set(manifest["engines"]) == {"embed", "decode"}
    trt_backend.check_engine_record(bucket["engines"]["prefill"])
    stale = dict(bucket["engines"]["prefill"], tensorrt="0.0.0")
    with pytest.raises(BuildError, match="built by TensorRT 0.0.0"):
        trt_backend.check_engine_record(stale)

"""The TensorRT backend of the runtime: which engines may run here, and the errors when one may not.

No machine of this project has TensorRT, so the engines themselves cannot run in CI; what is tested
is every decision taken before TensorRT is asked to deserialize an engine (the version and GPU
checks, missing records, plugin libraries) and the CLI's error lines.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli import main
from ffexport.errors import InputError, RunError
from ffexport.runtime.engines import INSTALL_HINT, EngineGraph, Machine, engine_mismatch, engine_record
from ffexport.runtime.manifest import load_manifest
from toy_build import DEFAULT_BUCKETS, toy_case

RECORD = {"file": "8x112x112.prefill.engine", "tensorrt": "10.14.1",
          "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "plugins": []}


@pytest.mark.parametrize("machine, expected", [
    (Machine("10.14.1", "NVIDIA H100 80GB HBM3", "9.0"), None),
    (Machine("10.14.1", "NVIDIA H200", "9.0"), None),  # same architecture: the engine runs
    (Machine(None, None, None), INSTALL_HINT),
    (Machine("11.1.0", "NVIDIA H100 80GB HBM3", "9.0"), "built by TensorRT 10.14.1; this machine has TensorRT 11.1.0"),
    (Machine("10.14.1", None, None), "needs an NVIDIA GPU"),
    (Machine("10.14.1", "NVIDIA A100-SXM4-80GB", "8.0"), "compute capability 9.0); this GPU is NVIDIA A100"),
])
def test_engine_mismatch(machine, expected):
    problem = engine_mismatch(RECORD, machine)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


@pytest.fixture()
def engine_build(toy_build_dir, tmp_path):
    """A copy of the toy build whose manifest records engines (the engine files are not real)."""
    out = tmp_path / "build"
    shutil.copytree(toy_build_dir, out)
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    bucket = manifest["buckets"][0]
    bucket["engines"] = {kind: dict(RECORD, file=bucket["graphs"][kind]["file"].replace(".onnx", ".engine"))
                         for kind in ("vision", "prefill")}
    manifest["engines"] = {kind: dict(RECORD, file=f"{kind}.engine") for kind in ("embed", "decode")}
    path.write_text(json.dumps(manifest))
    return out


def test_records_are_found_per_bucket_and_shared(engine_build):
    manifest = load_manifest(engine_build)
    name = manifest.buckets[0].name
    assert engine_record(manifest, "prefill", name)["file"] == f"{name}.prefill.engine"
    assert engine_record(manifest, "decode", None)["file"] == "decode.engine"


def test_a_build_without_engines_says_how_to_get_them(toy_build_dir):
    manifest = load_manifest(toy_build_dir)
    with pytest.raises(InputError, match="no TensorRT engine for its embed graph.*--backend tensorrt"):
        engine_record(manifest, "embed", None)


def test_a_mismatched_engine_is_refused_before_loading(engine_build):
    manifest = load_manifest(engine_build)
    record = engine_record(manifest, "decode", None)
    with pytest.raises(RunError, match="built by TensorRT 10.14.1; this machine has TensorRT 10.9.0"):
        EngineGraph(manifest, record, machine=Machine("10.9.0", "NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(RunError, match="this GPU is NVIDIA L4 \\(compute capability 8.9\\)"):
        EngineGraph(manifest, record, machine=Machine("10.14.1", "NVIDIA L4", "8.9"))


def test_plugin_engines_need_their_libraries(engine_build, tmp_path):
    manifest = load_manifest(engine_build)
    record = dict(engine_record(manifest, "decode", None), plugins=["build/libffexport_plugins.so"])
    here = Machine("10.14.1", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(InputError, match="plugin libraries build/libffexport_plugins.so; pass them with --plugins"):
        EngineGraph(manifest, record, machine=here)
    with pytest.raises(InputError, match="plugin library .*missing.so does not exist"):
        EngineGraph(manifest, record, plugins=[tmp_path / "missing.so"], machine=here)
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"not a shared library")
    with pytest.raises(RunError, match="cannot load plugin library"):
        EngineGraph(manifest, record, plugins=[bad], machine=here)


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed: this checks the message of a machine without it")
def test_run_with_tensorrt_backend_reports_one_line(engine_build, toy_build_dir, tmp_path, error_line):
    case = tmp_path / "case.npz"
    toy_case(DEFAULT_BUCKETS[0], seed=1).save(case)
    # this machine has no TensorRT: the engines cannot run, and the message says what to install
    assert main(["run", str(engine_build), "--inputs", str(case), "--backend", "tensorrt"]) == 8
    assert "TensorRT is not installed" in error_line()
    # an ONNX-only build has no engines at all
    assert main(["run", str(toy_build_dir), "--inputs", str(case), "--backend", "tensorrt"]) == 2
    assert "no TensorRT engine" in error_line()
    assert main(["run", str(toy_build_dir), "--inputs", str(case), "--plugins", "x.so"]) == 2
    assert "goes with --backend tensorrt" in error_line()


def test_unknown_backend():
    from ffexport.runtime import Runtime

    with pytest.raises(InputError, match="unknown backend"):
        Runtime("nowhere", backend="tensorflow")

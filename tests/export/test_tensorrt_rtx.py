"""``ffexport build --backend tensorrt-rtx``: real engines built ahead of time by NVIDIA's TensorRT for RTX
on this GPU-less machine, recorded as built (not run); nothing half-written is left when a build fails;
``ffexport run --backend tensorrt`` refuses such engines with one line where they cannot run."""

from __future__ import annotations

import json
import sys

import pytest

from ffexport.cli import main
from ffexport.errors import BuildError, InputError, RunError
from ffexport.export import trt_toolkit
from ffexport.export.trt_toolkit import DEFAULT_MAX_NEW_TOKENS, ParseOnnx, Rejection
from ffexport.runtime.engines import Machine, engine_mismatch

BUCKET = "8x112x112"
KINDS = ("vision", "prefill", "decode_static", "embed", "decode")


def _records(manifest):
    bucket = manifest["buckets"][0]
    return {**bucket["engines"], **manifest["engines"]}


@pytest.fixture(scope="module")
def rtx_build(tmp_path_factory, tensorrt_rtx):
    out = tmp_path_factory.mktemp("rtx") / "build"
    assert main(["-q", "build", "--backend", "tensorrt-rtx", "--compute-capability", "SM89,SM120", "--bucket", BUCKET,
                 "--out", str(out)]) == 0
    return out


def test_engines_are_built_ahead_of_time_and_recorded_as_not_run(rtx_build, tensorrt_rtx):
    manifest = json.loads((rtx_build / "manifest.json").read_text())
    records = _records(manifest)
    assert set(records) == set(KINDS)
    for kind, record in records.items():
        path = rtx_build / record["file"]
        assert record["file"] == ("embed.engine" if kind == "embed" else "decode.engine" if kind == "decode"
                                  else f"{BUCKET}.{kind}.engine")  # 8x112x112.decode_static.engine beside its graph
        assert record["runtime"] == "tensorrt-rtx" and record["tensorrt_rtx"] == tensorrt_rtx.version
        assert record["compute_capabilities"] == ["8.9", "12.0"]
        assert record["run"] is False and "not run: numeric parity needs a GPU" in record["note"]
        assert path.stat().st_size == record["bytes"] == manifest["files"][record["file"]]["bytes"] > 0
        assert "parity" not in record
    n, max_text = manifest["buckets"][0]["visual_tokens"], manifest["max_text"]
    hidden = manifest["model"]["hidden_size"]
    assert records["prefill"]["profile"]["inputs_embeds"] == {
        "min": [1, n + 1, hidden], "opt": [1, n + 64, hidden], "max": [1, n + max_text, hidden]}
    assert records["vision"]["profile"] == {}  # static
    assert records["decode_static"]["profile"] == {}  # every shape static: the C++ runtime's engine needs no profile
    assert manifest["buckets"][0]["graphs"]["decode_static"]["file"] == f"{BUCKET}.decode_static.onnx"
    past = records["decode"]["profile"]["past_key_values.0.key"]
    assert past["max"][2] == n + max_text + DEFAULT_MAX_NEW_TOKENS
    assert manifest["buckets"][0]["usable"] and manifest["buckets"][0]["parity"]["passed"]  # the ONNX gate ran
    assert not list(rtx_build.glob("*.partial"))
    assert {p.name for p in rtx_build.glob(".*")} <= {".ffexport.lock", ".ffexport-verified.json"}  # no hidden leftovers


def test_engines_without_the_static_decode_engine_are_not_finished(rtx_build, tiny, tensorrt_rtx):
    """A build whose engines predate the static decode engine is built again by a re-run (not skipped)."""
    from ffexport.export.build import Build, BuildConfig

    manifest = json.loads((rtx_build / "manifest.json").read_text())
    build = Build(tiny, BuildConfig(buckets=(BUCKET,), out=rtx_build, max_text=manifest["max_text"],
                                    backend="tensorrt-rtx", compute_capabilities=("SM89", "SM120")))
    assert build._finished(manifest, build.buckets[0])
    del manifest["buckets"][0]["engines"]["decode_static"]
    assert not build._finished(manifest, build.buckets[0])


def test_the_engines_are_real(rtx_build, tensorrt_rtx):
    """An engine file is what the builder serialized: the same graph rebuilt gives an engine of the same size."""
    from ffexport.lint.check import CheckGraph, graphs_to_check

    dims = dict(graphs_to_check([str(rtx_build)]))
    embed = rtx_build / "embed.onnx"
    again = CheckGraph(toolkit=tensorrt_rtx, build_for=("SM89", "SM120"))(embed, dims[embed])
    assert again.engine_bytes == (rtx_build / "embed.engine").stat().st_size


def test_run_refuses_the_engines_without_their_gpu(rtx_build, tensorrt_rtx, tmp_path, error_line, monkeypatch):
    import ffexport.runtime.engines as engines

    monkeypatch.setattr(engines, "this_machine", lambda: Machine(None, None, None, tensorrt_rtx.version))
    case = tmp_path / "case.npz"
    assert main(["-q", "case", "--out", str(case)]) == 0
    assert main(["run", str(rtx_build), "--backend", "tensorrt", "--inputs", str(case), "--out",
                 str(tmp_path / "o.npz")]) == RunError.exit_code
    line = error_line()
    assert line.startswith("error: run: ") and line.endswith(
        f"was built ahead of time by TensorRT-RTX {tensorrt_rtx.version} for GPUs of compute capability 8.9 or 12.0 "
        "and never run; no NVIDIA GPU is visible here")
    assert not (tmp_path / "o.npz").exists()


RTX_RECORD = {"file": "8x112x112.prefill.engine", "runtime": "tensorrt-rtx", "tensorrt_rtx": "1.7.1.116",
              "compute_capabilities": ["8.9", "12.0"], "run": False}


@pytest.mark.parametrize("machine, expected", [
    (Machine(None, None, None, None), "TensorRT-RTX is not installed here"),
    (Machine("10.14.1", "NVIDIA L40S", "8.9", None), "TensorRT-RTX is not installed here"),
    (Machine(None, None, None, "1.8.0"), "this machine has TensorRT-RTX 1.8.0: rebuild"),
    (Machine(None, None, None, "1.7.1.116"), "no NVIDIA GPU is visible here"),
    (Machine(None, "NVIDIA H100 80GB HBM3", "9.0", "1.7.1.116"), "this GPU is NVIDIA H100 80GB HBM3 (compute "
                                                                   "capability 9.0): rebuild"),
    (Machine(None, "NVIDIA GeForce RTX 5090", "12.0", "1.7.1.116"), "set POLYGRAPHY_USE_TENSORRT_RTX=1"),
])
def test_where_an_ahead_of_time_engine_may_run(machine, expected):
    assert expected in engine_mismatch(RTX_RECORD, machine)


def test_a_failed_engine_leaves_no_engine_behind(tmp_path, tensorrt_rtx, monkeypatch, error_line):
    """The parser 'rejects' the last graph (decode): the three engines written before it are removed and no
    manifest claims any engine."""
    real = ParseOnnx.__call__

    def reject_decode(self, path):
        if path.name == "decode.onnx":
            return Rejection("node_injected", "Injected", "injected failure")
        return real(self, path)

    monkeypatch.setattr(ParseOnnx, "__call__", reject_decode)
    out = tmp_path / "build"
    assert main(["-q", "build", "--backend", "tensorrt-rtx", "--compute-capability", "SM89", "--bucket", BUCKET,
                 "--out", str(out)]) == BuildError.exit_code
    assert error_line() == (f"error: build: TensorRT-RTX {tensorrt_rtx.version} cannot parse decode.onnx: rejected at "
                            "node node_injected (Injected): injected failure")
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".engine" or "partial" in p.name) == []
    manifest = out / "manifest.json"
    assert not manifest.exists() or "engines" not in manifest.read_text()


def test_without_tensorrt_rtx_one_line_exit_9_before_loading_a_model(tmp_path, monkeypatch, error_line):
    import ffexport.models

    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # `import tensorrt_rtx` raises ImportError
    monkeypatch.setattr(ffexport.models, "LoadModel", _never)
    out = tmp_path / "b"
    assert main(["build", "--backend", "tensorrt-rtx", "--compute-capability", "SM89", "--out", str(out)]) == 9
    assert error_line() == f"error: build: TensorRT-RTX is not installed: {trt_toolkit.RTX_INSTALL}"
    assert not out.exists()


def _never(*args, **kwargs):
    raise AssertionError("a model was loaded")


@pytest.mark.parametrize("args, words", [
    (["--compute-capability", "SM90"], "compute capability 'SM90' is not one TensorRT-RTX builds for; choose from "
                                       "SM75, SM80, SM86, SM89, SM120, SM121"),
    ([], "give --compute-capability with one or more of SM75, SM80"),
    (["--compute-capability", "SM89", "--precision", "bf16"], "bf16 graphs cannot be validated here"),
])
def test_bad_tensorrt_rtx_options_are_one_line_exit_2(args, words, tmp_path, tensorrt_rtx, monkeypatch, error_line):
    import ffexport.models

    monkeypatch.setattr(ffexport.models, "LoadModel", _never)
    out = tmp_path / "b"
    assert main(["build", "--backend", "tensorrt-rtx", *args, "--out", str(out)]) == InputError.exit_code
    assert words in error_line()
    assert not out.exists()


def test_compute_capability_is_for_tensorrt_rtx_only(tmp_path, error_line):
    assert main(["build", "--compute-capability", "SM89", "--out", str(tmp_path / "b")]) == InputError.exit_code
    assert "--compute-capability is for --backend tensorrt-rtx" in error_line()


def test_the_decode_profile_allows_what_the_build_allows():
    from ffexport.export.build import BuildConfig

    assert BuildConfig(buckets=(BUCKET,), out=".").max_new_tokens == DEFAULT_MAX_NEW_TOKENS


def test_ci_installs_the_pinned_tensorrt_rtx_and_cannot_skip_its_tests():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert f"pip install --quiet {trt_toolkit.TENSORRT_RTX_PIN}" in ci
    assert "export FFEXPORT_REQUIRE_TENSORRT_RTX=1" in ci
    assert ci.index("export FFEXPORT_REQUIRE_TENSORRT_RTX=1") < next(i for i, line in enumerate(ci) if "pytest" in line)
    assert f'tensorrt-rtx = ["{trt_toolkit.TENSORRT_RTX_PIN}"]' in (root / "pyproject.toml").read_text()

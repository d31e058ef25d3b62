"""The C++ runtime's static decode plan against Python's (ffexport/runtime/kv_cache.py, session.py).

A bucket with ``graphs.decode_static`` (capacities from Python's ``cache_capacities``) and its
schedule in the manifest: ``ffexport-inspect`` prints what ``ffexport::Runtime`` will do before any
engine runs (the same functions: ``plan_static_decode``): whether the static graph decodes or
``decode.engine`` does, each cache's buffer and shape, and per decode step the ``cache_lengths`` input,
the position and which buffer set is past and present. Python's ``StaticCacheDecoder`` is driven over a
recording stand-in for an ONNX Runtime session, so the reference is what kv_cache.py really binds and
writes per step. The engine path itself (src/runtime.cpp) is compiled and link-checked only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ffexport.casedir import save_case_dir
from ffexport.errors import InputError
from ffexport.export.graphs import cache_capacities
from ffexport.fusion.schedule import Schedule, Stage
from ffexport.runtime.kv_cache import StaticCacheDecoder
from test_cpp_runtime import RECORD, one_error_line
from toy_build import HD, KVH, LAYERS, V, ToyBucket, toy_case, write_toy_build

pytestmark = pytest.mark.slow

BUCKET = ToyBucket(8, 112, 112)
N, P = 64, 16
STAGES = (Stage(0, "before_attention", "merge", 20), Stage(1, "after_attention", "prune", 10))
SCHEDULE = Schedule(N, P, STAGES)
MAX_TEXT, BUILD_NEW_TOKENS = 128, 6


class RecordingSession:
    """What StaticCacheDecoder asks of an onnxruntime.InferenceSession over a static decode graph,
    recording the bindings and, at every run, the values bound to the small inputs."""

    def __init__(self, capacities) -> None:
        def arg(name, shape, kind="tensor(float)"):
            return SimpleNamespace(name=name, shape=shape, type=kind)

        caches = [arg(f"{side}.{i}.{kind}", [1, KVH, c, HD]) for side in ("past_key_values",)
                  for i, c in enumerate(capacities) for kind in ("key", "value")]
        self.inputs = [arg("input_ids", [1, 1], "tensor(int64)"), arg("position_ids", [3, 1], "tensor(int64)"),
                       arg("cache_lengths", [len(capacities)], "tensor(int64)"), *caches]
        self.outputs = [arg("logits", [1, V]), *(arg(c.name.replace("past_key_values", "present"), c.shape)
                                                for c in caches)]
        self.bound: dict[str, tuple[str, object]] = {}
        self.runs: list[dict] = []

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outputs

    def io_binding(self):
        session = self

        class Binding:
            def bind_ortvalue_input(self, name, value):
                session.bound[name] = ("input", value)

            def bind_ortvalue_output(self, name, value):
                session.bound[name] = ("output", value)

        return Binding()

    def run_with_iobinding(self, binding) -> None:
        value = {name: v.numpy().copy() for name, (_, v) in self.bound.items()
                 if name in ("input_ids", "position_ids", "cache_lengths")}
        self.runs.append(value)


def python_static_decode(prefill_lengths, capacities, max_new_tokens):
    """Python's decisions and bindings for one prompt: (use, room, runs, bindings) or the InputError."""
    session = RecordingSession(capacities)
    decoder = StaticCacheDecoder(session, capacities)
    presents = {f"{i}.{kind}": np.zeros((1, KVH, n, HD), np.float32)
                for i, n in enumerate(prefill_lengths) for kind in ("key", "value")}
    decoder.start(presents)
    room = decoder.room()
    use = room >= max_new_tokens - 1  # ffexport/runtime/session.py, Runtime._decode
    if use:
        for k in range(max_new_tokens - 1):
            decoder.step(100 + k, 50 + k)
    bindings = []
    for i in range(len(capacities)):
        for kind in ("key", "value"):
            past, present = session.bound[f"past_key_values.{i}.{kind}"][1], session.bound[f"present.{i}.{kind}"][1]
            bindings.append({"past": f"past_key_values.{i}.{kind}", "present": f"present.{i}.{kind}",
                             "shape": list(past.shape()), "same": past.data_ptr() == present.data_ptr(),
                             "ptr": past.data_ptr()})
    return use, room, session.runs, bindings


def add_static_decode(build: Path, capacities, *, engine: bool = False) -> None:
    """The bucket's schedule and static decode graph in the manifest (a placeholder graph file)."""
    graph = build / f"{BUCKET.name}.decode_static.onnx"
    graph.write_bytes(b"static decode graph placeholder")
    path = build / "manifest.json"
    m = json.loads(path.read_text())
    m["files"][graph.name] = {"bytes": graph.stat().st_size, "sha256": hashlib.sha256(graph.read_bytes()).hexdigest()}
    for b in m["buckets"]:
        b["schedule"] = SCHEDULE.to_json()
        b["graphs"]["decode_static"] = {"file": graph.name, "capacities": list(capacities)}
        if engine:
            b["engines"] = {g: dict(RECORD, file=f"{BUCKET.name}.{g}.engine") for g in ("vision", "prefill", "decode_static")}
    if engine:
        m["engines"] = {g: dict(RECORD, file=f"{g}.engine") for g in ("embed", "decode")}
        for record in [*m["engines"].values(), *m["buckets"][0]["engines"].values()]:
            (build / record["file"]).write_bytes(b"not an engine")
            m["files"][record["file"]] = {"bytes": 13, "sha256": "0" * 64}
    path.write_text(json.dumps(m))


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> tuple[Path, int]:
    case = toy_case(BUCKET, text="where does the ball go?")
    folder = tmp_path_factory.mktemp("case") / "case"
    save_case_dir(case, folder)
    return folder, case.input_ids.shape[1]


@pytest.fixture(scope="module")
def static_build(tmp_path_factory) -> Path:
    build = write_toy_build(tmp_path_factory.mktemp("static") / "build", buckets=(BUCKET,), max_text=MAX_TEXT)
    add_static_decode(build, cache_capacities(SCHEDULE, LAYERS, max_text=MAX_TEXT, max_new_tokens=BUILD_NEW_TOKENS))
    return build


def inspect_static(cpp_build, build, case, new_tokens, *extra):
    done = cpp_build.run_inspect(build, case, "--max-new-tokens", new_tokens, *extra)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["plan"] | out["layout"] | {"static_decode": out["static_decode"]}


def test_manifest_reads_the_static_decode_graph(cpp_build, static_build):
    bucket = json.loads(cpp_build.run_inspect(static_build).stdout)["manifest"]["buckets"][0]
    want = cache_capacities(SCHEDULE, LAYERS, max_text=MAX_TEXT, max_new_tokens=BUILD_NEW_TOKENS)
    assert bucket["decode_static"] == {"file": f"{BUCKET.name}.decode_static.onnx", "capacities": want}


@pytest.mark.parametrize("new_tokens", [2, 5, 64])
def test_static_decode_plan_equals_python(cpp_build, static_build, case_dir, new_tokens):
    case, length = case_dir
    plan = inspect_static(cpp_build, static_build, case, new_tokens, "--static-decode", "in-place")
    s = plan["static_decode"]
    capacities = cache_capacities(SCHEDULE, LAYERS, max_text=MAX_TEXT, max_new_tokens=BUILD_NEW_TOKENS)
    lengths = cache_capacities(SCHEDULE, LAYERS, max_text=length - N, max_new_tokens=0)
    use, room, runs, bindings = python_static_decode(lengths, capacities, new_tokens)

    assert s["capacities"] == capacities and s["prefill_lengths"] == lengths == plan["cache_lengths"]
    assert (s["use"], s["room"]) == (use, room)
    assert use == (new_tokens <= 6)  # every prompt fits BUILD_NEW_TOKENS new tokens
    assert s["engine"] is False  # the build records no engine for it: ffexport::Runtime decodes with decode.engine
    # one buffer per cache, bound as past and present, of the capacity's rows
    assert all(b["same"] for b in bindings) and len({b["ptr"] for b in bindings}) == 2 * LAYERS
    assert s["sets"] == 1
    assert s["bindings"] == [{k: b[k] for k in ("past", "present", "shape")} for b in bindings]
    if use:
        assert [st["cache_lengths"] for st in s["steps"]] == [r["cache_lengths"].tolist() for r in runs]
        assert len(s["steps"]) == new_tokens - 1
        first = length + plan["delta"]
        assert [st["position"] for st in s["steps"]] == [first + k for k in range(new_tokens - 1)]
        assert [r["position_ids"].reshape(-1).tolist() for r in runs] == [[50 + k] * 3 for k in range(new_tokens - 1)]
        assert all(st["past_set"] == st["present_set"] == 0 for st in s["steps"])
    else:
        assert s["steps"] == [] and "decode.engine decodes" in s["reason"]


def test_fallback_boundary_equals_python(cpp_build, static_build, case_dir):
    """The largest budget the static caches take, and one more, decided alike."""
    case, length = case_dir
    capacities = cache_capacities(SCHEDULE, LAYERS, max_text=MAX_TEXT, max_new_tokens=BUILD_NEW_TOKENS)
    lengths = cache_capacities(SCHEDULE, LAYERS, max_text=length - N, max_new_tokens=0)
    room = min(c - n for c, n in zip(capacities, lengths))
    for new_tokens in (room, room + 1, room + 2):
        s = inspect_static(cpp_build, static_build, case, new_tokens)["static_decode"]
        assert s["use"] == python_static_decode(lengths, capacities, new_tokens)[0] == (new_tokens <= room + 1)


def test_two_sets_swap_past_and_present(cpp_build, static_build, case_dir):
    case, _ = case_dir
    s = inspect_static(cpp_build, static_build, case, 6, "--static-decode", "two-sets")["static_decode"]
    assert s["use"] and s["sets"] == 2
    steps = s["steps"]
    assert steps[0]["past_set"] == 0  # the prefill's caches are copied into set 0
    for a, b in zip(steps, steps[1:]):
        assert a["past_set"] != a["present_set"] and b["past_set"] == a["present_set"]  # what a step wrote, the next reads
    off = inspect_static(cpp_build, static_build, case, 6, "--static-decode", "off")["static_decode"]
    assert not off["use"] and off["reason"] == "the static decode is turned off"
    line = one_error_line(cpp_build.run_inspect(static_build, case, "--static-decode", "sideways"), "input", 2)
    assert "--static-decode takes in-place, two-sets or off, got 'sideways'" in line


def test_a_prompt_cache_filling_its_capacity_is_python_s_error(cpp_build, tmp_path, case_dir):
    case, length = case_dir
    lengths = cache_capacities(SCHEDULE, LAYERS, max_text=length - N, max_new_tokens=0)
    capacities = [lengths[0], lengths[1] + 4]  # layer 0 has no row left: a corrupt build
    build = write_toy_build(tmp_path / "build", buckets=(BUCKET,), max_text=MAX_TEXT)
    add_static_decode(build, capacities)
    with pytest.raises(InputError) as python:
        python_static_decode(lengths, capacities, 3)
    line = one_error_line(cpp_build.run_inspect(build, case, "--max-new-tokens", 3), "input", 2)
    assert str(python.value) in line
    assert cpp_build.run_inspect(build, case, "--max-new-tokens", 1).returncode == 0  # no decode step: no check


def test_capacities_must_cover_every_layer(cpp_build, tmp_path):
    build = write_toy_build(tmp_path / "build", buckets=(BUCKET,), max_text=MAX_TEXT)
    add_static_decode(build, [100])
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert "graphs.decode_static.capacities has 1 entries for 2 layers" in line


def test_the_static_decode_engine_is_checked_with_the_others(cpp_build, tmp_path, case_dir):
    case, _ = case_dir
    build = write_toy_build(tmp_path / "build", buckets=(BUCKET,), max_text=MAX_TEXT)
    add_static_decode(build, cache_capacities(SCHEDULE, LAYERS, max_text=MAX_TEXT, max_new_tokens=BUILD_NEW_TOKENS),
                      engine=True)
    here = ["--tensorrt", "10.14.1", "--compute-capability", "9.0"]
    done = cpp_build.run_inspect(build, case, *here)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["static_decode"]["engine"] is True
    m = json.loads((build / "manifest.json").read_text())
    m["buckets"][0]["engines"]["decode_static"]["tensorrt"] = "10.9.0"
    (build / "manifest.json").write_text(json.dumps(m))
    line = one_error_line(cpp_build.run_inspect(build, case, *here), "run", 8)
    assert f"{BUCKET.name}.decode_static.engine was built by TensorRT 10.9.0" in line
    assert cpp_build.run_inspect(build, case, *here, "--static-decode", "off").returncode == 0  # not needed then
    m["buckets"][0]["engines"]["decode_static"]["tensorrt"] = RECORD["tensorrt"]
    (build / "manifest.json").write_text(json.dumps(m))
    (build / f"{BUCKET.name}.decode_static.engine").unlink()
    m = json.loads((build / "manifest.json").read_text())
    del m["files"][f"{BUCKET.name}.decode_static.engine"]
    (build / "manifest.json").write_text(json.dumps(m))
    assert f"{BUCKET.name}.decode_static.engine is missing" in one_error_line(
        cpp_build.run_inspect(build, case, *here), "run", 8)

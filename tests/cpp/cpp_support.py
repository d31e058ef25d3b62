"""Build cpp/ with CMake once per test session (shared by tests/cpp and tests/runtime/test_cpp_real_build.py).

The CMake build needs cmake, a C++17 compiler and nlohmann_json (Debian: nlohmann-json3-dev; .ci/run
installs it). The TensorRT part is compiled against the public TensorRT headers of the PyPI package
kernel-lens when it is installed, plus the CUDA toolkit's headers. Nothing here needs TensorRT's
library or a GPU; what does (ffexport-run) is compile-checked only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL_LENS_HINT = "pip install --no-deps kernel-lens==2.0.1"
NO_JSON = "nlohmann_json 3 not found"


def kernel_lens_headers() -> Path | None:
    """The public TensorRT headers inside the PyPI package kernel-lens, when installed."""
    spec = importlib.util.find_spec("kernel_lens")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "include" / "tensorrt"
    return folder if (folder / "NvInferRuntime.h").is_file() else None


@dataclass(frozen=True)
class CppBuild:
    folder: Path
    configure_log: str
    tensorrt_headers: Path | None

    @property
    def inspect(self) -> Path:
        return self.folder / "ffexport-inspect"

    @property
    def core_test(self) -> Path:
        return self.folder / "ffexport_core_test"

    def run_inspect(self, *args: object) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.inspect), *map(str, args)], capture_output=True, text=True, timeout=60)


def build_cpp(tmp_path_factory: pytest.TempPathFactory) -> CppBuild:
    """cpp/ configured and built (-O0: the tests check behaviour, not speed), once per session:
    the result is kept in the session's base temp folder. Skips (with the reason) without cmake or
    nlohmann_json."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: the C++ runtime cannot be built here")
    folder = tmp_path_factory.getbasetemp() / "ffexport-cppbuild"
    log, done_marker = folder / "configure.log", folder / "build.ok"
    headers = kernel_lens_headers()
    if not done_marker.is_file():
        configure = ["cmake", "-S", str(ROOT / "cpp"), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Debug",
                     "-DCMAKE_CXX_FLAGS_DEBUG=-O0"]
        if headers is not None:
            configure.append(f"-DTensorRT_INCLUDE_DIR={headers}")
        done = subprocess.run(configure, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"cmake configure failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        log.write_text(done.stdout)
        if NO_JSON not in done.stdout:
            built = subprocess.run(["cmake", "--build", str(folder), "-j2"], capture_output=True, text=True, timeout=900)
            assert built.returncode == 0, f"cmake --build failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
        done_marker.write_text("ok\n")
    configure_log = log.read_text()
    if NO_JSON in configure_log:
        pytest.skip("nlohmann_json is not installed (apt-get install nlohmann-json3-dev): the C++ runtime is skipped")
    return CppBuild(folder, configure_log, headers)


# ---------------------------------------------------------------- the C++ plan against the Python runtime
def python_run(monkeypatch, build: Path, case: Path, tokens: int = 5):
    """The Python runtime's generate on ``case`` with what the C++ plan is compared to recorded: the
    position ids and delta, each layer's prompt cache length, and every decode step's lengths and position."""
    from ffexport.case import load_case
    from ffexport.runtime import Runtime, session
    from ffexport.runtime.kv_cache import StaticCacheDecoder

    seen: dict = {"steps": []}
    python_positions, start, step = session.position_ids, StaticCacheDecoder.start, StaticCacheDecoder.step

    def recording_positions(model, input_ids, video_grid_thw):
        seen["positions"], seen["delta"] = python_positions(model, input_ids, video_grid_thw)
        return seen["positions"], seen["delta"]

    def recording_start(self, presents):
        start(self, presents)
        seen.update(lengths=[int(presents[f"{i}.key"].shape[2]) for i in range(self.num_layers)])

    def recording_step(self, token, position):
        seen["steps"].append({"cache_lengths": [int(x) for x in self._base + self.steps], "position": int(position)})
        return step(self, token, position)

    monkeypatch.setattr(session, "position_ids", recording_positions)
    monkeypatch.setattr(StaticCacheDecoder, "start", recording_start)
    monkeypatch.setattr(StaticCacheDecoder, "step", recording_step)
    return seen, Runtime(build).generate(load_case(case), max_new_tokens=tokens)


def onnxruntime_tokens(build: Path, out: dict, dump: Path, tokens: int) -> list[int]:
    """Greedy tokens from the build's ONNX graphs run by ONNX Runtime the way ``ffexport::Runtime`` runs their
    engines (src/runtime.cpp), fed only from ``ffexport-inspect``'s answer ``out`` and its ``--dump`` folder:
    embed on the dumped input_ids; vision on the dumped pixels; its ``feature_rows`` rows written over the
    plan's block rows in order; the prefill with the dumped positions, the plan's ``video_start`` and, when
    the plan says so, the vision graph's ``deepstack_features`` as they are; then the static decode graph
    with the plan's per-step ``cache_lengths`` and positions (two cache sets, as the default binding), or
    ``decode`` at the plan's decode positions. Nothing here comes from the Python runtime."""
    import onnxruntime as ort

    manifest = json.loads((build / "manifest.json").read_text())
    plan, layout, static = out["plan"], out["layout"], out.get("static_decode")
    bucket = next(b for b in manifest["buckets"] if b["name"] == plan["bucket"])
    eos = set(np.atleast_1d(manifest["model"]["eos_token_id"]).tolist())

    def runner(graph: dict):
        session = ort.InferenceSession(str(build / graph["file"]), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda feeds: dict(zip(names, session.run(None, feeds)))

    def caches(outputs: dict) -> dict:
        return {"past_key_values." + k[len("present."):]: v for k, v in outputs.items() if k.startswith("present.")}

    embeds = runner(manifest["graphs"]["embed"])({"input_ids": np.load(dump / "input_ids.npy")})["inputs_embeds"].copy()
    vision = runner(bucket["graphs"]["vision"])({"pixel_values_videos": np.load(dump / "pixel_values_videos.npy")})
    rows = np.concatenate([np.arange(a, b) for a, b in layout["blocks"]])
    assert vision["video_features"].shape[0] == layout["feature_rows"] == rows.size
    embeds[0, rows] = vision["video_features"]
    feeds = {"inputs_embeds": embeds, "position_ids": np.load(dump / "position_ids.npy"),
             "video_start": np.array(plan["video_start"], dtype=np.int64)}
    if layout["deepstack"] is not None:
        assert list(vision["deepstack_features"].shape) == layout["deepstack"]
        feeds["deepstack_features"] = vision["deepstack_features"]
    prefill = runner(bucket["graphs"]["prefill"])(feeds)
    past = caches(prefill)
    if static is not None and static["use"]:  # the prefill's caches in the first rows of the static ones
        decode = runner(bucket["graphs"]["decode_static"])
        for name, value in past.items():
            cache = np.zeros((*value.shape[:2], static["capacities"][int(name.split(".")[1])], value.shape[3]),
                             value.dtype)
            cache[:, :, :value.shape[2]] = value
            past[name] = cache
        steps = [({"cache_lengths": np.array(s["cache_lengths"], dtype=np.int64)}, s["position"])
                 for s in static["steps"]]
    else:
        decode = runner(manifest["graphs"]["decode"])
        steps = [({}, position) for position in plan["decode_positions"]]
    result = [int(np.argmax(prefill["logits"][0]))]
    for extra, position in steps[:tokens - 1]:
        if result[-1] in eos:
            break
        values = decode({"input_ids": np.array([[result[-1]]], dtype=np.int64),
                         "position_ids": np.full((3, 1), position, dtype=np.int64), **extra, **past})
        past = caches(values)
        result.append(int(np.argmax(values["logits"][0])))
    return result


def cpp_against_python(cpp: CppBuild, build: Path, case: Path, tmp_path: Path, monkeypatch, tokens: int = 5):
    """``ffexport-inspect`` on ``case`` and the Python runtime's generate on the same folder, checked equal where
    they must be: positions (what Python fed its prefill), delta, decode positions, per-layer cache lengths, the
    static decode steps, and the tokens ONNX Runtime gives when driven by the C++ plan alone
    (:func:`onnxruntime_tokens`). Returns (the C++ answer, the Python recording, the Python result)."""
    dump = tmp_path / "cpp-dump"
    done = cpp.run_inspect(build, case, "--dump", dump, "--max-new-tokens", tokens)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    seen, result = python_run(monkeypatch, build, case, tokens)
    plan = out["plan"]
    length, delta = plan["length"], plan["delta"]
    assert np.array_equal(np.load(dump / "position_ids.npy"), seen["positions"]) and delta == seen["delta"]
    assert plan["decode_positions"] == [length + k + delta for k in range(tokens - 1)]
    assert out["layout"]["cache_lengths"] == seen["lengths"]
    n = result.generated_ids.shape[1]
    if out.get("static_decode", {}).get("use"):
        assert [{k: s[k] for k in ("cache_lengths", "position")} for s in out["static_decode"]["steps"][:n - 1]] == \
            seen["steps"]
    assert onnxruntime_tokens(build, out, dump, tokens) == result.generated_ids[0].tolist()
    return out, seen, result

"""The C++ runtime (cpp/): built with CMake, its TensorRT-free parts run against the Python side.

``ffexport-inspect`` (TensorRT-free) reads a build and a case folder exactly as ``ffexport-run``
does before any engine runs: manifest, .npy inputs, bucket choice, M-RoPE positions, decode
positions, and the engine checks (TensorRT version, GPU compute capability, plugins, files). Its
answers are compared with ffexport's Python runtime. The TensorRT/CUDA part (src/runtime.cpp,
src/trt_engine.cpp, tools/ffexport_run.cpp) is compiled against the public TensorRT headers but
cannot run here: no machine of this project has libnvinfer or a TensorRT engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cpp_support import KERNEL_LENS_HINT
from ffexport.casedir import save_case_dir
from ffexport.mrope import mrope_position_ids
from ffexport.runtime.manifest import load_manifest
from toy_build import DEFAULT_BUCKETS, ToyBucket, toy_case, write_toy_build

pytestmark = pytest.mark.slow  # the session's CMake build takes 15-60 s on two busy cores


def one_error_line(done: subprocess.CompletedProcess, stage: str, code: int) -> str:
    """The single "error: <stage>: ..." line of a failed run (nothing on stdout, no abort)."""
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {stage}: "), lines[0]
    assert done.stdout == ""
    return lines[0]


def test_core_unit_checks(cpp_build):
    done = subprocess.run([str(cpp_build.core_test)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "all checks passed" in done.stdout


def test_tensorrt_parts_compile_against_the_public_headers(cpp_build):
    if cpp_build.tensorrt_headers is None:
        pytest.skip(f"no TensorRT headers (kernel-lens not installed: {KERNEL_LENS_HINT}): nothing to compile-check")
    assert "compiled as an OBJECT library (compile check only)" in cpp_build.configure_log
    objects = {p.name for p in cpp_build.folder.rglob("*.o")}
    assert {"runtime.cpp.o", "trt_engine.cpp.o", "ffexport_run.cpp.o"} <= objects, sorted(objects)


def test_the_program_links_but_for_tensorrt_entry_points(cpp_build):
    """ffexport-run + the runtime linked as a shared object without libnvinfer: the only symbols left
    undefined (besides the versioned C/C++ and CUDA runtime ones) are TensorRT's C entry points."""
    if cpp_build.tensorrt_headers is None:
        pytest.skip(f"no TensorRT headers (kernel-lens not installed: {KERNEL_LENS_HINT}): nothing to link-check")
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    library = cpp_build.folder / "libffexport_run_linkcheck.so"
    listing = subprocess.run(["nm", "-D", "--undefined-only", str(library)], capture_output=True, text=True, check=True)
    missing = {line.split()[-1] for line in listing.stdout.splitlines() if line.split()[0] == "U" and "@" not in line}
    assert missing == {"createInferRuntime_INTERNAL", "getInferLibVersion"}


def test_manifest_reads_as_in_python(cpp_build, toy_build_dir):
    done = cpp_build.run_inspect(toy_build_dir)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)["manifest"]
    want = load_manifest(toy_build_dir)
    m = want.model
    assert got["model"] | {"eos_token_ids": tuple(got["model"]["eos_token_ids"])} == {
        "name": m.name, "family": m.family, "num_layers": m.num_layers, "hidden_size": m.hidden_size,
        "vocab_size": m.vocab_size, "num_kv_heads": m.num_kv_heads, "head_dim": m.head_dim,
        "video_token_id": m.video_token_id, "eos_token_ids": m.eos_token_ids, "spatial_merge_size": m.spatial_merge_size,
        "patch_size": m.patch_size, "temporal_patch_size": m.temporal_patch_size, "patch_dim": m.patch_dim,
        "position_rule": m.position_rule, "temporal_step": m.temporal_step,
        "frame_size": m.frame_preprocess["size"] if m.frame_preprocess else 0,
        "trailing_video_tokens": m.trailing_video_tokens, "video_text": m.video_text}
    assert [(b["name"], tuple(b["grid_thw"]), b["visual_tokens"], b["usable"], b["vision"], b["prefill"])
            for b in got["buckets"]] == [(b.name, b.grid_thw, b.visual_tokens, b.usable, b.vision, b.prefill)
                                          for b in want.all_buckets]
    assert got["graphs"] == want.graphs and got["max_text"] == want.max_text and got["files"] == len(want.files)
    assert got["ops"] == "standard" and got["engines"] == {}


@pytest.mark.parametrize("bucket", [b for b in DEFAULT_BUCKETS if b.usable], ids=lambda b: b.name)
def test_case_folder_round_trip_positions_and_bucket(cpp_build, toy_build_dir, tmp_path, bucket):
    case = toy_case(bucket, text="what is moving, and where does it go?", seed=3)
    save_case_dir(case, tmp_path / "case")
    done = cpp_build.run_inspect(toy_build_dir, tmp_path / "case", "--dump", tmp_path / "dump", "--max-new-tokens", 5)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]

    dump = {p.stem: np.load(p) for p in (tmp_path / "dump").glob("*.npy")}
    for key in ("input_ids", "pixel_values_videos", "video_grid_thw"):
        expected = getattr(case, key)
        assert dump[key].dtype == expected.dtype and np.array_equal(dump[key], expected), key
    positions, delta = mrope_position_ids(case.input_ids, case.video_grid_thw, video_token_id=263, spatial_merge_size=2)
    assert dump["position_ids"].dtype == np.int64 and np.array_equal(dump["position_ids"], positions)
    length = case.input_ids.shape[1]
    start, end = case.video_span(263)
    assert plan == {"bucket": bucket.name, "length": length, "video_start": start, "video_end": end, "delta": delta,
                    "decode_positions": [length + k + delta for k in range(4)]}
    # one frame block; the toy manifest records no schedule stages, hence no lengths and no static decode
    assert json.loads(done.stdout)["layout"] == {"blocks": [[start, end]], "cache_lengths": [], "feature_rows": end - start,
                                                 "trailing": 0, "deepstack": None}
    assert "static_decode" not in json.loads(done.stdout)


def test_positions_when_frames_outnumber_rows(cpp_build, tmp_path):
    """t > h/2, w/2: the released rule continues the text after the video's LAST frame (the case
    transformers 5.3+ gets wrong), so the delta depends on the frame count."""
    bucket = ToyBucket(16, 56, 28)  # grid (8, 4, 2): 8 frames of 2x1 merged patches
    build = write_toy_build(tmp_path / "build", buckets=(bucket,))
    case = toy_case(bucket)
    save_case_dir(case, tmp_path / "case")
    done = cpp_build.run_inspect(build, tmp_path / "case", "--dump", tmp_path / "dump")
    assert done.returncode == 0, done.stderr
    positions, delta = mrope_position_ids(case.input_ids, case.video_grid_thw, video_token_id=263, spatial_merge_size=2)
    assert np.array_equal(np.load(tmp_path / "dump" / "position_ids.npy"), positions)
    start, end = case.video_span(263)
    assert json.loads(done.stdout)["plan"]["delta"] == delta == 8 - (end - start)


def _arrays(bucket=DEFAULT_BUCKETS[0]):
    case = toy_case(bucket)
    return {"input_ids": case.input_ids, "pixel_values_videos": case.pixel_values_videos,
            "video_grid_thw": case.video_grid_thw}


def _write(folder: Path, arrays: dict) -> Path:
    folder.mkdir()
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value)
    return folder


@pytest.mark.parametrize("convert", [
    lambda a: a | {"input_ids": a["input_ids"].reshape(-1).astype(np.int32)},
    lambda a: a | {"pixel_values_videos": np.asfortranarray(a["pixel_values_videos"].astype(np.float16))},
    lambda a: a | {"pixel_values_videos": a["pixel_values_videos"].astype(np.float64) / 3},
    lambda a: a | {"video_grid_thw": a["video_grid_thw"].reshape(3).astype(np.uint16)},
], ids=["int32-ids-1d", "float16-fortran-pixels", "float64-pixels", "uint16-grid-1d"])
def test_npy_dtypes_and_layouts(cpp_build, toy_build_dir, tmp_path, convert):
    arrays = convert(_arrays())
    folder = _write(tmp_path / "case", arrays)
    done = cpp_build.run_inspect(toy_build_dir, folder, "--dump", tmp_path / "dump")
    assert done.returncode == 0, done.stderr
    for key, value in arrays.items():
        got = np.load(tmp_path / "dump" / f"{key}.npy")
        kind = np.float32 if value.dtype.kind == "f" else np.int64
        assert np.array_equal(got.reshape(-1), value.astype(kind).reshape(-1)), key


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a | {"pixel_values_videos": a["pixel_values_videos"].astype(">f4")}, "is big-endian ('>f4')"),
    (lambda a: a | {"input_ids": a["input_ids"].astype(np.float32)}, "input_ids must be integers, got float32"),
    (lambda a: a | {"pixel_values_videos": np.where(np.arange(a["pixel_values_videos"].size).reshape(
        a["pixel_values_videos"].shape) == 7, np.nan, a["pixel_values_videos"]).astype(np.float32)}, "NaN or infinite"),
    (lambda a: a | {"video_grid_thw": np.array([[4, 8, 10]])}, "video span in input_ids has 64 tokens but video_grid_thw 4x8x10 gives 80"),
    (lambda a: a | {"pixel_values_videos": a["pixel_values_videos"][:128]}, "pixel_values_videos has 128 rows; video_grid_thw 4x8x8 needs 256"),
    (lambda a: a | {"pixel_values_videos": a["pixel_values_videos"][:, :100]}, "rows have 100 values; the model expects 1176"),
    (lambda a: a | {"input_ids": np.where(a["input_ids"] == 263, 5, a["input_ids"])}, "exactly one contiguous run of video tokens"),
    (lambda a: a | {"input_ids": np.concatenate([a["input_ids"], [[999]]], axis=1)}, "outside the model's vocabulary [0, 272)"),
    (lambda a: a | {"input_ids": np.concatenate([a["input_ids"], np.ones((1, 200), np.int64)], axis=1)},
     "this build takes at most 128"),
])
def test_bad_inputs_are_one_line(cpp_build, toy_build_dir, tmp_path, mutate, message):
    folder = _write(tmp_path / "case", mutate(_arrays()))
    line = one_error_line(cpp_build.run_inspect(toy_build_dir, folder), "input", 2)
    assert message in line


def test_damaged_npy_and_missing_files(cpp_build, toy_build_dir, tmp_path):
    folder = _write(tmp_path / "case", _arrays())
    pixels = folder / "pixel_values_videos.npy"
    pixels.write_bytes(pixels.read_bytes()[:-100])
    assert "(truncated)" in one_error_line(cpp_build.run_inspect(toy_build_dir, folder), "input", 2)
    pixels.unlink()
    assert "lacks pixel_values_videos.npy" in one_error_line(cpp_build.run_inspect(toy_build_dir, folder), "input", 2)
    assert "is not an inputs folder" in one_error_line(cpp_build.run_inspect(toy_build_dir, tmp_path / "nope"), "input", 2)


def test_a_grid_without_a_usable_bucket_lists_the_buckets(cpp_build, toy_build_dir, tmp_path):
    unusable = DEFAULT_BUCKETS[2]
    folder = _write(tmp_path / "case", _arrays(unusable))
    line = one_error_line(cpp_build.run_inspect(toy_build_dir, folder), "input", 2)
    assert "the case's video grid 8x8x8 matches no usable bucket" in line
    assert "16x112x112 (16 frames, 112x112) [not usable: failed its parity check] grid 8x8x8" in line


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "manifest.json").unlink(), "has no manifest.json: the build is corrupt or incomplete"),
    (lambda b: _edit(b, lambda m: m | {"format": "ffexport.manifest/2"}),
     "has format 'ffexport.manifest/2'; this runtime reads 'ffexport.manifest/1'"),
    (lambda b: (b / "manifest.json").write_text("{\"format\": "), "is not valid JSON"),
    (lambda b: _edit(b, lambda m: m | {"model": {k: v for k, v in m["model"].items() if k != "head_dim"}}),
     "model.head_dim is missing"),
    (lambda b: (b / "weights.bin").write_bytes(b"\0" * 10), "weights.bin is 10 bytes, the manifest says"),
    (lambda b: (b / "decode.onnx").unlink(), "decode.onnx is missing"),
    (lambda b: _edit(b, lambda m: m | {"graphs": {**m["graphs"], "embed": {"file": "../embed.onnx"}}}),
     "names a path outside the build directory"),
])
def test_a_damaged_build_is_one_line(cpp_build, toy_build_dir, tmp_path, damage, message):
    build = tmp_path / "build"
    shutil.copytree(toy_build_dir, build)
    damage(build)
    assert message in one_error_line(cpp_build.run_inspect(build), "input", 2)


def _edit(build: Path, change) -> None:
    path = build / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


RECORD = {"tensorrt": "10.14.1.48", "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
          "plugins": []}


@pytest.fixture()
def engine_build(toy_build_dir, tmp_path) -> Path:
    """A copy of the toy build whose manifest records engines (the engine files hold no engine)."""
    out = tmp_path / "build"
    shutil.copytree(toy_build_dir, out)

    def add(m):
        for b in m["buckets"]:
            if b["usable"]:
                b["engines"] = {g: dict(RECORD, file=b["graphs"][g]["file"].replace(".onnx", ".engine"))
                                for g in ("vision", "prefill")}
        m["engines"] = {g: dict(RECORD, file=f"{g}.engine") for g in ("embed", "decode")}
        for record in [*m["engines"].values(), *(r for b in m["buckets"] for r in b.get("engines", {}).values())]:
            (out / record["file"]).write_bytes(b"not an engine")
            m["files"][record["file"]] = {"bytes": 13, "sha256": "0" * 64}
        return m

    _edit(out, add)
    return out


@pytest.mark.parametrize("machine, code, message", [
    (["--tensorrt", "10.14.1", "--compute-capability", "9.0", "--gpu-name", "NVIDIA H200"], 0, None),
    (["--tensorrt", "10.9.0", "--compute-capability", "9.0"], 8,
     "embed.engine was built by TensorRT 10.14.1.48; this machine has TensorRT 10.9.0: rebuild the engines here "
     "with `ffexport build --backend tensorrt`"),
    (["--tensorrt", "10.14.1", "--compute-capability", "8.9", "--gpu-name", "NVIDIA L4"], 8,
     "embed.engine was built for NVIDIA H100 80GB HBM3 (compute capability 9.0); this GPU is NVIDIA L4 "
     "(compute capability 8.9)"),
    (["--tensorrt", "10.14.1"], 8, "embed.engine needs an NVIDIA GPU (built for NVIDIA H100 80GB HBM3); none is visible here"),
])
def test_engines_are_checked_against_the_machine(cpp_build, engine_build, machine, code, message):
    done = cpp_build.run_inspect(engine_build, *machine)
    if message is None:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["engines_ok"] is True
    else:
        assert message in one_error_line(done, "run", code)


def test_engine_records_files_and_plugins(cpp_build, engine_build, toy_build_dir, tmp_path):
    here = ["--tensorrt", "10.14.1", "--compute-capability", "9.0"]
    line = one_error_line(cpp_build.run_inspect(toy_build_dir, *here), "input", 2)
    assert "the build has no TensorRT engine for its embed graph" in line and "--backend tensorrt" in line

    _edit(engine_build, lambda m: m | {"ops": "plugin"})
    line = one_error_line(cpp_build.run_inspect(engine_build, *here), "input", 2)
    assert "8x112x112.prefill.engine uses the FrameFusion plugin ops" in line and "--plugins" in line
    assert cpp_build.run_inspect(engine_build, *here, "--plugins", "libffexport_plugins.so").returncode == 0

    def recorded(m):
        m["engines"]["decode"]["plugins"] = ["build/libffexport_plugins.so"]
        return m | {"ops": "standard"}

    _edit(engine_build, recorded)
    line = one_error_line(cpp_build.run_inspect(engine_build, *here), "input", 2)
    assert "decode.engine was built with the plugin libraries build/libffexport_plugins.so; pass them with --plugins" in line

    _edit(engine_build, lambda m: m | {"engines": {**m["engines"], "decode": dict(RECORD, file="decode2.engine")}})
    line = one_error_line(cpp_build.run_inspect(engine_build, *here), "run", 8)
    assert "decode2.engine is missing" in line


def test_case_bucket_engines_only(cpp_build, engine_build, tmp_path):
    """With a case, only its bucket's engines (and the shared ones) must be present."""
    here = ["--tensorrt", "10.14.1", "--compute-capability", "9.0"]
    (engine_build / "4x112x224.vision.engine").unlink()
    _edit(engine_build, lambda m: m | {"files": {k: v for k, v in m["files"].items() if k != "4x112x224.vision.engine"}})
    case = tmp_path / "case"
    save_case_dir(toy_case(DEFAULT_BUCKETS[0]), case)
    done = cpp_build.run_inspect(engine_build, case, *here)
    assert done.returncode == 0, done.stderr
    assert "4x112x224.vision.engine is missing" in one_error_line(cpp_build.run_inspect(engine_build, *here), "run", 8)

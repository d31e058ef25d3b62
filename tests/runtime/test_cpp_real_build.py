"""The C++ runtime's TensorRT-free side (cpp/, ``ffexport-inspect``) on real `ffexport build`s of the tiny
models (qwen2vl-tiny; qwen2.5vl-tiny, whose positions count time) and case folders written by
`ffexport case --format npy` (tests/cpp has the rest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpp"))
from cpp_support import build_cpp, python_run  # noqa: E402

from ffexport.case import load_case  # noqa: E402
from ffexport.cli import main  # noqa: E402
from ffexport.mrope import mrope_position_ids  # noqa: E402
from ffexport.runtime.manifest import load_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QWEN25_BUCKET = "8x112x112"


def test_cpp_reads_a_real_build_and_case_folder(real_build_dir, real_bucket, tmp_path, tmp_path_factory):
    cpp = build_cpp(tmp_path_factory)
    case = tmp_path / "case"
    assert main(["-q", "case", "--video", "synthetic:pan", "--seed", "2", "--format", "npy", "--out", str(case)]) == 0
    done = cpp.run_inspect(real_build_dir, case, "--dump", tmp_path / "dump", "--max-new-tokens", 3)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    manifest = load_manifest(real_build_dir)
    m = manifest.model
    assert {k: out["manifest"]["model"][k] for k in ("name", "num_layers", "hidden_size", "vocab_size", "num_kv_heads",
                                                      "head_dim", "video_token_id")} == {
        "name": m.name, "num_layers": m.num_layers, "hidden_size": m.hidden_size, "vocab_size": m.vocab_size,
        "num_kv_heads": m.num_kv_heads, "head_dim": m.head_dim, "video_token_id": m.video_token_id}
    assert [b["name"] for b in out["manifest"]["buckets"] if b["usable"]] == [real_bucket]
    c = load_case(case)
    positions, delta = mrope_position_ids(c.input_ids, c.video_grid_thw, video_token_id=m.video_token_id,
                                          spatial_merge_size=m.spatial_merge_size)
    assert np.array_equal(np.load(tmp_path / "dump" / "position_ids.npy"), positions)
    assert np.array_equal(np.load(tmp_path / "dump" / "pixel_values_videos.npy"), c.pixel_values_videos)
    assert np.array_equal(np.load(tmp_path / "dump" / "input_ids.npy"), c.input_ids)
    length = c.input_ids.shape[1]
    start, end = c.video_span(m.video_token_id)
    assert out["plan"] == {"bucket": real_bucket, "length": length, "video_start": start, "video_end": end,
                           "delta": delta, "decode_positions": [length + delta, length + 1 + delta]}


@pytest.mark.slow
def test_cpp_static_decode_plan_on_a_real_build(real_build_dir, tmp_path, tmp_path_factory, monkeypatch):
    """On a real build (schedule stages and a static decode graph in its manifest) the C++ plan's
    per-layer prefill lengths, capacities, room, per-step cache_lengths and positions are what the
    Python runtime's StaticCacheDecoder sees when ONNX Runtime runs the same case."""
    from ffexport.runtime import Runtime
    from ffexport.runtime.kv_cache import StaticCacheDecoder

    cpp = build_cpp(tmp_path_factory)
    case = tmp_path / "case"
    assert main(["-q", "case", "--video", "synthetic:pan", "--seed", "3", "--format", "npy", "--out", str(case)]) == 0
    done = cpp.run_inspect(real_build_dir, case, "--max-new-tokens", 5)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    seen: dict = {"steps": []}
    start, step = StaticCacheDecoder.start, StaticCacheDecoder.step

    def recording_start(self, presents):
        start(self, presents)
        seen.update(lengths=[int(presents[f"{i}.key"].shape[2]) for i in range(self.num_layers)],
                    capacities=list(self.capacities), room=self.room())

    def recording_step(self, token, position):
        seen["steps"].append({"cache_lengths": [int(x) for x in self._base + self.steps], "position": int(position)})
        return step(self, token, position)

    monkeypatch.setattr(StaticCacheDecoder, "start", recording_start)
    monkeypatch.setattr(StaticCacheDecoder, "step", recording_step)
    result = Runtime(real_build_dir).generate(load_case(case), max_new_tokens=5)
    s = out["static_decode"]
    assert out["layout"]["cache_lengths"] == s["prefill_lengths"] == seen["lengths"]  # the prefill's real caches
    assert (s["capacities"], s["room"]) == (seen["capacities"], seen["room"])
    assert s["use"] is True and s["engine"] is False  # an ONNX Runtime build: no engine, decode.engine would run
    n = result.generated_ids.shape[1]
    assert len(seen["steps"]) == n - 1 >= 1, n  # the tiny model's tokens for this case: no early EOS
    assert [{k: st[k] for k in ("cache_lengths", "position")} for st in s["steps"][:n - 1]] == seen["steps"]


@pytest.fixture(scope="module")
def qwen25_build_dir(tmp_path_factory) -> Path:
    """`ffexport build --model qwen2.5vl-tiny --bucket 8x112x112` once per module (about a minute)."""
    out = tmp_path_factory.mktemp("real25") / "build"
    done = subprocess.run([sys.executable, "-m", "ffexport", "-q", "build", "--model", "qwen2.5vl-tiny", "--bucket",
                           QWEN25_BUCKET, "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"ffexport build failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return out


@pytest.mark.slow
def test_cpp_plan_of_a_real_qwen2_5_vl_build(qwen25_build_dir, tmp_path, tmp_path_factory, monkeypatch):
    """A real Qwen2.5-VL build (temporal step 2 in its manifest): the C++ positions, delta, decode positions and
    per-layer cache lengths are those the Python runtime uses when ONNX Runtime runs the same case, and the
    positions are the model adapter's (the export side's) own."""
    from ffexport.models.qwen2_5_vl import Qwen2_5_VLAdapter, qwen2_5_vl_tiny_config

    cpp = build_cpp(tmp_path_factory)
    case = tmp_path / "case"
    assert main(["-q", "case", "--model", "qwen2.5vl-tiny", "--video", "synthetic:pan", "--seed", "2", "--format",
                 "npy", "--out", str(case)]) == 0
    done = cpp.run_inspect(qwen25_build_dir, case, "--dump", tmp_path / "dump", "--max-new-tokens", 5)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    seen, result = python_run(monkeypatch, qwen25_build_dir, case)
    c = load_case(case)

    model = out["manifest"]["model"]
    config = qwen2_5_vl_tiny_config()
    assert (model["family"], model["position_rule"]) == ("qwen2_5_vl", "mrope")
    assert model["temporal_step"] == Qwen2_5_VLAdapter().temporal_step(config) == 2.0
    positions = np.load(tmp_path / "dump" / "position_ids.npy")
    assert np.array_equal(positions, seen["positions"])  # what the Python runtime fed its prefill
    adapter_positions, adapter_delta = Qwen2_5_VLAdapter().position_ids(config, c.input_ids, c.video_grid_thw)
    assert np.array_equal(positions, adapter_positions) and adapter_delta == seen["delta"]
    plain, _ = mrope_position_ids(c.input_ids, c.video_grid_thw, video_token_id=model["video_token_id"],
                                  spatial_merge_size=2)
    assert not np.array_equal(positions, plain)  # grid (4, 8, 8) at step 2: time gives the largest position
    length = c.input_ids.shape[1]
    begin, end = c.video_span(model["video_token_id"])
    delta = seen["delta"]
    assert out["plan"] == {"bucket": QWEN25_BUCKET, "length": length, "video_start": begin, "video_end": end,
                           "delta": delta, "decode_positions": [length + k + delta for k in range(4)]}
    assert out["layout"]["cache_lengths"] == out["static_decode"]["prefill_lengths"] == seen["lengths"]
    n = result.generated_ids.shape[1]
    assert len(seen["steps"]) == n - 1 >= 1, n  # the tiny model's tokens for this case: no early EOS
    assert [{k: st[k] for k in ("cache_lengths", "position")} for st in out["static_decode"]["steps"][:n - 1]] == \
        seen["steps"]


@pytest.fixture(scope="module")
def next_video_build_dir(tmp_path_factory) -> Path:
    """`ffexport build --model llava-next-video-tiny --bucket 8x112x112` once per module (1D positions)."""
    out = tmp_path_factory.mktemp("next_video") / "build"
    done = subprocess.run([sys.executable, "-m", "ffexport", "-q", "build", "--model", "llava-next-video-tiny",
                           "--bucket", QWEN25_BUCKET, "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"ffexport build failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return out


@pytest.mark.slow
def test_cpp_plan_of_a_real_llava_next_video_build(next_video_build_dir, tmp_path, tmp_path_factory, monkeypatch):
    """A real LLaVA-NeXT-Video build (`model.positions = {"rule": "1d"}`) and a case folder written by `ffexport
    case --format npy` (frames [1, 8, 3, 112, 112], no grid): the C++ bucket, positions, decode positions and
    per-layer cache lengths are those the Python runtime uses when ONNX Runtime runs the same case, and the
    positions are the model adapter's own."""
    from ffexport.models.llava_next_video import ADAPTER, llava_next_video_tiny_config

    cpp = build_cpp(tmp_path_factory)
    case = tmp_path / "case"
    assert main(["-q", "case", "--model", "llava-next-video-tiny", "--video", "synthetic:pan", "--seed", "2",
                 "--format", "npy", "--out", str(case)]) == 0
    assert not (case / "video_grid_thw.npy").exists()
    done = cpp.run_inspect(next_video_build_dir, case, "--dump", tmp_path / "dump", "--max-new-tokens", 5)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    seen, result = python_run(monkeypatch, next_video_build_dir, case)
    c = load_case(case)

    model = out["manifest"]["model"]
    assert (model["family"], model["position_rule"], model["frame_size"]) == ("llava_next_video", "1d", 112)
    positions = np.load(tmp_path / "dump" / "position_ids.npy")
    assert np.array_equal(positions, seen["positions"]) and seen["delta"] == 0  # what Python fed its prefill
    adapter_positions, adapter_delta = ADAPTER.position_ids(llava_next_video_tiny_config(), c.input_ids)
    assert np.array_equal(positions, adapter_positions) and adapter_delta == 0
    assert np.array_equal(np.load(tmp_path / "dump" / "pixel_values_videos.npy"), c.pixel_values_videos)
    length = c.input_ids.shape[1]
    begin, end = c.video_span(model["video_token_id"])
    assert end - begin == 128
    assert out["plan"] == {"bucket": QWEN25_BUCKET, "length": length, "video_start": begin, "video_end": end,
                           "delta": 0, "decode_positions": [length + k for k in range(4)]}
    assert out["layout"]["cache_lengths"] == out["static_decode"]["prefill_lengths"] == seen["lengths"]
    n = result.generated_ids.shape[1]
    assert len(seen["steps"]) == n - 1 >= 1, n  # the tiny model's tokens for this case: no early EOS
    assert [{k: st[k] for k in ("cache_lengths", "position")} for st in out["static_decode"]["steps"][:n - 1]] == \
        seen["steps"]

"""Position rules in the C++ runtime (``model.positions`` of the manifest): Qwen2.5-VL's time-scaled M-RoPE
and LLaVA-style 1D positions.

A build records how its positions are made: ``{"rule": "mrope", "temporal_step": s}`` (docs/build-format.md;
no record: step 1). The video token at grid step ``t`` takes the temporal index ``int(t * s)``. The
toy build, relabelled as a ``qwen2_5_vl`` build with a recorded step, is read by ``ffexport-inspect``
and its positions and delta must equal the Python runtime's own (``ffexport.runtime.session.position_ids``
on the manifest Python reads), for integer, fractional and non-terminating steps and for grids where
the frames, the rows or the columns give the video's largest position. The same toy build relabelled
as a ``llava_next_video`` build with ``{"rule": "1d"}`` takes fixed-size-tower cases (frames
``[1, T, 3, S, S]``, no grid): the C++ bucket, positions and decode positions equal the Python
runtime's for every bucket. A rule or step the runtime cannot use is one error line, never a plan.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ffexport.case import Case
from ffexport.casedir import save_case_dir
from ffexport.errors import InputError
from ffexport.mrope import mrope_position_ids
from ffexport.runtime.manifest import load_manifest
from ffexport.runtime.session import position_ids
from test_cpp_runtime import one_error_line
from toy_build import ToyBucket, toy_case, write_toy_build

pytestmark = pytest.mark.slow

VIDEO, MERGE = 263, 2
# grids (t, h, w): rows and columns give the largest position at small steps, frames at large ones
BUCKETS = (ToyBucket(8, 112, 112), ToyBucket(4, 112, 224), ToyBucket(16, 56, 28), ToyBucket(32, 56, 28),
           ToyBucket(6, 56, 56))
STEPS = (1.0, 0.5, 2.0, 1.5, 25 / 12, 0.1, 3)


def edit(build: Path, change) -> None:
    path = build / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def relabel(build: Path, positions: dict | None, family: str = "qwen2_5_vl") -> None:
    """The build's model as `family`, with `positions` as its model.positions record (None: no record)."""
    def change(m):
        model = {k: v for k, v in m["model"].items() if k != "positions"} | {"family": family}
        return m | {"model": model if positions is None else model | {"positions": positions}}
    edit(build, change)


@pytest.fixture(scope="module")
def base_build(tmp_path_factory) -> Path:
    return write_toy_build(tmp_path_factory.mktemp("positions") / "build", buckets=BUCKETS)


@pytest.fixture()
def build(base_build, tmp_path) -> Path:
    """A copy of the toy build (every grid of BUCKETS) the test may relabel."""
    out = tmp_path / "build"
    shutil.copytree(base_build, out)
    return out


def inspect_case(cpp_build, build: Path, folder: Path, bucket: ToyBucket, seed: int):
    """(the case, the C++ plan, the C++ position ids) for a toy case of `bucket`."""
    case = toy_case(bucket, text="where does it go after a while?", seed=seed)
    save_case_dir(case, folder / "case")
    done = cpp_build.run_inspect(build, folder / "case", "--dump", folder / "dump", "--max-new-tokens", 4)
    assert done.returncode == 0, done.stderr
    return case, json.loads(done.stdout), np.load(folder / "dump" / "position_ids.npy")


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"step{s:g}")
def test_positions_and_delta_equal_the_python_runtime(cpp_build, build, tmp_path, step):
    relabel(build, {"rule": "mrope", "temporal_step": step})
    model = load_manifest(build).model
    assert (model.family, model.temporal_step) == ("qwen2_5_vl", float(step))
    for seed, bucket in enumerate(BUCKETS):
        case, out, got = inspect_case(cpp_build, build, tmp_path / bucket.name, bucket, seed)
        assert out["manifest"]["model"]["temporal_step"] == step
        want, delta = position_ids(model, case.input_ids, case.video_grid_thw)
        assert got.dtype == np.int64 and np.array_equal(got, want), (bucket.name, step)
        length = case.input_ids.shape[1]
        start, end = case.video_span(VIDEO)
        assert out["plan"] == {"bucket": bucket.name, "length": length, "video_start": start, "video_end": end,
                               "delta": delta, "decode_positions": [length + k + delta for k in range(3)]}
        t = bucket.grid[0]
        # the step really acts: the last frame's temporal index is int((t - 1) * step), truncated
        assert got[0, end - 1] - got[0, start] == int((t - 1) * step)
        if step != 1:
            plain, _ = mrope_position_ids(case.input_ids, case.video_grid_thw, video_token_id=VIDEO,
                                          spatial_merge_size=MERGE)
            assert not np.array_equal(got, plain) or int((t - 1) * step) == t - 1


def test_no_positions_record_is_step_one(cpp_build, build, tmp_path):
    """An older build without model.positions: M-RoPE with step 1, as Python reads it."""
    relabel(build, None)
    model = load_manifest(build).model
    assert model.temporal_step == 1.0
    bucket = BUCKETS[3]  # 16 frames of 2x1 merged patches: the frames give the largest position
    case, out, got = inspect_case(cpp_build, build, tmp_path, bucket, seed=4)
    want, delta = position_ids(model, case.input_ids, case.video_grid_thw)
    assert np.array_equal(got, want) and out["plan"]["delta"] == delta
    assert (out["manifest"]["model"]["position_rule"], out["manifest"]["model"]["temporal_step"]) == ("mrope", 1.0)


def test_the_recorded_step_applies_to_qwen2_vl_too(cpp_build, build, tmp_path):
    """The family decides how a video is split into grids; the recorded step applies whatever the family,
    as in Python, whose runtime reads it from the manifest."""
    relabel(build, {"rule": "mrope", "temporal_step": 1.5}, family="qwen2_vl")
    model = load_manifest(build).model
    case, out, got = inspect_case(cpp_build, build, tmp_path, BUCKETS[2], seed=5)
    want, delta = position_ids(model, case.input_ids, case.video_grid_thw)
    assert np.array_equal(got, want) and out["plan"]["delta"] == delta


@pytest.mark.parametrize("record, words", [
    ({"rule": "rope1d", "temporal_step": 1.0}, "model.positions.rule is 'rope1d'; this runtime builds positions by "
                                               "mrope, 1d, mrope_blocks: update ffexport or rebuild with this version"),
    ({"rule": "mrope"}, "model.positions.temporal_step is missing"),
    ({"rule": "mrope", "temporal_step": 0}, "model.positions.temporal_step must be positive, got 0"),
    ({"rule": "mrope", "temporal_step": -2.5}, "model.positions.temporal_step must be positive, got -2.5"),
    ({"temporal_step": 2.0}, "model.positions.rule is missing"),
    ({"rule": "mrope", "temporal_step": True}, "model.positions.temporal_step has the wrong type (boolean)"),
    ("mrope", "model.positions has the wrong type (string)"),
], ids=["unknown-rule", "no-step", "zero-step", "negative-step", "no-rule", "bool-step", "not-an-object"])
def test_a_positions_record_it_cannot_use_is_one_line(cpp_build, build, tmp_path, record, words):
    relabel(build, record)
    with pytest.raises(InputError) as python:  # Python refuses the same manifest
        load_manifest(build)
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert words in line and str(build / "manifest.json") in line
    if "rule is '" in words:  # Python refuses it in the same words, naming the same rules
        assert line == f"error: {python.value}"


def test_an_mrope_blocks_record_is_read_with_no_step(cpp_build, build):
    """Qwen3-VL's rule takes no numbers (each block a (1, h, w) grid, step 1), as Python reads it."""
    relabel(build, {"rule": "mrope_blocks", "temporal_step": 2.0}, family="qwen3_vl")
    model = load_manifest(build).model
    done = cpp_build.run_inspect(build)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)["manifest"]["model"]
    assert (got["position_rule"], got["temporal_step"]) == (model.position_rule, model.temporal_step) == \
        ("mrope_blocks", 1.0)


# ------------------------------------------------------------------ 1D positions (LLaVA-style builds)
FRAME = 112  # the relabelled build's tower size: frames [1, T, 3, 112, 112]


def relabel_1d(build: Path) -> None:
    """The toy build as a LLaVA-NeXT-Video build: 1D positions, no merge or temporal patch, a frame size."""
    def change(m):
        model = m["model"] | {"family": "llava_next_video", "positions": {"rule": "1d"}, "spatial_merge_size": None,
                              "temporal_patch_size": None, "vision_start_token_id": None,
                              "frame_preprocess": {"size": FRAME, "mode": "shortest_edge_crop", "mean": [0.5] * 3,
                                                   "std": [0.5] * 3, "resample": "bicubic"},
                              "prompt_template": {"before": "USER: ", "after": "\n{prompt} ASSISTANT:"},
                              "trailing_video_tokens": 0}
        return m | {"model": model}
    edit(build, change)


def fixed_case(frames: int, visual_tokens: int, *, before: int, after: int, seed: int) -> Case:
    """A fixed-size tower's case: text ids around one run of ``visual_tokens`` video tokens, random frames."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([rng.integers(0, 256, before), np.full(visual_tokens, VIDEO), rng.integers(0, 256, after)])
    pixels = rng.standard_normal((1, frames, 3, FRAME, FRAME)).astype(np.float32)
    ids = ids.astype(np.int64).reshape(1, -1)
    return Case(ids, pixels, None, attention_mask=np.ones_like(ids))


def test_1d_positions_bucket_and_decode_positions_equal_the_python_runtime(cpp_build, build, tmp_path):
    from ffexport.runtime import Runtime

    relabel_1d(build)
    runtime = Runtime(build, verify=False)
    model = runtime.manifest.model
    assert (model.position_rule, model.spatial_merge_size, model.temporal_patch_size) == ("1d", 1, 1)
    for seed, bucket in enumerate(BUCKETS):
        case = fixed_case(bucket.frames, bucket.visual_tokens, before=3 + seed, after=11 + 5 * seed, seed=seed)
        folder = tmp_path / bucket.name
        save_case_dir(case, folder / "case")
        done = cpp_build.run_inspect(build, folder / "case", "--dump", folder / "dump", "--max-new-tokens", 4)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert (out["manifest"]["model"]["position_rule"], out["manifest"]["model"]["frame_size"]) == ("1d", FRAME)
        want, delta = position_ids(model, case.input_ids, None)  # the Python runtime's positions
        got = np.load(folder / "dump" / "position_ids.npy")
        assert got.dtype == np.int64 and np.array_equal(got, want) and delta == 0
        assert np.array_equal(got, np.tile(np.arange(case.input_ids.shape[1]), (3, 1)))
        assert np.array_equal(np.load(folder / "dump" / "pixel_values_videos.npy"), case.pixel_values_videos)
        assert not (folder / "dump" / "video_grid_thw.npy").exists()
        length = case.input_ids.shape[1]
        start, end = case.video_span(VIDEO)
        python_bucket = runtime._check_case(case, None)  # the Python runtime's bucket for this case
        assert out["plan"] == {"bucket": python_bucket.name, "length": length, "video_start": start, "video_end": end,
                               "delta": 0, "decode_positions": [length, length + 1, length + 2]}
        assert python_bucket.name == bucket.name


@pytest.mark.parametrize("change, words", [
    (lambda c: Case(c.input_ids, c.pixel_values_videos[:, :, :, :56], None, attention_mask=c.attention_mask),
     "pixel_values_videos must have shape [1, frames, 3, 112, 112] for this build, got [1, 8, 3, 56, 112]"),
    (lambda c: fixed_case(5, 40, before=3, after=4, seed=1), "the case has 5 frames; no usable bucket of"),
    (lambda c: fixed_case(8, 63, before=3, after=4, seed=1),
     "the video span in input_ids has 63 tokens; 8 frames give 64"),
], ids=["frame-size", "frame-count", "span"])
def test_a_1d_case_that_fits_no_bucket_is_one_line_as_in_python(cpp_build, build, tmp_path, change, words):
    from ffexport.runtime import Runtime

    relabel_1d(build)
    case = change(fixed_case(8, 64, before=3, after=4, seed=0))
    with pytest.raises(InputError) as python:
        Runtime(build, verify=False)._check_case(case, None)
    assert words in str(python.value)
    save_case_dir(case, tmp_path / "case")
    assert words in one_error_line(cpp_build.run_inspect(build, tmp_path / "case"), "input", 2)


def test_grid_and_frame_cases_are_not_crossed(cpp_build, build, tmp_path):
    """A Qwen-grid case on a 1D build, and a fixed-size tower's case on an M-RoPE build: one line each."""
    save_case_dir(fixed_case(8, 64, before=3, after=4, seed=0), tmp_path / "frames")
    assert "this build takes a Qwen grid's patches" in one_error_line(
        cpp_build.run_inspect(build, tmp_path / "frames"), "input", 2)
    relabel_1d(build)
    save_case_dir(toy_case(BUCKETS[0], seed=1), tmp_path / "grid")
    line = one_error_line(cpp_build.run_inspect(build, tmp_path / "grid"), "input", 2)
    assert "pixel_values_videos must have shape [1, frames, 3, 112, 112] for this build, got [" in line

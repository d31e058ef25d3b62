"""Frame blocks in the C++ runtime: a bucket whose video is several blocks with text between them.

The toy build is laid out as a Qwen3-VL build is (tests/export/test_build_qwen3.py runs a real one): the
bucket's ``frame_blocks`` and its schedule (``ffexport.schedule/2`` with ``"blocks"``, written here by
Python's own ``Schedule.to_json``; a one-block video is still ``ffexport.schedule/1``), positions by the
rule ``mrope_blocks`` and a prefill that takes the DeepStack levels ``deepstack_features`` [k, N, D].
``ffexport-inspect`` must then plan exactly what Python computes: the region and each block's rows from
``FrameLayout.from_token_ids`` / the Qwen3-VL adapter's ``layout``, the positions of the Python runtime
(``position_ids``) and of ``Qwen3VLAdapter.position_ids`` (one (1, h, w) grid per block), the DeepStack
input, and each layer's cache rows after the schedule (``cache_capacities`` with no new token).
Layouts and rules it cannot serve are one error line (Python's, where Python refuses the same case),
never a plan.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ffexport.casedir import save_case_dir
from ffexport.errors import InputError
from ffexport.export.graphs import cache_capacities
from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.fusion.schedule import Schedule, Stage
from ffexport.models.qwen3_vl import Qwen3VLAdapter, qwen3_vl_tiny_config, video_prompt_ids
from ffexport.models.tiny_tokenizer import build_tiny_tokenizer
from ffexport.runtime.manifest import load_manifest
from ffexport.runtime.session import position_ids
from test_cpp_runtime import one_error_line
from toy_build import LAYERS, PATCH_DIM, D, ToyBucket, toy_case, write_toy_build

pytestmark = pytest.mark.slow

BUCKET = ToyBucket(8, 112, 112)  # grid (4, 8, 8): 4 temporal groups of 16 merged patches
GRID = (4, 8, 8)
P, N = 16, 64
STAGES = (Stage(0, "before_attention", "merge", 20), Stage(0, "after_attention", "merge", 6),
          Stage(1, "after_attention", "prune", 10))


def qwen3_ids(timestamps=(0.5, 1.5, 2.5, 10.5), prompt="what moves, and where?") -> np.ndarray:
    """A Qwen3-VL prompt as its processor writes it (a timestamp before each block; "10.5" is one
    token longer than the others, so the gaps between blocks differ)."""
    return video_prompt_ids(build_tiny_tokenizer(), grid_thw=GRID, merge_size=2, timestamps=list(timestamps),
                            prompt=prompt)


def edit(build: Path, change) -> None:
    path = build / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def set_bucket(build: Path, **fields) -> None:
    def change(m):
        for b in m["buckets"]:
            if b["name"] == BUCKET.name:
                b.update(fields)
        return m
    edit(build, change)


@pytest.fixture(scope="module")
def layout() -> tuple[int, FrameLayout]:
    return Qwen3VLAdapter().layout(qwen3_vl_tiny_config(), qwen3_ids(), GRID)


@pytest.fixture(scope="module")
def schedule(layout) -> Schedule:
    return Schedule(N, P, STAGES, layout[1]).validate(LAYERS)


LEVELS = 2  # DeepStack levels of the toy prefill's fourth input


def deepstack_prefill(m: dict) -> dict:
    """The bucket's prefill record listing Qwen3-VL's fourth input, as a real build's manifest does."""
    for b in m["buckets"]:
        b["graphs"]["prefill"]["inputs"] = [
            {"name": "inputs_embeds", "dtype": "float32", "shape": [1, "L", D]},
            {"name": "position_ids", "dtype": "int64", "shape": [3, "L"]},
            {"name": "video_start", "dtype": "int64", "shape": []},
            {"name": "deepstack_features", "dtype": "float32", "shape": [LEVELS, b["visual_tokens"], D]}]
    return m


@pytest.fixture(scope="module")
def block_build(tmp_path_factory, schedule) -> Path:
    """The toy build as a Qwen3-VL build whose 8x112x112 bucket holds the video as 4 frame blocks."""
    build = write_toy_build(tmp_path_factory.mktemp("blocks") / "build", buckets=(BUCKET,))
    edit(build, lambda m: deepstack_prefill(m | {"model": m["model"] | {"family": "qwen3_vl",
                                                                         "positions": {"rule": "mrope_blocks"}}}))
    set_bucket(build, schedule=schedule.to_json(), frame_blocks=schedule.to_json()["blocks"])
    return build


def python_check(build: Path, case_dir: Path):
    """The bucket the Python runtime checks the case folder into, or the InputError it raises."""
    from ffexport.case import load_case
    from ffexport.runtime import Runtime

    try:
        return Runtime(build, verify=False)._check_case(load_case(case_dir), None)
    except InputError as e:
        return e


def write_case(folder: Path, ids: np.ndarray, grid=GRID, seed=0) -> Path:
    folder.mkdir(parents=True)
    t, h, w = grid
    pixels = np.random.default_rng(seed).random((t * h * w, PATCH_DIM), dtype=np.float32)
    for key, value in (("input_ids", ids), ("pixel_values_videos", pixels), ("video_grid_thw", np.array([grid]))):
        np.save(folder / f"{key}.npy", value)
    return folder


def test_the_fixture_is_a_version_2_schedule(schedule):
    data = schedule.to_json()
    assert data["format"] == "ffexport.schedule/2" and len(data["blocks"]) == 4
    assert len({b[0] - a[0] - a[1] for a, b in zip(data["blocks"], data["blocks"][1:])}) == 2  # two gap lengths


def test_manifest_reads_the_blocks(cpp_build, block_build, schedule):
    out = json.loads(cpp_build.run_inspect(block_build).stdout)["manifest"]
    got = out["buckets"][0]
    assert got["schedule_format"] == "ffexport.schedule/2" and got["frame_blocks"] is True
    assert got["blocks"] == schedule.to_json()["blocks"]
    assert got["stages"] == len(STAGES)
    assert got["deepstack"] == [LEVELS, N, D] and out["model"]["position_rule"] == "mrope_blocks"


def test_plan_of_a_block_case_equals_python(cpp_build, block_build, layout, schedule, tmp_path):
    ids = qwen3_ids()
    case = write_case(tmp_path / "case", ids)
    done = cpp_build.run_inspect(block_build, case, "--dump", tmp_path / "dump", "--max-new-tokens", 6)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    plan = out["plan"] | out["layout"]

    start, blocks = layout
    config = qwen3_vl_tiny_config()
    positions, delta = Qwen3VLAdapter().position_ids(config, ids, np.array([GRID]))
    python, python_delta = position_ids(load_manifest(block_build).model, ids, np.array([GRID]))
    assert np.array_equal(python, positions) and python_delta == delta
    assert python_check(block_build, case).name == plan["bucket"]
    assert plan["deepstack"] == [LEVELS, N, D] and plan["feature_rows"] == N and plan["trailing"] == 0
    length = ids.shape[1]
    assert plan["video_start"] == start and plan["video_end"] == start + blocks.region_length
    assert plan["blocks"] == [[start + b.start, start + b.end] for b in blocks.blocks]
    dumped = np.load(tmp_path / "dump" / "position_ids.npy")
    assert dumped.dtype == np.int64 and np.array_equal(dumped, positions)
    assert plan["delta"] == delta and plan["length"] == length
    assert plan["decode_positions"] == [length + k + delta for k in range(5)]
    assert plan["cache_lengths"] == cache_capacities(schedule, LAYERS, max_text=length - N, max_new_tokens=0)
    assert plan["cache_lengths"] == [length - 20, length - 26]  # by hand: merges before layer 1's attention


def test_the_video_rows_the_features_fill_are_the_video_tokens(cpp_build, block_build, tmp_path):
    """Every row of a block is a video token, every video token is in a block, in order: the features
    [N, D] land on exactly the rows Python's layout names (text between blocks keeps its embeddings)."""
    ids = qwen3_ids(timestamps=(1.0, 2.0, 3.0, 10.5))
    done = cpp_build.run_inspect(build_for(block_build, tmp_path, ids), write_case(tmp_path / "c", ids))
    assert done.returncode == 0, done.stderr
    rows = np.concatenate([np.arange(a, b) for a, b in json.loads(done.stdout)["layout"]["blocks"]])
    assert np.array_equal(rows, np.flatnonzero(ids.reshape(-1) == 263)) and rows.size == N


def build_for(build: Path, tmp_path: Path, ids: np.ndarray) -> Path:
    """A copy of ``build`` whose bucket's blocks are those of ``ids`` (other timestamps: other gaps)."""
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    start, layout = FrameLayout.from_token_ids(ids, 263, P)
    schedule = Schedule(N, P, STAGES, layout).to_json()
    set_bucket(copy, schedule=schedule, frame_blocks=schedule["blocks"])
    return copy


@pytest.mark.parametrize("ids, words", [
    (lambda: qwen3_ids(timestamps=(0.5, 1.5, 12.5, 10.5)),  # one gap a token longer than the build's
     "the case's video tokens sit in the frame blocks [(0, 16), (31, 16), (63, 16), (95, 16)] ([offset, tokens]); "
     "bucket 8x112x112's graphs take [(0, 16), (31, 16), (62, 16), (94, 16)] (the text between blocks"),
    (lambda: np.concatenate([[[5, 6]], np.full((1, N), 263), [[7, 8, 9]]], axis=1),  # one contiguous run
     "input_ids hold video token runs of [64]; video_grid_thw 4x8x8 gives 4 blocks of 16"),
    (lambda: np.concatenate([[[5]], np.full((1, 16), 263), [[6]], np.full((1, 48), 263), [[7]]], axis=1),
     "input_ids hold video token runs of [16, 48]; video_grid_thw 4x8x8 gives 4 blocks of 16"),
    (lambda: np.array([[5, 6, 7, 8]]), "input_ids hold no video token (id 263)"),
], ids=["longer-gap", "one-run", "two-runs", "no-video"])
def test_a_case_laid_out_otherwise_is_python_s_one_line(cpp_build, block_build, tmp_path, ids, words):
    case = write_case(tmp_path / "case", ids())
    python = python_check(block_build, case)
    assert isinstance(python, InputError) and words in str(python)
    assert one_error_line(cpp_build.run_inspect(block_build, case), "input", 2) == f"error: {python}"


def test_a_block_case_with_other_pixels_is_python_s_one_line(cpp_build, block_build, tmp_path):
    case = write_case(tmp_path / "case", qwen3_ids())
    np.save(case / "pixel_values_videos.npy", np.zeros((255, PATCH_DIM), np.float32))
    python = python_check(block_build, case)
    assert "pixel_values_videos has shape [255, 1176]; video_grid_thw 4x8x8 needs [256, 1176]" in str(python)
    assert one_error_line(cpp_build.run_inspect(block_build, case), "input", 2) == f"error: {python}"


@pytest.mark.parametrize("family, words", [
    ("qwen2_vl", "a qwen2_vl prompt holds a video as one run of video tokens; this one has 4"),
    ("qwen2_5_vl", "a qwen2_5_vl prompt holds a video as one run of video tokens; this one has 4"),
    ("llava_video", "computes M-RoPE positions for the model families qwen2_vl, qwen2_5_vl and qwen3_vl; the build's "
                    "model is of family 'llava_video'"),
])
def test_mrope_builds_of_families_without_a_block_rule_are_refused(cpp_build, block_build, tmp_path, family, words):
    """Without the mrope_blocks record (rule mrope), a several-block video's positions follow the family."""
    build = tmp_path / "build"
    shutil.copytree(block_build, build)
    edit(build, lambda m: m | {"model": {k: v for k, v in m["model"].items() if k != "positions"} | {"family": family}})
    line = one_error_line(cpp_build.run_inspect(build, write_case(tmp_path / "case", qwen3_ids())), "input", 2)
    assert words in line


@pytest.mark.parametrize("frame_blocks, words", [
    ([[0, 16], [31, 16], [62, 16]], "frame_blocks hold 48 video tokens, the bucket has 64"),
    ([[1, 16], [31, 16], [62, 16], [94, 16]], "frame_blocks has a block [1,16] out of order or overlapping"),
    ([[0, 16], [10, 16], [62, 16], [94, 16]], "frame_blocks has a block [10,16] out of order or overlapping"),
    ([[0, 16], [31]], "frame_blocks is not a list of [offset, tokens] pairs"),
    ([[0, 16], [32, 16], [62, 16], [94, 16]], "schedule.blocks differ from the bucket's frame_blocks"),
], ids=["tokens", "first", "overlap", "pair", "not-the-schedule's"])
def test_bad_frame_blocks_in_the_manifest_are_one_line(cpp_build, block_build, tmp_path, frame_blocks, words):
    build = tmp_path / "build"
    shutil.copytree(block_build, build)
    set_bucket(build, frame_blocks=frame_blocks)
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert words in line and "bucket 8x112x112" in line


def test_a_prefill_deepstack_input_of_another_shape_is_one_line(cpp_build, block_build, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(block_build, build)
    edit(build, lambda m: m | {"buckets": [b | {"graphs": b["graphs"] | {"prefill": b["graphs"]["prefill"] | {
        "inputs": [*b["graphs"]["prefill"]["inputs"][:3], {"name": "deepstack_features", "shape": [2, 63, D]}]}}}
        for b in m["buckets"]]})
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert "bucket 8x112x112.graphs.prefill takes deepstack_features [2,63,4]; expected [levels, 64, hidden size]" in line


@pytest.mark.parametrize("schedule_json, words", [
    ({"format": "ffexport.schedule/3"}, "schedule has format \"ffexport.schedule/3\"; this runtime reads "
                                        "'ffexport.schedule/1' and 'ffexport.schedule/2'"),
    ({"format": "ffexport.schedule/2", "blocks": [[0, 16], [20, 24], [50, 24]]}, "not a positive whole number of 16-token frames"),
    ({"format": "ffexport.schedule/2", "blocks": [[2, 32], [40, 32]]}, "starts at region offset 2"),
    ({"format": "ffexport.schedule/2", "blocks": [[0, 32], [20, 32]]}, "starts at region offset 20"),
    ({"format": "ffexport.schedule/2", "blocks": [[0, 32], [40, 16]]}, "hold 48 video tokens, the bucket has 64"),
    ({"format": "ffexport.schedule/2", "blocks": [[0, 32], [40]]}, "must be a list of [start, length] pairs"),
    ({"format": "ffexport.schedule/1", "visual_tokens": 32}, "schedule.visual_tokens is 32, the bucket says 64"),
    ({"format": "ffexport.schedule/1", "stages": [{"layer": 2, "where": "after_attention", "op": "prune", "remove": 1}]},
     "at layer 2 of 2"),
    ({"format": "ffexport.schedule/1", "stages": [{"layer": 1, "where": "after_attention", "op": "prune", "remove": 1},
                                                  {"layer": 0, "where": "after_attention", "op": "merge", "remove": 1}]},
     "is not after the stage before it"),
])
def test_a_bad_schedule_in_the_manifest_is_one_line(cpp_build, block_build, tmp_path, schedule_json, words):
    build = tmp_path / "build"
    shutil.copytree(block_build, build)
    set_bucket(build, schedule=schedule_json)
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert words in line and "bucket 8x112x112" in line


def test_a_version_1_schedule_is_one_block(cpp_build, tmp_path):
    """Python writes a one-block video as ffexport.schedule/1 (no blocks); the C++ plan is the classic span."""
    build = write_toy_build(tmp_path / "build", buckets=(BUCKET,))
    schedule = Schedule(N, P, STAGES, FrameLayout((FrameBlock(0, N, P),)))
    assert schedule.to_json()["format"] == "ffexport.schedule/1" and "blocks" not in schedule.to_json()
    set_bucket(build, schedule=schedule.to_json())
    case = toy_case(BUCKET)
    save_case_dir(case, tmp_path / "case")
    done = cpp_build.run_inspect(build, tmp_path / "case")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["manifest"]["buckets"][0]["blocks"] == [[0, N]]
    start, end = case.video_span(263)
    length = case.input_ids.shape[1]
    assert out["layout"]["blocks"] == [[start, end]]
    assert out["layout"]["cache_lengths"] == cache_capacities(schedule, LAYERS, max_text=length - N, max_new_tokens=0)


def test_schedule_blocks_without_frame_blocks_still_bind_the_case(cpp_build, block_build, tmp_path):
    """A hand-written bucket whose layout is only in its schedule (no frame_blocks): the C++ runtime still
    holds the case to it, in its own line (Python reads no layout there)."""
    build = tmp_path / "build"
    shutil.copytree(block_build, build)
    edit(build, lambda m: m | {"buckets": [{k: v for k, v in b.items() if k != "frame_blocks"} for b in m["buckets"]]})
    ok = cpp_build.run_inspect(build, write_case(tmp_path / "ok", qwen3_ids()))
    assert ok.returncode == 0, ok.stderr
    line = one_error_line(cpp_build.run_inspect(build, write_case(tmp_path / "c", qwen3_ids(timestamps=(0.5, 1.5, 12.5, 10.5)))),
                          "input", 2)
    assert "bucket 8x112x112 holds the video as 4 frame blocks [start, length] [[0, 16], [31, 16], [62, 16], [94, 16]]" \
        in line and "the same text between blocks" in line

"""Frame blocks in the C++ runtime: a bucket whose video is several blocks with text between them.

The manifest records a several-block layout in the bucket's schedule (``ffexport.schedule/2`` with
``"blocks"``, written here by Python's own ``Schedule.to_json``); a one-block video is still
``ffexport.schedule/1``. ``ffexport-inspect`` must then plan exactly what Python computes: the
region and each block's rows from ``FrameLayout.from_token_ids`` / the Qwen3-VL adapter's
``layout``, the M-RoPE positions of ``Qwen3VLAdapter.position_ids`` (one (1, h, w) grid per
block), and each layer's cache rows after the schedule (``cache_capacities`` with no new token).
Layouts and families it cannot serve are one error line, never a plan.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ffexport.casedir import save_case_dir
from ffexport.export.graphs import cache_capacities
from ffexport.fusion.layout import FrameBlock, FrameLayout
from ffexport.fusion.schedule import Schedule, Stage
from ffexport.models.qwen3_vl import Qwen3VLAdapter, qwen3_vl_tiny_config, video_prompt_ids
from ffexport.models.tiny_tokenizer import build_tiny_tokenizer
from test_cpp_runtime import one_error_line
from toy_build import LAYERS, PATCH_DIM, ToyBucket, toy_case, write_toy_build

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


@pytest.fixture(scope="module")
def block_build(tmp_path_factory, schedule) -> Path:
    """The toy build as a Qwen3-VL build whose 8x112x112 bucket holds the video as 4 frame blocks."""
    build = write_toy_build(tmp_path_factory.mktemp("blocks") / "build", buckets=(BUCKET,))
    edit(build, lambda m: m | {"model": m["model"] | {"family": "qwen3_vl"}})
    set_bucket(build, schedule=schedule.to_json())
    return build


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
    got = json.loads(cpp_build.run_inspect(block_build).stdout)["manifest"]["buckets"][0]
    assert got["schedule_format"] == "ffexport.schedule/2"
    assert got["blocks"] == schedule.to_json()["blocks"]
    assert got["stages"] == len(STAGES)


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
    set_bucket(copy, schedule=Schedule(N, P, STAGES, layout).to_json())
    return copy


@pytest.mark.parametrize("ids, words", [
    (lambda: qwen3_ids(timestamps=(0.5, 1.5, 12.5, 10.5)),  # one gap a token longer than the build's
     "bucket 8x112x112 holds the video as 4 frame blocks [start, length] [[0, 16], [31, 16], [62, 16], [94, 16]]"),
    (lambda: np.concatenate([[[5, 6]], np.full((1, N), 263), [[7, 8, 9]]], axis=1),  # one contiguous run
     "input_ids have 1 runs [[0, 64]]"),
])
def test_a_case_laid_out_otherwise_is_one_line(cpp_build, block_build, tmp_path, ids, words):
    line = one_error_line(cpp_build.run_inspect(block_build, write_case(tmp_path / "case", ids())), "input", 2)
    assert words in line and "the same text between blocks" in line


@pytest.mark.parametrize("family, words", [
    ("qwen2_vl", "a qwen2_vl prompt holds a video as one run of video tokens; this one has 4"),
    ("qwen2_5_vl", "a qwen2_5_vl prompt holds a video as one run of video tokens; this one has 4"),
    ("llava_video", "computes M-RoPE positions for the model families qwen2_vl, qwen2_5_vl and qwen3_vl; the build's "
                    "model is of family 'llava_video'"),
])
def test_families_without_a_position_rule_are_refused(cpp_build, block_build, tmp_path, family, words):
    build = tmp_path / "build"
    shutil.copytree(block_build, build)
    edit(build, lambda m: m | {"model": m["model"] | {"family": family}})
    line = one_error_line(cpp_build.run_inspect(build, write_case(tmp_path / "case", qwen3_ids())), "input", 2)
    assert words in line


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

"""The C++ runtime on the fixed-size towers beside LLaVA-NeXT-Video: LLaVA-OneVision's trailing newline token and
InternVL's frame blocks with text between them (1D positions both; docs/cpp-runtime.md).

The toy build (tests/runtime/toy_build.py) relabelled as each family's build records itself:

- OneVision: ``model.trailing_video_tokens = 1``: the one run of video tokens is the frames' ``visual_tokens``
  plus the newline, the vision graph's rows fill all of it, and FrameFusion counts the newline as text;
- InternVL: ``model.video_text``, each bucket's ``frame_blocks`` (one block per frame, a few text tokens
  between) and the vision graph's input ``[T, 3, S, S]`` (``graphs.vision.inputs``): the case folder holds
  the processor's ``pixel_values.npy`` and its video tokens must sit in exactly the bucket's blocks.

For every bucket the C++ bucket, positions, blocks and decode positions equal the Python runtime's
(``Runtime._check_case`` and ``position_ids`` on the same folder); a case that fits no bucket is one line,
Python's own (tests/export/test_build_families.py runs both families' real builds through ONNX Runtime).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ffexport.case import Case, load_case
from ffexport.casedir import save_case_dir
from ffexport.errors import InputError
from ffexport.runtime.session import position_ids
from test_cpp_runtime import one_error_line
from toy_build import ToyBucket, write_toy_build

pytestmark = pytest.mark.slow

VIDEO, FRAME = 263, 112
BUCKETS = (ToyBucket(8, 112, 112), ToyBucket(4, 112, 224), ToyBucket(16, 56, 28), ToyBucket(6, 56, 56))
GAP = 3  # InternVL: text tokens between two frame blocks in the toy build
VIDEO_TEXT = {"prefix": "Frame{index}: <img>", "suffix": "</img>", "separator": "\n"}


def edit(build: Path, change) -> None:
    path = build / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def relabel(build: Path, family: str, **model) -> None:
    """The toy build as a fixed-size tower's build of ``family`` (1D positions, 112x112 frames)."""
    def change(m):
        facts = m["model"] | {"family": family, "positions": {"rule": "1d"}, "spatial_merge_size": None,
                              "temporal_patch_size": None, "vision_start_token_id": None,
                              "frame_preprocess": {"size": FRAME, "mode": "shortest_edge_crop", "mean": [0.5] * 3,
                                                   "std": [0.5] * 3, "resample": "bicubic"},
                              "prompt_template": {"before": "USER: ", "after": "\n{prompt} ASSISTANT:"},
                              "trailing_video_tokens": 0} | model
        return m | {"model": facts}
    edit(build, change)


def blocks_of(bucket: ToyBucket) -> list[list[int]]:
    """InternVL's layout for the toy bucket: one block per frame, GAP text tokens between blocks."""
    per_frame = bucket.visual_tokens // bucket.frames
    return [[i * (per_frame + GAP), per_frame] for i in range(bucket.frames)]


def as_internvl(build: Path) -> None:
    relabel(build, "internvl", video_text=VIDEO_TEXT)

    def change(m):
        for b, toy in zip(m["buckets"], BUCKETS, strict=True):
            b["frame_blocks"] = blocks_of(toy)
            b["graphs"]["vision"]["inputs"] = [{"name": "pixel_values_videos", "dtype": "float32",
                                                "shape": [toy.frames, 3, FRAME, FRAME]}]
        return m
    edit(build, change)


@pytest.fixture(scope="module")
def base_build(tmp_path_factory) -> Path:
    return write_toy_build(tmp_path_factory.mktemp("towers") / "build", buckets=BUCKETS)


@pytest.fixture()
def build(base_build, tmp_path) -> Path:
    out = tmp_path / "build"
    shutil.copytree(base_build, out)
    return out


def onevision_case(frames: int, tokens: int, *, before: int, after: int, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    ids = np.concatenate([rng.integers(0, 256, before), np.full(tokens, VIDEO), rng.integers(0, 256, after)])
    ids = ids.astype(np.int64).reshape(1, -1)
    pixels = rng.standard_normal((1, frames, 3, FRAME, FRAME)).astype(np.float32)
    return Case(ids, pixels, None, attention_mask=np.ones_like(ids))


def internvl_case(bucket: ToyBucket, *, before: int, after: int, seed: int, gaps: list[int] | None = None) -> Case:
    """Text, one block of video tokens per frame with ``gaps`` text tokens between (default GAP), text."""
    rng = np.random.default_rng(seed)
    per_frame = bucket.visual_tokens // bucket.frames
    gaps = gaps if gaps is not None else [GAP] * (bucket.frames - 1)
    parts = [rng.integers(0, 256, before)]
    for i in range(bucket.frames):
        parts.append(np.full(per_frame, VIDEO))
        parts.append(rng.integers(0, 256, gaps[i] if i < bucket.frames - 1 else after))
    ids = np.concatenate(parts).astype(np.int64).reshape(1, -1)
    pixels = rng.standard_normal((bucket.frames, 3, FRAME, FRAME)).astype(np.float32)
    return Case(ids, pixels, None, attention_mask=np.ones_like(ids))


def python_check(build: Path, folder: Path):
    """The bucket the Python runtime checks the folder's case into, or its InputError."""
    from ffexport.runtime import Runtime

    try:
        return Runtime(build, verify=False)._check_case(load_case(folder), None)
    except InputError as e:
        return e


def plan_equals_python(cpp_build, build: Path, case: Case, folder: Path) -> dict:
    """ffexport-inspect's plan of ``case``, checked against the Python runtime on the same folder."""
    from ffexport.runtime.manifest import load_manifest

    save_case_dir(case, folder / "case")
    done = cpp_build.run_inspect(build, folder / "case", "--dump", folder / "dump", "--max-new-tokens", 4)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    want, delta = position_ids(load_manifest(build).model, case.input_ids, None)
    got = np.load(folder / "dump" / "position_ids.npy")
    assert np.array_equal(got, want) and delta == 0 == out["plan"]["delta"]
    assert np.array_equal(np.load(folder / "dump" / "pixel_values_videos.npy"), case.pixel_values_videos)
    length = case.input_ids.shape[1]
    rows = np.flatnonzero(case.input_ids[0] == VIDEO)
    assert out["plan"]["bucket"] == python_check(build, folder / "case").name
    assert out["plan"]["decode_positions"] == [length, length + 1, length + 2]
    assert (out["plan"]["video_start"], out["plan"]["video_end"]) == (rows[0], rows[-1] + 1)
    assert np.array_equal(np.concatenate([np.arange(a, b) for a, b in out["layout"]["blocks"]]), rows)
    return out


# ------------------------------------------------------------------ LLaVA-OneVision: the trailing newline
def test_onevision_plan_equals_the_python_runtime(cpp_build, build, tmp_path):
    relabel(build, "llava_onevision", trailing_video_tokens=1)
    for seed, bucket in enumerate(BUCKETS):
        case = onevision_case(bucket.frames, bucket.visual_tokens + 1, before=3 + seed, after=9 + 4 * seed, seed=seed)
        out = plan_equals_python(cpp_build, build, case, tmp_path / bucket.name)
        assert out["plan"]["bucket"] == bucket.name
        assert (out["layout"]["feature_rows"], out["layout"]["trailing"]) == (bucket.visual_tokens + 1, 1)
        assert out["manifest"]["model"]["trailing_video_tokens"] == 1


@pytest.mark.parametrize("tokens, words", [
    (64, "the video span in input_ids has 64 tokens; 8 frames give 65"),  # the frames' tokens without the newline
    (66, "the video span in input_ids has 66 tokens; 8 frames give 65"),
], ids=["no-newline", "two-newlines"])
def test_a_onevision_span_without_its_newline_is_python_s_one_line(cpp_build, build, tmp_path, tokens, words):
    relabel(build, "llava_onevision", trailing_video_tokens=1)
    save_case_dir(onevision_case(8, tokens, before=3, after=4, seed=1), tmp_path / "case")
    python = python_check(build, tmp_path / "case")
    assert isinstance(python, InputError) and words in str(python)
    assert one_error_line(cpp_build.run_inspect(build, tmp_path / "case"), "input", 2) == f"error: {python}"


@pytest.mark.parametrize("value, words", [
    (-1, "model.trailing_video_tokens must be 0 or more, got -1"),
    ("1", "model.trailing_video_tokens has the wrong type (string)"),
    (None, "model.trailing_video_tokens has the wrong type"),
], ids=["negative", "string", "null"])
def test_a_bad_trailing_record_is_one_line(cpp_build, build, value, words):
    relabel(build, "llava_onevision", trailing_video_tokens=value)
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert words in line and str(build / "manifest.json") in line


# ------------------------------------------------------------------ InternVL: frame blocks with text between
def test_internvl_plan_equals_the_python_runtime(cpp_build, build, tmp_path):
    as_internvl(build)
    for seed, bucket in enumerate(BUCKETS):
        case = internvl_case(bucket, before=4 + seed, after=6 + 3 * seed, seed=seed)
        out = plan_equals_python(cpp_build, build, case, tmp_path / bucket.name)
        start = out["plan"]["video_start"]
        assert out["layout"]["blocks"] == [[start + o, start + o + n] for o, n in blocks_of(bucket)]
        assert (out["layout"]["feature_rows"], out["layout"]["trailing"]) == (bucket.visual_tokens, 0)
    got = json.loads(cpp_build.run_inspect(build).stdout)["manifest"]
    assert got["model"]["video_text"] == VIDEO_TEXT
    assert [b["pixel_shape"] for b in got["buckets"]] == [[b.frames, 3, FRAME, FRAME] for b in BUCKETS]
    assert all(b["frame_blocks"] for b in got["buckets"])


@pytest.mark.parametrize("change, words", [
    (lambda b: internvl_case(b, before=4, after=6, seed=1, gaps=[GAP] * 3 + [GAP + 1] + [GAP] * 3),
     "the case's video tokens sit in the frame blocks [(0, 8), (11, 8), (22, 8), (33, 8), (45, 8),"),
    (lambda b: internvl_case(b, before=4, after=6, seed=1, gaps=[GAP - 1] * 7),
     "bucket 8x112x112's graphs take [(0, 8), (11, 8), (22, 8), (33, 8), (44, 8), (55, 8), (66, 8), (77, 8)] "
     "(the family's text between frames, tokenized by the build's tokenizer)"),
    (lambda b: onevision_case(8, 64, before=3, after=4, seed=1),
     "pixel_values must have shape [frames, 3, 112, 112] for this build, got [1, 8, 3, 112, 112]"),
    (lambda b: internvl_case(ToyBucket(5, 112, 112), before=4, after=6, seed=1),
     "the case has 5 frames; no usable bucket of"),
], ids=["one-gap-longer", "gaps-shorter", "5-d-frames", "frame-count"])
def test_an_internvl_case_that_fits_no_bucket_is_python_s_one_line(cpp_build, build, tmp_path, change, words):
    as_internvl(build)
    save_case_dir(change(BUCKETS[0]), tmp_path / "case")
    python = python_check(build, tmp_path / "case")
    assert isinstance(python, InputError) and words in str(python)
    assert one_error_line(cpp_build.run_inspect(build, tmp_path / "case"), "input", 2) == f"error: {python}"


@pytest.mark.parametrize("video_text, words", [
    ({"prefix": "Frame{index}", "suffix": "</img>"}, "model.video_text has no text field 'separator'"),
    ({"prefix": "Frame{i}", "suffix": "", "separator": ""}, "model.video_text has a prefix or suffix that is not a "
                                                            "format string of {index}"),
    ("Frame", "model.video_text is not an object"),
], ids=["missing", "placeholder", "not-an-object"])
def test_a_bad_video_text_record_is_one_line_as_in_python(cpp_build, build, video_text, words):
    from ffexport.runtime.manifest import load_manifest

    relabel(build, "internvl", video_text=video_text)
    with pytest.raises(InputError):
        load_manifest(build)
    line = one_error_line(cpp_build.run_inspect(build), "input", 2)
    assert words in line and str(build / "manifest.json") in line

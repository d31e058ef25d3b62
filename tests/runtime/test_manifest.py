"""manifest.json checks on hand-written manifests with tiny dummy files: every corruption is one clear line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ffexport.errors import InputError
from ffexport.runtime.manifest import MANIFEST_FORMAT, load_manifest

DUMMY_FILES = {
    "weights.bin": b"\x01" * 1000,
    "embed.onnx": b"embed graph",
    "decode.onnx": b"decode graph",
    "8x112x112.vision.onnx": b"vision graph",
    "8x112x112.prefill.onnx": b"prefill graph",
    "8x112x112/schedule.json": b"{}",
    "16x224x224.vision.onnx": b"vision graph 2",
    "16x224x224.prefill.onnx": b"prefill graph 2",
    "tokenizer/tokenizer.json": b"{}",
}


def _bucket(name: str, frames: int, size: int, usable: bool) -> dict:
    grid = [frames // 2, size // 14, size // 14]
    return {"name": name, "frames": frames, "height": size, "width": size, "resized": [size, size],
            "grid_thw": grid, "visual_tokens": grid[0] * grid[1] * grid[2] // 4, "patches_per_frame": grid[1] * grid[2] // 4,
            "graphs": {"vision": {"file": f"{name}.vision.onnx"}, "prefill": {"file": f"{name}.prefill.onnx"}},
            "parity": {"file": f"{name}/parity.json", "passed": usable, "validated": True}, "usable": usable}


def write_dummy_build(root: Path, **overrides) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in DUMMY_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": {"name": "dummy", "family": "qwen2_vl", "num_layers": 2, "hidden_size": 8, "vocab_size": 272,
                  "num_kv_heads": 1, "head_dim": 4, "video_token_id": 263, "eos_token_id": 258,
                  "spatial_merge_size": 2, "patch_size": 14, "temporal_patch_size": 2},
        "precision": "fp32",
        "max_text": 256,
        "tokenizer": "tokenizer",
        "graphs": {"embed": {"file": "embed.onnx"}, "decode": {"file": "decode.onnx"}},
        "buckets": [_bucket("8x112x112", 8, 112, True), _bucket("16x224x224", 16, 224, False)],
        "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in DUMMY_FILES.items()},
    }
    manifest.update(overrides)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def build(tmp_path) -> Path:
    return write_dummy_build(tmp_path / "build")


def _message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_loads_and_offers_only_usable_buckets(build):
    m = load_manifest(build)
    assert [b.name for b in m.buckets] == ["8x112x112"]
    assert [b.name for b in m.all_buckets] == ["8x112x112", "16x224x224"]
    assert m.model.eos_token_ids == (258,) and m.model.patch_dim == 3 * 2 * 14 * 14
    b = m.bucket("8x112x112")
    assert (b.grid_thw, b.resized, b.visual_tokens, b.vision) == ((4, 8, 8), (112, 112), 64, "8x112x112.vision.onnx")
    assert m.tokenizer_file == build / "tokenizer" / "tokenizer.json"


def test_unusable_and_unknown_buckets_are_refused_with_a_listing(build):
    m = load_manifest(build)
    with pytest.raises(InputError) as e:
        m.bucket("16x224x224")
    assert "parity" in _message(e) and "8x112x112 (8 frames, 112x112)" in _message(e)
    with pytest.raises(InputError) as e:
        m.bucket("4x56x56")
    assert "no bucket '4x56x56'" in _message(e) and "16x224x224 (16 frames, 224x224) [not usable" in _message(e)


def test_eos_may_be_a_list(tmp_path):
    build = write_dummy_build(tmp_path / "b")
    raw = json.loads((build / "manifest.json").read_text())
    raw["model"]["eos_token_id"] = [258, 256]
    (build / "manifest.json").write_text(json.dumps(raw))
    assert load_manifest(build).model.eos_token_ids == (258, 256)


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(InputError) as e:
        load_manifest(tmp_path / "nope")
    assert "nope" in _message(e) and "no such directory" in _message(e)
    with pytest.raises(InputError) as e:
        load_manifest(tmp_path)
    assert "no manifest.json" in _message(e) and "rebuild" in _message(e)


def _corrupt(build: Path, name: str, how: str) -> None:
    path = build / name
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    elif how == "delete":
        path.unlink()
    elif how == "grow":
        path.write_bytes(data + b"x")


@pytest.mark.parametrize(("name", "how", "words"), [
    ("weights.bin", "truncate", "truncated"),
    ("weights.bin", "delete", "is missing"),
    ("embed.onnx", "grow", "larger than built"),
    ("embed.onnx", "flip", "sha256"),
    ("8x112x112.prefill.onnx", "flip", "sha256"),
    ("16x224x224.vision.onnx", "truncate", "truncated"),  # files of unusable buckets are checked too
    ("tokenizer/tokenizer.json", "flip", "sha256"),
    ("8x112x112/schedule.json", "delete", "is missing"),
])
def test_damaged_files_name_the_file_and_say_rebuild(build, name, how, words):
    _corrupt(build, name, how)
    with pytest.raises(InputError) as e:
        load_manifest(build)
    msg = _message(e)
    assert str(build / name) in msg and words in msg and "corrupt or incomplete" in msg and "rebuild" in msg


def test_weights_digest_only_with_verify(build):
    _corrupt(build, "weights.bin", "flip")  # same size: only the digest can tell
    load_manifest(build)
    with pytest.raises(InputError) as e:
        load_manifest(build, verify=True)
    assert "weights.bin" in _message(e) and "sha256" in _message(e)


def test_weights_past_the_committed_length_are_an_uncommitted_tail(build):
    """A build adding a bucket appends to weights.bin before it commits the manifest (or was killed
    doing so): the committed bytes still run, and are what --verify checks."""
    with open(build / "weights.bin", "ab") as f:
        f.write(b"appended by a build that has not committed")
    load_manifest(build, verify=True)
    _corrupt(build, "weights.bin", "flip")
    with pytest.raises(InputError) as e:
        load_manifest(build, verify=True)
    assert "sha256" in _message(e)


def test_other_files_digest_only_with_verify(build):
    _corrupt(build, "8x112x112/schedule.json", "flip")
    load_manifest(build)
    with pytest.raises(InputError):
        load_manifest(build, verify=True)


@pytest.mark.parametrize(("text", "words"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"format": "ffexport.manifest/9"}', "ffexport.manifest/9"),
])
def test_unreadable_manifest(build, text, words):
    (build / "manifest.json").write_text(text)
    with pytest.raises(InputError) as e:
        load_manifest(build)
    assert words in _message(e) and "manifest.json" in _message(e)


def _edit(build: Path, edit) -> None:
    raw = json.loads((build / "manifest.json").read_text())
    edit(raw)
    (build / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(("edit", "words"), [
    (lambda m: m["model"].pop("eos_token_id"), "model.eos_token_id is missing"),
    (lambda m: m["model"].update(num_layers="4"), "model.num_layers has the wrong type"),
    (lambda m: m["model"].update(num_layers=True), "model.num_layers has the wrong type"),
    (lambda m: m.pop("max_text"), "max_text is missing"),
    (lambda m: m["buckets"][0].pop("usable"), "bucket 8x112x112.usable is missing"),
    (lambda m: m["buckets"][0].update(grid_thw=[4, 8]), "bad resized"),
    (lambda m: m["buckets"].append(m["buckets"][0]), "repeat a name"),
    (lambda m: m["files"].pop("decode.onnx"), "does not list the graph decode.onnx"),
    (lambda m: m["graphs"]["embed"].update(file="../embed.onnx"), "outside the build directory"),
    (lambda m: m["files"].update({"/etc/passwd": {"bytes": 1, "sha256": "0" * 64}}), "outside the build directory"),
    (lambda m: m["files"]["embed.onnx"].update(sha256="abc"), "bad size or sha256"),
])
def test_malformed_fields_are_a_corrupt_build(build, edit, words):
    _edit(build, edit)
    with pytest.raises(InputError) as e:
        load_manifest(build)
    assert words in _message(e) and "rebuild" in _message(e)


def test_missing_tokenizer_is_refused(build):
    _edit(build, lambda m: m["files"].pop("tokenizer/tokenizer.json"))
    (build / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(InputError) as e:
        load_manifest(build)
    assert "tokenizer.json is missing" in _message(e)


@pytest.mark.parametrize("step, words", [("1e999", "must be finite, got inf"), ("0", "must be positive, got 0"),
                                         ("-1.5", "must be positive, got -1.5")])
def test_a_temporal_step_that_would_give_garbage_positions_is_one_line(build, step, words):
    """JSON reads 1e999 as inf; int(t * inf) would be garbage positions, so the step must be finite."""
    _edit(build, lambda m: m["model"].update(positions={"rule": "mrope", "temporal_step": 1.0}))
    text = (build / "manifest.json").read_text().replace('"temporal_step": 1.0', f'"temporal_step": {step}')
    (build / "manifest.json").write_text(text)
    with pytest.raises(InputError) as e:
        load_manifest(build)
    assert f"model.positions.temporal_step {words}" in _message(e)


# ------------------------------------------------------------------ frame blocks (text between frames)
_FIXED_TOWER = {"positions": {"rule": "1d"}, "frame_preprocess": {"size": 112, "mode": "square", "mean": [0.5] * 3,
                                                                   "std": [0.5] * 3, "resample": "bicubic"},
                "prompt_template": {"before": "", "after": "{prompt}"}}


def _blocks_build(build: Path, blocks, video_text) -> None:
    def edit(m):
        m["model"].update(_FIXED_TOWER, video_text=video_text)
        m["buckets"][0]["frame_blocks"] = blocks
        m["buckets"][0]["graphs"]["vision"]["inputs"] = [{"name": "pixel_values_videos", "dtype": "float32",
                                                          "shape": [8, 3, 112, 112]}]
    _edit(build, edit)


def test_frame_blocks_and_video_text_are_read(build):
    from ffexport.video_text import VideoText

    _blocks_build(build, [[0, 4], [7, 4]], {"prefix": "F{index}:", "suffix": "/", "separator": "\n"})
    manifest = load_manifest(build)
    bucket = manifest.bucket("8x112x112")
    assert bucket.frame_blocks == ((0, 4), (7, 4)) and bucket.pixel_shape == (8, 3, 112, 112)
    assert manifest.model.video_text == VideoText("F{index}:", "/", "\n")
    assert manifest.model.video_text.text("v", [2, 1]) == "F1:vv/\nF2:v/"
    # a build without them: one contiguous run, the shape unknown (older builds record no graph inputs)
    assert manifest.all_buckets[1].frame_blocks is None and manifest.all_buckets[1].pixel_shape is None


@pytest.mark.parametrize(("blocks", "video_text", "words"), [
    ([[0, 4], [2, 4]], None, "frame_blocks has a block [2, 4] out of order or overlapping"),
    ([[1, 4]], None, "frame_blocks has a block [1, 4] out of order"),
    ([[0, 4], [7]], None, "frame_blocks is not a list of [offset, tokens] pairs"),
    ([], None, "frame_blocks is not a list"),
    ([[0, 4], [7, 4]], {"prefix": "F{index}", "suffix": "/"}, "model.video_text has no text field 'separator'"),
    ([[0, 4], [7, 4]], {"prefix": "F{seconds}", "suffix": "", "separator": ""}, "model.video_text has a prefix"),
])
def test_malformed_frame_blocks_are_a_corrupt_build(build, blocks, video_text, words):
    _blocks_build(build, blocks, video_text)
    with pytest.raises(InputError) as e:
        load_manifest(build)
    assert words in _message(e) and "rebuild" in _message(e)

"""``ffexport build`` of a model without a tokenizer (random weights of a preset whose tokenizer is not
cached, e.g. ``--model qwen2vl-2b --random-weights``: sizing a deployment before the weights arrive).
The build runs on synthetic prompt ids, as ``ffexport bench`` does, and says so in its manifest;
``run --video`` refuses in one line (nothing can tokenize the prompt) and ``run --inputs`` works.

The tiny model stands in for the 2B (same code path: the loaded model has no tokenizer), so the test
takes seconds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ffexport import cli
from ffexport.cli import main
from ffexport.export.policy import SYNTHETIC_TEXT

BUCKET = "8x112x112"


@pytest.fixture(scope="module")
def no_tokenizer(tiny):
    return dataclasses.replace(tiny, tokenizer=None)


@pytest.fixture
def without_tokenizer(monkeypatch, no_tokenizer):
    monkeypatch.setattr(cli, "load_model", lambda args: no_tokenizer)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory, no_tokenizer):
    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "load_model", lambda args: no_tokenizer)
    try:
        out = tmp_path_factory.mktemp("notok") / "b"
        assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out), "--max-text", "64"]) == 0
    finally:
        mp.undo()
    return out


def test_build_records_synthetic_prompt_ids(build_dir):
    manifest = json.loads((build_dir / "manifest.json").read_text())
    assert manifest["tokenizer"] is None
    assert manifest["prompt_ids"].startswith("synthetic: no tokenizer")
    assert not (build_dir / "tokenizer").exists()
    assert manifest["buckets"][0]["name"] == BUCKET


def test_run_video_refuses_in_one_line(build_dir, tmp_path, capsys, error_line):
    from ffexport.video import synthetic_video, write_video

    clip = write_video(synthetic_video("moving_object", frames=4), tmp_path / "clip.mp4")
    assert main(["run", str(build_dir), "--video", str(clip)]) != 0
    line = error_line()
    assert "has no tokenizer" in line and "--inputs" in line


def test_case_then_run_inputs_works(build_dir, without_tokenizer, tmp_path, capsys):
    """``ffexport case`` gives the synthetic ids (the prompt cannot be tokenized) and ``run --inputs`` takes them."""
    path, out = tmp_path / "case.npz", tmp_path / "out.npz"
    assert main(["-q", "case", "--video", "synthetic:moving_object", "--out", str(path)]) == 0
    with np.load(path) as saved:
        assert saved["input_ids"].shape[1] == 64 + sum(SYNTHETIC_TEXT) + 2  # 64 video, text, vision start/end
    assert main(["-q", "run", str(build_dir), "--inputs", str(path), "--max-new-tokens", "3", "--out", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["generated_ids"].shape == (1, 3)
        ids = saved["generated_ids"][0].tolist()
    assert capsys.readouterr().out == "generated ids: " + " ".join(map(str, ids)) + "\n"  # no tokenizer: no text


def test_runtime_decodes_with_the_static_graph_like_the_dynamic_one(build_dir, no_tokenizer):
    """(This module's build serves here too.) The build holds a static decode graph per bucket with each
    layer's capacity; ``Runtime.generate`` decodes with it (caches in place) and gives the tokens that
    ``decode.onnx``'s loop gives."""
    from ffexport.export.policy import video_case
    from ffexport.runtime import Runtime
    from ffexport.video import synthetic_video

    manifest = json.loads((build_dir / "manifest.json").read_text())
    record = manifest["buckets"][0]["graphs"]["decode_static"]
    assert len(record["capacities"]) == no_tokenizer.num_layers
    case = video_case(no_tokenizer, synthetic_video("pan", frames=8, height=112, width=112, seed=3), "")
    runtime = Runtime(build_dir)
    static = runtime.generate(case, 12)
    assert any(key.startswith("static decode") for key in runtime._graphs)
    dynamic = Runtime(build_dir)
    bucket = dataclasses.replace(dynamic.manifest.buckets[0], decode_static=None)
    dynamic._check_case = lambda case, bucket_name: bucket
    expected = dynamic.generate(case, 12)
    assert "decode.onnx" in dynamic._graphs
    assert static.generated_ids.tolist() == expected.generated_ids.tolist()

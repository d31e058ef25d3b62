"""A real `ffexport build` of the tiny model, run by the torch-free runtime and compared with the
PyTorch static-schedule reference on the same cases; then every user mistake as one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ffexport.case import load_case
from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.video import synthetic_video, write_video

pytestmark = pytest.mark.slow

# (synthetic video, prompt, tokens): picked so the tiny random model's greedy tokens vary.
CASES = [
    ("synthetic:moving_object", "Describe what happens in this video.", 8),
    ("synthetic:pan", "Count", 16),
    ("synthetic:static", "Count", 16),
]



def _case(tmp_path, video: str, prompt: str, *extra: str):
    path = tmp_path / "case.npz"
    assert main(["-q", "case", "--video", video, "--prompt", prompt, "--out", str(path), "--overwrite", *extra]) == 0
    return path


@pytest.mark.parametrize(("video", "prompt", "tokens"), CASES, ids=lambda x: str(x)[:20])
def test_runtime_matches_the_static_reference(real_build_dir, real_bucket, tmp_path, video, prompt, tokens):
    case = _case(tmp_path, video, prompt)
    schedule = real_build_dir / real_bucket / "schedule.json"
    ref, run = tmp_path / "ref.npz", tmp_path / "run.npz"
    assert main(["-q", "reference", "--static", str(schedule), "--inputs", str(case), "--max-new-tokens", str(tokens),
                 "--out", str(ref)]) == 0
    assert main(["-q", "run", str(real_build_dir), "--inputs", str(case), "--max-new-tokens", str(tokens),
                 "--out", str(run)]) == 0
    with np.load(ref) as r, np.load(run) as o:
        assert o["logits"].dtype == np.float32 and o["logits"].shape == r["logits"].shape
        assert np.abs(o["logits"] - r["logits"]).max() <= 1e-4
        np.testing.assert_array_equal(o["generated_ids"], r["generated_ids"])


def test_prepare_video_equals_the_case_command(real_build_dir, tmp_path):
    from ffexport.runtime import Runtime

    expected = load_case(_case(tmp_path, "synthetic:pan", "Count"))
    case = Runtime(real_build_dir).prepare_video(synthetic_video("pan", frames=8, height=112, width=112, seed=0), "Count")
    np.testing.assert_array_equal(case.input_ids, expected.input_ids)
    np.testing.assert_array_equal(case.video_grid_thw, expected.video_grid_thw)
    np.testing.assert_array_equal(case.pixel_values_videos, expected.pixel_values_videos)


def test_run_video_prints_the_answer(real_build_dir, real_bucket, tmp_path, capsys, tiny):
    """``ffexport run --video`` against the PyTorch static reference on the same file: the frames decoded
    here with PyAV, preprocessed by the export side (``case_from_video``, not the runtime's numpy
    code), run by ``Reference`` with the bucket's schedule; the printed answer must be the
    reference's greedy tokens, decoded, and the prefill logits must match."""
    import av

    from ffexport.fusion.schedule import load_schedule
    from ffexport.reference import Reference
    from ffexport.runtime import Runtime

    video = write_video(synthetic_video("moving_object", frames=8, height=112, width=112, seed=4), tmp_path / "clip.mp4")
    assert main(["run", str(real_build_dir), "--video", str(video), "--prompt", "What moves?",
                 "--max-new-tokens", "8", "--fit", "resize"]) == 0  # run_video resizes
    captured = capsys.readouterr()
    assert f"bucket {real_bucket}" in captured.err
    with av.open(str(video)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (8, 112, 112, 3)  # the bucket's size: no sampling or resizing on either side
    runtime = Runtime(real_build_dir)
    eos = set(runtime.manifest.model.eos_token_ids)
    schedule = load_schedule(real_build_dir / real_bucket / "schedule.json")
    ref = Reference(tiny, schedule=schedule, max_new_tokens=8)(tiny.case_from_video(frames, "What moves?"))
    ref_ids = ref.generated_ids[0].tolist()
    stop = next((i + 1 for i, t in enumerate(ref_ids) if t in eos), len(ref_ids))
    assert len(ref_ids[:stop]) >= 1 and len(set(ref_ids)) > 1  # an answer of varied tokens, not an empty line
    assert captured.out == "answer: " + runtime.tokenizer.decode(ref_ids[:stop]) + "\n"
    result = runtime.run_video(video, "What moves?", max_new_tokens=8)
    assert result.generated_ids[0].tolist() == ref_ids[:stop]
    assert np.abs(result.logits - ref.logits).max() <= 1e-4


def test_deployment_path_needs_no_torch(real_build_dir, tmp_path):
    video = write_video(synthetic_video("pan", frames=8, height=112, width=112), tmp_path / "clip.mp4")
    code = ("import sys\nfrom ffexport.cli import main\n"
            f"rc = main({json.dumps(['-q', 'run', str(real_build_dir), '--video', str(video), '--max-new-tokens', '4'])})\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]\n"
            "print('RC', rc, 'HEAVY', heavy, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "RC 0 HEAVY []" in done.stderr, done.stderr[-2000:]


# ---------------------------------------------------------------- mistakes
@pytest.fixture
def damaged(real_build_dir, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(real_build_dir, build)
    return build


@pytest.fixture(scope="module")
def good_case(real_build_dir, tmp_path_factory):
    return _case(tmp_path_factory.mktemp("good"), "synthetic:moving_object", "What happens?")


def test_truncated_weights(damaged, good_case, capsys, error_line):
    weights = damaged / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-4096])
    assert main(["-q", "run", str(damaged), "--inputs", str(good_case)]) == InputError.exit_code
    line = error_line()
    assert str(weights) in line and "truncated" in line and "rebuild" in line


def test_corrupt_graph(damaged, real_bucket, good_case, capsys, error_line):
    graph = damaged / f"{real_bucket}.prefill.onnx"
    data = bytearray(graph.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0x5A
    graph.write_bytes(bytes(data))
    assert main(["-q", "run", str(damaged), "--inputs", str(good_case)]) == InputError.exit_code
    line = error_line()
    assert str(graph) in line and "sha256" in line and "rebuild" in line


def test_missing_manifest(damaged, good_case, capsys, error_line):
    (damaged / "manifest.json").unlink()
    assert main(["-q", "run", str(damaged), "--inputs", str(good_case)]) == InputError.exit_code
    assert "has no manifest.json" in error_line()


def test_case_for_a_bucket_that_does_not_exist(real_build_dir, real_bucket, tmp_path, capsys, error_line):
    case = _case(tmp_path, "synthetic:pan", "Count", "--size", "56x112")
    assert main(["-q", "run", str(real_build_dir), "--inputs", str(case)]) == InputError.exit_code
    line = error_line()
    assert "matches no usable bucket" in line and f"{real_bucket} (8 frames, 112x112) grid 4x8x8" in line


def test_prompt_longer_than_max_text(real_build_dir, tmp_path, capsys, error_line):
    max_text = json.loads((real_build_dir / "manifest.json").read_text())["max_text"]
    long_prompt = "word " * max_text
    case = _case(tmp_path, "synthetic:pan", long_prompt)
    text_tokens = load_case(case).input_ids.shape[1] - 64
    assert main(["-q", "run", str(real_build_dir), "--inputs", str(case)]) == InputError.exit_code
    assert error_line() == f"error: input: prompt is {text_tokens} tokens; this build takes at most {max_text}"
    video = write_video(synthetic_video("pan", frames=8, height=112, width=112), tmp_path / "clip.mp4")
    assert main(["-q", "run", str(real_build_dir), "--video", str(video), "--prompt", long_prompt]) == InputError.exit_code
    assert f"this build takes at most {max_text}" in error_line()


def test_nan_pixels(real_build_dir, good_case, tmp_path, capsys, error_line):
    with np.load(good_case) as data:
        arrays = dict(data)
    arrays["pixel_values_videos"][7, 11] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, **arrays)
    assert main(["-q", "run", str(real_build_dir), "--inputs", str(bad)]) == InputError.exit_code
    assert "NaN or infinite" in error_line()


def test_non_video_file(real_build_dir, tmp_path, capsys, error_line):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a text file\n")
    assert main(["-q", "run", str(real_build_dir), "--video", str(fake), "--prompt", "hi"]) == InputError.exit_code
    assert f"{fake} is not a readable video" in error_line()

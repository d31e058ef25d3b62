"""`ffexport run` works where only the runtime extra is installed: no torch, transformers, onnx, ...

This environment has everything installed, so each check runs in a subprocess whose import system
refuses the packages `ffexport[runtime]` does not bring (a meta path finder raising
ModuleNotFoundError, as a missing package does) and records every attempt to import one. A command
that needs a refused package fails there as it would on a serving machine; CI also runs the real
thing in a fresh venv (.ci/runtime-only).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from ffexport.video import synthetic_video, write_video
from toy_build import DEFAULT_BUCKETS, oracle, toy_case

#: Installed with the full package but not by `pip install ffexport[runtime]` (pyproject.toml).
REFUSED = ("torch", "transformers", "onnx", "onnxscript", "polygraphy", "matplotlib", "tensorrt", "tensorrt_rtx")

SCRIPT = """
import json, sys
REFUSED = {refused!r}
attempts = []

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (refused by the test)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
code = None
try:
{body}
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in REFUSED)
    print("REFUSED=" + json.dumps({{"attempts": attempts, "loaded": loaded, "code": code}}))
"""


def _without_heavy_packages(body: str) -> tuple[dict, subprocess.CompletedProcess]:
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(refused=REFUSED, body=indented)],
                          capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("REFUSED=")), None)
    assert line is not None, done.stderr[-3000:]
    return json.loads(line[len("REFUSED="):]), done


def _cli(argv: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    return _without_heavy_packages(f"from ffexport.cli import main\ncode = main({json.dumps(argv)})")


def test_importing_the_runtime_needs_none_of_them():
    report, done = _without_heavy_packages(
        "import ffexport.runtime as rt\n"
        "import importlib, pkgutil\n"
        "for m in pkgutil.iter_modules(rt.__path__): importlib.import_module('ffexport.runtime.' + m.name)\n"
        "assert 'ffexport.runtime.engines' in sys.modules\n"
        "for name in rt.__all__: getattr(rt, name)\n"
        "import ffexport.runtime.fit\n"
        "code = 0\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert report == {"attempts": [], "loaded": [], "code": 0}


def test_run_inputs_without_them(toy_build_dir, tmp_path):
    bucket = DEFAULT_BUCKETS[0]
    case = toy_case(bucket, seed=2)
    case.save(tmp_path / "case.npz")
    report, done = _cli(["-q", "run", str(toy_build_dir), "--inputs", str(tmp_path / "case.npz"),
                         "--max-new-tokens", "3", "--out", str(tmp_path / "o.npz")])
    assert report == {"attempts": [], "loaded": [], "code": 0}, done.stderr[-3000:]
    logits, tokens = oracle(case.input_ids, case.pixel_values_videos, case.video_grid_thw, 3)
    with np.load(tmp_path / "o.npz") as saved:
        np.testing.assert_array_equal(saved["logits"], logits)
        assert saved["generated_ids"].tolist() == [tokens]


def test_run_a_video_file_without_them(toy_build_dir, tmp_path):
    video = write_video(synthetic_video("pan", frames=12, height=120, width=240), tmp_path / "v.mp4")
    report, done = _cli(["run", str(toy_build_dir), "--video", str(video), "--max-new-tokens", "2"])
    assert report == {"attempts": [], "loaded": [], "code": 0}, done.stderr[-3000:]
    assert "answer:" in done.stdout


def test_run_a_real_build_without_them(real_build_dir, tmp_path):
    video = write_video(synthetic_video("moving_object", frames=8, height=112, width=112), tmp_path / "v.mp4")
    report, done = _cli(["run", str(real_build_dir), "--video", str(video), "--max-new-tokens", "2"])
    assert report == {"attempts": [], "loaded": [], "code": 0}, done.stderr[-3000:]
    assert re.search(r"-> bucket 8x112x112, 64 -> \d+ visual tokens", done.stderr) and "answer:" in done.stdout


def test_help_lists_what_is_missing_and_other_commands_say_so():
    report, done = _without_heavy_packages(
        "from ffexport.cli import build_parser\nprint(build_parser().format_help())\ncode = 0")
    assert report["code"] == 0 and report["loaded"] == [], done.stderr[-3000:]
    assert "run" in done.stdout and "unavailable here: needs onnx" in done.stdout
    for argv, missing in ((["lint", "x.onnx"], "onnx"), (["-q", "build", "--out", "b"], "torch"),
                          (["calibrate", "--synthetic", "1", "--bucket", "8x112x112", "--out", "s.json"], "torch")):
        report, done = _cli(argv)
        assert report["code"] == 2 and report["loaded"] == [], done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: input: ffexport {argv[0] if argv[0] != '-q' else argv[1]} needs {missing}, which is not installed "
            "here (a runtime-only install runs `ffexport run`; pip install 'ffexport[export]' for the rest)")


@pytest.mark.parametrize("module", ["torch", "onnx"])
def test_the_check_itself_can_fail(module):
    report, done = _without_heavy_packages(f"import {module}\ncode = 0")
    assert done.returncode != 0 and "refused by the test" in done.stderr
    assert report["attempts"] == [module] and report["code"] is None

"""The runtime must run on a machine without PyTorch: importing and running it never loads torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys

from toy_build import DEFAULT_BUCKETS, toy_case

CHECK = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print("HEAVY=" + ",".join(heavy))
"""


def _heavy_modules(body: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("HEAVY="))
    return [m for m in line[len("HEAVY="):].split(",") if m]


def test_importing_the_runtime_loads_neither_torch_nor_transformers():
    body = (
        "import ffexport.runtime as rt\n"
        "import importlib, pkgutil\n"
        "for m in pkgutil.iter_modules(rt.__path__): importlib.import_module('ffexport.runtime.' + m.name)\n"
        "assert 'ffexport.runtime.engines' in sys.modules\n"
        "for name in rt.__all__: getattr(rt, name)\n"
    )
    assert _heavy_modules(body) == []


def test_running_a_build_loads_neither(toy_build_dir, tmp_path):
    case = tmp_path / "case.npz"
    toy_case(DEFAULT_BUCKETS[0]).save(case)
    argv = ["-q", "run", str(toy_build_dir), "--inputs", str(case), "--max-new-tokens", "3",
            "--out", str(tmp_path / "o.npz")]
    body = f"from ffexport.cli import main\nassert main({json.dumps(argv)}) == 0\n"
    assert _heavy_modules(body) == []
    assert (tmp_path / "o.npz").is_file()


def test_the_check_itself_sees_torch():
    assert "torch" in _heavy_modules("import torch\n")  # the check can fail

"""`ffexport build --ops plugin` on the tiny model: the manifest records the plugins, the parity gate
passes in ONNX Runtime (numpy kernels through onnxruntime-extensions), `ffexport lint` is clean, and
`ffexport run` gives what a standard build and `ffexport reference --static` give, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ffexport.cli import main
from ffexport.errors import InputError
from ffexport.plugins import MERGE, PRUNE

pytestmark = pytest.mark.slow

# cases whose greedy tokens vary on the tiny random model (as tests/runtime/test_end_to_end.py)
CASES = [("synthetic:moving_object", "Describe what happens in this video.", 8), ("synthetic:static", "Count", 12)]


@pytest.fixture(scope="module")
def plugin_build_dir(tmp_path_factory, real_bucket):
    out = tmp_path_factory.mktemp("plugin") / "build"
    done = subprocess.run([sys.executable, "-m", "ffexport", "-q", "build", "--ops", "plugin", "--bucket", real_bucket,
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, f"ffexport build --ops plugin failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return out


def test_manifest_records_plugin_mode(plugin_build_dir, real_build_dir):
    manifest = json.loads((plugin_build_dir / "manifest.json").read_text())
    standard = json.loads((real_build_dir / "manifest.json").read_text())
    assert manifest["ops"] == "plugin" and standard.get("ops", "standard") == "standard"
    (bucket,) = manifest["buckets"]
    assert bucket["usable"] and bucket["parity"]["passed"]
    assert bucket["graphs"]["prefill"]["plugins"] == [{"name": MERGE, "version": "1", "namespace": "ffexport"},
                                                      {"name": PRUNE, "version": "1", "namespace": "ffexport"}]
    assert "plugins" not in bucket["graphs"]["vision"]
    assert all("plugins" not in g for g in manifest["graphs"].values())
    assert bucket["schedule"] == standard["buckets"][0]["schedule"]  # the same default policy schedule


def test_parity_gate_ran_the_plugin_graph_on_every_video(plugin_build_dir, real_bucket):
    report = json.loads((plugin_build_dir / real_bucket / "parity.json").read_text())
    assert report["passed"]
    assert [c.split(":")[1] for c in report["cases"]] == ["moving_object", "pan", "static"]
    (prefill,) = [g for g in report["graphs"] if g["graph"] == "prefill"]
    assert prefill["passed"] and max(o["max_abs"] for o in prefill["outputs"]) <= 1e-4
    assert all(e["tokens_equal"] and e["logits"]["passed"] for e in report["end_to_end"])
    contract = report["contract"]  # the parity contract, through plugin-mode graphs of the realized schedules
    assert contract["passed"] and contract["compared"] == 3 and contract["oracle"]["passed"]
    assert all(v["passed"] and v["logits"]["max_abs"] <= 1e-5 for v in contract["videos"])


def test_plugin_build_lints_clean(plugin_build_dir, capsys):
    assert main(["lint", str(plugin_build_dir)]) == 0
    assert "0 findings in 0 of 5 graphs" in capsys.readouterr().out


@pytest.mark.parametrize(("video", "prompt", "tokens"), CASES, ids=lambda x: str(x)[:24])
def test_run_equals_the_standard_build_and_the_static_reference(plugin_build_dir, real_build_dir, real_bucket,
                                                                tmp_path, video, prompt, tokens):
    case = tmp_path / "case.npz"
    assert main(["-q", "case", "--video", video, "--prompt", prompt, "--out", str(case)]) == 0
    outs = {name: tmp_path / f"{name}.npz" for name in ("plugin", "standard", "reference")}
    assert main(["-q", "run", str(plugin_build_dir), "--inputs", str(case), "--max-new-tokens", str(tokens),
                 "--out", str(outs["plugin"])]) == 0
    assert main(["-q", "run", str(real_build_dir), "--inputs", str(case), "--max-new-tokens", str(tokens),
                 "--out", str(outs["standard"])]) == 0
    assert main(["-q", "reference", "--static", str(plugin_build_dir / real_bucket / "schedule.json"),
                 "--inputs", str(case), "--max-new-tokens", str(tokens), "--out", str(outs["reference"])]) == 0
    loaded = {name: dict(np.load(path)) for name, path in outs.items()}
    plugin = loaded["plugin"]
    for other in ("standard", "reference"):
        np.testing.assert_array_equal(plugin["generated_ids"], loaded[other]["generated_ids"])
        assert np.abs(plugin["logits"] - loaded[other]["logits"]).max() <= 1e-4, other
    assert plugin["generated_ids"].shape[1] == tokens


def test_resume_with_other_ops_is_refused(plugin_build_dir, error_line):
    before = (plugin_build_dir / "manifest.json").read_bytes()
    assert main(["-q", "build", "--ops", "standard", "--bucket", "8x112x112", "--out", str(plugin_build_dir)]) == \
        InputError.exit_code
    assert "holds a build with --ops plugin" in error_line()
    assert (plugin_build_dir / "manifest.json").read_bytes() == before


BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is not installed (serving machine)")
sys.meta_path.insert(0, _NoTorch())
from ffexport.cli import main
rc = main(ARGV)
print("RC", rc, "HEAVY", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
"""


def test_run_on_a_machine_without_torch(plugin_build_dir, tmp_path):
    """A serving machine (ffexport[runtime]: no torch, no transformers) runs plugin builds: the kernels are
    numpy, and onnxruntime-extensions only imports them when present."""
    case = tmp_path / "case.npz"
    assert main(["-q", "case", "--video", "synthetic:pan", "--prompt", "Count", "--out", str(case)]) == 0
    argv = ["-q", "run", str(plugin_build_dir), "--inputs", str(case), "--max-new-tokens", "4",
            "--out", str(tmp_path / "o.npz")]
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH.replace("ARGV", json.dumps(argv))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RC 0 HEAVY []" in done.stdout, done.stdout + done.stderr[-3000:]
    with np.load(tmp_path / "o.npz") as out:
        assert out["generated_ids"].shape == (1, 4)

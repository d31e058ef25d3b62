"""The README's two set-up commands are the ones that exist: CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    main_job, tests = (b.strip() for b in _bash_blocks()[:2])
    assert "pytest" in tests and "torch==2.13.0" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
    assert main_job.startswith("pip install torch==2.13.0 -e '.[export]' && ffexport ")


def test_cli_help_lists_the_documented_commands():
    from ffexport.cli import build_parser

    help_text = build_parser().format_help()
    for command in ("reference", "case", "models"):
        assert command in help_text


#: Options a usage block need not repeat: help, verbosity (accepted before or after any verb) and the model
#: options documented once under "load a model".
SHARED_OPTIONS = {"-h", "--help", "-q", "--quiet", "-v", "--verbose", "--weights", "--dtype", "--random-weights",
                  "--layers", "--vision-layers"}


def _usage_blocks() -> dict[str, str]:
    """README's plain code blocks that show a command's usage (``ffexport CMD ...`` lines), by command."""
    usages: dict[str, str] = {}
    for block in re.findall(r"```\n(ffexport [a-z]+ .*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for lines in re.split(r"\n(?=ffexport )", block.strip()):
            name = lines.split()[1]
            usages[name] = usages.get(name, "") + "\n" + lines
    return usages


def _subcommand(name: str):
    from ffexport.cli import build_parser

    sub = next(a for a in build_parser(name)._actions if a.dest == "command")
    return sub.choices[name]


def test_readme_usage_blocks_match_the_help():
    usages = _usage_blocks()
    assert {"build", "run", "reference"} <= set(usages)
    for name, usage in usages.items():
        parser = _subcommand(name)
        options = {s: a for a in parser._actions for s in a.option_strings}
        shown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", usage))
        assert not shown - set(options), f"README shows `ffexport {name}` options it does not have: {shown - set(options)}"
        missing = {s for s in options if s.startswith("--")} - shown - SHARED_OPTIONS
        assert not missing, f"`ffexport {name} --help` has options README's usage block lacks: {sorted(missing)}"
        for option, values in re.findall(r"(--[\w-]+)[ =]([\w-]+(?:\|[\w-]+)+)", usage):
            if options[option].choices is not None:  # e.g. --fit crop|pad|resize|strict: values it takes
                assert set(values.split("|")) <= set(options[option].choices), (name, option, values)
    fits = re.search(r"--fit ([\w|]+)", usages["run"]).group(1).split("|")
    assert fits == list(_subcommand("run")._option_string_actions["--fit"].choices)


def test_readme_run_example_is_what_run_says():
    """The `ffexport run` stderr example (a 61-frame 585x960 clip on the default 8x112x112 bucket)."""
    import numpy as np

    from ffexport.runtime.fit import describe_sampling, fit_frames, suggest_bucket
    from ffexport.runtime.manifest import Bucket

    text = (ROOT / "README.md").read_text()
    bucket = Bucket(name="8x112x112", frames=8, height=112, width=112, resized=(112, 112), grid_thw=(4, 8, 8),
                    visual_tokens=64, patches_per_frame=16, vision="", prefill="", usable=True, parity_passed=True)
    assert f"frames: {describe_sampling(61, 8)}\n" in text
    _, said = fit_frames(np.zeros((1, 585, 960, 3), np.uint8), bucket.aspect, "crop")
    assert f"fit crop: {said}\n" in text
    assert f"a bucket of this video's shape: ffexport build --bucket {suggest_bucket(bucket, 585, 960, factor=28)}\n" in text


def test_readme_runtime_install_is_the_plain_package():
    """README's torch-free install names exactly the package's own dependencies (what .ci/runtime-only
    installs with `pip install -e '.[runtime]'`), and none of them is an export package."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in project["dependencies"]}
    assert project["optional-dependencies"]["runtime"] == []
    assert not names & {"torch", "transformers", "onnx", "onnxscript", "polygraphy", "matplotlib"}
    section = (ROOT / "README.md").read_text().split("### `ffexport run`")[1]
    listed = re.search(r"installs only what\s+`run` needs \(([^)]*)\)", section)
    assert listed is not None and {n.strip() for n in listed.group(1).split(",")} == names
    assert "install -e '.[runtime]'" in (ROOT / ".ci" / "runtime-only").read_text()

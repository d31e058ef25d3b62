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
    assert main_job.startswith("pip install torch==2.13.0 -e . && ffexport ")


def test_cli_help_lists_the_documented_commands():
    from ffexport.cli import build_parser

    help_text = build_parser().format_help()
    for command in ("reference", "case", "models"):
        assert command in help_text

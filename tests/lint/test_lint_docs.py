"""docs/tensorrt-lint.md lists every rule, and every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from ffexport.lint import RULES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "tensorrt-lint.md"


def _rule_rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| (TRT\d{3}) \|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_every_rule_has_a_row_with_a_source_url_and_a_test():
    rows = _rule_rows()
    assert sorted(rows) == sorted(RULES)
    for rid, line in rows.items():
        assert "http" in line, rid
        assert "test_" in line, rid
        assert RULES[rid].targets == {t for t in ("trt10", "trt11") if t in line.split("|")[5]}, rid


def test_named_tests_exist():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests" / "lint").glob("test_*.py"))
    named = set(re.findall(r"\b(test_[a-z0-9_]+)\b", DOC.read_text()))
    named -= {p.stem for p in (ROOT / "tests" / "lint").glob("test_*.py")}  # file names
    missing = sorted(n for n in named if f"def {n}(" not in tests)
    assert missing == []

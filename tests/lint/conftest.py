"""Lint fixtures: graph builders live in lint_graphs.py (plain functions, imported by the tests)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

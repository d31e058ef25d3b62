"""The ``ffexport lint`` subcommand: list what TensorRT's ONNX parser would reject in graphs or a build.

``ffexport/cli.py`` calls :func:`add_lint_parser`. Torch-free: this module and what it imports load only
onnx, numpy and the standard library. Exit status: 0 no findings, 1 findings, 2 (``InputError``) a file or
build directory that cannot be read.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from ffexport.errors import InputError
from ffexport.lint.tables import TARGETS

DEFAULT_TARGET = "trt11"


def add_lint_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``lint`` to the ``ffexport`` subcommands and return its parser."""
    lint = subparsers.add_parser(
        "lint", help="check ONNX graphs against TensorRT's ONNX parser limits (no TensorRT needed)",
        description="Walk ONNX graphs and report every construct TensorRT's ONNX parser rejects or runs only "
                    "through a plugin (TopK K >= 3840, ScatterND reduction, ScatterElements reduction, CumSum "
                    "and Reduce* with non-constant axes, NonZero/Unique, unsupported operators and types). "
                    "Weights are not read. Exit status 0: no findings; 1: findings; 2: unreadable input. "
                    "Rules and their sources: docs/tensorrt-lint.md.",
    )
    lint.add_argument("graphs", nargs="+", metavar="GRAPH",
                      help="an .onnx file, or a build directory (every graph its manifest.json lists)")
    lint.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                      help=f"TensorRT major version whose parser to check against (default {DEFAULT_TARGET})")
    lint.set_defaults(func=lint_command)
    return lint


@dataclass
class GraphReport:
    """The findings for one graph file; ``label`` is how the output names it."""

    label: str
    path: Path
    findings: list = field(default_factory=list)


def graphs_of_build(directory: Path) -> list[Path]:
    """The graph files a build's manifest lists (``graphs.*.file`` then ``buckets[*].graphs.*.file``)."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{directory}: a directory without manifest.json is not an ffexport build; give .onnx "
                         "files or a build directory")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = [g["file"] for g in manifest.get("graphs", {}).values()]
        for bucket in manifest.get("buckets", []):
            files += [g["file"] for g in bucket.get("graphs", {}).values()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"{manifest_path}: not a readable ffexport manifest ({type(e).__name__}: {e})") from e
    seen: list[Path] = []
    for f in files:
        p = directory / f
        if p not in seen:
            seen.append(p)
    if not seen:
        raise InputError(f"{manifest_path}: lists no graphs")
    return seen


def resolve(args: list[str]) -> list[Path]:
    """Expand build directories into their graphs; keep files as given."""
    paths: list[Path] = []
    for a in args:
        p = Path(a)
        paths.extend(graphs_of_build(p) if p.is_dir() else [p])
    return paths


def format_report(report: GraphReport, target: str) -> str:
    """``LABEL: no findings (trt11)``, or a header and one table row per finding."""
    if not report.findings:
        return f"{report.label}: no findings ({target})"
    n = len(report.findings)
    rows = [("rule", "severity", "node", "message")]
    for f in report.findings:
        prefix = f"{f.op_type} node '{f.node}': "
        message = f.message[len(prefix):] if f.message.startswith(prefix) else f.message
        rows.append((f.rule, f.severity, f"{f.node} ({f.op_type})", message))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{report.label}: {n} finding{'s' if n != 1 else ''} ({target})"]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return "\n".join(lines)


def lint_command(args: argparse.Namespace) -> int:
    """Carry out ``ffexport lint``: print the findings table per graph; 1 if anything was found."""
    from ffexport.lint.core import lint_model, load_graph

    paths = resolve(args.graphs)
    models = [(p, load_graph(p)) for p in paths]  # every input readable before any output
    reports = [GraphReport(str(p), p, lint_model(m, target=args.target)) for p, m in models]
    for r in reports:
        print(format_report(r, args.target))
    total = sum(len(r.findings) for r in reports)
    if len(reports) > 1:
        dirty = sum(1 for r in reports if r.findings)
        print(f"lint ({args.target}): {total} finding{'s' if total != 1 else ''} in {dirty} of {len(reports)} "
              "graphs")
    return 1 if total else 0

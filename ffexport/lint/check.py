"""``ffexport check``: NVIDIA's own ONNX parser (and, with ``--build-for``, its ahead-of-time builder) on
every graph of a build, one line per graph. Without a TensorRT module, the hand rules of ``ffexport lint``.

    ffexport check BUILD_DIR|GRAPH.onnx [...] [--build-for SM89,SM120]

Per graph: ``parsed``, ``built for SM89 (N bytes, S s)``, ``rejected at node X (Op): <the parser's
message>`` or ``parsed; build for SM89 failed: <the builder's errors>``. Exit status as ``lint``: 0 every
graph passed, 1 a graph was rejected or failed to build (or, without a parser, lint findings), 2 an input
that cannot be read (one ``error:`` line) or an unknown compute capability.

Optimization profiles come from the build's manifest (:class:`~ffexport.export.trt_toolkit.EngineProfiles`:
prefill text length 1 to ``max_text`` around the bucket's video, cache lengths up to the longest prompt
plus 512 tokens); a graph no manifest lists gets min/opt/max ``DEFAULT_DYNAMIC_DIMS`` for every dynamic dim.
Torch-free.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ffexport.errors import InputError
from ffexport.export.trt_toolkit import (
    DEFAULT_DYNAMIC_DIMS,
    RTX_INSTALL,
    BuildFailure,
    DimRange,
    EngineProfiles,
    ParsedNetwork,
    ParseOnnx,
    Rejection,
    SerializeEngine,
    Toolkit,
    find_toolkit,
    parse_compute_capabilities,
)
from ffexport.lint.cli import graphs_of_build
from ffexport.plugins import plugins_in_file

log = logging.getLogger(__name__)

PARSED, BUILT, REJECTED, BUILD_FAILED = "parsed", "built", "rejected", "build failed"
#: a plugin-mode graph TensorRT-RTX cannot take (it has no plugin layers): checked by the hand rules instead
HAND_RULES = "hand rules"
#: why plugin-mode graphs are not handed to TensorRT-RTX (docs/tensorrt.md, "Plugin mode and TensorRT-RTX")
RTX_HAS_NO_PLUGIN_LAYERS = ("TensorRT-RTX builds no plugin layers (its network has no addPluginV3; its parser aborts the "
                            "process after creating one), so")


@dataclass(frozen=True)
class GraphCheck:
    """What the real parser (and builder) said about one graph."""

    label: str
    status: str  # PARSED, BUILT, REJECTED, BUILD_FAILED or HAND_RULES
    detail: str = ""  # the parser's / builder's message (REJECTED, BUILD_FAILED), the hand rules' findings
    node: str | None = None  # REJECTED: the node's name
    op_type: str | None = None
    engine_bytes: int | None = None
    seconds: float | None = None
    build_for: tuple[str, ...] = ()
    #: what the check changed before parsing or building (e.g. ONNX Runtime's attention as the ONNX op)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (PARSED, BUILT) or (self.status == HAND_RULES and not self.detail)

    def line(self) -> str:
        targets = ",".join(self.build_for)
        extra = f"; {self.note}" if self.note else ""
        if self.status == BUILT:
            return f"{self.label}: built for {targets} ({self.engine_bytes} bytes, {self.seconds:.1f} s{extra})"
        if self.status == PARSED:
            return f"{self.label}: parsed" + (f" ({self.note})" if self.note else "")
        if self.status == HAND_RULES:
            return (f"{self.label}: not parsed: {RTX_HAS_NO_PLUGIN_LAYERS} its {self.op_type} nodes were checked by the "
                    f"hand rules: " + (self.detail or "no findings"))
        if self.status == REJECTED:
            return f"{self.label}: {Rejection(self.node, self.op_type or '?', self.detail)}"
        return f"{self.label}: parsed; build for {targets} failed: {self.detail}"


class CheckGraph:
    """``CheckGraph(toolkit=..., build_for=("SM89",))(path, dims) -> GraphCheck``: parse the graph (weights
    beside it are read), then, when ``build_for`` is given, build an engine for those GPU generations in
    memory (nothing is written)."""

    def __init__(self, *, toolkit: Toolkit, build_for: tuple[str, ...] = ()) -> None:
        self.toolkit = toolkit
        self.build_for = build_for
        self.parse = ParseOnnx(toolkit=toolkit)
        self.serialize = SerializeEngine(compute_capabilities=build_for) if build_for else None

    def __call__(self, path: Path, dims: DimRange | None, *, label: str | None = None) -> GraphCheck:
        label = label or str(path)
        if self.toolkit.ahead_of_time:
            plugins = plugins_in_file(path)
            if plugins:
                return self._hand_rules(label, path, plugins)
        with standard_attention(Path(path)) as (parse_path, note):
            parsed = self.parse(parse_path)
            if isinstance(parsed, Rejection):
                return GraphCheck(label, REJECTED, parsed.message, parsed.node, parsed.op_type, note=note)
            if self.serialize is None:
                return GraphCheck(label, PARSED, seconds=parsed.seconds, note=note)
            result = self._build(label, parsed, dims)
            if result.status == BUILD_FAILED and NO_ATTENTION_KERNEL in result.detail:
                # float32 has no dedicated attention kernel: TensorRT decomposes it once asked to (a user's
                # build must do the same: IAttention.decomposable, see docs/tensorrt.md); say so
                parsed = self.parse(parse_path)
                if not isinstance(parsed, Rejection) and mark_attention_decomposable(parsed):
                    result = self._build(label, parsed, dims)
                    note = "; ".join(x for x in (note, "attention marked decomposable (no fp32 kernel)") if x)
            return dataclasses.replace(result, note=note)

    def _hand_rules(self, label: str, path: Path, plugins: list[dict[str, str]]) -> GraphCheck:
        from ffexport.lint.core import lint_model

        findings = lint_model(path, target="trt11")
        detail = "; ".join(f"{f.rule} at node {f.node}: {f.message}" for f in findings)
        return GraphCheck(label, HAND_RULES, detail, op_type="/".join(p["name"] for p in plugins))

    def _build(self, label: str, parsed: ParsedNetwork, dims: DimRange | None) -> GraphCheck:
        engine = self.serialize(parsed, dims)
        if isinstance(engine, BuildFailure):
            return GraphCheck(label, BUILD_FAILED, engine.message, build_for=self.build_for)
        return GraphCheck(label, BUILT, engine_bytes=engine.nbytes, seconds=engine.seconds, build_for=self.build_for)


#: the builder's words when an ``Attention`` node has no dedicated kernel (TensorRT-RTX 1.7, float32)
NO_ATTENTION_KERNEL = "Attention operation was not supported by a dedicated kernel"


def mark_attention_decomposable(parsed: ParsedNetwork) -> int:
    """Allow TensorRT to decompose every IAttention of a parsed network; returns how many."""
    trt = parsed.toolkit.module
    kind = getattr(trt.LayerType, "ATTENTION_OUTPUT", None)
    count = 0
    for i in range(parsed.network.num_layers):
        layer = parsed.network.get_layer(i)
        if kind is not None and layer.type == kind:
            layer.__class__ = trt.IAttentionOutputLayer
            layer.attention.decomposable = True
            count += 1
    return count


@contextlib.contextmanager
def standard_attention(path: Path):
    """``(path to parse, note)``: a graph built for ONNX Runtime is parsed as the standard ONNX ``Attention``
    its attention nodes stand for (:mod:`ffexport.lint.attention`), from a temporary file beside it (so
    external weights resolve)."""
    import onnx

    from ffexport.lint.attention import as_standard_attention

    model = onnx.load(str(path), load_external_data=False)
    notes = as_standard_attention(model)
    if not notes:
        yield path, ""
        return
    tmp = path.with_name(f".{path.name}.check.onnx")
    onnx.save(model, str(tmp))
    try:
        yield tmp, "; ".join(notes)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- which graphs, which profiles
def manifest_profiles(directory: Path) -> dict[str, DimRange | None]:
    """``{graph file name: its profile range}`` for every graph a build's manifest lists ({} without one)."""
    path = directory / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
        profiles = EngineProfiles.from_manifest(manifest)
        ranges: dict[str, DimRange | None] = {g["file"]: profiles.for_graph(kind)
                                               for kind, g in manifest.get("graphs", {}).items()}
        for bucket in manifest.get("buckets", []):
            for kind, g in bucket.get("graphs", {}).items():
                ranges[g["file"]] = profiles.for_graph(kind, int(bucket["visual_tokens"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("%s: no profile ranges from this manifest (%s: %s)", path, type(e).__name__, e)
        return {}
    return ranges


def graphs_to_check(args: list[str]) -> list[tuple[Path, DimRange]]:
    """Each graph with the range of its dynamic dims: a build directory's graphs from its manifest; a single
    file from the manifest beside it when that lists it, else ``DEFAULT_DYNAMIC_DIMS``."""
    out: list[tuple[Path, DimRange]] = []
    default = DimRange(*DEFAULT_DYNAMIC_DIMS)
    for a in args:
        p = Path(a)
        files = graphs_of_build(p) if p.is_dir() else [p]
        ranges = manifest_profiles(p if p.is_dir() else p.parent)
        out.extend((f, ranges.get(f.name) or default) for f in files)
    return out


# ---------------------------------------------------------------- command
def add_check_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``check`` to the ``ffexport`` subcommands and return its parser."""
    check = subparsers.add_parser(
        "check", help="parse (and AOT-build) graphs with NVIDIA's own TensorRT parser and builder",
        description="Hand every graph to TensorRT's real ONNX parser (TensorRT-RTX or TensorRT, whichever is "
                    "importable) and, with --build-for, build an engine ahead of time for those GPU generations "
                    "(TensorRT-RTX; no GPU needed). One line per graph: parsed / built / rejected at node X with "
                    "the parser's message. Without a TensorRT module: one line saying so, then ffexport lint's "
                    "hand rules. Exit status 0: all passed; 1: a graph rejected or not built (or lint "
                    "findings); 2: unreadable input or unknown compute capability. docs/tensorrt.md.",
    )
    check.add_argument("graphs", nargs="+", metavar="GRAPH",
                       help="an .onnx file, or a build directory (every graph its manifest.json lists)")
    check.add_argument("--build-for", metavar="SM89[,SM120]", default=None,
                       help="also build an engine (in memory) for these compute capabilities (TensorRT-RTX)")
    check.set_defaults(func=check_command)
    return check


def check_command(args: argparse.Namespace) -> int:
    """Carry out ``ffexport check``."""
    from ffexport.lint.core import load_graph

    toolkit = find_toolkit()
    build_for = parse_compute_capabilities(args.build_for, toolkit) if args.build_for else ()
    if build_for and toolkit is not None and not toolkit.ahead_of_time:
        raise InputError(f"--build-for needs TensorRT-RTX ({toolkit.label} builds only for the GPU it runs on): "
                         f"{RTX_INSTALL}")
    targets = graphs_to_check(args.graphs)
    for path, _ in targets:  # every input readable before any output (corrupt file: one line, exit 2)
        _require_weights(path, load_graph(path))
    if toolkit is None:
        return _fall_back_to_lint(args, build_for)
    print(f"check: {toolkit.label} ({toolkit.module_name})" + (f", building for {','.join(build_for)}"
                                                               if build_for else ""))
    run = CheckGraph(toolkit=toolkit, build_for=build_for)
    results = []
    for path, dims in targets:
        result = run(path, dims)
        print(result.line(), flush=True)
        results.append(result)
    bad = sum(1 for r in results if not r.ok)
    if len(results) > 1:
        counts = {status: sum(1 for r in results if r.status == status)
                  for status in (BUILT, PARSED, HAND_RULES, REJECTED, BUILD_FAILED)}
        print(f"check ({toolkit.label}): {len(results)} graphs: "
              + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    return 1 if bad else 0


def _require_weights(path: Path, model) -> None:
    """The external weight files a graph names must exist beside it (the parser reads them)."""
    from onnx import TensorProto

    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in init.external_data if e.key == "location"), None)
            if location is not None and not (path.parent / location).is_file():
                raise InputError(f"{path}: its weights file {path.parent / location} is missing (initializer "
                                 f"'{init.name}')")


def _fall_back_to_lint(args: argparse.Namespace, build_for: tuple[str, ...]) -> int:
    from ffexport.lint.cli import DEFAULT_TARGET, lint_command

    print(f"check: TensorRT's ONNX parser is not installed here ({RTX_INSTALL}); falling back to the hand rules of "
          f"ffexport lint (--target {DEFAULT_TARGET})" + ("; no engine was built" if build_for else ""))
    return lint_command(argparse.Namespace(graphs=args.graphs, target=DEFAULT_TARGET))

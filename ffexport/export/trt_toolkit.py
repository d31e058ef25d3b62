"""NVIDIA's own ONNX parser and engine builder, from whichever TensorRT Python module is importable.

Two modules share one Python API (``Builder``, ``OnnxParser``, strongly typed networks, optimization
profiles, ``build_serialized_network``):

- ``tensorrt_rtx`` (TensorRT for RTX, ``pip install tensorrt-rtx-cu13``): parses and builds engines
  *ahead of time* for a chosen GPU generation (``SM89``, ``SM120``, ...) on a machine with no GPU at
  all. Its parser is onnx-tensorrt's, so a graph it rejects is rejected by standard TensorRT too.
- ``tensorrt`` (TensorRT 10/11): builds for the GPU it runs on.

This module is the one place that talks to either: :class:`ParseOnnx` (a graph -> a network, or a
:class:`Rejection` naming the node and carrying the parser's own message), :class:`SerializeEngine`
(a network + one optimization profile -> engine bytes, or a :class:`BuildFailure` with the builder's
own error lines), and the optimization-profile rules every engine of a build uses
(:class:`EngineProfiles`). ``ffexport check`` (:mod:`ffexport.lint.check`) and the engine backends of
``ffexport build`` (:mod:`ffexport.export.tensorrt`) are built on it.

Polygraphy is not used for parsing and building: its TensorRT-RTX mode is a process-wide switch read
at import (``POLYGRAPHY_USE_TENSORRT_RTX``), and its ONNX loader logs parser errors instead of
returning them. Torch-free and onnx-free; the TensorRT module is imported only when asked for.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffexport.errors import BuildError, InputError

log = logging.getLogger(__name__)

#: the Python modules holding a TensorRT ONNX parser, in the order ``ffexport check`` tries them
PARSER_MODULES = ("tensorrt_rtx", "tensorrt")
#: the TensorRT-RTX release CI installs (``.ci/run``) and ``pip install 'ffexport[tensorrt-rtx]'`` pins
TENSORRT_RTX_PIN = "tensorrt-rtx-cu13==1.7.1.116"
RTX_INSTALL = (f"pip install 'ffexport[tensorrt-rtx]' (NVIDIA's TensorRT for RTX, {TENSORRT_RTX_PIN}: its parser and "
               "ahead-of-time builder run on a machine without a GPU)")
#: compute capabilities TensorRT-RTX 1.7 builds for (its ``ComputeCapability`` enum, without NONE/CURRENT);
#: used to name the valid choices when the module is not installed
KNOWN_COMPUTE_CAPABILITIES = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
#: what ``ffexport build`` lets the decode engine generate beyond the longest prompt (BuildConfig.max_new_tokens)
DEFAULT_MAX_NEW_TOKENS = 512
#: min / opt / max of every dynamic dim of a graph that no manifest describes (``ffexport check GRAPH.onnx``)
DEFAULT_DYNAMIC_DIMS = (1, 128, 4096)


# ---------------------------------------------------------------- which module
@dataclass(frozen=True)
class Toolkit:
    """An importable TensorRT module: ``tensorrt_rtx`` (ahead-of-time builds) or ``tensorrt``."""

    module_name: str
    module: Any = field(repr=False, compare=False)
    version: str

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.ahead_of_time else 'TensorRT'} {self.version}"

    @property
    def ahead_of_time(self) -> bool:
        """True for TensorRT-RTX: engines are built for named compute capabilities, no GPU needed."""
        return self.module_name == "tensorrt_rtx"

    def compute_capabilities(self) -> tuple[str, ...]:
        """The ``SMxx`` names this module builds for (empty for standard TensorRT: it builds for its GPU)."""
        enum = getattr(self.module, "ComputeCapability", None)
        if enum is None:
            return ()
        return tuple(name for name in enum.__members__ if name.startswith("SM"))


def find_toolkit(names: Sequence[str] = PARSER_MODULES) -> Toolkit | None:
    """The first of ``names`` that imports, or None."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        except Exception as e:  # a broken install (missing shared library): say so and try the next
            log.warning("cannot import %s: %s", name, e)
            continue
        return Toolkit(name, module, str(getattr(module, "__version__", "unknown")))
    return None


def require_rtx() -> Toolkit:
    """TensorRT-RTX, or :class:`BuildError` (exit 9) saying what to install."""
    toolkit = find_toolkit(("tensorrt_rtx",))
    if toolkit is None:
        raise BuildError(f"TensorRT-RTX is not installed: {RTX_INSTALL}")
    return toolkit


def compute_capability_value(name: str) -> str:
    """``SM89`` -> ``8.9``, ``SM120`` -> ``12.0`` (how ``nvidia-smi --query-gpu=compute_cap`` writes it)."""
    digits = name[2:]
    return f"{digits[:-1]}.{digits[-1]}"


def parse_compute_capabilities(text: str, toolkit: Toolkit | None = None) -> tuple[str, ...]:
    """``"SM89,sm120"`` -> ``("SM89", "SM120")``; an unknown one is an :class:`InputError` listing the valid ones."""
    valid = (toolkit.compute_capabilities() if toolkit is not None else ()) or KNOWN_COMPUTE_CAPABILITIES
    if not text.strip():
        raise InputError(f"TensorRT-RTX builds engines for named GPU generations: give --compute-capability with one "
                         f"or more of {', '.join(valid)} (comma-separated)")
    chosen: list[str] = []
    for part in (p.strip().upper() for p in text.split(",")):
        if part not in valid:
            raise InputError(f"compute capability {part or '(empty)'!r} is not one TensorRT-RTX builds for; choose from "
                             f"{', '.join(valid)} (comma-separated)")
        if part not in chosen:
            chosen.append(part)
    return tuple(chosen)


# ---------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Rejection:
    """The parser refused the graph: at ``node`` (its ONNX name), an ``op_type`` node, with the parser's message."""

    node: str | None  # None: the error is about no node (e.g. an initializer)
    op_type: str  # the node's operator, or the parser function that failed
    message: str

    def __str__(self) -> str:
        if self.node is None:
            return f"rejected ({self.op_type}): {self.message}"
        return f"rejected at node {self.node} ({self.op_type}): {self.message}"


@dataclass(frozen=True)
class NetworkInput:
    name: str
    shape: tuple[int, ...]  # -1 for a dynamic dim
    is_shape_tensor: bool = False


@dataclass
class ParsedNetwork:
    """A parsed graph: the TensorRT objects a build needs (kept alive together) and its inputs."""

    toolkit: Toolkit
    builder: Any
    network: Any
    parser: Any
    logger: Any
    inputs: list[NetworkInput]
    seconds: float


def _recording_logger(module: Any) -> Any:
    """A TensorRT logger that keeps the messages of severity WARNING and worse (the builder reports why
    it failed through the logger only)."""

    class Recorder(module.ILogger):
        def __init__(self) -> None:
            module.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity, message) -> None:  # noqa: D401 (TensorRT's callback)
            if severity <= module.ILogger.Severity.WARNING:
                self.messages.append((severity, message))
                log.debug("%s: %s", severity, message)

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s <= module.ILogger.Severity.ERROR]

    return Recorder()


class ParseOnnx:
    """``ParseOnnx(toolkit=...)(path) -> ParsedNetwork | Rejection``: NVIDIA's ONNX parser on a graph file,
    strongly typed. External weights (``weights.bin``) are found beside the file."""

    def __init__(self, *, toolkit: Toolkit) -> None:
        self.toolkit = toolkit

    def __call__(self, path: str | Path) -> ParsedNetwork | Rejection:
        trt = self.toolkit.module
        logger = _recording_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        start = time.perf_counter()
        ok = parser.parse_from_file(str(path))
        seconds = time.perf_counter() - start
        if not ok:
            return _rejection(parser, Path(path))
        inputs = []
        for i in range(network.num_inputs):
            t = network.get_input(i)
            inputs.append(NetworkInput(t.name, tuple(int(d) for d in t.shape), bool(t.is_shape_tensor)))
        return ParsedNetwork(self.toolkit, builder, network, parser, logger, inputs, seconds)


def _rejection(parser: Any, path: Path) -> Rejection:
    """The parser's first error, named by its node. Some importers report no node; then the node is
    found from the importer's name (``importScatterElements``) among the graph's nodes."""
    if parser.num_errors == 0:
        return Rejection(None, "?", "the parser failed without an error message")
    error = parser.get_error(0)
    message = " ".join(str(error.desc()).split())
    name, op = str(error.node_name()), str(error.node_operator())
    index = int(error.node())
    if name and op:
        return Rejection(name, op, message)
    func = str(error.func())
    nodes = _graph_nodes(path)
    if nodes is None:  # not an ONNX file at all: the parser's message says so
        return Rejection(None, func or "?", message)
    if 0 <= index < len(nodes):
        return Rejection(nodes[index][0] or f"#{index}", nodes[index][1], message)
    op = func[len("import"):] if func.startswith("import") else ""
    candidates = [n for n, o in nodes if o == op]
    if len(candidates) == 1:
        return Rejection(candidates[0], op, message)
    if candidates:
        shown = ", ".join(candidates[:3]) + (", ..." if len(candidates) > 3 else "")
        return Rejection(f"one of {len(candidates)} {op} nodes ({shown})", op,
                         message + " (the parser did not say which node)")
    return Rejection(None, func or "?", message)


def _graph_nodes(path: Path) -> list[tuple[str, str]] | None:
    """(name, op_type) of the top-level nodes, weights not read; None when the file is no ONNX model."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    return [(n.name, n.op_type) for n in model.graph.node]


# ---------------------------------------------------------------- optimization profiles
@dataclass(frozen=True)
class ProfileShape:
    """min / opt / max shape of one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class DimRange:
    """min / opt / max of every dynamic dim of one graph's inputs (ffexport graphs vary in one length)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"profile range needs 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}")


def profile_shapes(inputs: Sequence[NetworkInput], dims: DimRange | None) -> list[ProfileShape]:
    """One :class:`ProfileShape` per input with a dynamic dim (or a shape-tensor input: its values), each
    dynamic dim over ``dims``. Static inputs need none."""
    shapes = []
    for i in inputs:
        if i.is_shape_tensor or any(d < 0 for d in i.shape):
            if dims is None:
                raise ValueError(f"input {i.name} has dynamic dims {i.shape} but no profile range was given")
            pick = (lambda v: tuple(v if d < 0 else d for d in i.shape)) if not i.is_shape_tensor else \
                (lambda v: (v,) * max(1, _volume(i.shape)))
            shapes.append(ProfileShape(i.name, pick(dims.min), pick(dims.opt), pick(dims.max)))
    return shapes


def _volume(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n if shape else 1


@dataclass(frozen=True, kw_only=True)
class EngineProfiles:
    """The one optimization profile of each graph of a build, from what the build fixes:

    - prefill of a bucket of ``n`` visual tokens: sequence length ``n + 1`` to ``n + max_text``
      (text around the video), opt ``n + min(64, max_text)``;
    - embed: prompt length 1 to the longest prompt (the most visual tokens + ``max_text``);
    - decode: each layer's cache length 1 to the longest prompt + ``max_new_tokens``;
    - vision: static (no profile).

    ``opt`` of the shared graphs is the first bucket's prefill opt.
    """

    visual_tokens: tuple[int, ...]
    max_text: int
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def prefill(self, n: int) -> DimRange:
        return DimRange(n + 1, n + min(64, self.max_text), n + self.max_text)

    @property
    def longest(self) -> int:
        return max(self.visual_tokens) + self.max_text

    def embed(self) -> DimRange:
        return DimRange(1, self.prefill(self.visual_tokens[0]).opt, self.longest)

    def decode(self) -> DimRange:
        return DimRange(1, self.prefill(self.visual_tokens[0]).opt, self.longest + self.max_new_tokens)

    def for_graph(self, kind: str, visual_tokens: int | None = None) -> DimRange | None:
        """The range for a graph of ``kind`` (``vision``/``prefill``/``embed``/``decode``)."""
        if kind == "prefill":
            if visual_tokens is None:
                raise ValueError("a prefill profile needs its bucket's visual tokens")
            return self.prefill(visual_tokens)
        if kind == "embed":
            return self.embed()
        if kind == "decode":
            return self.decode()
        return None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> EngineProfiles:
        """From a build's ``manifest.json`` (``max_text``, the buckets' ``visual_tokens``)."""
        tokens = tuple(int(b["visual_tokens"]) for b in manifest.get("buckets", []))
        if not tokens:
            raise ValueError("the manifest lists no buckets")
        return cls(visual_tokens=tokens, max_text=int(manifest.get("max_text", 256)),
                   max_new_tokens=int(manifest.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)))


# ---------------------------------------------------------------- building
@dataclass(frozen=True)
class BuildFailure:
    """The builder returned no engine; ``message`` holds its own error lines."""

    message: str

    def __str__(self) -> str:
        return f"build failed: {self.message}"


@dataclass(frozen=True)
class Engine:
    data: bytes = field(repr=False)
    seconds: float
    profile: tuple[ProfileShape, ...]

    @property
    def nbytes(self) -> int:
        return len(self.data)


class SerializeEngine:
    """``SerializeEngine(compute_capabilities=("SM89",), ...)(parsed, dims) -> Engine | BuildFailure``.

    One optimization profile (``dims`` over every dynamic dim, see :func:`profile_shapes`); with
    TensorRT-RTX the engine is built ahead of time for ``compute_capabilities`` (all in one engine);
    with standard TensorRT for this machine's GPU (``compute_capabilities`` must be empty).
    ``timing_cache``: a file loaded before and saved after the build (standard TensorRT)."""

    def __init__(self, *, compute_capabilities: Sequence[str] = (), timing_cache: Path | None = None,
                 workspace_bytes: int | None = None) -> None:
        self.compute_capabilities = tuple(compute_capabilities)
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.workspace_bytes = workspace_bytes

    def __call__(self, parsed: ParsedNetwork, dims: DimRange | None) -> Engine | BuildFailure:
        toolkit, trt, builder = parsed.toolkit, parsed.toolkit.module, parsed.builder
        config = builder.create_builder_config()
        if toolkit.ahead_of_time:
            if not self.compute_capabilities:
                raise ValueError("TensorRT-RTX builds need at least one compute capability")
            config.num_compute_capabilities = len(self.compute_capabilities)
            for i, name in enumerate(self.compute_capabilities):
                config.set_compute_capability(getattr(trt.ComputeCapability, name), i)
        elif self.compute_capabilities:
            raise ValueError(f"{toolkit.label} builds for this machine's GPU only; compute capabilities are for "
                             "TensorRT-RTX")
        if self.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        try:
            shapes = profile_shapes(parsed.inputs, dims)
        except ValueError as e:
            return BuildFailure(str(e))
        if shapes:
            profile = builder.create_optimization_profile()
            for s in shapes:
                if next(i for i in parsed.inputs if i.name == s.name).is_shape_tensor:
                    profile.set_shape_input(s.name, s.min, s.opt, s.max)
                else:
                    profile.set_shape(s.name, s.min, s.opt, s.max)
            config.add_optimization_profile(profile)
        cache = self._load_timing_cache(config)
        start = time.perf_counter()
        data = builder.build_serialized_network(parsed.network, config)
        seconds = time.perf_counter() - start
        if data is None:
            errors = parsed.logger.errors()
            text = " | ".join(" ".join(e.split()) for e in errors) or "the builder returned no engine (no error logged)"
            return BuildFailure(text)
        if cache is not None:
            self._save_timing_cache(config)
        return Engine(bytes(data), seconds, tuple(shapes))

    def _load_timing_cache(self, config: Any) -> Any:
        if self.timing_cache is None:
            return None
        blob = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
        return cache

    def _save_timing_cache(self, config: Any) -> None:
        from ffexport.io import write_atomic

        data = bytes(config.get_timing_cache().serialize())
        write_atomic(self.timing_cache, lambda f: f.write(data), overwrite=True)


def write_engine(path: Path, engine: Engine) -> Path:
    """Write an engine atomically (a temporary file beside it, then a rename): an interrupted write leaves
    no file that looks like an engine."""
    from ffexport.io import write_atomic

    return write_atomic(path, lambda f: f.write(engine.data), overwrite=True)

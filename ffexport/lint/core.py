"""The linter's machinery: findings, rules, the rule registry, and what a rule may ask about a graph.

A rule is a small object: an id (``TRT001``), a title, its source, the targets it applies to, the
operators it looks at, and ``check(node, context) -> list[Finding]``. A rule that does not match
returns an empty list; questions a rule asks the context (``context.constant(name)``) answer with a
value that says *why* something is unknown rather than raising. Weights are never read: models are
loaded with ``load_external_data=False`` and external initializers are only looked at for their
type and shape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, numpy_helper

from ffexport.errors import InputError
from ffexport.lint.sources import Source
from ffexport.lint.tables import DEFAULT_DOMAINS, TARGETS

log = logging.getLogger(__name__)

SEVERITIES = ("error", "plugin", "warning")


@dataclass(frozen=True)
class Finding:
    """One construct TensorRT rejects (``error``), takes only through a plugin (``plugin``), or that breaks
    a static-bucket graph's contract or an older parser (``warning``)."""

    rule: str
    node: str
    op_type: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.rule} [{self.severity}] {self.message}"


CheckFn = Callable[[NodeProto, "LintContext"], "list[Finding]"]
GraphCheckFn = Callable[["LintContext"], "list[Finding]"]


@dataclass(frozen=True)
class Rule:
    """A lint rule. ``op_types`` None means every node; ``check_graph`` looks at graph inputs and
    initializers (things no node stands for)."""

    id: str
    title: str
    sources: tuple[Source, ...]
    targets: frozenset[str]
    check: CheckFn
    op_types: frozenset[str] | None = None
    check_graph: GraphCheckFn | None = None

    def applies(self, node: NodeProto, target: str) -> bool:
        return target in self.targets and (self.op_types is None or node.op_type in self.op_types)

    def finding(self, node: NodeProto, ctx: LintContext, message: str, severity: str = "error") -> Finding:
        """A finding about ``node``; ``message`` follows ``"<op> node '<name>': "``."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} not in {SEVERITIES}")
        name = ctx.node_name(node)
        return Finding(self.id, name, node.op_type, f"{node.op_type} node '{name}': {message}", severity)


class RuleRegistry(dict):
    """``{rule id: Rule}`` that refuses a second rule under an id already taken."""

    def __setitem__(self, key: str, value: Rule) -> None:
        if key in self:
            raise KeyError(f"lint rule {key} is already registered ({self[key].title!r})")
        if key != value.id:
            raise KeyError(f"lint rule registered as {key} but its id is {value.id}")
        super().__setitem__(key, value)

    def register(self, rule: Rule) -> Rule:
        self[rule.id] = rule
        return rule

    def update(self, *args, **kwargs) -> None:  # route through __setitem__
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other):
        self.update(other)
        return self

    def setdefault(self, key, default=None):  # keep dict's back door shut
        raise TypeError("use register()")


RULES = RuleRegistry()


def rule(id: str, title: str, *, sources: Iterable[Source], targets: Iterable[str] = TARGETS,
         op_types: Iterable[str] | None = None, registry: RuleRegistry | None = None,
         check_graph: GraphCheckFn | None = None) -> Callable[[CheckFn], Rule]:
    """Decorator: turn ``check(node, ctx) -> list[Finding]`` into a registered :class:`Rule`."""
    targets = frozenset(targets)
    unknown = targets - set(TARGETS)
    if unknown:
        raise ValueError(f"rule {id}: unknown targets {sorted(unknown)}")

    def make(check: CheckFn) -> Rule:
        r = Rule(id=id, title=title, sources=tuple(sources), targets=targets, check=check,
                 op_types=frozenset(op_types) if op_types is not None else None, check_graph=check_graph)
        (RULES if registry is None else registry).register(r)
        return r

    return make


# ---------------------------------------------------------------- what a rule can ask
@dataclass(frozen=True)
class Const:
    """The answer to "is this input a build-time constant, and what is it?".

    ``static``: an initializer or a ``Constant`` node output (what TensorRT's parser takes as weights).
    ``value``: its value when readable here (inline data), else None. ``why``: the reason when not static
    or not readable.
    """

    static: bool
    value: np.ndarray | None = None
    why: str = ""


class LintContext:
    """A model after shape inference, indexed for rules: types, shapes, producers, constants."""

    def __init__(self, model: ModelProto, target: str):
        self.model = model
        self.target = target
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
        self.initializers: dict[str, TensorProto] = {}
        self.producers: dict[str, NodeProto] = {}
        self.types: dict[str, onnx.TypeProto] = {}
        self.graph_inputs: set[str] = set()
        self.graph_outputs: set[str] = set()
        self._names: dict[int, str] = {}
        self._static_cache: dict[str, np.ndarray | None] = {}
        self._index(model.graph, top=True)

    # -- indexing
    def _index(self, graph: GraphProto, *, top: bool, prefix: str = "") -> None:
        for init in graph.initializer:
            self.initializers[init.name] = init
            t = onnx.TypeProto()
            t.tensor_type.elem_type = init.data_type
            for d in init.dims:
                t.tensor_type.shape.dim.add().dim_value = d
            self.types.setdefault(init.name, t)
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            if vi.type.HasField("tensor_type"):
                self.types[vi.name] = vi.type
        if top:
            self.graph_inputs = {i.name for i in graph.input if i.name not in self.initializers}
            self.graph_outputs = {o.name for o in graph.output}
        for i, node in enumerate(graph.node):
            self._names[id(node)] = prefix + (node.name or f"<{node.op_type}#{i}>")
            for out in node.output:
                if out:
                    self.producers[out] = node
            for attr in node.attribute:
                for sub in _subgraphs(attr):
                    self._index(sub, top=False, prefix=f"{self._names[id(node)]}/{attr.name}/")

    # -- questions
    def node_name(self, node: NodeProto) -> str:
        """The node's name (``<Op#index>`` when it has none), with its subgraph path when nested."""
        return self._names.get(id(node)) or node.name or f"<{node.op_type}>"

    def dtype(self, name: str) -> int | None:
        """The element type of a tensor, from initializers, graph I/O or shape inference; None if unknown."""
        t = self.types.get(name)
        if t is None or not t.tensor_type.elem_type:
            return None
        return t.tensor_type.elem_type

    def shape(self, name: str) -> list[int | None] | None:
        """Static dims (None for a symbolic or unknown dim); None when even the rank is unknown."""
        t = self.types.get(name)
        if t is None or not t.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]

    def constant(self, name: str) -> Const:
        """Whether ``name`` is an initializer or a ``Constant`` output, and its value where readable."""
        if not name:
            return Const(False, why="the input is absent")
        init = self.initializers.get(name)
        if init is not None:
            if init.data_location == TensorProto.EXTERNAL:
                return Const(True, why=f"initializer '{name}' holds external data (not read by the linter)")
            return Const(True, numpy_helper.to_array(init))
        node = self.producers.get(name)
        if node is None:
            if name in self.graph_inputs:
                return Const(False, why=f"'{name}' is a graph input")
            return Const(False, why=f"'{name}' has no producer in the graph")
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            value = _constant_node_value(node)
            return Const(True, value, "" if value is not None else f"Constant '{self.node_name(node)}' has no "
                                                                     "dense value (sparse or string)")
        return Const(False, why=f"'{name}' is computed by {node.op_type} node '{self.node_name(node)}'")

    def static_value(self, name: str) -> np.ndarray | None:
        """The value of an integer tensor when it follows from constants and static shapes alone
        (``Shape`` -> ``Gather`` -> ``Cast`` ... chains, as exporters write them); None otherwise."""
        if name not in self._static_cache:
            self._static_cache[name] = None  # cycle guard
            try:
                self._static_cache[name] = _fold(self, name)
            except Exception:  # a chain this folder does not understand is simply "not derivable"
                self._static_cache[name] = None
        return self._static_cache[name]

    def attr(self, node: NodeProto, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                value = onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default


def _subgraphs(attr: AttributeProto) -> list[GraphProto]:
    if attr.type == AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _constant_node_value(node: NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value" and a.t.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(a.t)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
    return None


def _fold(ctx: LintContext, name: str) -> np.ndarray | None:
    c = ctx.constant(name)
    if c.static:
        return c.value
    node = ctx.producers.get(name)
    if node is None or node.domain not in DEFAULT_DOMAINS:
        return None
    op = node.op_type
    if op == "Shape":
        dims = ctx.shape(node.input[0])
        if dims is None or any(d is None for d in dims):
            return None
        start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end", None)
        return np.array(dims[start:end], dtype=np.int64)
    if op == "Size":
        dims = ctx.shape(node.input[0])
        return None if dims is None or any(d is None for d in dims) else np.array(int(np.prod(dims)), np.int64)
    args = [ctx.static_value(i) if i else None for i in node.input]
    if op in ("Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Neg") and args[0] is None:
        return None
    if op == "Identity":
        return args[0]
    if op == "Cast":
        return args[0].astype(onnx.helper.tensor_dtype_to_np_dtype(ctx.attr(node, "to")))
    if op == "Neg":
        return -args[0]
    if op in ("Squeeze", "Unsqueeze"):
        has_axes_input = len(node.input) > 1 and bool(node.input[1])
        axes = args[1] if has_axes_input else ctx.attr(node, "axes")
        if has_axes_input and axes is None:
            return None
    if op == "Squeeze":
        return np.squeeze(args[0], axis=tuple(int(a) for a in np.ravel(axes))) if axes is not None \
            else np.squeeze(args[0])
    if op == "Unsqueeze":
        out = args[0]
        for a in sorted(int(x) % (out.ndim + len(np.ravel(axes))) for x in np.ravel(axes)):
            out = np.expand_dims(out, a)
        return out
    if op == "Reshape":
        return None if args[1] is None else args[0].reshape([int(s) for s in args[1]])
    if any(a is None for a in args):
        return None
    if op == "Gather":
        return np.take(args[0], args[1], axis=ctx.attr(node, "axis", 0))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=ctx.attr(node, "axis", 0))
    if op == "Slice" and len(args) >= 3:
        x, starts, ends = args[0], args[1], args[2]
        axes = args[3] if len(args) > 3 else np.arange(len(starts))
        steps = args[4] if len(args) > 4 else np.ones(len(starts), dtype=np.int64)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[int(a)] = slice(int(s), int(e), int(st))
        return x[tuple(index)]
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Min": np.minimum, "Max": np.maximum}
    if op in binary and len(args) == 2:
        return binary[op](args[0], args[1])
    if op == "Div" and len(args) == 2:
        a, b = args
        return a // b if np.issubdtype(a.dtype, np.integer) else a / b
    return None


# ---------------------------------------------------------------- running the rules
def walk(graph: GraphProto) -> Iterator[NodeProto]:
    """Every node, subgraphs (If/Loop/Scan bodies) right after the node that holds them."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                yield from walk(sub)


def prepare(model: ModelProto) -> ModelProto:
    """Inline model-local functions (TensorRT's parser expands them too) and run ONNX shape inference,
    not strict. Never reads external data."""
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:  # keep linting what is there
            log.warning("could not inline local functions (%s); their bodies are not linted", e)
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                     data_prop=data_prop)
        except Exception as e:
            log.debug("shape inference (data_prop=%s) failed: %s", data_prop, e)
    log.warning("ONNX shape inference failed; type-based rules only see declared types")
    return model


def load_graph(path: str | os.PathLike) -> ModelProto:
    """Read an ONNX file's graph without its external weights; :class:`InputError` if it is no model."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__}: {detail})") from e
    if not model.HasField("graph") or not model.graph.node:
        raise InputError(f"{p}: not a readable ONNX model (no graph nodes)")
    return model


def lint_model(model_or_path: ModelProto | str | os.PathLike, target: str = "trt11", *,
               registry: RuleRegistry | None = None) -> list[Finding]:
    """Every finding the registered rules make on a model (a ``ModelProto`` or a path), for ``target``
    (``trt10`` or ``trt11``), in graph order."""
    if target not in TARGETS:
        raise InputError(f"unknown TensorRT target {target!r}; choose one of {', '.join(TARGETS)}")
    if registry is None:
        import ffexport.lint.rules  # noqa: F401  (registers the built-in rules)

        registry = RULES
    from ffexport.lint.attention import as_standard_attention, has_onnxruntime_attention

    model = model_or_path if isinstance(model_or_path, ModelProto) else load_graph(model_or_path)
    if has_onnxruntime_attention(model):  # an ONNX Runtime build's attention: linted as the ONNX op it stands for
        copy = ModelProto()
        copy.CopyFrom(model)
        as_standard_attention(copy)
        model = copy
    ctx = LintContext(prepare(model), target)
    active = [r for r in registry.values() if target in r.targets]
    findings: list[Finding] = []
    for r in active:
        if r.check_graph is not None:
            findings.extend(r.check_graph(ctx))
    for node in walk(ctx.model.graph):
        for r in active:
            if r.applies(node, target):
                findings.extend(r.check(node, ctx))
    return findings

"""The built-in TensorRT rules. Importing this module registers them in ``ffexport.lint.core.RULES``.

Each rule is a function ``check(node, ctx) -> list[Finding]`` under the :func:`~ffexport.lint.core.rule`
decorator, which records its id, title, sources and targets. Severity: ``error`` = the parser or
builder rejects it; ``plugin`` = TensorRT runs it only through a plugin; ``warning`` = accepted by
some TensorRT versions only, or against the static-bucket contract but not fatal.
"""

from __future__ import annotations

from onnx import NodeProto, TensorProto

from ffexport.lint import sources as S
from ffexport.lint.core import Finding, LintContext, rule
from ffexport.lint.tables import (
    BF16,
    DATA_DEPENDENT_SHAPE_OPS,
    DEFAULT_DOMAINS,
    FLOATS,
    I32,
    ML_DOMAIN,
    NO_TRT_TYPE,
    OP_INPUT_TYPES,
    REDUCE_AXES_INPUT_SINCE,
    REDUCE_OPS,
    SORT_LIKE_ATEN,
    SORT_LIKE_OPS,
    SUPPORTED_OPS,
    SUPPORTED_OPS_TRT10,
    TWO_OPERAND_OPS,
    U8,
    UNSUPPORTED_OPS,
    type_list,
    type_name,
)
from ffexport.plugins import PLUGIN_LIBRARY, plugin_of

TOPK_K_LIMIT = 3840  # K must be < 3840 (parser matrix); the layer documentation says k <= 3840.


# ---------------------------------------------------------------- TopK
def _topk_k(node: NodeProto, ctx: LintContext) -> tuple[int | None, bool, str]:
    """(K, static, how): K when known; ``static`` True when K is a build-time constant even if unread."""
    if ctx.opset and ctx.opset < 10:
        k = ctx.attr(node, "k")
        return (int(k), True, "attribute") if k is not None else (None, False, "no k attribute")
    if len(node.input) < 2 or not node.input[1]:
        return None, False, "no K input"
    c = ctx.constant(node.input[1])
    if c.value is not None and c.value.size == 1:
        return int(c.value.reshape(-1)[0]), True, "constant"
    folded = ctx.static_value(node.input[1])
    if folded is not None and folded.size == 1:
        return int(folded.reshape(-1)[0]), True, "derived from static shapes"
    # shape inference (or a declared output shape) may know the output's length along the axis
    in_shape = ctx.shape(node.input[0])
    if in_shape:
        axis = ctx.attr(node, "axis", -1) % len(in_shape)
        for out in node.output:
            dims = ctx.shape(out) if out else None
            if dims and len(dims) == len(in_shape) and dims[axis] is not None:
                return dims[axis], True, "from shape inference"
    return None, c.static, c.why


def _axis_length(node: NodeProto, ctx: LintContext) -> int | None:
    dims = ctx.shape(node.input[0])
    if not dims:
        return None
    return dims[ctx.attr(node, "axis", -1) % len(dims)]


@rule("TRT001", "TopK: K a build-time constant below 3840, sorted=1",
      sources=(S.ONNX_OPS_10_15, S.ONNX_OPS_10_1, S.TOPK_LAYER, S.TRT_11_1_RELEASE, S.PLATFORM),
      op_types={"TopK"})
def topk_limit(node: NodeProto, ctx: LintContext) -> list[Finding]:
    found = []
    if ctx.attr(node, "sorted", 1) == 0:
        found.append(topk_limit.finding(node, ctx, "sorted=0 (TensorRT's TopK requires sorted=1)"))
    k, static, how = _topk_k(node, ctx)
    if k is None and static:
        found.append(topk_limit.finding(node, ctx, f"K unknown here ({how}); cannot check K < {TOPK_K_LIMIT}",
                                        severity="warning"))
    elif k is None:
        found.append(topk_limit.finding(node, ctx, f"K not static ({how}); TensorRT needs K < {TOPK_K_LIMIT} "
                                                   "known at build time"))
    elif k >= TOPK_K_LIMIT:
        msg = f"K = {k} >= {TOPK_K_LIMIT} (TensorRT TopK limit)"
        if _axis_length(node, ctx) == k:
            msg += "; K is the whole axis: a full sort (argsort)"
        if ctx.target == "trt11":
            msg += "; TensorRT 11.1's TopkLastDim plugin lifts the limit, but the parser never inserts it"
        found.append(topk_limit.finding(node, ctx, msg))
    return found



# ---------------------------------------------------------------- scatter
@rule("TRT002", "ScatterND: no reduction",
      sources=(S.ONNX_OPS_10_15, S.IMPORTERS_10_1, S.PLATFORM), op_types={"ScatterND"})
def scatternd_reduction(node: NodeProto, ctx: LintContext) -> list[Finding]:
    reduction = ctx.attr(node, "reduction", "none")
    if reduction == "none":
        return []
    return [scatternd_reduction.finding(node, ctx, f"reduction='{reduction}' not supported (TensorRT's ScatterND has "
                                              "no reduction)")]



@rule("TRT003", "ScatterND: explicit reduction='none' attribute (TensorRT 10.1 parser rejects the attribute)",
      sources=(S.IMPORTERS_10_1, S.ONNX_OPS_10_15), targets={"trt10"}, op_types={"ScatterND"})
def scatternd_explicit_none(node: NodeProto, ctx: LintContext) -> list[Finding]:
    if any(a.name == "reduction" for a in node.attribute) and ctx.attr(node, "reduction") == "none":
        return [scatternd_explicit_none.finding(
            node, ctx, "explicit reduction='none': the TensorRT 10.0/10.1 parser rejects any reduction "
                       "attribute (10.15 accepts 'none'); drop the attribute", severity="warning")]
    return []



@rule("TRT004", "ScatterElements with reduction: registry plugin only (INT64 indices, no BF16)",
      sources=(S.IMPORTERS_10_1, S.SCATTER_PLUGIN, S.PLATFORM), op_types={"ScatterElements"})
def scatterelements_reduction(node: NodeProto, ctx: LintContext) -> list[Finding]:
    reduction = ctx.attr(node, "reduction", "none")
    if reduction == "none":
        return []
    problems = []
    if len(node.input) > 1 and ctx.dtype(node.input[1]) == I32:
        problems.append(f"indices '{node.input[1]}' are INT32 (the plugin takes INT64 only)")
    data_type = ctx.dtype(node.input[0])
    if data_type in (BF16, TensorProto.INT8):
        problems.append(f"data '{node.input[0]}' is {type_name(data_type)} (the plugin has no "
                        f"{type_name(data_type)})")
    msg = (f"reduction='{reduction}' runs only as TensorRT's ScatterElements registry plugin (INT64 indices, "
           "no BF16; atomic updates, not bit-reproducible)")
    if problems:
        msg += "; " + "; ".join(problems)
    return [scatterelements_reduction.finding(node, ctx, msg, severity="error" if problems else "plugin")]



def _fold_hint(name: str, ctx: LintContext) -> str:
    """When a non-constant input still follows from constants and static shapes: say so, and what to do."""
    value = ctx.static_value(name) if name else None
    if value is None or value.size > 8:
        return ""
    return (f"; it folds to {value.reshape(-1).tolist()}: fold constants (onnxscript optimizer, "
            "polygraphy surgeon sanitize --fold-constants) so it becomes an initializer")


# ---------------------------------------------------------------- CumSum, Reduce*
@rule("TRT005", "CumSum: constant axis, float input",
      sources=(S.ONNX_OPS_10_15, S.ONNX_OPS_10_1, S.IMPORTERS_10_1, S.CUMULATIVE_LAYER, S.PLATFORM),
      op_types={"CumSum"})
def cumsum(node: NodeProto, ctx: LintContext) -> list[Finding]:
    found = []
    axis = ctx.constant(node.input[1] if len(node.input) > 1 else "")
    if not axis.static:
        found.append(cumsum.finding(node, ctx, f"axis is not an initializer or Constant ({axis.why}); "
                                               "TensorRT needs a build-time constant axis"
                                               + _fold_hint(node.input[1] if len(node.input) > 1 else "", ctx)))
    t = ctx.dtype(node.input[0])
    if t is not None and t not in FLOATS and t not in NO_TRT_TYPE:
        found.append(cumsum.finding(node, ctx, f"input '{node.input[0]}' is {type_name(t)}; TensorRT's "
                                                    f"parser takes CumSum on {type_list(FLOATS)} only"))
    return found



@rule("TRT006", "Reduce*: axes input an initializer or Constant",
      sources=(S.ONNX_OPS_10_15, S.ONNX_OPS_10_1, S.IMPORTER_UTILS_10_1, S.PLATFORM), op_types=REDUCE_OPS)
def reduce_axes(node: NodeProto, ctx: LintContext) -> list[Finding]:
    if ctx.opset < REDUCE_AXES_INPUT_SINCE[node.op_type] or len(node.input) < 2 or not node.input[1]:
        return []  # axes is an attribute at this opset, or absent (reduce over all axes)
    axes = ctx.constant(node.input[1])
    if axes.static:
        return []
    return [reduce_axes.finding(node, ctx, f"axes input is not an initializer or Constant ({axes.why}); "
                                           "TensorRT needs Reduce axes as initializers"
                                           + _fold_hint(node.input[1], ctx))]



# ---------------------------------------------------------------- shape and operator support
@rule("TRT007", "Data-dependent output shape (NonZero, NonMaxSuppression) in a static-bucket graph",
      sources=(S.ONNX_OPS_10_15, S.PLATFORM), op_types=DATA_DEPENDENT_SHAPE_OPS)
def data_dependent_shape(node: NodeProto, ctx: LintContext) -> list[Finding]:
    return [data_dependent_shape.finding(node, ctx, "data-dependent output shape; TensorRT builds it only with "
                                        "data-dependent (size-tensor) shapes, which a static-bucket graph must "
                                        "not have")]



@rule("TRT008", "Sort-like operators (Unique, Sort, ArgSort, ATen sort): TensorRT has none",
      sources=(S.ONNX_OPS_10_15, S.PLATFORM), op_types=SORT_LIKE_OPS | {"ATen"})
def sort_like(node: NodeProto, ctx: LintContext) -> list[Finding]:
    what = node.op_type
    if node.op_type == "ATen":
        what = ctx.attr(node, "operator", "")
        if what not in SORT_LIKE_ATEN:
            return []
        what = f"ATen '{what}'"
    return [sort_like.finding(node, ctx, f"{what} sorts or deduplicates a whole axis: TensorRT has no such layer "
                                         f"(the only sort is TopK, K < {TOPK_K_LIMIT})")]



def _is_sort_like(node: NodeProto, ctx: LintContext) -> bool:
    return node.op_type in SORT_LIKE_OPS or (node.op_type == "ATen"
                                             and ctx.attr(node, "operator", "") in SORT_LIKE_ATEN)


@rule("TRT009", "Operator not supported by TensorRT's ONNX parser",
      sources=(S.ONNX_OPS_10_15, S.ONNX_OPS_10_1, S.TRT_11_0_RELEASE))
def unsupported_op(node: NodeProto, ctx: LintContext) -> list[Finding]:
    if _is_sort_like(node, ctx):
        return []  # TRT008 says more
    if node.domain == ML_DOMAIN:
        return [unsupported_op.finding(node, ctx, "ai.onnx.ml operators are not supported by TensorRT")]
    if node.domain not in DEFAULT_DOMAINS:
        return []  # custom domains: TRT010
    if node.op_type in UNSUPPORTED_OPS:
        return [unsupported_op.finding(node, ctx, "listed as unsupported (N) in TensorRT's ONNX operator "
                                                    "support matrix")]
    if node.op_type not in SUPPORTED_OPS[ctx.target]:
        version = "11.1" if ctx.target == "trt11" else "10.15"
        return [unsupported_op.finding(node, ctx, f"not in TensorRT {version}'s ONNX operator support matrix "
                                                    f"(opset {ctx.opset})")]
    return []



@rule("TRT010", "Custom-domain operator: TensorRT maps it to a plugin by op_type (domain ignored)",
      sources=(S.IMPORTERS_10_1, S.TRT_11_0_RELEASE, S.PLATFORM))
def custom_domain(node: NodeProto, ctx: LintContext) -> list[Finding]:
    if node.domain in DEFAULT_DOMAINS or node.domain == ML_DOMAIN or _is_sort_like(node, ctx):
        return []
    ours = plugin_of(node)
    if ours is not None:  # FrameFusionMerge/Prune (ffexport/plugins.py): libffexport_plugins.so provides them
        missing = [a for a in ours.int_attributes if not isinstance(ctx.attr(node, a), int)]
        if missing:
            return [custom_domain.finding(node, ctx, f"the {PLUGIN_LIBRARY} plugin needs the int attribute(s) "
                                                   f"{', '.join(missing)}")]
        return []
    if node.op_type in SUPPORTED_OPS[ctx.target] and node.op_type not in SUPPORTED_OPS_TRT10 | {"Swish"}:
        return []  # TRT_* operators the TensorRT 11 parser imports natively
    if node.op_type in SUPPORTED_OPS[ctx.target]:
        return [custom_domain.finding(node, ctx, f"domain '{node.domain}' is ignored: TensorRT parses it as the "
                                               f"standard ONNX {node.op_type}, whose semantics may differ",
                                    severity="warning")]
    version = ctx.attr(node, "plugin_version", None)
    namespace = ctx.attr(node, "plugin_namespace", None)
    detail = (f"plugin_version '{version}'" if version is not None else "no plugin_version attribute: the parser "
              "asks for version '1'")
    detail += f", plugin_namespace '{namespace}'" if namespace is not None else ""
    return [custom_domain.finding(node, ctx, f"custom domain '{node.domain}': TensorRT's parser needs a registered "
                                           f"plugin named '{node.op_type}' ({detail})", severity="plugin")]



# ---------------------------------------------------------------- types
def _bad_type_reason(t: int) -> str:
    if t == TensorProto.DOUBLE:
        return ("TensorRT has no DOUBLE tensors (the 10.x parser casts DOUBLE down to FP32 with clamping; "
                "TensorRT 11 networks are strongly typed)")
    if t == U8:
        return "TensorRT takes UINT8 only as a network input or output"
    return f"TensorRT has no {type_name(t)} tensors"


def _graph_types(ctx: LintContext) -> list[Finding]:
    found = []
    graph = ctx.model.graph
    for vi in graph.input:
        t = ctx.dtype(vi.name)
        if vi.name not in ctx.initializers and t in NO_TRT_TYPE:
            found.append(Finding("TRT011", vi.name, "input",
                                 f"graph input '{vi.name}' is {type_name(t)}; {_bad_type_reason(t)}"))
    for init in ctx.initializers.values():
        t = init.data_type
        if t in NO_TRT_TYPE or t == U8:
            found.append(Finding("TRT011", init.name, "initializer",
                                 f"initializer '{init.name}' is {type_name(t)}; {_bad_type_reason(t)}"))
    return found


@rule("TRT011", "Tensor types TensorRT does not have (DOUBLE anywhere, (U)INT16, UINT32/64, complex, string; "
                "UINT8 inside the network)",
      sources=(S.ONNX_OPS_10_15, S.TRT_11_MIGRATION, S.PLATFORM), check_graph=_graph_types)
def tensor_types(node: NodeProto, ctx: LintContext) -> list[Finding]:
    found = []
    for out in node.output:
        if not out:
            continue
        t = ctx.dtype(out)
        if t is None and node.op_type == "Cast":
            t = ctx.attr(node, "to")
        bad = t in NO_TRT_TYPE or (t == U8 and out not in ctx.graph_outputs)
        if bad:
            found.append(tensor_types.finding(node, ctx, f"output '{out}' is {type_name(t)}; {_bad_type_reason(t)}"))
    return found



@rule("TRT012", "Operator input types TensorRT's parser does not take (integer MatMul/Softmax/..., BF16 "
                "NonZero/GridSample/...)",
      sources=(S.ONNX_OPS_10_15, S.ONNX_OPS_10_1), op_types=set(OP_INPUT_TYPES))
def op_input_types(node: NodeProto, ctx: LintContext) -> list[Finding]:
    allowed = OP_INPUT_TYPES[node.op_type]
    found = []
    for i in ((0, 1) if node.op_type in TWO_OPERAND_OPS else (0,)):
        if i >= len(node.input) or not node.input[i]:
            continue
        t = ctx.dtype(node.input[i])
        if t is None or t in NO_TRT_TYPE or t in allowed:
            continue  # unknown, or TRT011's business
        found.append(op_input_types.finding(node, ctx, f"input '{node.input[i]}' is {type_name(t)}; TensorRT takes "
                                                      f"{node.op_type} on {type_list(allowed)} only"))
    return found



# ---------------------------------------------------------------- scatter extent
@rule("TRT013", "ScatterElements: indices and updates no longer than data along every axis",
      sources=(S.SCATTER_LAYER_HELPER, S.PLATFORM), op_types={"ScatterElements"})
def scatterelements_extent(node: NodeProto, ctx: LintContext) -> list[Finding]:
    """TensorRT's parser asserts ``indices.d[i] <= data.d[i]`` (and ``updates.d[i] <= data.d[i]``) on every axis
    both sizes of which it knows; unlike ONNX, which only bounds the index *values*."""
    if len(node.input) < 3:
        return []
    data = ctx.shape(node.input[0])
    longer, unknown = [], []
    for role, name in (("indices", node.input[1]), ("updates", node.input[2])):
        dims = ctx.shape(name)
        if data is None or dims is None or len(dims) != len(data):
            unknown.append(f"{role} '{name}' vs data '{node.input[0]}': shapes {dims} / {data}")
            continue
        for axis, (d, n) in enumerate(zip(data, dims)):
            if d is None or n is None:
                unknown.append(f"{role} axis {axis}: sizes {n} / {d}")
            elif n > d:
                longer.append(f"{role} '{name}' has {n} on axis {axis}, data '{node.input[0]}' only {d}")
                break
    if longer:
        return [scatterelements_extent.finding(
            node, ctx, "; ".join(longer) + ": TensorRT's parser requires indices and updates no longer than data on "
                                           "every axis (scatter into a buffer at least as long, then slice)")]
    if unknown:
        return [scatterelements_extent.finding(
            node, ctx, f"cannot check that indices and updates are no longer than data on every axis (not static "
                       f"here: {'; '.join(unknown)}); TensorRT's parser rejects the node if they are longer",
            severity="warning")]
    return []

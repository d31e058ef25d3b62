"""Each TensorRT rule on a small graph that breaks it, and on a near miss that must pass."""

from __future__ import annotations

import numpy as np
import pytest
from lint_graphs import (
    F,
    const_node,
    cumsum,
    init,
    model,
    reduce,
    scatter_elements,
    scatter_nd,
    single,
    topk,
    vi,
)
from onnx import TensorProto, helper

from ffexport.errors import InputError
from ffexport.lint import RULES, TARGETS, Finding, LintContext, RuleRegistry, lint_model, rule
from ffexport.lint.core import prepare
from ffexport.lint.sources import Source

I64, BF16, DOUBLE, U8 = TensorProto.INT64, TensorProto.BFLOAT16, TensorProto.DOUBLE, TensorProto.UINT8


def only(findings: list[Finding], rule_id: str | None = None) -> Finding:
    assert len(findings) == 1, findings
    if rule_id is not None:
        assert findings[0].rule == rule_id, findings
    return findings[0]


# ---------------------------------------------------------------- TRT001 TopK
def test_topk_k_8192_from_an_initializer():
    f = only(lint_model(topk(8192), target="trt10"), "TRT001")
    assert (f.node, f.op_type, f.severity) == ("node_TopK_12", "TopK", "error")
    assert f.message.startswith("TopK node 'node_TopK_12': K = 8192 >= 3840 (TensorRT TopK limit)")
    assert "full sort (argsort)" in f.message
    assert "TopkLastDim" not in f.message  # the TensorRT 11.1 plugin note is for trt11 only


def test_topk_trt11_mentions_the_plugin_the_parser_does_not_insert():
    f = only(lint_model(topk(8192, width=10000), target="trt11"), "TRT001")
    assert f.message.startswith("TopK node 'node_TopK_12': K = 8192 >= 3840 (TensorRT TopK limit)")
    assert "argsort" not in f.message  # K < axis length: not a full sort
    assert "TopkLastDim plugin lifts the limit, but the parser never inserts it" in f.message


@pytest.mark.parametrize("target", TARGETS)
def test_topk_k_3839_passes_and_3840_does_not(target):
    assert lint_model(topk(3839, width=5000), target=target) == []
    assert only(lint_model(topk(3840, width=5000), target=target), "TRT001").message.startswith(
        "TopK node 'node_TopK_12': K = 3840 >= 3840")


def test_topk_k_from_a_constant_node():
    assert "K = 4000 >= 3840" in only(lint_model(topk(4000, k_as="constant")), "TRT001").message
    assert lint_model(topk(100, k_as="constant")) == []


def test_topk_k_derived_from_static_shapes():
    """argsort as exporters write it: K = Shape(x)[-1], a Shape -> Gather -> Unsqueeze chain."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             const_node("last", -1),
             helper.make_node("Gather", ["s", "last"], ["n"], name="gather", axis=0),
             const_node("zero", [0]),
             helper.make_node("Unsqueeze", ["n", "zero"], ["k"], name="unsq"),
             helper.make_node("TopK", ["x", "k"], ["v", "i"], name="argsort", largest=0)]
    m = model(nodes, [vi("x", F, [3, 8192])], [vi("i", I64, None)])
    f = only(lint_model(m), "TRT001")
    assert f.message.startswith("TopK node 'argsort': K = 8192 >= 3840 (TensorRT TopK limit); K is the whole axis")
    small = model(nodes, [vi("x", F, [3, 512])], [vi("i", I64, None)])
    assert lint_model(small) == []


def test_topk_k_from_declared_output_shape():
    """When K's producer is beyond the folder, the output's known length along the axis still tells K."""
    nodes = [helper.make_node("Abs", ["kneg"], ["k"], name="abs"),
             helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk")]
    m = model(nodes, [vi("x", F, [1, 9000])], [vi("v", F, [1, 4096])], [init("kneg", [-4096])])
    assert "K = 4096 >= 3840" in only(lint_model(m), "TRT001").message


def test_topk_k_not_static():
    f = only(lint_model(topk(8192, k_as="input")), "TRT001")
    assert f.message == ("TopK node 'node_TopK_12': K not static ('k' is a graph input); TensorRT needs K < 3840 "
                         "known at build time")
    # K computed from data values (not shapes): ReduceMax of an input, cast to int64
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], name="rmax", keepdims=0),
             helper.make_node("Cast", ["m"], ["mi"], name="cast", to=I64),
             const_node("zero", [0]),
             helper.make_node("Unsqueeze", ["mi", "zero"], ["k"], name="unsq"),
             helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk")]
    m = model(nodes, [vi("x", F, [64])], [vi("v", F, None)])
    assert "K not static ('k' is computed by Unsqueeze node 'unsq')" in only(lint_model(m), "TRT001").message


def test_topk_sorted_0():
    f = only(lint_model(topk(10, sorted_=0)), "TRT001")
    assert f.message == "TopK node 'node_TopK_12': sorted=0 (TensorRT's TopK requires sorted=1)"


# ---------------------------------------------------------------- TRT002/TRT003 ScatterND
@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
@pytest.mark.parametrize("target", TARGETS)
def test_scatternd_with_reduction(reduction, target):
    f = only(lint_model(scatter_nd(reduction), target=target), "TRT002")
    assert f.message == (f"ScatterND node 'sn': reduction='{reduction}' not supported (TensorRT's ScatterND has no "
                         "reduction)")


@pytest.mark.parametrize("target", TARGETS)
def test_scatternd_without_reduction_passes(target):
    assert lint_model(scatter_nd(None), target=target) == []


def test_scatternd_explicit_none_is_a_trt10_warning_only():
    f = only(lint_model(scatter_nd("none"), target="trt10"), "TRT003")
    assert f.severity == "warning" and "explicit reduction='none'" in f.message
    assert lint_model(scatter_nd("none"), target="trt11") == []


# ---------------------------------------------------------------- TRT004 ScatterElements
def test_scatterelements_reduction_is_plugin_only():
    f = only(lint_model(scatter_elements("add")), "TRT004")
    assert f.severity == "plugin"
    assert f.message == ("ScatterElements node 'se': reduction='add' runs only as TensorRT's ScatterElements registry "
                         "plugin (INT64 indices, no BF16; atomic updates, not bit-reproducible)")


def test_scatterelements_reduction_int32_indices_or_bf16_data_is_an_error():
    f = only(lint_model(scatter_elements("max", index_type=TensorProto.INT32)), "TRT004")
    assert f.severity == "error" and "indices 'idx' are INT32 (the plugin takes INT64 only)" in f.message
    f = only(lint_model(scatter_elements("add", data_type=BF16)), "TRT004")
    assert f.severity == "error" and "data 'data' is BF16 (the plugin has no BF16)" in f.message


@pytest.mark.parametrize("reduction", [None, "none"])
def test_scatterelements_without_reduction_passes(reduction):
    assert lint_model(scatter_elements(reduction)) == []
    assert lint_model(scatter_elements(reduction, data_type=BF16, index_type=TensorProto.INT32)) == []


# ---------------------------------------------------------------- TRT005 CumSum
def test_cumsum_axis_not_constant():
    f = only(lint_model(cumsum(axis_as="input")), "TRT005")
    assert f.message == ("CumSum node 'cs': axis is not an initializer or Constant ('axis' is a graph input); "
                         "TensorRT needs a build-time constant axis")


@pytest.mark.parametrize("data_type", [TensorProto.INT64, TensorProto.INT32])
def test_cumsum_integer_input(data_type):
    name = {TensorProto.INT64: "INT64", TensorProto.INT32: "INT32"}[data_type]
    f = only(lint_model(cumsum(data_type=data_type)), "TRT005")
    assert f.message == f"CumSum node 'cs': input 'x' is {name}; TensorRT's parser takes CumSum on FP32/FP16/BF16 only"


@pytest.mark.parametrize("axis_as", ["initializer", "constant"])
@pytest.mark.parametrize("data_type", [F, TensorProto.FLOAT16, BF16])
def test_cumsum_constant_axis_on_float_passes(axis_as, data_type):
    assert lint_model(cumsum(axis_as=axis_as, data_type=data_type)) == []


def test_cumsum_both_problems_give_two_findings():
    found = lint_model(cumsum(axis_as="input", data_type=I64))
    assert [f.rule for f in found] == ["TRT005", "TRT005"]


# ---------------------------------------------------------------- TRT006 Reduce*
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                                "ReduceL1", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"])
def test_reduce_axes_from_a_graph_input(op):
    f = only(lint_model(reduce(op, axes_as="input")), "TRT006")
    assert f.message == (f"{op} node 'red': axes input is not an initializer or Constant ('axes' is a graph input); "
                         "TensorRT needs Reduce axes as initializers")


def test_reduce_axes_computed_from_shapes_is_still_flagged():
    """TensorRT wants initializers, not shape arithmetic: a Shape-derived axes input is reported."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Slice", ["s", "one", "two"], ["axes"], name="slice"),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="red")]
    m = model(nodes, [vi("x", F, [2, 1])], [vi("y", F, None)], [init("one", [1]), init("two", [2])])
    message = only(lint_model(m), "TRT006").message
    assert "computed by Slice node 'slice'" in message
    assert message.endswith("; it folds to [1]: fold constants (onnxscript optimizer, polygraphy surgeon sanitize "
                            "--fold-constants) so it becomes an initializer")


@pytest.mark.parametrize("op,axes_as,opset", [
    ("ReduceSum", "initializer", 18), ("ReduceSum", "constant", 18), ("ReduceMean", "initializer", 18),
    ("ReduceSum", "none", 18), ("ReduceMean", "attribute", 17), ("ReduceSum", "attribute", 12),
])
def test_reduce_constant_or_attribute_axes_pass(op, axes_as, opset):
    assert lint_model(reduce(op, axes_as=axes_as, opset=opset)) == []


# ---------------------------------------------------------------- TRT007/008/009/010 operators
def test_nonzero_is_data_dependent():
    m = single("NonZero", [vi("x", F, [4])], [vi("y", I64, None)], name="nz")
    f = only(lint_model(m), "TRT007")
    assert f.severity == "error" and f.message.startswith("NonZero node 'nz': data-dependent output shape")


def test_unique_is_sort_like_not_just_unsupported():
    m = single("Unique", [vi("x", F, [4])], [vi("y", F, None)], name="uq")
    f = only(lint_model(m), "TRT008")
    assert f.message == ("Unique node 'uq': Unique sorts or deduplicates a whole axis: TensorRT has no such layer "
                         "(the only sort is TopK, K < 3840)")


def test_sort_ops_from_other_domains():
    m = single("Sort", [vi("x", F, [4])], [vi("y", F, None)], name="s", domain="com.example",
               extra_opsets=[("com.example", 1)])
    assert only(lint_model(m), "TRT008").node == "s"
    aten = single("ATen", [vi("x", F, [4])], [vi("y", F, None)], name="a", domain="org.pytorch.aten",
                  extra_opsets=[("org.pytorch.aten", 1)], operator="argsort")
    assert "ATen 'argsort'" in only(lint_model(aten), "TRT008").message
    other = single("ATen", [vi("x", F, [4])], [vi("y", F, None)], name="a", domain="org.pytorch.aten",
                   extra_opsets=[("org.pytorch.aten", 1)], operator="logit")
    assert only(lint_model(other), "TRT010").severity == "plugin"


def test_unsupported_operator():
    m = single("Compress", [vi("x", F, [4]), vi("c", TensorProto.BOOL, [4])], [vi("y", F, None)], name="cp", axis=0)
    f = only(lint_model(m), "TRT009")
    assert f.message == "Compress node 'cp': listed as unsupported (N) in TensorRT's ONNX operator support matrix"


def test_operator_new_in_trt11():
    m = single("Swish", [vi("x", F, [4])], [vi("y", F, [4])], name="sw", opset=24)
    assert only(lint_model(m, target="trt10"), "TRT009").message == (
        "Swish node 'sw': not in TensorRT 10.15's ONNX operator support matrix (opset 24)")
    assert lint_model(m, target="trt11") == []


def test_ml_domain_operator():
    m = single("Normalizer", [vi("x", F, [1, 4])], [vi("y", F, None)], name="norm", domain="ai.onnx.ml",
               extra_opsets=[("ai.onnx.ml", 1)], norm="MAX")
    assert "ai.onnx.ml operators are not supported" in only(lint_model(m), "TRT009").message


def test_custom_domain_operator_needs_a_plugin():
    m = single("FrameMerge", [vi("x", F, [4])], [vi("y", F, [4])], name="fm", domain="ai.onnx.contrib",
               extra_opsets=[("ai.onnx.contrib", 1)], plugin_version="2", plugin_namespace="ffexport")
    f = only(lint_model(m), "TRT010")
    assert f.severity == "plugin"
    assert f.message == ("FrameMerge node 'fm': custom domain 'ai.onnx.contrib': TensorRT's parser needs a registered "
                         "plugin named 'FrameMerge' (plugin_version '2', plugin_namespace 'ffexport')")
    bare = single("FrameMerge", [vi("x", F, [4])], [vi("y", F, [4])], name="fm", domain="ai.onnx.contrib",
                  extra_opsets=[("ai.onnx.contrib", 1)])
    assert "no plugin_version attribute: the parser asks for version '1'" in only(lint_model(bare)).message


def test_custom_domain_with_a_standard_name_is_parsed_as_the_standard_op():
    m = single("Gelu", [vi("x", F, [4])], [vi("y", F, [4])], name="g", domain="com.microsoft",
               extra_opsets=[("com.microsoft", 1)])
    f = only(lint_model(m), "TRT010")
    assert f.severity == "warning" and "parses it as the standard ONNX Gelu" in f.message


def test_trt11_native_custom_ops():
    m = single("TRT_Attention", [vi("x", F, [4])], [vi("y", F, [4])], name="att", domain="trt",
               extra_opsets=[("trt", 1)])
    assert lint_model(m, target="trt11") == []
    assert only(lint_model(m, target="trt10"), "TRT010").severity == "plugin"


# ---------------------------------------------------------------- TRT011/TRT012 types
def test_double_anywhere():
    nodes = [helper.make_node("Cast", ["x"], ["xd"], name="to_double", to=DOUBLE),
             helper.make_node("Add", ["xd", "bias"], ["yd"], name="add"),
             helper.make_node("Cast", ["yd"], ["y"], name="to_float", to=F)]
    m = model(nodes, [vi("x", F, [4]), vi("d", DOUBLE, [4])], [vi("y", F, [4])],
              [init("bias", np.ones(4), dtype=np.float64)])
    found = lint_model(m)
    assert {f.rule for f in found} == {"TRT011"}
    by_node = {f.node: f for f in found}
    assert set(by_node) == {"d", "bias", "to_double", "add"}
    assert by_node["d"].op_type == "input" and by_node["d"].message.startswith("graph input 'd' is DOUBLE")
    assert by_node["bias"].op_type == "initializer"
    assert by_node["to_double"].message.startswith("Cast node 'to_double': output 'xd' is DOUBLE; TensorRT has no "
                                                   "DOUBLE tensors")


def test_uint8_only_at_the_network_boundary():
    io = single("Cast", [vi("x", F, [4])], [vi("y", U8, [4])], name="c", to=U8)
    assert lint_model(io) == []  # a network output may be UINT8
    nodes = [helper.make_node("Cast", ["x"], ["u"], name="to_u8", to=U8),
             helper.make_node("Cast", ["u"], ["y"], name="back", to=F)]
    inner = model(nodes, [vi("x", F, [4])], [vi("y", F, [4])])
    assert "output 'u' is UINT8; TensorRT takes UINT8 only as a network input or output" in \
        only(lint_model(inner), "TRT011").message


def test_integer_matmul_and_bf16_nonzero():
    mm = single("MatMul", [vi("a", I64, [2, 3]), vi("b", I64, [3, 2])], [vi("y", I64, None)], name="mm")
    found = lint_model(mm)
    assert [f.rule for f in found] == ["TRT012", "TRT012"]
    assert found[0].message == "MatMul node 'mm': input 'a' is INT64; TensorRT takes MatMul on FP32/FP16/BF16 only"
    nz = single("NonZero", [vi("x", BF16, [4])], [vi("y", I64, None)], name="nz")
    assert sorted(f.rule for f in lint_model(nz)) == ["TRT007", "TRT012"]


@pytest.mark.parametrize("dtype", [F, TensorProto.FLOAT16, BF16])
def test_float_softmax_and_matmul_pass(dtype):
    sm = single("Softmax", [vi("x", dtype, [2, 3])], [vi("y", dtype, [2, 3])], name="sm")
    mm = single("MatMul", [vi("a", dtype, [2, 3]), vi("b", dtype, [3, 2])], [vi("y", dtype, None)], name="mm")
    assert lint_model(sm) == [] and lint_model(mm) == []


def test_types_come_from_shape_inference():
    """An int64 MatMul operand declared nowhere: shape inference gives its type."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Unsqueeze", ["s", "zero"], ["s2"], name="unsq"),
             helper.make_node("MatMul", ["s2", "s2t"], ["y"], name="mm")]
    m = model(nodes, [vi("x", F, [2, 3]), vi("s2t", I64, [2, 1])], [vi("y", I64, None)], [init("zero", [0])])
    assert "input 's2' is INT64" in lint_model(m)[0].message


# ---------------------------------------------------------------- graph structure
def test_subgraphs_are_walked():
    then = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="inner_topk")], "then", [],
                             [vi("v", F, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["w"], name="ident")], "else", [],
                              [vi("w", F, None)])
    nodes = [helper.make_node("If", ["cond"], ["out"], name="branch", then_branch=then, else_branch=other)]
    m = model(nodes, [vi("cond", TensorProto.BOOL, []), vi("x", F, [1, 5000])], [vi("out", F, None)],
              [init("k", [5000])])
    f = only(lint_model(m), "TRT001")
    assert f.node == "branch/then_branch/inner_topk"
    assert f.message.startswith("TopK node 'branch/then_branch/inner_topk': K = 5000 >= 3840")


def test_local_functions_are_inlined_like_the_parser_does():
    body = [helper.make_node("ScatterND", ["d", "i", "u"], ["o"], name="fn_scatter", reduction="add")]
    fn = helper.make_function("local", "scatter_add", ["d", "i", "u"], ["o"], body,
                              [helper.make_opsetid("", 18)])
    call = helper.make_node("scatter_add", ["data", "idx", "upd"], ["out"], name="call", domain="local")
    m = model([call], [vi("data", F, [4, 3]), vi("idx", I64, [2, 1]), vi("upd", F, [2, 3])], [vi("out", F, None)],
              extra_opsets=[("local", 1)], functions=[fn])
    f = only(lint_model(m), "TRT002")
    assert "reduction='add'" in f.message


def test_unnamed_nodes_get_a_positional_name():
    m = topk(8192, name="")
    f = only(lint_model(m), "TRT001")
    assert f.node == "<TopK#0>" and f.message.startswith("TopK node '<TopK#0>': K = 8192")


def test_the_callers_model_is_not_changed():
    m = topk(8192)
    before = m.SerializeToString()
    lint_model(m)
    assert m.SerializeToString() == before


def test_lint_model_takes_a_path(tmp_path):
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(topk(8192), str(path))
    assert only(lint_model(path)).rule == "TRT001"
    assert only(lint_model(str(path))).rule == "TRT001"


def test_unknown_target():
    with pytest.raises(InputError, match="unknown TensorRT target 'trt9'"):
        lint_model(topk(10), target="trt9")


# ---------------------------------------------------------------- the registry and the rule objects
def test_every_rule_has_an_id_title_source_and_targets():
    assert list(RULES) == [f"TRT{i:03d}" for i in range(1, 14)]
    for rid, r in RULES.items():
        assert r.id == rid and r.title
        assert r.targets and r.targets <= set(TARGETS)
        assert r.sources and all(isinstance(s, Source) and s.version and s.document and s.url for s in r.sources)
    assert RULES["TRT003"].targets == {"trt10"}


def test_registry_refuses_duplicate_ids():
    reg = RuleRegistry()
    r = RULES["TRT001"]
    reg.register(r)
    with pytest.raises(KeyError, match="already registered"):
        reg.register(r)
    with pytest.raises(KeyError, match="already registered"):
        reg["TRT001"] = r
    with pytest.raises(KeyError, match="already registered"):
        reg.update({"TRT001": r})
    with pytest.raises(KeyError, match="already registered"):
        reg |= {"TRT001": r}
    with pytest.raises(TypeError, match="use register"):
        reg.setdefault("TRT002", RULES["TRT002"])
    with pytest.raises(KeyError, match="but its id is"):
        RuleRegistry()["TRT999"] = r
    with pytest.raises(KeyError, match="already registered"):
        rule("TRT001", "again", sources=r.sources)(lambda node, ctx: [])


def test_a_custom_registry_runs_only_its_rules():
    reg = RuleRegistry()

    @rule("X001", "every Add", sources=[Source("n/a", "test", "-")], op_types={"Add"}, registry=reg)
    def every_add(node, ctx):
        return [every_add.finding(node, ctx, "an Add", severity="warning")]

    m = single("Add", [vi("a", F, [2]), vi("b", F, [2])], [vi("y", F, [2])], name="plus")
    assert lint_model(m, registry=reg) == [Finding("X001", "plus", "Add", "Add node 'plus': an Add", "warning")]
    assert lint_model(topk(8192), registry=reg) == []


def test_a_failed_match_is_a_value():
    ctx = LintContext(prepare(topk(8192, k_as="input")), "trt11")
    c = ctx.constant("k")
    assert (c.static, c.value, c.why) == (False, None, "'k' is a graph input")
    assert ctx.constant("") .why == "the input is absent"
    assert ctx.constant("nowhere").why == "'nowhere' has no producer in the graph"
    assert ctx.static_value("k") is None
    assert RULES["TRT002"].check(ctx.model.graph.node[0], ctx) == []  # a TopK node: no ScatterND match


# ---------------------------------------------------------------- TRT013 ScatterElements extent
def _scatter(data, idx, upd=None, name="se"):
    upd = idx if upd is None else upd
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["out"], name=name, axis=0)
    return model([node], [vi("data", F, data), vi("idx", I64, idx), vi("upd", F, upd)], [vi("out", F, data)])


@pytest.mark.parametrize("target", TARGETS)
def test_scatterelements_indices_longer_than_data(target):
    f = only(lint_model(_scatter([24], [64]), target=target), "TRT013")
    assert (f.node, f.severity) == ("se", "error")
    assert f.message.startswith("ScatterElements node 'se': indices 'idx' has 64 on axis 0, data 'data' only 24")


def test_scatterelements_longer_on_another_axis_or_in_updates_only():
    assert "indices 'idx' has 3 on axis 1, data 'data' only 2" in only(
        lint_model(_scatter([8, 2], [4, 3])), "TRT013").message
    message = only(lint_model(_scatter([8, 2], [4, 2], [4, 5])), "TRT013").message
    assert "updates 'upd' has 5 on axis 1" in message and "indices" not in message.split(":")[1]


def test_scatterelements_no_longer_than_data_passes():
    assert lint_model(_scatter([24], [24])) == []
    assert lint_model(_scatter([24, 4], [8, 4])) == []


def test_scatterelements_extent_unknown_is_a_warning():
    f = only(lint_model(_scatter([24], ["n"])), "TRT013")
    assert f.severity == "warning"
    assert "cannot check that indices and updates are no longer than data" in f.message
    assert "indices axis 0: sizes None / 24" in f.message


def test_scatternd_longer_indices_are_not_flagged():
    """ScatterND has no such limit (TensorRT-RTX builds [8, 1] indices into [4, 3] data)."""
    node = helper.make_node("ScatterND", ["data", "idx", "upd"], ["out"], name="sn")
    m = model([node], [vi("data", F, [4, 3]), vi("idx", I64, [8, 1]), vi("upd", F, [8, 3])], [vi("out", F, [4, 3])])
    assert lint_model(m) == []

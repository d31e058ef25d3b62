"""The hand rules of ``ffexport lint`` against NVIDIA's own parser and builder (TensorRT-RTX).

For every rule: a small graph the rule flags AND the real parser (or the builder, for limits it checks
at build time) rejects, with the parser's message, so the two agree on what they both see. Where
TensorRT-RTX 1.7 accepts what a rule flags (the rule stands on TensorRT 10.x/11.x documentation), the
graph is listed in ``ACCEPTED_BY_TENSORRT_RTX`` and the test asserts that it really builds: those
differences are documented in docs/tensorrt-lint.md, and a TensorRT-RTX release that changes one fails
here."""

from __future__ import annotations

import pytest
from lint_graphs import F, cumsum, model, reduce, save, scatter_elements, scatter_nd, single, topk, vi
from onnx import TensorProto, helper

from ffexport.export.trt_toolkit import DimRange
from ffexport.lint import RULES, lint_model
from ffexport.lint.check import BUILD_FAILED, BUILT, REJECTED, CheckGraph

I64, U8, I32, DOUBLE = TensorProto.INT64, TensorProto.UINT8, TensorProto.INT32, TensorProto.DOUBLE
EXAMPLE = ("com.example", 1)


def scatter_elements_longer_indices():
    """compact_index before 0ac486f: 8 positions scattered into 4 slots (ONNX allows it, TensorRT does not)."""
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["out"], name="se_long", axis=0)
    return model([node], [vi("data", F, [4]), vi("idx", I64, [8]), vi("upd", F, [8])], [vi("out", F, [4])])


def uint8_inside():
    nodes = [helper.make_node("Cast", ["x"], ["u"], to=U8, name="to_u8"),
             helper.make_node("Cast", ["u"], ["y"], to=TensorProto.FLOAT, name="from_u8")]
    return model(nodes, [vi("x", F, [4])], [vi("y", F, [4])])


#: rule -> (a graph it flags, the node TensorRT-RTX names, where it fails, words of TensorRT-RTX's message)
REJECTED_BY_TENSORRT_RTX = {
    "TRT001": (lambda: topk(8192), "node_TopK_12", BUILD_FAILED, "K exceeds the maximum value allowed (3840)"),
    "TRT002": (lambda: scatter_nd("add"), "sn", REJECTED, "ScatterND with reduction is not supported"),
    "TRT004": (lambda: scatter_elements("add"), "se", REJECTED, "Unsupported reduction type"),
    "TRT006": (lambda: reduce(axes_as="input"), "red", REJECTED, "Axis input must resolve to a build-time constant"),
    "TRT007": (lambda: single("NonZero", [vi("x", F, [4])], [vi("y", I64, None)], name="nz"), "nz", REJECTED,
               "NonZero plugin creator version 1 was not found"),
    "TRT008": (lambda: single("Unique", [vi("x", F, [4])], [vi("y", F, None)], name="uq"), "uq", REJECTED, ""),
    "TRT009": (lambda: single("Compress", [vi("x", F, [4]), vi("c", TensorProto.BOOL, [4])], [vi("y", F, None)],
                              name="cp"), "cp", REJECTED, ""),
    "TRT010": (lambda: single("MyOp", [vi("x", F, [4])], [vi("y", F, [4])], domain=EXAMPLE[0], extra_opsets=[EXAMPLE],
                              name="mine"), "mine", REJECTED, "Plugin not found"),
    "TRT011": (uint8_inside, "to_u8", REJECTED, "does not support UINT8 types for intermediate tensors"),
    "TRT012": (lambda: single("MatMul", [vi("a", I32, [2, 2]), vi("b", I32, [2, 2])], [vi("y", I32, [2, 2])],
                              name="mm"), "mm", REJECTED, "unsupported input type of INT32"),
    "TRT013": (scatter_elements_longer_indices, "se_long", REJECTED,
               "Indices dimensions must be less than data dimensions! indices dimension = 8, data dimension = 4"),
}

#: (rule, case) -> a graph the rule flags that TensorRT-RTX 1.7.1 parses and builds (docs/tensorrt-lint.md)
ACCEPTED_BY_TENSORRT_RTX = {
    ("TRT001", "sorted=0"): lambda: topk(16, sorted_=0),
    ("TRT001", "K = 3840 (the matrix says K < 3840; TensorRT-RTX allows K <= 3840)"): lambda: topk(3840, width=5000),
    ("TRT001", "K a graph input (a shape tensor with a profile)"): lambda: topk(16, k_as="input"),
    ("TRT003", "ScatterND reduction='none' written out (a TensorRT 10.0/10.1 rule)"): lambda: scatter_nd("none"),
    ("TRT005", "CumSum axis a graph input (a shape tensor with a profile)"): lambda: cumsum(axis_as="input"),
    ("TRT005", "CumSum on INT64"): lambda: cumsum(data_type=I64),
    ("TRT011", "a DOUBLE graph input (cast down to FP32 by the parser)"):
        lambda: single("Relu", [vi("x", DOUBLE, [4])], [vi("y", DOUBLE, [4])], name="r"),
}

#: the profile of the few graphs with a dynamic input: a shape tensor (TopK's K, CumSum's axis) holding 1
DIMS = DimRange(1, 1, 1)


@pytest.fixture(scope="module")
def check(tensorrt_rtx):
    return CheckGraph(toolkit=tensorrt_rtx, build_for=("SM89",))


def test_every_rule_has_a_graph_the_real_parser_rejects_or_a_documented_difference():
    covered = set(REJECTED_BY_TENSORRT_RTX) | {rule for rule, _ in ACCEPTED_BY_TENSORRT_RTX}
    assert sorted(RULES) == sorted(covered)


@pytest.mark.parametrize("rule_id", sorted(REJECTED_BY_TENSORRT_RTX))
def test_the_hand_rule_and_the_real_parser_both_reject(rule_id, check, tmp_path):
    make, node, where, words = REJECTED_BY_TENSORRT_RTX[rule_id]
    graph = make()
    flagged = [f for target in ("trt10", "trt11") for f in lint_model(graph, target=target) if f.rule == rule_id]
    assert flagged and all(f.severity in ("error", "plugin") for f in flagged), flagged
    result = check(save(graph, tmp_path / f"{rule_id}.onnx"), DIMS)
    assert result.status == where, result.line()
    if where == REJECTED:
        assert result.node == node, result.line()
    assert words in result.detail and node in result.line(), result.line()


@pytest.mark.parametrize("case", sorted(ACCEPTED_BY_TENSORRT_RTX), ids=lambda c: f"{c[0]}: {c[1]}")
def test_what_tensorrt_rtx_accepts_although_a_rule_flags_it(case, check, tmp_path):
    rule_id, _ = case
    graph = ACCEPTED_BY_TENSORRT_RTX[case]()
    assert any(f.rule == rule_id for target in ("trt10", "trt11") for f in lint_model(graph, target=target))
    result = check(save(graph, tmp_path / "g.onnx"), DIMS)
    assert result.status == BUILT, result.line()

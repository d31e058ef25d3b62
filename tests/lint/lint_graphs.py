"""Tiny ONNX graphs for the lint tests, built with onnx.helper (no torch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def vi(name, elem_type=F, shape=None):
    return helper.make_tensor_value_info(name, elem_type, shape)


def init(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def const_node(name, values, dtype=np.int64):
    return helper.make_node("Constant", [], [name], name=f"const_{name}",
                            value=numpy_helper.from_array(np.asarray(values, dtype=dtype), f"{name}_value"))


def model(nodes, inputs, outputs, initializers=(), opset=18, extra_opsets=(), functions=()):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def topk(k, *, width=8192, name="node_TopK_12", k_as="initializer", sorted_=1):
    """TopK over x [1, width] with K given as an initializer, a Constant node, or a graph input."""
    nodes, inits, inputs = [], [], [vi("x", F, [1, width])]
    if k_as == "initializer":
        inits.append(init("k", [k]))
    elif k_as == "constant":
        nodes.append(const_node("k", [k]))
    elif k_as == "input":
        inputs.append(vi("k", TensorProto.INT64, [1]))
    nodes.append(helper.make_node("TopK", ["x", "k"], ["values", "indices"], name=name, axis=-1, sorted=sorted_))
    return model(nodes, inputs, [vi("values", F, None), vi("indices", TensorProto.INT64, None)], inits)


def scatter_nd(reduction=None, name="sn"):
    attrs = {} if reduction is None else {"reduction": reduction}
    node = helper.make_node("ScatterND", ["data", "idx", "upd"], ["out"], name=name, **attrs)
    return model([node], [vi("data", F, [4, 3]), vi("idx", TensorProto.INT64, [2, 1]), vi("upd", F, [2, 3])],
                 [vi("out", F, [4, 3])])


def scatter_elements(reduction=None, *, index_type=TensorProto.INT64, data_type=F, name="se"):
    attrs = {} if reduction is None else {"reduction": reduction}
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["out"], name=name, axis=0, **attrs)
    return model([node], [vi("data", data_type, [8]), vi("idx", index_type, [4]), vi("upd", data_type, [4])],
                 [vi("out", data_type, [8])])


def cumsum(*, axis_as="initializer", data_type=F, name="cs"):
    nodes, inits, inputs = [], [], [vi("x", data_type, [2, 5])]
    if axis_as == "initializer":
        inits.append(init("axis", 1))
    elif axis_as == "constant":
        nodes.append(const_node("axis", 1))
    else:
        inputs.append(vi("axis", TensorProto.INT64, []))
    nodes.append(helper.make_node("CumSum", ["x", "axis"], ["y"], name=name))
    return model(nodes, inputs, [vi("y", data_type, [2, 5])], inits)


def reduce(op="ReduceSum", *, axes_as="initializer", opset=18, name="red"):
    nodes, inits, inputs, node_inputs, attrs = [], [], [vi("x", F, [2, 5])], ["x"], {}
    if axes_as == "initializer":
        inits.append(init("axes", [1]))
        node_inputs.append("axes")
    elif axes_as == "constant":
        nodes.append(const_node("axes", [1]))
        node_inputs.append("axes")
    elif axes_as == "input":
        inputs.append(vi("axes", TensorProto.INT64, [1]))
        node_inputs.append("axes")
    elif axes_as == "attribute":
        attrs["axes"] = [1]
    nodes.append(helper.make_node(op, node_inputs, ["y"], name=name, keepdims=1, **attrs))
    return model(nodes, inputs, [vi("y", F, None)], inits, opset=opset)


def single(op, inputs, outputs, *, domain="", name="n", opset=18, extra_opsets=(), **attrs):
    """One node ``op`` over graph inputs/outputs given as value infos."""
    node = helper.make_node(op, [i.name for i in inputs], [o.name for o in outputs], name=name, domain=domain,
                            **attrs)
    return model([node], inputs, outputs, opset=opset, extra_opsets=extra_opsets)


def save(m: onnx.ModelProto, path) -> str:
    onnx.save(m, str(path))
    return str(path)

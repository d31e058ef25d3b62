"""The ONNX form of top-k selection's cut (:func:`ffexport.fusion.ops.selection_cut`): one ``Loop``.

``ops.top_flags`` finds its cut by 40 float32 bisection steps. Unrolled, each step is eight nodes
over the whole key (compare, cast, sum, ...), so a graph with two selections carried 640 nodes of
bisection, more than the decoder itself. Here the steps become one ``Loop`` with a trip count of
``ops._BISECT_STEPS`` whose body is one step, computing exactly what the eager code computes:

    mid    = (low + high) / 2
    enough = ReduceSum(Cast(key >= mid)) >= count
    low, high = (mid, high) if enough else (low, mid)

``low`` and ``high`` travel as one loop-carried ``[2]`` tensor (``Where`` on a ``[True, False]``
mask replaces the side that moves): the same float32 additions and divisions in the same order, so
ONNX Runtime and TensorRT reach the same cut as PyTorch bit for bit, whatever the key's length (no
TopK, so no K < 3840 limit). TensorRT takes a ``Loop`` with a constant trip count as an ILoop
(TensorRT-RTX parses and builds it; the body reads the key from the outer graph).

``TRANSLATIONS`` maps the custom op to this node for ``torch.onnx.export``; :class:`CaptureOnnx`
always passes it. It also maps ``aten.index_select`` (the steps' row selections) to a plain ``Gather``
(:func:`index_select_node`).
"""

from __future__ import annotations

import numpy as np
import onnx.defs
import onnx_ir as ir
import torch
from onnxscript import opset18 as op
from onnxscript.values import Op

from ffexport.fusion import ops

# the exporter's tracer mis-assigns positional arguments before a variadic input (Loop's
# v_initial), so the Loop is called by keyword through its schema
_LOOP = Op(op, "Loop", onnx.defs.get_schema("Loop", 18, ""))


def _constant(name: str, value: np.ndarray) -> ir.Node:
    return ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", ir.tensor(value, name=name))],
                   outputs=[ir.Value(name=name)])


def _bisection_body(key, count: int) -> ir.Graph:
    """One bisection step as a Loop body: ``(iteration, cond, state [2]) -> (cond, state [2])``."""
    scalar = ir.Shape([])
    iteration = ir.Value(name="cut_iteration", type=ir.TensorType(ir.DataType.INT64), shape=scalar)
    cond = ir.Value(name="cut_cond", type=ir.TensorType(ir.DataType.BOOL), shape=scalar)
    state = ir.Value(name="cut_low_high", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
    constants = [
        _constant("cut_two", np.array(2.0, np.float32)),
        _constant("cut_count", np.array(count, np.float32)),  # exact: counts stay below 2**24
        _constant("cut_low_index", np.array(0, np.int64)),
        _constant("cut_high_index", np.array(1, np.int64)),
        _constant("cut_low_moves", np.array([True, False])),
    ]
    two, need, low_index, high_index, low_moves = (c.outputs[0] for c in constants)
    nodes = list(constants)

    def node(op_type: str, inputs, **ints: int):
        made = ir.Node("", op_type, inputs, attributes=[ir.AttrInt64(k, v) for k, v in ints.items()])
        nodes.append(made)
        return made.outputs[0]

    low, high = node("Gather", [state, low_index]), node("Gather", [state, high_index])
    mid = node("Div", [node("Add", [low, high]), two])
    at_least = node("ReduceSum", [node("Cast", [node("GreaterOrEqual", [key, mid])], to=ir.DataType.FLOAT)],
                    keepdims=0)
    enough = node("GreaterOrEqual", [at_least, need])
    moved = node("Where", [node("Equal", [enough, low_moves]), mid, state])
    return ir.Graph([iteration, cond, state], [node("Identity", [cond]), moved], nodes=nodes,
                    name="selection_cut_step")


def selection_cut_node(key, count: int):
    """``ops.selection_cut`` as ONNX: ``[min, max + 1]``, a ``Loop`` of the bisection, its ``low``."""
    low = op.ReduceMin(key, keepdims=1)
    high = op.Add(op.ReduceMax(key, keepdims=1), op.Constant(value_float=1.0))
    final = _LOOP(M=op.Constant(value_int=ops._BISECT_STEPS), cond=op.Constant(value=ir.tensor(np.array(True))),
                  v_initial=[op.Concat(low, high, axis=0)], body=_bisection_body(key, count))
    return op.Gather(final, op.Constant(value_int=0), axis=0)


def _rank(value) -> int | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else len(shape)


def index_select_node(self, dim: int, index):
    """``aten.index_select`` as one ``Gather`` when ``index`` is 1-D and ``self`` is not a scalar.

    The exporter's own translation reshapes every index to 1-D first (for 0-D indices), and the
    optimizer keeps that ``Reshape`` even when the index is already 1-D: the FrameFusion steps gather
    rows by computed indices a dozen times (merge, prune, the sequence they shrink), so a static
    prefill held one no-op ``Reshape`` per gather. ONNX ``Gather`` with a 1-D index along ``dim`` is
    ``index_select``; other ranks take the general form.
    """
    if _rank(index) == 1 and _rank(self) not in (None, 0):
        return op.Gather(self, index, axis=dim)
    flat = op.Reshape(index, op.Constant(value_ints=[-1]))
    if _rank(self) == 0:
        return op.Squeeze(op.Gather(op.Reshape(self, op.Constant(value_ints=[-1])), flat, axis=0))
    return op.Gather(self, flat, axis=dim)


#: ``torch.onnx.export(..., custom_translation_table=TRANSLATIONS)``: top-k's cut, and index_select
TRANSLATIONS = {
    torch.ops.ffexport.selection_cut.default: selection_cut_node,
    torch.ops.aten.index_select.default: index_select_node,
}

"""``ffexport.export.quantize``: which MatMuls become int8 (model weights by content, never another
constant), lm_head's Gemm, and the int8 gate's judgement of one case."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from ffexport.export.quantize import Int8Fidelity, QuantizeInt8, compare_int8, linear_weight_keys

D, V = 64, 96


def _graph(directory, projection: torch.nn.Linear, head: torch.nn.Linear, grid: np.ndarray):
    """x -> x @ W.T (a projection, as the exporter folds it) -> @ grid (a constant, no weight) ->
    Gemm(transB) with lm_head's weight; the weights as external data in ``weights.bin``."""
    weight_t = projection.weight.detach().T.contiguous().numpy()
    inits = [numpy_helper.from_array(weight_t, "val_1"), numpy_helper.from_array(grid, "grid"),
             numpy_helper.from_array(head.weight.detach().numpy(), "lm_head.weight")]
    nodes = [helper.make_node("MatMul", ["x", "val_1"], ["h"], name="proj"),
             helper.make_node("MatMul", ["h", "grid"], ["g"], name="group_means"),
             helper.make_node("Gemm", ["g", "lm_head.weight"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, D])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [8, V])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = directory / "g.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


@pytest.fixture
def parts():
    torch.manual_seed(0)
    return torch.nn.Linear(D, D, bias=False), torch.nn.Linear(D, V, bias=False)


def test_model_weights_are_quantized_by_content_and_other_constants_are_not(tmp_path, parts):
    import onnxruntime as ort

    projection, head = parts
    grid = np.full((D, D), 1.0 / D, dtype=np.float32)  # a constant grid of means: never a model weight
    path = _graph(tmp_path, projection, head, grid)
    record = QuantizeInt8(linear_weight_keys([projection, head]))(path, tmp_path / "g.int8.onnx")
    assert (record.matmuls_int8, record.matmuls_fp32, record.gemms_int8, record.gemms_fp32) == (2, 1, 1, 0)
    model = onnx.load(str(tmp_path / "g.int8.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulInteger") == 2 and ops.count("MatMul") == 1  # the grid's MatMul stays fp32
    assert next(n for n in model.graph.node if n.op_type == "MatMul").input[1] == "grid"
    x = np.random.default_rng(0).standard_normal((8, D)).astype(np.float32)
    with torch.no_grad():
        expected = head(torch.from_numpy(x @ projection.weight.detach().numpy().T @ grid)).numpy()
    got = ort.InferenceSession(str(tmp_path / "g.int8.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    spread = expected.max() - expected.min()
    assert 0 < np.abs(got - expected).max() < 0.05 * spread  # int8 arithmetic: close, not equal


def test_lm_head_kept_fp32_when_its_weight_is_not_chosen(tmp_path, parts):
    projection, head = parts
    path = _graph(tmp_path, projection, head, np.eye(D, dtype=np.float32))
    record = QuantizeInt8(linear_weight_keys([projection]))(path, tmp_path / "g.int8.onnx")
    assert (record.matmuls_int8, record.gemms_int8, record.gemms_fp32) == (1, 0, 1)


def test_a_graph_without_model_weights_is_refused(tmp_path, parts):
    projection, head = parts
    path = _graph(tmp_path, projection, head, np.eye(D, dtype=np.float32))
    other = torch.nn.Linear(D, D, bias=False)
    with pytest.raises(ValueError, match="no MatMul takes a model weight"):
        QuantizeInt8(linear_weight_keys([other]))(path, tmp_path / "g.int8.onnx")


def test_the_gate_judges_logits_top5_and_the_first_token():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(50)
    fidelity = Int8Fidelity(logits_rel=0.05, top5=3)
    spread = reference.max() - reference.min()
    close = compare_int8("c", reference + 0.01 * spread, reference, [1, 2, 3], [1, 2, 4], fidelity)
    assert close.passed and close.top5_overlap == 5 and close.first_divergence == 2 and not close.tokens_equal
    far = reference.copy()
    far[np.argsort(-reference)[:3]] -= spread  # the top three pushed down: error, top-5 and argmax fail
    result = compare_int8("f", far, reference, [1], [1], fidelity)
    assert not result.passed and len(result.failures) == 3
    strict = compare_int8("s", reference, reference, [1, 2], [1, 3], Int8Fidelity(tokens_equal=True))
    assert strict.failures == ["greedy tokens differ from step 1"]
    static = compare_int8("d", reference, reference, [1, 2], [1, 2], fidelity, static_tokens=[1, 3])
    assert not static.passed and "static decode" in static.failures[0]
    # a flip between two logits closer than the int8 error: still a failure, said to be a near-tie
    tied = np.array([0.0, 1.0, 3.0, 2.99, -1.0])
    flipped = compare_int8("t", np.array([0.0, 1.0, 2.98, 3.0, -1.0]), tied, [3], [2], fidelity)
    assert not flipped.passed and flipped.reference_margin == pytest.approx(0.01)
    assert flipped.failures == ["first token differs (the fp32 reference's top-2 margin 0.01 (a near-tie: below the "
                                "int8 logits error 0.02))"]
    # a flip that needed errors larger than the int8 logits error allows on each side is not called a near-tie
    moved = compare_int8("m", np.array([0.0, 1.0, 2.45, 2.55, -1.0]), np.array([0.0, 1.0, 3.0, 2.0, -1.0]), [3], [2],
                         fidelity)
    assert moved.failures[-1] == "first token differs (the fp32 reference's top-2 margin 1)"

"""A multi-GB model is linted from its graph alone: external weights are never opened."""

from __future__ import annotations

import time

import onnx
import pytest
from lint_graphs import F, init, model, vi
from onnx import TensorProto, helper

from ffexport.lint import lint_model
from ffexport.lint.cli import lint_command

WEIGHTS = "weights-that-do-not-exist.bin"


@pytest.fixture
def watch_opens(monkeypatch):
    """Every time onnx opens external data (its only door to weight files, in C++: invisible to Python's
    audit hooks), the tensor's location is recorded here."""
    import onnx.external_data_helper as edh

    opened: list[str] = []
    real = edh._open_external_data_fd

    def spy(base_dir, location, tensor_name, read_only):
        opened.append(location)
        return real(base_dir, location, tensor_name, read_only)

    monkeypatch.setattr(edh, "_open_external_data_fd", spy)
    return opened


def _external(name: str, dims: list[int], data_type=TensorProto.FLOAT, offset: int = 0) -> onnx.TensorProto:
    """An initializer whose bytes live in WEIGHTS (a file that is not there)."""
    t = onnx.TensorProto(name=name, data_type=data_type, dims=dims, data_location=onnx.TensorProto.EXTERNAL)
    nbytes = 4
    for d in dims:
        nbytes *= d
    for key, value in (("location", WEIGHTS), ("offset", str(offset)), ("length", str(nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def big_model() -> onnx.ModelProto:
    """~8.6 GB of declared fp32 weights (two 32768x32768 matrices... and a big embedding) plus a TopK over
    8192 tokens and a CumSum whose axis is an external initializer."""
    hidden, vocab = 32768, 65536
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["h"], name="embed_lookup"),
             helper.make_node("MatMul", ["h", "w1"], ["h1"], name="mm1"),
             helper.make_node("MatMul", ["h1", "w2"], ["h2"], name="mm2"),
             helper.make_node("ReduceSum", ["h2", "axes"], ["score"], name="score", keepdims=0),
             helper.make_node("TopK", ["score", "k"], ["v", "keep"], name="node_TopK_12"),
             helper.make_node("CumSum", ["h2", "cum_axis"], ["c"], name="cumsum")]
    inits = [_external("embed", [vocab, hidden]),
             _external("w1", [hidden, hidden], offset=vocab * hidden * 4),
             _external("w2", [hidden, hidden], offset=(vocab + hidden) * hidden * 4),
             _external("cum_axis", [], data_type=TensorProto.INT64, offset=(vocab + 2 * hidden) * hidden * 4),
             init("axes", [1]), init("k", [8192])]
    return model(nodes, [vi("ids", TensorProto.INT64, [8192])], [vi("keep", TensorProto.INT64, None),
                                                                 vi("c", F, None)], inits)


def test_declared_size_is_multi_gb():
    declared = sum(int(t.external_data[2].value) for t in big_model().graph.initializer if t.external_data)
    assert declared > 8 * 2**30


def test_lints_without_opening_the_weights(tmp_path, watch_opens):
    path = tmp_path / "big.onnx"
    onnx.save(big_model(), str(path))
    assert not (tmp_path / WEIGHTS).exists()
    start = time.perf_counter()
    found = lint_model(path, target="trt11")
    elapsed = time.perf_counter() - start
    assert watch_opens == []
    assert elapsed < 5.0, elapsed
    rules = {f.rule: f for f in found}
    assert set(rules) == {"TRT001"}, found
    assert rules["TRT001"].message.startswith("TopK node 'node_TopK_12': K = 8192 >= 3840 (TensorRT TopK limit)")
    # the CumSum axis is an initializer (a build-time constant) even though its value was not read: no finding


def test_the_watch_itself_sees_opens(tmp_path, watch_opens):
    """The spy does see onnx opening the weights when asked to load them (the check can fail)."""
    path = tmp_path / "big.onnx"
    onnx.save(big_model(), str(path))
    with pytest.raises(Exception):
        onnx.load(str(path))  # load_external_data=True: tries to open the (missing) weights file
    assert WEIGHTS in watch_opens


def test_external_topk_k_is_a_warning_not_a_guess(tmp_path, watch_opens):
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk")]
    m = model(nodes, [vi("x", F, [1, 9000])], [vi("v", F, None)],
              [_external("k", [1], data_type=TensorProto.INT64)])
    path = tmp_path / "k.onnx"
    onnx.save(m, str(path))
    [f] = lint_model(path)
    assert (f.rule, f.severity) == ("TRT001", "warning")
    assert f.message == ("TopK node 'tk': K unknown here (initializer 'k' holds external data (not read by the "
                         "linter)); cannot check K < 3840")
    assert watch_opens == []


def test_cli_on_an_external_data_model_is_not_an_input_error(tmp_path, capsys, watch_opens):
    import argparse

    path = tmp_path / "big.onnx"
    onnx.save(big_model(), str(path))
    assert lint_command(argparse.Namespace(graphs=[str(path)], target="trt10")) == 1
    assert "node_TopK_12" in capsys.readouterr().out
    assert watch_opens == []

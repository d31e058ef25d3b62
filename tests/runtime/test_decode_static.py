"""The static decode graph with preallocated caches updated in place (issue 14 item 2): the same greedy
tokens as today's dynamic decode loop, caches written in place through IO binding (nothing copied
out per token), and every shape static so TensorRT-RTX builds it without an optimization profile."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.export.graphs import DecodeStep, StaticDecodeStep, present_names
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.runtime.kv_cache import StaticCacheDecoder

NEW_TOKENS = 10


@pytest.fixture(scope="module")
def graphs(tiny, tmp_path_factory):
    parts = tiny.adapter.decoder_parts(tiny.model)
    decoder = ReducedDecoder(parts)
    embed = tiny.model.get_input_embeddings()
    layers = decoder.num_layers
    lengths = [40 + 9 * i for i in range(layers)]  # each layer its own reduced length
    generator = torch.Generator().manual_seed(3)
    past = [torch.randn(1, parts.num_kv_heads, n, parts.head_dim, generator=generator) for n in lengths for _ in "kv"]
    names = present_names(layers, "past_key_values")
    out = tmp_path_factory.mktemp("decode")
    capture = CaptureOnnx()
    dims = tuple({2: torch.export.Dim(f"past{i // 2}", min=1, max=1024)} for i in range(2 * layers))
    dynamic = capture(GraphSpec("decode", DecodeStep(decoder, embed).eval(),
                                (torch.tensor([[5]]), torch.full((3, 1), 60), *past),
                                ["input_ids", "position_ids", *names], ["logits", *present_names(layers)],
                                {"input_ids": None, "position_ids": None, "past": dims}))
    capacities = [n + NEW_TOKENS for n in lengths]
    empty = [torch.zeros(1, parts.num_kv_heads, c, parts.head_dim) for c in capacities for _ in "kv"]
    static = capture(GraphSpec("static decode", StaticDecodeStep(decoder, embed).eval(),
                               (torch.tensor([[5]]), torch.full((3, 1), 60), torch.tensor(lengths), *empty),
                               ["input_ids", "position_ids", "cache_lengths", *names], ["logits", *present_names(layers)]))
    onnx.save(dynamic, str(out / "decode.onnx"))
    onnx.save(static, str(out / "decode_static.onnx"))
    presents = {f"{i // 2}.{'key' if i % 2 == 0 else 'value'}": p.numpy() for i, p in enumerate(past)}
    return out, presents, capacities


def _today(path, presents, first_token, first_position):
    """Today's loop (runtime/session.py before the static graph): every present back through numpy."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {f"past_key_values.{name}": value for name, value in presents.items()}
    token, tokens, logits = first_token, [], []
    for k in range(NEW_TOKENS):
        out = session.run(None, {"input_ids": np.array([[token]]), "position_ids": np.full((3, 1), first_position + k),
                                 **feeds})
        logits.append(out[0].copy())
        token = int(out[0].argmax())
        tokens.append(token)
        feeds = {f"past_key_values.{name[len('present.'):]}": v for name, v in zip(
            [o.name for o in session.get_outputs()][1:], out[1:])}
    return tokens, logits


def test_static_decode_gives_todays_greedy_tokens_in_place(graphs):
    out, presents, capacities = graphs
    tokens, logits = _today(out / "decode.onnx", presents, 5, 300)
    session = ort.InferenceSession(str(out / "decode_static.onnx"), providers=["CPUExecutionProvider"])
    decoder = StaticCacheDecoder(session, capacities)
    decoder.start(presents)
    arrays = [a for a in decoder.arrays]
    token, got, got_logits = 5, [], []
    for k in range(NEW_TOKENS):
        step_logits = decoder.step(token, 300 + k)
        got_logits.append(step_logits.copy())
        token = int(step_logits.argmax())
        got.append(token)
    assert got == tokens
    np.testing.assert_allclose(np.concatenate(got_logits), np.concatenate(logits), rtol=1e-4, atol=1e-4)
    # ONNX Runtime wrote every new row into the runtime's own buffers (bound as past and present): in place
    assert all(a is b for a, b in zip(decoder.arrays, arrays))
    for i in range(len(capacities)):
        base = presents[f"{i}.key"].shape[2]
        np.testing.assert_array_equal(decoder.arrays[2 * i][:, :, :base], presents[f"{i}.key"])
        written = np.abs(decoder.arrays[2 * i][:, :, base:base + NEW_TOKENS]).sum(axis=-1)
        assert (written > 0).all()  # the new tokens' keys, written by ONNX Runtime into these arrays
    assert decoder.room() == 0
    with pytest.raises(Exception, match="caches are full"):
        decoder.step(token, 400)


def test_static_decode_host_copies_do_not_grow_with_the_cache(graphs):
    """Per token, ONNX Runtime's outputs are the runtime's own buffers (the same addresses every step:
    nothing allocated or copied out, whatever the context) and the host allocates a constant few KiB;
    today's loop gets every grown present back as a new host array (more bytes each token)."""
    import tracemalloc

    out, presents, capacities = graphs
    decoder = StaticCacheDecoder(ort.InferenceSession(str(out / "decode_static.onnx"),
                                                      providers=["CPUExecutionProvider"]), capacities)
    decoder.start(presents)
    ours = [a.__array_interface__["data"][0] for a in (decoder.logits, *decoder.arrays)]
    traced = []
    tracemalloc.start()
    try:
        for k in range(NEW_TOKENS):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            int(decoder.step(5, 300 + k).argmax())
            traced.append(tracemalloc.get_traced_memory()[1] - before)
            bound = [v.data_ptr() for v in decoder.binding.get_outputs()]
            assert bound == ours, k  # logits and every present: the buffers bound before the first step
    finally:
        tracemalloc.stop()
    assert max(traced) < 4096, traced

    session = ort.InferenceSession(str(out / "decode.onnx"), providers=["CPUExecutionProvider"])
    feeds = {f"past_key_values.{name}": value for name, value in presents.items()}
    names = [o.name[len("present."):] for o in session.get_outputs()][1:]
    copied = []
    for k in range(3):
        grown = session.run(None, {"input_ids": np.array([[5]]), "position_ids": np.full((3, 1), 300 + k), **feeds})
        copied.append(sum(a.nbytes for a in grown[1:]))
        feeds = {f"past_key_values.{n}": v for n, v in zip(names, grown[1:])}
    assert copied[0] > sum(p.nbytes for p in presents.values()) and copied[0] < copied[1] < copied[2]


def test_static_decode_graph_has_static_shapes_and_builds_with_tensorrt_rtx(graphs, tensorrt_rtx):
    from ffexport.export.trt_toolkit import BuildFailure, ParseOnnx, Rejection, SerializeEngine

    out, _, _ = graphs
    model = onnx.load(str(out / "decode_static.onnx"))
    for value in [*model.graph.input, *model.graph.output]:
        assert all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim), value.name
    parsed = ParseOnnx(toolkit=tensorrt_rtx)(out / "decode_static.onnx")
    assert not isinstance(parsed, Rejection), str(parsed)
    engine = SerializeEngine(compute_capabilities=("SM89",))(parsed, None)
    assert not isinstance(engine, BuildFailure), str(engine)

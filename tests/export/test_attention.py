"""Fused attention in the exported graphs (issue 14 item 1): one attention op per layer, parity with
PyTorch unchanged, the explicit formulation on request, the choice by backend/precision/version."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from ffexport.errors import InputError
from ffexport.export.attention_rewrite import AttentionChoice, choose_attention
from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.export.graphs import DecodeStep, PrefillGraph, present_names
from ffexport.fusion import attention
from ffexport.fusion.decoder import ReducedDecoder

BUCKET = "8x112x112"
TEXT = 20


@pytest.fixture(scope="module")
def prefill(tiny):
    from ffexport.export.buckets import parse_bucket
    from ffexport.export.policy import nominal_schedule
    from ffexport.fusion.config import FusionConfig

    vc = tiny.config.vision_config
    b = parse_bucket(BUCKET, patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
                     merge_size=vc.spatial_merge_size, video_pixels=tiny.video_pixels)
    decoder = ReducedDecoder(tiny.adapter.decoder_parts(tiny.model))
    module = PrefillGraph(decoder, nominal_schedule(b, FusionConfig(), tiny.num_layers).schedule).eval()
    return module, b.visual_tokens, tiny


def _inputs(length: int, hidden: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, length, hidden, generator=g).to(dtype), torch.arange(length).repeat(3, 1),
            torch.tensor(5))


def _capture(prefill, choice: AttentionChoice, dtype=torch.float32) -> onnx.ModelProto:
    module, n, tiny = prefill
    dim = torch.export.Dim("L", min=n + 1, max=n + 64)
    spec = GraphSpec("prefill", module, _inputs(n + TEXT, tiny.config.text_config.hidden_size, dtype),
                     ["inputs_embeds", "position_ids", "video_start"], ["logits", *present_names(tiny.num_layers)],
                     ({1: dim}, {1: dim}, None))
    return CaptureOnnx(attention=choice)(spec)


@pytest.fixture(scope="module")
def fused_ort(prefill):
    return _capture(prefill, choose_attention(None, backend="onnxruntime", precision="fp32"))


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _ort_matches_torch(model: onnx.ModelProto, prefill, lengths) -> float:
    import onnxruntime as ort

    module, n, tiny = prefill
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, extra in enumerate(lengths):
        x, pos, start = _inputs(n + extra, tiny.config.text_config.hidden_size, seed=i + 1)
        with torch.no_grad():
            expected = module(x, pos, start)
        got = session.run(None, {"inputs_embeds": x.numpy(), "position_ids": pos.numpy(), "video_start": start.numpy()})
        worst = max(worst, *(float(np.abs(a - e.numpy()).max()) for a, e in zip(got, expected, strict=True)))
    return worst


def test_the_default_onnxruntime_prefill_has_one_fused_attention_per_layer(fused_ort, prefill):
    layers = prefill[2].num_layers
    ops = _ops(fused_ort)
    assert ops["GroupQueryAttention"] == layers and ops["Attention"] == 0
    # the one Softmax left is the prune's importance, on the last 4 queries only
    assert ops["Softmax"] == 1
    assert {(o.domain, o.version) for o in fused_ort.opset_import} >= {("", 23), ("com.microsoft", 1)}


def test_fused_graph_matches_pytorch_at_every_length(fused_ort, prefill):
    assert _ort_matches_torch(fused_ort, prefill, [6, TEXT, 63]) <= 1e-4


def test_explicit_attention_keeps_matmul_softmax_at_opset_18(prefill):
    model = _capture(prefill, choose_attention("explicit", backend="onnxruntime", precision="fp32"))
    ops = _ops(model)
    layers = prefill[2].num_layers
    assert ops["Attention"] == ops["GroupQueryAttention"] == 0 and ops["Softmax"] == layers + 1
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert _ort_matches_torch(model, prefill, [TEXT]) <= 1e-4


def test_tensorrt_graphs_keep_the_standard_attention_op(prefill):
    model = _capture(prefill, AttentionChoice("fused", contrib=False, reason="test"))
    ops = _ops(model)
    assert ops["Attention"] == prefill[2].num_layers and ops["GroupQueryAttention"] == 0
    causal = [a.i for n in model.graph.node if n.op_type == "Attention" for a in n.attribute if a.name == "is_causal"]
    assert causal == [1] * prefill[2].num_layers
    assert _ort_matches_torch(model, prefill, [TEXT]) <= 1e-4


@pytest.mark.parametrize(("contrib", "expected"), [(True, [onnx.TensorProto.FLOAT]), (False, [])])
def test_half_precision_attention_takes_its_softmax_in_float32_for_onnxruntime(contrib, expected):
    """ONNX Runtime graphs say float32 softmax; TensorRT's parser rejects the attribute, so its graphs
    leave it out."""
    import onnx_ir

    from ffexport.export.attention_rewrite import rewrite_attention

    vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT16, [1, 2, 1 if n == "q" else 8, 4])
          for n in ("q", "k", "v")]
    graph = onnx.helper.make_graph([onnx.helper.make_node("Attention", ["q", "k", "v"], ["o"])], "g", vi,
                                   [onnx.helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT16, [1, 2, 1, 4])])
    model = onnx_ir.serde.deserialize_model(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 23)]))
    rewrite_attention(model, contrib=contrib)
    (node,) = list(model.graph)
    assert node.op_type == "Attention"
    assert [a.value for name, a in node.attributes.items() if name == "softmax_precision"] == expected


def test_the_decode_step_keeps_a_non_causal_attention(prefill):
    module, n, tiny = prefill
    parts = tiny.adapter.decoder_parts(tiny.model)
    decode = DecodeStep(module.prefill.decoder, tiny.model.model.language_model.embed_tokens).eval()
    past = [torch.randn(1, parts.num_kv_heads, 10, parts.head_dim) for _ in range(2 * tiny.num_layers)]
    dims = [torch.export.Dim(f"past_{i}", min=1, max=4096) for i in range(tiny.num_layers)]
    spec = GraphSpec("decode", decode, (torch.tensor([[3]]), torch.full((3, 1), 10), *past),
                     ["input_ids", "position_ids", *present_names(tiny.num_layers, "past_key_values")],
                     ["logits", *present_names(tiny.num_layers)],
                     {"input_ids": None, "position_ids": None, "past": tuple({2: dims[i // 2]} for i in range(len(past)))})
    model = CaptureOnnx(attention=choose_attention(None, backend="onnxruntime", precision="fp32"))(spec)
    ops = _ops(model)
    # q has one row and k/v the whole cache: not the prefill's causal self-attention, left as ONNX Attention
    assert ops["Attention"] == tiny.num_layers and ops["GroupQueryAttention"] == 0 and ops["Softmax"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pytorch_reference_is_sdpa_with_a_float32_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 8, generator=g).to(dtype) for _ in range(3))
    got = attention.attend(q, k, v, causal=True, scale=0.3)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    assert torch.equal(got, sdpa)
    exact = attention.explicit(q.float(), k.float(), v.float(), causal=True, scale=0.3)
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    assert (got.float() - exact).abs().max() <= tol


def test_explicit_causal_mask_when_queries_are_the_last_rows():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 3, 8, generator=g)
    k, v = torch.randn(1, 2, 7, 8, generator=g), torch.randn(1, 2, 7, 8, generator=g)
    full_q = torch.cat([torch.randn(1, 2, 4, 8, generator=g), q], dim=2)
    expected = torch.nn.functional.scaled_dot_product_attention(full_q, k, v, is_causal=True)[:, :, -3:]
    assert torch.allclose(attention.explicit(q, k, v, causal=True, scale=8**-0.5), expected, atol=1e-6)


def test_capture_mode_is_scoped():
    assert attention.capture_mode() is None
    with attention.capturing("explicit"):
        assert attention.capture_mode() == "explicit"
    assert attention.capture_mode() is None
    with pytest.raises(ValueError):
        with attention.capturing("flash"):
            pass


@pytest.mark.parametrize(("backend", "precision", "versions", "mode", "contrib"), [
    ("onnxruntime", "fp32", {"onnxruntime": "1.32.0"}, "fused", True),
    ("onnxruntime", "fp16", {"onnxruntime": "1.23.1"}, "fused", True),
    ("onnxruntime", "fp32", {"onnxruntime": "1.22.0"}, "explicit", False),
    ("tensorrt-rtx", "fp32", {}, "explicit", False),
    ("tensorrt-rtx", "fp16", {}, "fused", False),
    ("tensorrt-rtx", "bf16", {}, "fused", False),
    ("tensorrt", "fp16", {"tensorrt": "10.14.1"}, "fused", False),
    ("tensorrt", "fp16", {"tensorrt": "10.13.0"}, "explicit", False),
    ("tensorrt", "fp32", {"tensorrt": "11.1.0"}, "explicit", False),
])
def test_the_default_follows_backend_precision_and_version(backend, precision, versions, mode, contrib):
    choice = choose_attention(None, backend=backend, precision=precision, versions=versions)
    assert (choice.mode, choice.contrib) == (mode, contrib)
    assert choice.opset == (23 if mode == "fused" else 18)
    assert choice.reason


def test_graph_only_builds_keep_the_standard_op_for_lint():
    assert not choose_attention(None, backend="onnxruntime", precision="fp32", graph_only=True).contrib


@pytest.mark.parametrize(("requested", "backend", "precision", "versions", "words"), [
    ("fused", "tensorrt-rtx", "fp32", {}, "cannot build the Attention op in fp32"),
    ("fused", "onnxruntime", "fp32", {"onnxruntime": "1.20.0"}, "needs ONNX Runtime >= 1.23"),
    ("flash", "onnxruntime", "fp32", {}, "--attention flash"),
])
def test_impossible_requests_are_input_errors(requested, backend, precision, versions, words):
    with pytest.raises(InputError, match=words):
        choose_attention(requested, backend=backend, precision=precision, versions=versions)


def test_build_rejects_fused_fp32_for_tensorrt_rtx_in_one_line(tmp_path, tensorrt_rtx, error_line):
    from ffexport.cli import main

    assert main(["build", "--backend", "tensorrt-rtx", "--compute-capability", "SM89", "--attention", "fused",
                 "--out", str(tmp_path / "b")]) == InputError.exit_code
    assert "TensorRT-RTX 1.7 cannot build the Attention op in fp32" in error_line()


def test_check_parses_onnxruntime_attention_as_the_onnx_op(fused_ort, tmp_path, tensorrt_rtx):
    """A default (onnxruntime) graph holds com.microsoft.GroupQueryAttention: ``ffexport check`` hands
    TensorRT the standard Attention it came from, and says so."""
    from ffexport.lint.check import PARSED, CheckGraph

    path = tmp_path / "prefill.onnx"
    onnx.save(fused_ort, str(path))
    result = CheckGraph(toolkit=tensorrt_rtx)(path, None)
    assert result.status == PARSED, result.line()
    assert "4 GroupQueryAttention node(s) checked as ONNX Attention" in result.line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefill.onnx"]  # the temporary graph is gone


@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_lint_reads_onnxruntime_attention_as_the_onnx_op(fused_ort, target):
    from ffexport.lint import lint_model
    from ffexport.lint.attention import as_standard_attention

    assert lint_model(fused_ort, target=target) == []
    assert _ops(fused_ort)["GroupQueryAttention"] == 4  # the caller's graph is left as it was
    copy = onnx.ModelProto()
    copy.CopyFrom(fused_ort)
    assert as_standard_attention(copy) == ["its 4 GroupQueryAttention node(s) checked as ONNX Attention"]
    attention = [n for n in copy.graph.node if n.op_type == "Attention"]
    assert len(attention) == 4 and all(n.domain == "" for n in attention)
    assert {a.name for a in attention[0].attribute} == {"is_causal", "q_num_heads", "kv_num_heads", "scale"}


@pytest.mark.slow
def test_the_manifest_records_the_attention_and_a_rebuild_keeps_it(tmp_path, capsys, error_line):
    import json

    from ffexport.cli import main

    out = tmp_path / "b"
    assert main(["-q", "build", "--bucket", BUCKET, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["attention"]["mode"] == "fused" and manifest["tools"]["opset"] == 23
    assert manifest["attention"]["prefill_op"] == "com.microsoft.GroupQueryAttention"
    assert manifest["buckets"][0]["usable"]
    capsys.readouterr()
    assert main(["-q", "build", "--bucket", BUCKET, "--attention", "explicit", "--out", str(out)]) == InputError.exit_code
    assert "holds a build with --attention fused" in error_line()

"""ffexport's ONNX Runtime attention, read as the standard ONNX op it stands for (torch-free).

A graph built for ONNX Runtime (``ffexport build --backend onnxruntime``, fused attention) holds the
causal prefill attention as ``com.microsoft.GroupQueryAttention`` over [1, S, H*d] views (see
``ffexport/export/attention_rewrite.py``), and half-precision ``Attention`` nodes that say
``softmax_precision``. For TensorRT (``ffexport check`` and ``ffexport lint``) such a node is the ONNX
``Attention`` it was rewritten from: 3-D inputs, ``q_num_heads``/``kv_num_heads``, causal, same scale;
``softmax_precision`` is dropped (TensorRT's parser rejects it: "Setting softmax precision is not
supported in TensorRT Attention"). A ``--backend tensorrt*`` build writes the ONNX op itself.
"""

from __future__ import annotations

from onnx import ModelProto, helper

CONTRIB = "com.microsoft"


def as_standard_attention(model: ModelProto) -> list[str]:
    """Rewrite ``model`` in place; returns what was changed (empty: nothing)."""
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention" and n.domain == CONTRIB]
    for node in gqa:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs, output = list(node.input[:3]), node.output[0]
        del node.input[:], node.output[:], node.attribute[:]
        node.input.extend(inputs)
        node.output.append(output)
        node.op_type, node.domain = "Attention", ""
        node.attribute.extend([helper.make_attribute("is_causal", 1),
                               helper.make_attribute("q_num_heads", attrs["num_heads"]),
                               helper.make_attribute("kv_num_heads", attrs["kv_num_heads"])])
        if "scale" in attrs:
            node.attribute.append(helper.make_attribute("scale", attrs["scale"]))
    precise = [n for n in model.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")
               and any(a.name == "softmax_precision" for a in n.attribute)]
    for node in precise:
        kept = [a for a in node.attribute if a.name != "softmax_precision"]
        del node.attribute[:]
        node.attribute.extend(kept)
    notes = []
    if gqa:
        notes.append(f"its {len(gqa)} GroupQueryAttention node(s) checked as ONNX Attention")
    if precise:
        notes.append(f"softmax_precision dropped from {len(precise)} Attention node(s) (TensorRT rejects it)")
    return notes


def has_onnxruntime_attention(model: ModelProto) -> bool:
    return any((n.op_type == "GroupQueryAttention" and n.domain == CONTRIB)
               or (n.op_type == "Attention" and any(a.name == "softmax_precision" for a in n.attribute))
               for n in model.graph.node)

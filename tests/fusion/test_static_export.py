"""The static-schedule prefill is export-ready: torch.export captures it with a symbolic text length
(no .item(), no data-dependent shapes), and the captured graph computes what the module computes."""

from __future__ import annotations

import torch

from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import StaticPrefill
from ffexport.reference import Reference
from ffexport.video import synthetic_video


def test_static_prefill_exports_with_dynamic_text_length(tiny):
    case = tiny.case_from_video(synthetic_video("moving_object", frames=8, seed=7), "What moves?")
    ref = Reference(tiny, fusion=FusionConfig(similarity=0.9, ratio_lower_bound=0.05))
    result = ref(case)
    ops = {s.op for s in result.schedule.stages if s.remove}
    assert ops == {"merge", "prune"}, result.schedule  # the graph must contain both kinds of step
    inputs = ref.prepare(case)
    module = StaticPrefill(ref.decoder, result.schedule)
    length = torch.export.Dim("L", min=inputs.visual_tokens + 8, max=4096)
    program = torch.export.export(
        module, (inputs.inputs_embeds, inputs.position_ids, inputs.video_start),
        dynamic_shapes=({1: length}, {1: length}, None),
    )
    graph_ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    data_dependent = ("nonzero", "_local_scalar_dense", "unique", "masked_select")
    assert not [op for op in graph_ops if any(d in op for d in data_dependent)], graph_ops
    # TensorRT-legal at any size: no TopK/Sort (K < 3840), no scatter with reduction (plugin only)
    assert not [op for op in graph_ops if any(d in op for d in ("topk", "sort", "index_add", "scatter_add", "scatter_reduce"))]
    assert {"aten.cumsum.default", "aten.scatter.src"} <= graph_ops
    captured = program.module()
    # same inputs, then a longer text tail: one graph serves both
    extra = 12
    embeds = torch.cat([inputs.inputs_embeds, inputs.inputs_embeds[:, -extra:]], dim=1)
    positions = torch.cat([inputs.position_ids, inputs.position_ids[:, -extra:] + extra], dim=1)
    for args in [(inputs.inputs_embeds, inputs.position_ids, inputs.video_start),
                 (embeds, positions, inputs.video_start)]:
        with torch.no_grad():
            expected, got = module(*args), captured(*args)
        assert len(got) == 1 + 2 * tiny.num_layers
        for e, g in zip(expected, got):
            assert e.shape == g.shape
            assert (e - g).abs().max() <= 1e-6
    with torch.no_grad():
        first = captured(inputs.inputs_embeds, inputs.position_ids, inputs.video_start)[0]
    assert (first - torch.from_numpy(result.logits)).abs().max() <= 1e-5

"""The FLOP model behind the ideal speed-up, against counts written out by hand."""

from __future__ import annotations

from ffexport.bench.flops import ModelDims, ideal_speedup, layer_tokens, prefill_flops
from ffexport.fusion.schedule import Schedule, Stage

# a small decoder: D=8, I=16, 2 heads of 4 (one KV head), vocab 10, 3 layers
DIMS = ModelDims(hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10, layers=3)


def _layer(la: int, lm: int) -> int:
    """One layer by hand: q (8x8) and o (8x8), k and v (8x4), causal QK^T + PV, gate/up/down (8x16)."""
    q = o = 2 * la * 8 * 8
    k = v = 2 * la * 8 * 4
    causal_pairs = la * (la + 1) // 2
    attention = 2 * (2 * 4 * causal_pairs) * 2  # two products, 2 FLOPs per multiply-add, per head (2)
    mlp = 3 * 2 * lm * 8 * 16
    return q + o + k + v + attention + mlp


def test_token_counts_follow_the_schedule():
    schedule = Schedule(12, 4, (Stage(0, "before_attention", "merge", 6), Stage(1, "after_attention", "prune", 3)))
    # 5 text tokens; layer 0 attends to 5 + 6, layer 1 attends to 11 and its MLP sees 8; layer 2 keeps 8
    assert layer_tokens(schedule, 5, 12, 3) == [(11, 11), (11, 8), (8, 8)]
    assert layer_tokens(None, 5, 12, 3) == [(17, 17)] * 3


def test_prefill_flops_equal_a_hand_count():
    schedule = Schedule(12, 4, (Stage(0, "before_attention", "merge", 6), Stage(1, "after_attention", "prune", 3)))
    lm_head = 2 * 8 * 10
    full = 3 * _layer(17, 17) + lm_head
    static = _layer(11, 11) + _layer(11, 8) + _layer(8, 8) + lm_head
    assert prefill_flops(DIMS, None, text_tokens=5, visual_tokens=12).total == full
    assert prefill_flops(DIMS, schedule, text_tokens=5, visual_tokens=12).total == static
    assert ideal_speedup(DIMS, schedule, text_tokens=5) == full / static


def test_dims_from_a_model_config(tiny):
    dims = ModelDims.from_config(tiny.config.text_config)
    assert (dims.hidden, dims.intermediate, dims.heads, dims.kv_heads, dims.head_dim, dims.vocab, dims.layers) == (
        64, 128, 4, 2, 16, 272, 4)


def test_prefill_flops_equal_what_torch_counts_on_the_tiny_model(tiny):
    """Independent of the formula: run the tiny model's static prefill under torch's own FLOP counter
    (``torch.utils.flop_counter``: every matmul of the projections, MLP and LM head) and watch how
    many tokens each layer's attention and MLP really receive (hooks on q_proj and gate_proj)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.fusion.reducers import StaticReducer

    n, p, text = 64, 16, 10
    schedule = Schedule(n, p, (Stage(0, "before_attention", "merge", 20), Stage(1, "after_attention", "prune", 12)))
    decoder = ReducedDecoder(tiny.adapter.decoder_parts(tiny.model))
    layers = tiny.model.model.language_model.layers
    length = n + text
    embeds = torch.randn(1, length, tiny.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(length).expand(3, length).contiguous()
    dims = ModelDims.from_config(tiny.config.text_config)
    for sched in (None, schedule):
        seen: dict[str, list[int]] = {"attention": [], "mlp": []}
        hooks = [layer.self_attn.q_proj.register_forward_hook(lambda m, i, o: seen["attention"].append(i[0].shape[-2]))
                 for layer in layers]
        hooks += [layer.mlp.gate_proj.register_forward_hook(lambda m, i, o: seen["mlp"].append(i[0].shape[-2]))
                  for layer in layers]
        counter = FlopCounterMode(display=False)
        try:
            with torch.no_grad(), counter:
                decoder.prefill(embeds, positions, torch.tensor(5), n, p, StaticReducer(sched) if sched else None)
        finally:
            for h in hooks:
                h.remove()
        counted = counter.get_flop_counts()["Global"]
        # torch counts every matmul; the FrameFusion importance (bmm of the last 4 queries) is not part
        # of the model's FLOPs, and CPU scaled_dot_product_attention is not counted by torch at all
        linear = sum(v for op, v in counted.items() if str(op) in ("aten.mm", "aten.addmm"))
        flops = prefill_flops(dims, sched, text_tokens=text, visual_tokens=n)
        assert sum(x.projections + x.mlp for x in flops.layers) + flops.lm_head == linear
        assert [(x.attention_tokens, x.mlp_tokens) for x in flops.layers] == list(zip(seen["attention"], seen["mlp"]))
        causal = sum(2 * 2 * dims.heads * dims.head_dim * (t * (t + 1) // 2) for t in seen["attention"])
        assert sum(x.attention for x in flops.layers) == causal
    assert seen["attention"] == [length - 20, length - 20, length - 32, length - 32]  # the schedule was applied

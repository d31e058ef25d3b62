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

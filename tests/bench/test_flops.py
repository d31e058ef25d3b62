"""The FLOP model behind the ideal speed-up, against counts written out by hand."""

from __future__ import annotations

import pytest

from ffexport.bench.flops import (GenerationFlops, ModelDims, VisionDims, decode_flops, generation_flops, ideal_by_stage,
                                  ideal_speedup, layer_tokens, prefill_flops, vision_flops)
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


# ---------------------------------------------------------------- end to end: vision + prefill + decode
class _Attention:
    """Records the (heads, queries, keys, head_dim) of every CPU SDPA call: torch's FLOP counter does not
    count them, so the attention terms are checked against what really ran."""

    def __init__(self):
        self.calls: list[tuple[int, int, int, int]] = []

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        calls = self.calls

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if "scaled_dot_product" in func.__name__:
                    q, k = args[0], args[1]
                    calls.append((q.shape[-3], q.shape[-2], k.shape[-2], q.shape[-1]))
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)

    @property
    def flops(self) -> int:  # QK^T and PV, 2 FLOPs per multiply-add, every (query, key) pair computed
        return sum(4 * h * q * k * d for h, q, k, d in self.calls)


def test_vision_flops_equal_a_hand_count():
    # E=4, MLP 8, output 6, 12 inputs per patch, 2x2 merge, 2 blocks; frame groups of 8 and 8 patches
    dims = VisionDims(embed=4, mlp=8, out=6, patch_inputs=12, merge=4, blocks=2)
    n = 16
    embed = 2 * n * 12 * 4
    block = 2 * n * 4 * 12 + 2 * n * 4 * 4 + 2 * (2 * 4 * 8 * 8) * 2 + 2 * n * 4 * 8 * 2  # qkv, proj, attention, MLP
    merger = 2 * 4 * 16 * 16 + 2 * 4 * 16 * 6  # 4 merged rows of 16 -> 16 -> 6
    assert vision_flops(dims, [8, 8]) == embed + 2 * block + merger
    # one group of 16 attends over all pairs: only the attention term grows
    assert vision_flops(dims, [16]) - vision_flops(dims, [8, 8]) == 2 * 4 * 4 * (16 * 16 - 2 * 8 * 8)


def test_decode_flops_equal_a_hand_count():
    one = 3 * (2 * 8 * 8 * 2 + 2 * 8 * 4 * 2 + 3 * 2 * 8 * 16)  # per token: projections and MLP of 3 layers
    def step(cache):  # attention over the cache and the token itself, 2 heads of 4, then the LM head
        return one + sum(2 * 2 * 2 * 4 * (c + 1) for c in cache) + 2 * 8 * 10
    assert decode_flops(DIMS, [5, 5, 3], steps=3) == step([5, 5, 3]) + step([6, 6, 4]) + step([7, 7, 5])
    assert decode_flops(DIMS, [5, 5, 3], steps=0) == 0


def test_generation_flops_add_vision_prefill_and_the_decode_over_each_layers_cache():
    schedule = Schedule(12, 4, (Stage(0, "before_attention", "merge", 6), Stage(1, "after_attention", "prune", 3)))
    g = generation_flops(DIMS, schedule, text_tokens=5, visual_tokens=12, vision=1000, new_tokens=4)
    # the caches hold each layer's tokens at its attention: 11, 11 (its prune comes after the attention), 8
    assert (g.vision, g.prefill) == (1000, prefill_flops(DIMS, schedule, text_tokens=5, visual_tokens=12).total)
    assert g.decode == decode_flops(DIMS, [11, 11, 8], steps=3)
    assert g.total == g.vision + g.prefill + g.decode
    assert generation_flops(DIMS, None, text_tokens=5, visual_tokens=12, vision=0, new_tokens=1).decode == 0


def test_vision_flops_equal_what_torch_counts_on_the_tiny_encoder(tiny):
    """transformers' own vision encoder of the tiny model on a 2-group video: torch's FLOP counter for the
    convolution and the linear layers, the SDPA calls recorded for the attention (one per frame group)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    vision = tiny.config.vision_config
    t, h, w = 2, 4, 6
    grid = torch.tensor([[t, h, w]])
    pixels = torch.randn(t * h * w, VisionDims.from_config(vision).patch_inputs,
                         generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, _Attention() as attention:
        tiny.adapter.video_features(tiny.model, pixels, grid)
    counted = counter.get_flop_counts()["Global"]
    dense = sum(v for op, v in counted.items() if str(op) in ("aten.mm", "aten.addmm", "aten.convolution"))
    dims = VisionDims.from_config(vision)
    e = dims.embed
    attention_by_formula = dims.blocks * 4 * e * t * (h * w) ** 2
    assert attention.flops == attention_by_formula  # per frame group, no mask: 2 calls of 24 x 24 per block
    assert len(attention.calls) == dims.blocks * t
    assert dense + attention.flops == vision_flops(dims, [h * w] * t)


def test_decode_flops_equal_what_torch_counts_on_the_tiny_decoder(tiny):
    """The tiny model's reduced prefill, then decode steps over its per-layer caches (ffexport's reference):
    the caches' lengths, torch's count of the linear layers and the recorded attention calls."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.fusion.reducers import StaticReducer

    n, p, text = 64, 16, 10
    schedule = Schedule(n, p, (Stage(0, "before_attention", "merge", 20), Stage(1, "after_attention", "prune", 12)))
    decoder = ReducedDecoder(tiny.adapter.decoder_parts(tiny.model))
    dims = ModelDims.from_config(tiny.config.text_config)
    embed = tiny.model.model.language_model.embed_tokens
    length = n + text
    embeds = torch.randn(1, length, dims.hidden, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(length).expand(3, length).contiguous()
    steps = 3
    with torch.no_grad():
        past = decoder.prefill(embeds, positions, torch.tensor(5), n, p, StaticReducer(schedule)).presents
        cache = [k.shape[2] for k, _ in past]
        counter = FlopCounterMode(display=False)
        with counter, _Attention() as attention:
            for step in range(steps):
                past = decoder.decode(embed(torch.tensor([[1]])), torch.full((3, 1), length + step), past).presents
    g = generation_flops(dims, schedule, text_tokens=text, visual_tokens=n, vision=0, new_tokens=steps + 1)
    assert cache == [x.attention_tokens for x in prefill_flops(dims, schedule, text_tokens=text,
                                                               visual_tokens=n).layers] == [54, 54, 42, 42]
    linear = sum(v for op, v in counter.get_flop_counts()["Global"].items() if str(op) in ("aten.mm", "aten.addmm"))
    assert linear + attention.flops == g.decode == decode_flops(dims, cache, steps=steps)


def test_ideal_by_stage_scales_each_measured_stage_by_its_own_flop_ratio():
    full, reduced = GenerationFlops(vision=10, prefill=40, decode=4), GenerationFlops(vision=10, prefill=10, decode=2)
    # 1 s vision (ratio 1) + 2 s prefill at 1/4 + 1 s decode at 1/2 = 2 s; the baseline took 4 s
    assert ideal_by_stage(1.0, 2.0, 1.0, full, reduced) == pytest.approx(2.0)
    # the FLOP ideal of the same generation (54 / 22) ignores that decode took a quarter of the time
    assert full.total / reduced.total == pytest.approx(54 / 22)
    # no decode steps: vision + prefill only
    none = GenerationFlops(vision=10, prefill=40, decode=0)
    assert ideal_by_stage(1.0, 2.0, 0.0, none, GenerationFlops(vision=10, prefill=10, decode=0)) == pytest.approx(2.0)

"""The FLOP model behind the ideal prefill speed-up (torch-free).

Per decoder layer, with ``La`` tokens at its attention and ``Lm`` at its MLP (a step after the
attention shrinks the MLP's input; a step before it shrinks both):

- projections: q and o ``2 La D (H hd)`` each, k and v ``2 La D (kvh hd)`` each;
- attention: ``QK^T`` and ``PV`` over causal pairs, ``2 H hd La (La + 1)`` together;
- MLP (gate, up, down): ``6 Lm D I``;

plus the LM head on the last token only (``2 D V``). Norms, RoPE, softmax, residual adds and the
FrameFusion steps themselves are left out: the ideal speed-up is what the token counts allow if
the steps were free, so measured/ideal says how much of it a runtime realizes.

End to end (``generation_flops``) adds what every variant computes around the prefill:

- the vision encoder (Qwen2-VL's: a patch embedding, blocks of attention and a two-layer MLP, the
  patch merger), its attention within each frame group (``4 E g^2`` per group of ``g`` patches, no
  mask), the same for the full and the reduced model;
- each decode step after the first token: per layer the projections and MLP of one token and its
  attention over the layer's cache plus itself (``4 H hd (c + 1)``, ``c`` = the layer's cached rows:
  its prefill tokens at the attention plus the tokens decoded so far), and the LM head (``2 D V``).
  A reduced model's caches are shorter, so its decode steps are cheaper only in the attention term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ffexport.fusion.schedule import Schedule


@dataclass(frozen=True)
class ModelDims:
    """The sizes of a Qwen2-style decoder that the FLOP count needs."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layers: int

    @classmethod
    def from_config(cls, text_config, *, layers: int | None = None) -> "ModelDims":
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(text_config.hidden_size, text_config.intermediate_size, heads, text_config.num_key_value_heads,
                   head_dim, text_config.vocab_size, layers if layers is not None else text_config.num_hidden_layers)


@dataclass(frozen=True)
class LayerFlops:
    attention_tokens: int
    mlp_tokens: int
    projections: int
    attention: int
    mlp: int

    @property
    def total(self) -> int:
        return self.projections + self.attention + self.mlp


@dataclass(frozen=True)
class PrefillFlops:
    layers: tuple[LayerFlops, ...] = field(default_factory=tuple)
    lm_head: int = 0

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers) + self.lm_head


@dataclass(frozen=True)
class VisionDims:
    """The sizes of a Qwen2-VL vision encoder that the FLOP count needs."""

    embed: int
    mlp: int
    out: int
    patch_inputs: int
    merge: int
    blocks: int

    @classmethod
    def from_config(cls, vision_config) -> "VisionDims":
        """Qwen2-VL's vision config (``embed_dim``, ``mlp_ratio``, ``hidden_size``, ``depth``, ...)."""
        embed = vision_config.embed_dim
        patch_inputs = vision_config.in_channels * vision_config.temporal_patch_size * vision_config.patch_size ** 2
        return cls(embed, int(embed * vision_config.mlp_ratio), vision_config.hidden_size, patch_inputs,
                   vision_config.spatial_merge_size ** 2, vision_config.depth)


def vision_flops(dims: VisionDims, groups: list[int]) -> int:
    """FLOPs of the vision encoder over frame groups of ``groups[i]`` patches each (attention within a group)."""
    n, e = sum(groups), dims.embed
    embed = 2 * n * dims.patch_inputs * e
    block = 2 * n * e * 3 * e + 2 * n * e * e + 4 * e * sum(g * g for g in groups) + 2 * 2 * n * e * dims.mlp
    merged, wide = n // dims.merge, e * dims.merge
    merger = 2 * merged * wide * wide + 2 * merged * wide * dims.out
    return embed + dims.blocks * block + merger


def decode_flops(dims: ModelDims, cache: list[int], *, steps: int) -> int:
    """FLOPs of ``steps`` one-token decode steps after a prefill that left ``cache[i]`` rows in layer i."""
    d, hd = dims.hidden, dims.head_dim
    per_token = 2 * d * (dims.heads * hd) * 2 + 2 * d * (dims.kv_heads * hd) * 2 + 6 * d * dims.intermediate
    total = 0
    for k in range(steps):
        total += dims.layers * per_token + sum(4 * dims.heads * hd * (c + k + 1) for c in cache) + 2 * d * dims.vocab
    return total


@dataclass(frozen=True)
class GenerationFlops:
    """Vision encoder + prefill + decode steps of one generation."""

    vision: int
    prefill: int
    decode: int

    @property
    def total(self) -> int:
        return self.vision + self.prefill + self.decode


def ideal_by_stage(vision_s: float, prefill_s: float, decode_s: float, full: GenerationFlops,
                   reduced: GenerationFlops) -> float:
    """The baseline's measured end to end (``vision_s + prefill_s + decode_s``) over the same times with
    each stage scaled by its own FLOP ratio ``reduced / full`` (the vision encoder's is 1).

    The FLOP ideal (``full.total / reduced.total``) prices a decode FLOP like a prefill FLOP. A decode
    step streams every weight for one token: it is memory-bound, runs ~20x fewer FLOP/s than the prefill
    on the 2-core CPU in every variant (transformers' too), and takes a share of the time ~20x its share
    of the FLOPs, so no runtime whose decode is not free reaches the FLOP ideal. This ideal keeps the
    baseline's measured cost per FLOP of each stage and assumes every stage shrinks with its own work."""
    decode = decode_s * reduced.decode / full.decode if full.decode else decode_s
    scaled = vision_s + prefill_s * reduced.prefill / full.prefill + decode
    return (vision_s + prefill_s + decode_s) / scaled


def generation_flops(dims: ModelDims, schedule: Schedule | None, *, text_tokens: int, visual_tokens: int,
                     vision: int, new_tokens: int) -> GenerationFlops:
    """One generation of ``new_tokens`` greedy tokens: the first from the prefill, the rest decode steps."""
    prefill = prefill_flops(dims, schedule, text_tokens=text_tokens, visual_tokens=visual_tokens)
    cache = [layer.attention_tokens for layer in prefill.layers]
    return GenerationFlops(vision, prefill.total, decode_flops(dims, cache, steps=max(new_tokens - 1, 0)))


def layer_tokens(schedule: Schedule | None, text_tokens: int, visual_tokens: int, layers: int) -> list[tuple[int, int]]:
    """``(tokens at the attention, tokens at the MLP)`` per layer; no schedule: the full model.
    Layers past the schedule's last stage keep its final count (a truncated model's schedule applied
    to a deeper one)."""
    n = visual_tokens
    counts = []
    for i in range(layers):
        before = schedule.at(i, "before_attention") if schedule is not None else None
        n -= before.remove if before is not None else 0
        at_attention = text_tokens + n
        after = schedule.at(i, "after_attention") if schedule is not None else None
        n -= after.remove if after is not None else 0
        counts.append((at_attention, text_tokens + n))
    return counts


def prefill_flops(dims: ModelDims, schedule: Schedule | None, *, text_tokens: int, visual_tokens: int) -> PrefillFlops:
    """FLOPs of one prefill (multiply-add = 2) over ``dims.layers`` layers."""
    d, hd = dims.hidden, dims.head_dim
    per_layer = []
    for la, lm in layer_tokens(schedule, text_tokens, visual_tokens, dims.layers):
        projections = 2 * la * d * (dims.heads * hd) * 2 + 2 * la * d * (dims.kv_heads * hd) * 2
        attention = 2 * dims.heads * hd * la * (la + 1)
        mlp = 6 * lm * d * dims.intermediate
        per_layer.append(LayerFlops(la, lm, projections, attention, mlp))
    return PrefillFlops(tuple(per_layer), 2 * d * dims.vocab)


def ideal_speedup(dims: ModelDims, schedule: Schedule, *, text_tokens: int) -> float:
    """FLOPs of the full prefill over FLOPs of the prefill with ``schedule``."""
    n = schedule.visual_tokens
    full = prefill_flops(dims, None, text_tokens=text_tokens, visual_tokens=n).total
    return full / prefill_flops(dims, schedule, text_tokens=text_tokens, visual_tokens=n).total

"""The modules that become graphs: token embedding, reduced prefill, one-token decode.

Each takes and returns plain tensors in the order and with the names of ``docs/build-format.md``.
The vision encoder for a bucket's grid is :class:`ffexport.export.vision.VisionEncoder`.
"""

from __future__ import annotations

import torch
from torch import nn

from ffexport.fusion.decoder import ReducedDecoder, StaticPrefill
from ffexport.fusion.reducers import StepOps
from ffexport.fusion.schedule import Schedule


def present_names(num_layers: int, prefix: str = "present") -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


class EmbedTokens(nn.Module):
    """``input_ids`` [1, L] -> ``inputs_embeds`` [1, L, D]."""

    def __init__(self, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


class PrefillGraph(nn.Module):
    """The static-schedule prefill; logits always float32. ``steps``: how merge/prune steps compute
    (None: standard ops; ``ffexport.export.plugin_ops.PluginSteps()``: one plugin node per step)."""

    def __init__(self, decoder: ReducedDecoder, schedule: Schedule, *, steps: StepOps | None = None) -> None:
        super().__init__()
        self.prefill = StaticPrefill(decoder, schedule, steps=steps)

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, video_start: torch.Tensor):
        logits, *presents = self.prefill(inputs_embeds, position_ids, video_start)
        return (logits.float(), *presents)


#: the DeepStack input of a Qwen3-VL prefill graph, named like the vision graph's second output
DEEPSTACK_INPUT = "deepstack_features"


class DeepStackPrefillGraph(PrefillGraph):
    """:class:`PrefillGraph` with a fourth input, ``deepstack_features`` [k, N, D] (Qwen3-VL): the
    DeepStack levels of the N visual tokens in order, as the vision graph returns them; the graph
    reduces them with the hidden states' indices and adds level i after layer i."""

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, video_start: torch.Tensor,
                deepstack_features: torch.Tensor):
        logits, *presents = self.prefill(inputs_embeds, position_ids, video_start, deepstack_features)
        return (logits.float(), *presents)


class DecodeStep(nn.Module):
    """One generated token: ``input_ids`` [1, 1], ``position_ids`` [3, 1], then each layer's past key
    and value (its own length) -> logits (float32) and the grown caches."""

    def __init__(self, decoder: ReducedDecoder, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        pairs = list(zip(past[0::2], past[1::2]))
        result = self.decoder.decode(self.embed_tokens(input_ids), position_ids, pairs)
        flat = [t for kv in result.presents for t in kv]
        return (result.logits.float(), *flat)


class StaticDecodeStep(nn.Module):
    """One generated token over preallocated caches of fixed size (the static decode graph).

    Inputs: ``input_ids`` [1, 1], ``position_ids`` [3, 1], ``cache_lengths`` [num_layers] int64 (the
    tokens each layer's cache holds before this one), then per layer ``past_key_values.{i}.key`` /
    ``.value`` [1, kv_heads, C_i, head_dim] with a capacity ``C_i`` fixed at export. Outputs: logits
    (float32), then per layer ``present.{i}.key`` / ``.value``: the same buffers with this token's key
    and value written at row ``cache_lengths[i]`` (a ScatterElements over one row, so a runtime that
    binds ``present`` to the ``past`` buffer updates it in place and copies nothing per token). Every
    shape is static: CUDA graphs and TensorRT take it with no optimization profile. Attention covers
    the rows ``<= cache_lengths[i]``; the rest are masked (softmax in float32 whatever the dtype).
    """

    def __init__(self, decoder: ReducedDecoder, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache_lengths: torch.Tensor,
                *past: torch.Tensor):
        from ffexport.fusion.decoder import mrope_cos_sin

        d = self.decoder
        hidden = self.embed_tokens(input_ids)
        cos, sin = mrope_cos_sin(d.parts.inv_freq, position_ids, d.parts.mrope_section, hidden.dtype)
        presents = []
        for i, layer in enumerate(d.layers):
            past_k, past_v = past[2 * i], past[2 * i + 1]
            q, k, v = d._qkv(layer, layer.input_layernorm(hidden), cos, sin)
            length = cache_lengths[i]
            row = length.reshape(1, 1, 1, 1).expand(1, k.shape[1], 1, k.shape[3])
            past_k, past_v = past_k.scatter(2, row, k), past_v.scatter(2, row, v)
            presents += [past_k, past_v]
            capacity, kv_heads, head_dim = past_k.shape[2], past_k.shape[1], past_k.shape[3]
            # grouped-query attention without repeating the cache: query head h reads KV head
            # h // groups, so the heads regroup as [kv_heads, groups] and each KV head's whole group
            # attends in one MatMul (repeat_interleave would copy every layer's cache per token: 18%
            # of the decode step at 4,196 rows, 2B width)
            grouped = q.reshape(1, kv_heads, -1, head_dim)
            scores = torch.matmul(grouped, past_k.transpose(-2, -1)).to(torch.float32) * d.scale
            visible = torch.arange(capacity, device=scores.device) <= length
            scores = scores.masked_fill(~visible, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(past_v.dtype)
            attn = torch.matmul(probs, past_v).reshape(1, -1, 1, head_dim)
            hidden = hidden + layer.self_attn.o_proj(attn.transpose(1, 2).reshape(1, 1, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return (d._logits(hidden).float(), *presents)


def static_decode_spec(decoder: ReducedDecoder, embed_tokens: nn.Module, capacities: list[int], *,
                       max_new_tokens: int):
    """The capture spec of the static decode graph (:class:`StaticDecodeStep`) with per-layer cache
    ``capacities`` (:func:`cache_capacities`): the example caches take the embedding's dtype and device
    (the meta device of ``--graph-only``), the example lengths leave ``max_new_tokens`` rows free."""
    from ffexport.export.capture import GraphSpec

    parts, weight = decoder.parts, embed_tokens.weight
    caches = [torch.zeros(1, parts.num_kv_heads, c, parts.head_dim, dtype=weight.dtype, device=weight.device)
              for c in capacities for _ in "kv"]
    example = (torch.zeros(1, 1, dtype=torch.int64), torch.zeros(3, 1, dtype=torch.int64),
               torch.tensor(capacities) - max_new_tokens, *caches)
    layers = len(capacities)
    return GraphSpec("static decode", StaticDecodeStep(decoder, embed_tokens).eval(), example,
                     ["input_ids", "position_ids", "cache_lengths", *present_names(layers, "past_key_values")],
                     ["logits", *present_names(layers)])


def cache_capacities(schedule: Schedule, num_layers: int, *, max_text: int, max_new_tokens: int) -> list[int]:
    """Rows each layer's static decode cache needs: the longest prompt that layer can hold after the
    schedule's steps (``max_text`` text tokens + the visual tokens left at its attention) plus
    ``max_new_tokens`` generated tokens."""
    capacities = []
    for layer in range(num_layers):
        removed = sum(s.remove for s in schedule.stages if s.slot < (layer, 1))  # steps before this attention
        capacities.append(max_text + schedule.visual_tokens - removed + max_new_tokens)
    return capacities

"""The reduced decoder: a Qwen2-style LLM whose prefill runs FrameFusion steps between layers.

It reuses the loaded model's modules (no weight copies) but owns the forward pass, so that the
same code serves the dynamic reference (data-dependent reducer), the static-schedule graph that
gets exported (every shape fixed by the schedule), and the plain model (no reducer). Batch 1.

Per layer::

    [step: layer, before_attention]      (the reference only merges here at layer 0)
    x = x + attn(norm(x))                (causal over the tokens left; present k/v saved)
    [step: layer, after_attention]       (a prune uses this layer's last-4-query attention)
    x = x + mlp(norm(x))

A step gathers hidden states, rotary cos/sin and the patch ids with the same indices; tokens keep
their original order, so the causal mask of the reduced sequence is again a plain causal mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import nn

from ffexport.fusion import attention, ops
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.reducers import Reduction, StaticReducer, StepOps, VisualSpan, reduce_extra
from ffexport.fusion.schedule import Schedule

#: queries whose attention ranks visual tokens for pruning (the authors' choice)
IMPORTANCE_QUERIES = 4


class Reducer(Protocol):
    def begin(self) -> None: ...

    def needs_importance(self, layer: int) -> bool: ...

    def acts(self, layer: int, where: str) -> bool: ...

    def step(
        self, layer: int, where: str, visual: torch.Tensor, span: VisualSpan, importance: torch.Tensor | None
    ) -> Reduction | None: ...


@dataclass
class DecoderParts:
    """Where a Qwen2-style decoder keeps its pieces (filled in by a model adapter)."""

    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    inv_freq: torch.Tensor
    mrope_section: tuple[int, ...]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    #: Qwen3-style M-RoPE: frequency j takes axis j % 3 inside the h/w sections (else: section by section)
    mrope_interleaved: bool = False


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def mrope_cos_sin(
    inv_freq: torch.Tensor, position_ids: torch.Tensor, mrope_section: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimodal RoPE tables. ``position_ids`` [3, L] (temporal, height, width) -> cos, sin [L, head_dim].

    Frequency band ``j`` of section ``i`` uses the positions of axis ``i % 3``.
    """
    freqs = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq.to(torch.float32)  # [3, L, d/2]
    bands = [chunk[i % 3] for i, chunk in enumerate(freqs.split(list(mrope_section), dim=-1))]
    freqs = torch.cat(bands, dim=-1)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def interleaved_mrope_cos_sin(
    inv_freq: torch.Tensor, position_ids: torch.Tensor, mrope_section: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3-VL's interleaved M-RoPE tables [L, head_dim]: frequency ``j`` uses the temporal positions,
    except ``j = 1, 4, 7, ... < 3 * mrope_section[1]`` (height) and ``j = 2, 5, 8, ... < 3 * mrope_section[2]``
    (width). The axis of each frequency is a constant, so this is a gather of the three tables.

    The axes are made with ops from Python ints (not a tensor literal), so a meta-device capture (graph-only
    and streamed builds) keeps them in the graph instead of a constant with no value."""
    half = inv_freq.shape[0]
    freqs = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq.to(torch.float32)  # [3, L, d/2]
    j = torch.arange(half, dtype=torch.int64, device=freqs.device)
    height = ((j % 3) == 1) & (j < 3 * mrope_section[1])
    width = ((j % 3) == 2) & (j < 3 * mrope_section[2])
    onehot = torch.stack([~(height | width), height, width]).to(torch.float32)  # [3, d/2]
    freqs = (freqs * onehot.unsqueeze(1)).sum(dim=0)  # exact: one non-zero term per frequency
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


@dataclass
class PrefillResult:
    logits: torch.Tensor  # [1, vocab], last position
    presents: list[tuple[torch.Tensor, torch.Tensor]]  # per layer [1, kv_heads, L_i, head_dim]


class ReducedDecoder(nn.Module):
    """Prefill with optional FrameFusion steps, and one-token decode over per-layer caches."""

    def __init__(self, parts: DecoderParts) -> None:
        super().__init__()
        self.parts = parts
        self.layers = parts.layers
        self.norm = parts.norm
        self.lm_head = parts.lm_head
        self.groups = parts.num_heads // parts.num_kv_heads
        self.scale = parts.head_dim**-0.5

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # ------------------------------------------------------------------ pieces
    def _qkv(self, layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        attn = layer.self_attn
        length, hd = x.shape[1], self.parts.head_dim
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head's q and k before RoPE
            q = attn.q_norm(attn.q_proj(x).view(1, length, -1, hd)).transpose(1, 2)
            k = attn.k_norm(attn.k_proj(x).view(1, length, -1, hd)).transpose(1, 2)
        else:
            q = attn.q_proj(x).view(1, length, -1, hd).transpose(1, 2)
            k = attn.k_proj(x).view(1, length, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(1, length, -1, hd).transpose(1, 2)
        c, s = cos.unsqueeze(0).unsqueeze(0), sin.unsqueeze(0).unsqueeze(0)
        q = q * c + rotate_half(q) * s
        k = k * c + rotate_half(k) * s
        return q, k, v

    def _rope(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        tables = interleaved_mrope_cos_sin if self.parts.mrope_interleaved else mrope_cos_sin
        return tables(self.parts.inv_freq, position_ids, self.parts.mrope_section, dtype)

    def _repeat(self, kv: torch.Tensor) -> torch.Tensor:
        return kv if self.groups == 1 else kv.repeat_interleave(self.groups, dim=1)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
        """Attention over repeated k/v: SDPA in PyTorch (every dtype); in a captured graph the
        formulation the capture asks for (:mod:`ffexport.fusion.attention`)."""
        return attention.attend(q, k, v, causal=causal, scale=self.scale)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden[:, -1, :]))

    @staticmethod
    def _apply_reduction(
        reduction: Reduction,
        span: VisualSpan,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, VisualSpan]:
        """Gather hidden states, cos/sin and patch ids down to the surviving tokens (static shapes)."""
        length = hidden.shape[1]
        n, n_new = span.length, reduction.kept.shape[0]
        removed = n - n_new
        device = hidden.device
        j = torch.arange(length - removed, dtype=torch.int64, device=device)
        source = torch.where(j < span.start, j, j + removed)  # text before / after the span
        patch_ids = span.patch_ids.index_select(0, reduction.kept)
        if n_new > 0:
            in_span = (j >= span.start) & (j < span.start + n_new)
            rel = torch.clamp(j - span.start, 0, n_new - 1)
            source = torch.where(in_span, span.start + reduction.kept.index_select(0, rel), source)
        cos, sin = cos.index_select(0, source), sin.index_select(0, source)
        if reduction.values is None or n_new == 0:
            hidden = hidden.index_select(1, source)
        else:  # merged values live in a pool appended after the sequence
            pool = torch.cat([hidden[0], reduction.values.to(hidden.dtype)], dim=0)
            hidden = pool.index_select(0, torch.where(in_span, length + rel, source)).unsqueeze(0)
        text = None if span.text is None else span.text.index_select(0, reduction.kept)
        return hidden, cos, sin, VisualSpan(span.start, n_new, patch_ids, span.patches_per_frame, span.frames,
                                            text, span.text_tokens)

    @staticmethod
    def _span(video_start, visual_tokens, patches_per_frame, layout, device) -> VisualSpan:
        """The span at the start of the prefill: contiguous, or the region of several frame blocks."""
        if layout is None or layout.is_contiguous:
            patch_ids = torch.arange(visual_tokens, dtype=torch.int64, device=device) % patches_per_frame
            return VisualSpan(video_start, visual_tokens, patch_ids, patches_per_frame,
                              -(-visual_tokens // patches_per_frame))
        if (layout.visual_tokens, layout.patches_per_frame) != (visual_tokens, patches_per_frame):
            raise ValueError(f"the layout holds {layout.visual_tokens} tokens of {layout.patches_per_frame} per frame, "
                             f"not {visual_tokens} of {patches_per_frame}")
        # built with ops from the block bounds (Python ints), not from numpy constants, so that a
        # meta-device capture (graph-only builds) keeps them in the graph
        rows = torch.arange(layout.region_length, dtype=torch.int64, device=device)
        text = torch.ones(layout.region_length, dtype=torch.bool, device=device)
        patch_ids = torch.zeros(layout.region_length, dtype=torch.int64, device=device)
        for block in layout.blocks:
            inside = (rows >= block.start) & (rows < block.end)
            text = text & ~inside
            patch_ids = torch.where(inside, (rows - block.start) % patches_per_frame, patch_ids)
        return VisualSpan(video_start, layout.region_length, patch_ids, patches_per_frame, layout.frames,
                          text, layout.text_tokens)

    def _step(self, reducer, layer, where, hidden, cos, sin, span, importance):
        if not reducer.acts(layer, where):
            return hidden, cos, sin, span
        visual = hidden[0].index_select(0, span.positions())
        reduction = reducer.step(layer, where, visual, span, importance)
        if reduction is None:
            return hidden, cos, sin, span
        if span.extra is None:
            return self._apply_reduction(reduction, span, hidden, cos, sin)
        extra = reduce_extra(span, reduction.kept, reduction.values is not None)
        hidden, cos, sin, reduced = self._apply_reduction(reduction, span, hidden, cos, sin)
        return hidden, cos, sin, replace(reduced, extra=extra)

    @staticmethod
    def _deepstack_rows(deepstack: torch.Tensor, span: VisualSpan) -> torch.Tensor:
        """[k, N, D] features of the visual tokens (in order) -> [region rows, k * D] (zeros on text rows)."""
        k, n, d = deepstack.shape
        rows = deepstack.permute(1, 0, 2).reshape(n, k * d)
        if span.text is None:
            return rows
        rank = torch.cumsum((~span.text).to(torch.float32), dim=0).to(torch.int64) - 1
        source = torch.where(span.text, torch.full_like(rank, n), rank)
        return torch.cat([rows, rows.new_zeros(1, k * d)], dim=0).index_select(0, source)

    @staticmethod
    def _add_deepstack(hidden: torch.Tensor, span: VisualSpan, layer: int) -> torch.Tensor:
        """Add DeepStack level ``layer`` (carried in ``span.extra``) to the span's rows (gathers, no scatter)."""
        d = hidden.shape[-1]
        addend = span.extra[:, layer * d:(layer + 1) * d].to(hidden.dtype)
        j = torch.arange(hidden.shape[1], dtype=torch.int64, device=hidden.device)
        inside = (j >= span.start) & (j < span.start + span.length)
        source = torch.where(inside, j - span.start + 1, torch.zeros_like(j))
        pool = torch.cat([addend.new_zeros(1, d), addend], dim=0)
        return hidden + pool.index_select(0, source).unsqueeze(0)

    # ------------------------------------------------------------------ prefill
    def prefill(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        video_start: torch.Tensor,
        visual_tokens: int,
        patches_per_frame: int,
        reducer: Reducer | None = None,
        layout: FrameLayout | None = None,
        deepstack: torch.Tensor | None = None,
    ) -> PrefillResult:
        """Run the prompt. ``inputs_embeds`` [1, L, D] with video features in place; ``position_ids``
        [3, L]; ``video_start`` 0-dim int64: the video span is ``[video_start, video_start + N)``,
        or, with a ``layout`` of several frame blocks, the region ``[video_start, video_start + R)``
        holding the blocks and the text between them (:mod:`ffexport.fusion.layout`).

        ``deepstack`` [k, N, D] (Qwen3-VL): level ``i`` is added to the visual tokens' hidden states
        after layer ``i`` (``i < k``), as transformers does; the features ride with their tokens
        through every merge (averaged with the same groups) and prune (the same survivors)."""
        hidden = inputs_embeds
        cos, sin = self._rope(position_ids, hidden.dtype)
        device = hidden.device
        video_start = torch.as_tensor(video_start, dtype=torch.int64, device=device).reshape(())
        span = self._span(video_start, visual_tokens, patches_per_frame, layout, device)
        levels = 0 if deepstack is None else deepstack.shape[0]
        if levels:
            span = replace(span, extra=self._deepstack_rows(deepstack, span))
        if reducer is not None:
            reducer.begin()
        presents = []
        for i, layer in enumerate(self.layers):
            if reducer is not None:
                hidden, cos, sin, span = self._step(reducer, i, "before_attention", hidden, cos, sin, span, None)
            q, k, v = self._qkv(layer, layer.input_layernorm(hidden), cos, sin)
            presents.append((k, v))
            kr, vr = self._repeat(k), self._repeat(v)
            attn = self._attend(q, kr, vr, causal=True)
            attn = attn.transpose(1, 2).reshape(1, hidden.shape[1], -1)
            hidden = hidden + layer.self_attn.o_proj(attn)
            if reducer is not None:
                importance = None
                if reducer.needs_importance(i):
                    importance = ops.last_query_importance(q, kr, IMPORTANCE_QUERIES)
                hidden, cos, sin, span = self._step(reducer, i, "after_attention", hidden, cos, sin, span, importance)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            if i < levels:
                hidden = self._add_deepstack(hidden, span, i)
                if i == levels - 1:
                    span = replace(span, extra=None)  # nothing left to add: stop carrying it
        return PrefillResult(self._logits(hidden), presents)

    # ------------------------------------------------------------------ decode
    def decode(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> PrefillResult:
        """One new token (``inputs_embeds`` [1, 1, D], ``position_ids`` [3, 1]) attending to each layer's
        own cache (lengths may differ per layer). Returns logits and the grown caches."""
        hidden = inputs_embeds
        cos, sin = self._rope(position_ids, hidden.dtype)
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past, strict=True):
            q, k, v = self._qkv(layer, layer.input_layernorm(hidden), cos, sin)
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            presents.append((k, v))
            attn = self._attend(q, self._repeat(k), self._repeat(v), causal=False)
            hidden = hidden + layer.self_attn.o_proj(attn.transpose(1, 2).reshape(1, 1, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return PrefillResult(self._logits(hidden), presents)


class StaticPrefill(nn.Module):
    """The export-ready prefill: a schedule baked in, tensors in, tensors out.

    Inputs: ``inputs_embeds`` [1, L, D], ``position_ids`` [3, L] int64, ``video_start`` [] int64, and
    for Qwen3-VL ``deepstack`` [k, N, D] (the DeepStack levels, reduced with the hidden states' indices).
    Outputs: ``logits`` [1, vocab] then ``present.{i}.key`` / ``present.{i}.value`` per layer.
    """

    def __init__(self, decoder: ReducedDecoder, schedule: Schedule, *, steps: StepOps | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.schedule = schedule.validate(decoder.num_layers)
        self.steps = steps  # None: standard ops; see StaticReducer

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, video_start: torch.Tensor,
                deepstack: torch.Tensor | None = None):
        result = self.decoder.prefill(
            inputs_embeds,
            position_ids,
            video_start,
            self.schedule.visual_tokens,
            self.schedule.patches_per_frame,
            StaticReducer(self.schedule, steps=self.steps),
            self.schedule.layout,
            deepstack,
        )
        flat = [t for kv in result.presents for t in kv]
        return (result.logits, *flat)

"""A deliberately naive FrameFusion prefill, written from ``shared/FRAMEFUSION.md`` only.

It is the test oracle for the dynamic reference (``ReducedDecoder`` + ``DynamicReducer``) and uses
nothing from ``ffexport.fusion``: only the Hugging Face modules' weights (projections, norms, MLP,
LM head) and the rotary ``inv_freq`` / ``mrope_section``. The sequence is a Python list of token
records (original index, patch id or None); every FrameFusion decision is an explicit Python step:

* a step runs at layer 0 before attention and after every attention;
* merge (while merging is not done): patch-major order, cosine with the previous token of the same
  patch, candidates = sim >= similarity; ratio = candidates / n; below the budget: merge all
  candidates, append the ratio, stop merging under the ratio lower bound; otherwise merge the top
  int(budget * n) and stop merging and pruning;
* a merge averages each maximal flagged run with the unflagged token before it (equal weights);
* prune (the first step after merging is done, if pruning is not done): importance = softmax
  attention of the last 4 queries, mean over heads and queries; keep round(n * (1 - budget)).

Attention is written out per head with an explicit causal mask; RoPE is built per frequency from
the (t, h, w) position ids. Everything stays in float32 except the similarity (float64).

Model variants, each written from its description, not from ffexport's code: q/k RMSNorm per head
before RoPE when the attention has ``q_norm``/``k_norm`` (Qwen3); interleaved M-RoPE when the config
says ``mrope_interleaved`` (frequency j takes height positions for j = 1 mod 3 below 3 * section[1],
width positions for j = 2 mod 3 below 3 * section[2], temporal ones otherwise); DeepStack levels
(``prefill(deepstack=...)``): each visual token carries its own k feature rows, level i is added to
it after layer i; a merge averages the carried rows of a group with equal weights, like the hidden
states, and a prune keeps the survivors' rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


class NaiveBudgetError(Exception):
    """The spec's budget formula cannot be evaluated (cost too small / no layers left)."""


def naive_budget(sparsity: list[float], cost: float, num_layers: int) -> float:
    s = 1.0
    total = 0.0
    for r in sparsity:
        s = s * (1 - r)
        total = total + s
    remain = num_layers * cost - total
    if remain < 0:
        raise NaiveBudgetError("the cost is too small")
    if num_layers - len(sparsity) <= 0:
        raise NaiveBudgetError("no budget layers left")  # the spec's formula would divide by zero
    quotient = remain / ((num_layers - len(sparsity)) * s)
    if quotient > 1:
        return 0.0
    return 1 - quotient


@dataclass
class Tok:
    index: int  # row in the ORIGINAL sequence (its position ids)
    patch: int | None  # patch id for a visual token, None for text
    deepstack: torch.Tensor | None = None  # [k, D] DeepStack rows this token carries (visual tokens only)


@dataclass
class NaiveResult:
    logits: torch.Tensor | None  # [vocab]
    steps: list[tuple[int, str, str, int]] = field(default_factory=list)  # (layer, where, op, remove)
    branches: list[str] = field(default_factory=list)  # "threshold" / "top-k" / "prune", per step
    numbers: list[tuple[int, float | None, float]] = field(default_factory=list)  # (n before, ratio, budget)
    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # [kv_heads, L_i, hd]
    error: str | None = None  # set when the budget formula failed (then logits is None)


def _cos64(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    return float((a * b).sum() / (a.norm() * b.norm()))


class NaiveFrameFusion:
    def __init__(
        self,
        model,
        *,
        cost: float = 0.3,
        similarity: float = 0.6,
        ratio_lower_bound: float = 0.1,
        budget_layers: int | None = None,
        mrope_section: list[int] | tuple[int, ...] | None = None,
    ) -> None:
        """``mrope_section``: frequencies per position row (t, h, w), as data; None reads the model's
        ``rotary_emb.mrope_section``. A 1D-RoPE model (no such attribute) passes ``[head_dim // 2]``:
        one section, every frequency on row 0."""
        text = model.model.language_model
        self.layers = list(text.layers)
        self.norm = text.norm
        self.lm_head = model.lm_head
        self.inv_freq = text.rotary_emb.inv_freq.to(torch.float32)
        self.mrope_section = list(text.rotary_emb.mrope_section if mrope_section is None else mrope_section)
        cfg = text.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope_parameters = getattr(cfg, "rope_parameters", None) or {}
        self.interleaved = bool(rope_parameters.get("mrope_interleaved", False))
        self.cost = cost
        self.similarity = similarity
        self.ratio_lower_bound = ratio_lower_bound
        self.budget_layers = budget_layers if budget_layers is not None else len(self.layers)

    # ------------------------------------------------------------------ RoPE
    def _rope_tables(self, position_ids: torch.Tensor):
        """cos/sin [L_orig, head_dim // 2]: frequency j uses axis (section of j) % 3."""
        half = self.head_dim // 2
        axis_of = []
        for section, width in enumerate(self.mrope_section):
            axis_of += [section % 3] * width
        assert len(axis_of) == half
        if self.interleaved:
            axis_of = []
            for j in range(half):
                if j % 3 == 1 and j < 3 * self.mrope_section[1]:
                    axis_of.append(1)
                elif j % 3 == 2 and j < 3 * self.mrope_section[2]:
                    axis_of.append(2)
                else:
                    axis_of.append(0)
        length = position_ids.shape[1]
        angle = torch.zeros(length, half, dtype=torch.float32)
        for j in range(half):
            angle[:, j] = position_ids[axis_of[j]].to(torch.float32) * self.inv_freq[j]
        return angle.cos(), angle.sin()

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [n, heads, hd]; cos/sin [n, hd/2]. Pairs (j, j + hd/2) rotate by the angle of j."""
        half = self.head_dim // 2
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    # ------------------------------------------------------------------ one layer's attention
    def _attention(self, layer, h: torch.Tensor, toks: list[Tok], cos_all, sin_all, want_importance: bool):
        n = h.shape[0]
        hd = self.head_dim
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(n, self.heads, hd)
        k = attn.k_proj(x).view(n, self.kv_heads, hd)
        v = attn.v_proj(x).view(n, self.kv_heads, hd)
        if hasattr(attn, "q_norm"):
            q = attn.q_norm(q)
            k = attn.k_norm(k)
        rows = [t.index for t in toks]
        cos, sin = cos_all[rows], sin_all[rows]
        q = self._rotate(q, cos, sin)
        k = self._rotate(k, cos, sin)
        group = self.heads // self.kv_heads
        mask = torch.zeros(n, n)
        for i in range(n):
            for j in range(i + 1, n):
                mask[i, j] = float("-inf")
        outs = []
        importance = [0.0] * n if want_importance else None
        last = min(4, n)
        for head in range(self.heads):
            kv = head // group  # query head `head` reads kv head head // group
            scores = (q[:, head, :] @ k[:, kv, :].T) / math.sqrt(hd) + mask
            probs = torch.softmax(scores, dim=-1)
            outs.append(probs @ v[:, kv, :])
            if want_importance:
                for qi in range(n - last, n):
                    for j in range(n):
                        importance[j] += float(probs[qi, j]) / (self.heads * last)
        out = attn.o_proj(torch.cat(outs, dim=-1))
        present = (k.transpose(0, 1).contiguous(), v.transpose(0, 1).contiguous())
        return h + out, present, importance

    # ------------------------------------------------------------------ FrameFusion steps
    def _merge(self, h, toks, layer, where, result):
        vis = [i for i, t in enumerate(toks) if t.patch is not None]
        n = len(vis)
        upper = naive_budget(self.sparsity, self.cost, self.budget_layers)
        order = sorted(vis, key=lambda i: (toks[i].patch, i))
        sim = {}
        for a, i in enumerate(order):
            if a > 0 and toks[order[a - 1]].patch == toks[i].patch:
                sim[i] = _cos64(h[order[a - 1]], h[i])
            else:
                sim[i] = -2.0
        candidates = [i for i in order if sim[i] >= self.similarity]
        ratio = len(candidates) / n
        if ratio < upper:
            merged = set(candidates)
            self.sparsity.append(ratio)
            if ratio < self.ratio_lower_bound:
                self.merging_done = True
            result.branches.append("threshold")
        else:
            m = int(upper * n)
            by_sim = sorted(order, key=lambda i: -sim[i])
            merged = set(by_sim[:m])
            self.merging_done = True
            self.pruning_done = True
            result.branches.append("top-k")
        result.steps.append((layer, where, "merge", len(merged)))
        result.numbers.append((n, ratio, upper))
        # group each flagged run with the unflagged token just before it in its patch chain
        members: dict[int, list[int]] = {}
        head = None
        for i in order:
            if i in merged:
                assert head is not None and toks[head].patch == toks[i].patch
                members[head].append(i)
            else:
                head = i
                members[i] = [i]
        new_h = h.clone()
        new_toks = list(toks)
        for head, group in members.items():
            total = torch.zeros_like(h[head])
            for j in group:
                total = total + h[j]
            new_h[head] = total / len(group)
            if toks[head].deepstack is not None:
                carried = torch.zeros_like(toks[head].deepstack)
                for j in group:
                    carried = carried + toks[j].deepstack
                new_toks[head] = Tok(toks[head].index, toks[head].patch, carried / len(group))
        keep = [i for i in range(len(toks)) if i not in merged]
        return new_h[keep], [new_toks[i] for i in keep]

    def _prune(self, h, toks, layer, importance, result):
        vis = [i for i, t in enumerate(toks) if t.patch is not None]
        n = len(vis)
        upper = naive_budget(self.sparsity, self.cost, self.budget_layers)
        keep_count = round(n * (1 - upper))
        ranked = sorted(vis, key=lambda i: -importance[i])
        kept_vis = set(ranked[:keep_count])
        self.pruning_done = True
        result.steps.append((layer, "after_attention", "prune", n - keep_count))
        result.branches.append("prune")
        result.numbers.append((n, None, upper))
        keep = [i for i in range(len(toks)) if toks[i].patch is None or i in kept_vis]
        return h[keep], [toks[i] for i in keep]

    def _step(self, h, toks, layer, where, importance, result):
        if where == "before_attention" and layer != 0:
            return h, toks
        if where == "after_attention" and self.merging_done and not self.pruning_done:
            return self._prune(h, toks, layer, importance, result)
        if not self.merging_done:
            return self._merge(h, toks, layer, where, result)
        return h, toks

    # ------------------------------------------------------------------ prefill
    @torch.no_grad()
    def prefill(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        start: int,
        visual_tokens: int,
        patches_per_frame: int,
        fusion: bool = True,
        blocks: list[tuple[int, int]] | None = None,
        deepstack: torch.Tensor | None = None,
    ) -> NaiveResult:
        """``embeds`` [L, D]; ``position_ids`` [3, L]; the video span is [start, start + N).

        ``blocks``: the video as frame blocks ``(offset from start, tokens)`` with text between them
        (their tokens sum to N); a token of a block has patch id (its offset in the block) mod P, the
        text between blocks has none, so it is never merged or pruned. None: one block [start, start + N).
        ``deepstack`` [k, N, D]: the visual tokens' DeepStack rows, in order (see the module docstring).
        """
        self.sparsity: list[float] = []
        self.merging_done = False
        self.pruning_done = False
        result = NaiveResult(logits=None)
        cos_all, sin_all = self._rope_tables(position_ids)
        if blocks is None:
            blocks = [(0, visual_tokens)]
        assert sum(length for _, length in blocks) == visual_tokens
        patch_of: dict[int, int] = {}
        for offset, length in blocks:
            for j in range(length):
                patch_of[start + offset + j] = j % patches_per_frame
        toks = [Tok(i, patch_of.get(i)) for i in range(embeds.shape[0])]
        levels = 0
        if deepstack is not None:
            levels = deepstack.shape[0]
            visual_rows = sorted(patch_of)
            for rank, row in enumerate(visual_rows):
                toks[row] = Tok(row, patch_of[row], deepstack[:, rank, :].to(torch.float32))
        h = embeds.clone()
        try:
            for li, layer in enumerate(self.layers):
                if fusion:
                    h, toks = self._step(h, toks, li, "before_attention", None, result)
                want = fusion and self.merging_done and not self.pruning_done
                h, present, importance = self._attention(layer, h, toks, cos_all, sin_all, want)
                result.kv.append(present)
                if fusion:
                    h, toks = self._step(h, toks, li, "after_attention", importance, result)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
                if li < levels:
                    h = h.clone()
                    for i, t in enumerate(toks):
                        if t.deepstack is not None:
                            h[i] = h[i] + t.deepstack[li]
        except NaiveBudgetError as e:
            result.error = str(e)
            return result
        result.logits = self.lm_head(self.norm(h[-1]))
        return result

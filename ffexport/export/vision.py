"""The Qwen2-VL / Qwen2.5-VL vision encoder + patch merger for one fixed video grid, written for export.

transformers' ``Qwen2VisionTransformerPretrainedModel`` takes ``grid_thw`` at run time and derives
from it, with ``.tolist()`` and Python loops, the rotary positions of every patch and the frame
boundaries (``cu_seqlens``) that limit attention to one temporal group. Here the grid is fixed when
the module is built: the rotary tables are constant buffers, and "attend within each frame" is the
shape of the computation itself: q/k/v are laid out as ``[t, heads, h*w, head_dim]`` and one batched
scaled-dot-product attention runs over the ``t`` frames. No mask, no grid-dependent control flow.

Same numerics as transformers (5.x): rotary embedding applied in float32 then cast back, LayerNorm
as ``torch.nn.LayerNorm`` (float32 statistics), and for float16/bfloat16 the attention softmax in
float32 (what transformers' eager path does explicitly and its fused SDPA kernels do internally;
the ONNX decomposition of ``scaled_dot_product_attention`` would run it in half precision).

Patch order is the processor's: frame-major, then ``merge x merge`` blocks row by row, then the
patches inside a block; the merger turns each run of ``merge**2`` patches into one visual token.

A family's tower is data (:class:`VisionTower`, declared by its adapter's ``vision_tower``): the
sizes, and for Qwen2.5-VL the window attention: blocks not in ``full_blocks`` attend within square
windows of ``window`` x ``window`` merged tokens of a frame (the windows at the right and bottom
edges smaller when the frame does not divide evenly), as transformers'
``get_vision_window_index`` cuts them. The grid is fixed, so the windows are too: every frame's
patches are put in window order by one constant gather at the start (rotary tables likewise),
each window is one batch entry of the attention when all windows have the same size (a constant
block mask per frame otherwise), and the merged tokens are put back in the processor's order by
one constant gather at the end, which is what transformers computes with ``window_index`` and
``cu_window_seqlens``. Full-attention blocks attend per frame in either order (attention does not
depend on the order of its keys). Without a window (Qwen2-VL) none of this is in the graph.

Qwen3-VL's tower (:meth:`VisionTower.qwen3_vl`) adds two things, both fixed by the grid: a learned
position embedding (a square table, ``visual.pos_embed``) resampled bilinearly with corners aligned
to the frame's ``h x w`` patches, which for a fixed grid is a constant gather of 4 table rows per
patch with constant weights (float32, as transformers multiplies them), and DeepStack: the output
of the blocks ``tower.deepstack`` names goes through ``visual.deepstack_merger_list`` (merge, then
LayerNorm over the merged ``merge**2`` patches), giving the graph's second output
``deepstack_features`` [k, N, D].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ffexport.models.vision_tower import VisionTower

#: graph input / output names (docs/build-format.md)
INPUT_NAME = "pixel_values_videos"
OUTPUT_NAME = "video_features"
#: the second output of a tower with DeepStack levels (Qwen3-VL): [k, N, D]
DEEPSTACK_NAME = "deepstack_features"


class VisionEncoder(nn.Module):
    """``VisionEncoder(visual, grid_thw, tower)(pixel_values_videos [t*h*w, C*tp*p*p]) -> [t*h*w/merge**2, D]``.

    ``visual`` is ``model.model.visual`` of a ``Qwen2VLForConditionalGeneration`` (``tower`` None:
    :meth:`VisionTower.qwen2_vl`) or of the family ``tower`` describes (its adapter's
    ``vision_tower``); its patch embedding, blocks and merger are reused as submodules (shared
    weights, no copies). The module works in their dtype; the input may be any float dtype (cast
    like transformers does).
    """

    def __init__(self, visual: nn.Module, grid_thw: tuple[int, int, int], tower: VisionTower | None = None) -> None:
        super().__init__()
        self.training = visual.training  # the flag only: the shared submodules keep their own state
        config = visual.config
        grid = tuple(int(x) for x in grid_thw)
        merge = int(config.spatial_merge_size)
        if len(grid) != 3 or min(grid) <= 0:
            raise ValueError(f"grid_thw must be three positive sizes (t, h, w) in patches; got {tuple(grid_thw)}")
        t, h, w = grid
        if h % merge or w % merge:
            raise ValueError(
                f"grid {t}x{h}x{w}: height and width (in patches) must be multiples of spatial_merge_size={merge}"
            )
        tower = tower if tower is not None else VisionTower.qwen2_vl(config)
        self.grid_thw: tuple[int, int, int] = grid
        self.merge_size = merge
        self.num_heads = tower.num_heads
        self.embed_dim = tower.embed_dim
        self.head_dim = self.embed_dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.patch_dim = int(config.in_channels * config.temporal_patch_size * config.patch_size**2)
        self.out_dim = tower.out_dim
        self.windows = None if tower.window is None else _Windows(h // merge, w // merge, merge, tower.window)
        self.full_blocks = frozenset(tower.full_blocks)
        self.deepstack = tuple(tower.deepstack)
        if self.deepstack and (self.windows is not None or max(self.deepstack) >= len(visual.blocks)):
            raise ValueError(f"DeepStack blocks {list(self.deepstack)} need a tower without windows and with "
                             f"more than {max(self.deepstack)} blocks")

        self.patch_embed = visual.patch_embed
        self.blocks = visual.blocks
        self.merger = visual.merger
        if self.deepstack:
            self.deepstack_mergers = visual.deepstack_merger_list
        self.pos_embed = None
        if tower.position_grid is not None:  # learned positions: constant taps and weights for this grid
            self.pos_embed = visual.pos_embed
            index, weight = position_taps(h, w, merge, tower.position_grid)
            self._pos_weight_cpu = weight
            self.register_buffer("position_index", index, persistent=False)
            self.register_buffer("position_weight", weight.clone(), persistent=False)

        # rotary tables: float32 always (re-made on .to()/.half(), see _apply), one frame's worth,
        # since every frame repeats the same (h, w) positions
        rope = visual.rotary_pos_emb
        inv_freq, scaling = rope.compute_axial_rope_parameters(config)
        self._cos_cpu, self._sin_cpu = _rotary_tables(h, w, merge, inv_freq.float(), float(scaling))
        if self.windows is not None:  # the tables in the order the blocks see the patches; constant gathers
            order = self.windows.patch_order
            self._cos_cpu, self._sin_cpu = self._cos_cpu[order], self._sin_cpu[order]
            self.register_buffer("window_patch_order", order, persistent=False)
            self.register_buffer("window_token_restore", self.windows.token_restore, persistent=False)
            if not self.windows.even:
                self.register_buffer("window_mask", self.windows.mask(), persistent=False)
        self.register_buffer("rotary_cos", self._cos_cpu.clone(), persistent=False)
        self.register_buffer("rotary_sin", self._sin_cpu.clone(), persistent=False)

    # ------------------------------------------------------------------ facts
    @property
    def num_patches(self) -> int:
        """Rows of ``pixel_values_videos``: ``t*h*w``."""
        t, h, w = self.grid_thw
        return t * h * w

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of ``pixel_values_videos``: ``[t*h*w, C*tp*p*p]``."""
        return (self.num_patches, self.patch_dim)

    @property
    def num_tokens(self) -> int:
        """Visual tokens out (``N``): ``t*h*w / merge**2``."""
        return self.num_patches // self.merge_size**2

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs: the visual tokens, then the DeepStack levels where the tower has them."""
        return [OUTPUT_NAME, DEEPSTACK_NAME] if self.deepstack else [OUTPUT_NAME]

    def example_input(self, seed: int = 0) -> torch.Tensor:
        """Random float32 pixels of the right shape (for capture; values do not matter)."""
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(self.num_patches, self.patch_dim, generator=gen)

    # ---------------------------------------------------------------- forward
    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        t, h, w = self.grid_thw
        if tuple(pixel_values_videos.shape) != (self.num_patches, self.patch_dim):
            raise ValueError(
                f"pixel_values_videos has shape {tuple(pixel_values_videos.shape)}; this encoder was built for "
                f"grid {t}x{h}x{w} and needs [{self.num_patches}, {self.patch_dim}] (t*h*w rows)"
            )
        x = self._embed_patches(pixel_values_videos)  # [t*h*w, E] in the module's dtype
        if self.pos_embed is not None:
            x = self._add_positions(x)
        if self.windows is None:
            levels = []
            for i, block in enumerate(self.blocks):
                x = x + self._attention(block.attn, block.norm1(x))
                x = x + block.mlp(block.norm2(x))
                if i in self.deepstack:
                    levels.append(self.deepstack_mergers[self.deepstack.index(i)](x))
            tokens = self.merger(x)  # [N, D]
            return (tokens, torch.stack(levels)) if levels else tokens
        x = self._reorder(x, self.window_patch_order, t, h * w)  # every frame's patches in window order
        for i, block in enumerate(self.blocks):
            batch = None if i in self.full_blocks else self.windows
            x = x + self._attention(block.attn, block.norm1(x), batch)
            x = x + block.mlp(block.norm2(x))
        tokens = self.merger(x)  # [N, D], window order
        return self._reorder(tokens, self.window_token_restore, t, self.windows.tokens)

    def _embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """The patch embedding. Its Conv3d has kernel = stride = one patch and every row of ``pixels`` is
        one patch (``C*tp*p*p`` values in the kernel's order), so it is one matrix product with the
        kernel flattened to [E, C*tp*p*p] (+ bias): a Gemm in the graph, where ONNX Runtime's CPU Conv
        would go through im2col (docs/benchmarks.md, "The vision encoder")."""
        proj = self.patch_embed.proj
        if not (isinstance(proj, nn.Conv3d) and tuple(proj.kernel_size) == tuple(proj.stride)
                and proj.weight[0].numel() == self.patch_dim and proj.padding == (0, 0, 0) and proj.groups == 1):
            return self.patch_embed(pixels)
        weight = proj.weight.reshape(proj.out_channels, self.patch_dim)
        return F.linear(pixels.to(weight.dtype), weight, proj.bias)

    def _add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """The learned positions for this grid (4 weighted table rows per patch, the same every frame);
        the product in float32 as transformers computes it, then cast to x's dtype."""
        t, h, w = self.grid_thw
        rows = self.pos_embed(self.position_index)  # [hw, 4, E]
        positions = (rows * self.position_weight[:, :, None]).sum(1).to(x.dtype)  # [hw, E]
        return (x.view(t, h * w, -1) + positions).reshape(t * h * w, -1)

    @staticmethod
    def _reorder(x: torch.Tensor, order: torch.Tensor, frames: int, per_frame: int) -> torch.Tensor:
        """The same constant permutation of the rows of every frame."""
        return x.view(frames, per_frame, -1)[:, order].reshape(frames * per_frame, -1)

    def _attention(self, attn: nn.Module, x: torch.Tensor, windows: _Windows | None = None) -> torch.Tensor:
        t, h, w = self.grid_thw
        hw = h * w
        qkv = attn.qkv(x).view(t, hw, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [t, heads, hw, hd] each: one attention batch entry per frame
        q, k = self._rotate(q), self._rotate(k)
        mask = None
        if windows is not None and windows.even:  # one batch entry per window: [t * windows, heads, size, hd]
            n, size = windows.count, windows.size
            q, k, v = (y.view(t, self.num_heads, n, size, self.head_dim).transpose(1, 2)
                       .reshape(t * n, self.num_heads, size, self.head_dim) for y in (q, k, v))
        elif windows is not None:  # windows of different sizes: a constant block mask per frame
            mask = self.window_mask
        if q.dtype == torch.float32:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        else:  # float32 softmax, like transformers' eager path (and the fused kernels)
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            # an explicit cast: torch.onnx (onnxscript 0.7) exports softmax(x, dtype=float32) as a
            # half-precision Softmax followed by a Cast, i.e. it drops the float32 softmax
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            out = torch.matmul(probs, v)
        if windows is not None and windows.even:  # back to [t, heads, hw, hd]
            out = out.view(t, windows.count, self.num_heads, windows.size, self.head_dim).transpose(1, 2)
            out = out.reshape(t, self.num_heads, hw, self.head_dim)
        out = out.transpose(1, 2).reshape(t * hw, self.embed_dim)
        return attn.proj(out)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Vision rotary embedding in float32 (``apply_rotary_pos_emb_vision``), back to x's dtype."""
        xf = x.float()
        x1, x2 = xf.chunk(2, dim=-1)
        rotated = torch.cat((-x2, x1), dim=-1)
        return (xf * self.rotary_cos + rotated * self.rotary_sin).to(x.dtype)

    def _apply(self, fn, recurse: bool = True):
        # .half()/.to(dtype) would round the rotary tables; keep them float32 on the new device
        super()._apply(fn, recurse)
        device = self.rotary_cos.device
        self.rotary_cos = self._cos_cpu.to(device)
        self.rotary_sin = self._sin_cpu.to(device)
        if self.pos_embed is not None:
            self.position_weight = self._pos_weight_cpu.to(device)
        return self

    def extra_repr(self) -> str:
        t, h, w = self.grid_thw
        text = f"grid_thw=({t}, {h}, {w}), merge={self.merge_size}, tokens={self.num_tokens}"
        if self.windows is not None:
            text += f", windows={self.windows.count} per frame, full attention in blocks {sorted(self.full_blocks)}"
        if self.pos_embed is not None:
            text += ", learned positions"
        if self.deepstack:
            text += f", DeepStack after blocks {list(self.deepstack)}"
        return text


class _Windows:
    """The attention windows of one frame of ``rows x cols`` merged tokens (transformers'
    ``get_vision_window_index`` for one frame): windows of ``size x size`` merged tokens, row by row,
    cut at the right and bottom edges; tokens inside a window row by row."""

    def __init__(self, rows: int, cols: int, merge: int, size: int) -> None:
        index = torch.arange(rows * cols).view(rows, cols)
        order, lengths = [], []
        for r in range(0, rows, size):
            for c in range(0, cols, size):
                block = index[r:r + size, c:c + size].reshape(-1)
                order.append(block)
                lengths.append(block.numel() * merge * merge)
        token_order = torch.cat(order)  # merged tokens in window order
        unit = merge * merge
        #: patches of a frame in window order (a merged token's patches stay together)
        self.patch_order = (token_order[:, None] * unit + torch.arange(unit)).reshape(-1)
        #: window order -> the processor's order, for the merged tokens
        self.token_restore = torch.argsort(token_order)
        self.tokens = rows * cols
        self.lengths = tuple(lengths)  # patches per window
        self.count = len(lengths)
        self.even = len(set(lengths)) == 1
        self.size = lengths[0]

    def mask(self) -> torch.Tensor:
        """[hw, hw] bool: True where a query (row) and a key (column) are in the same window."""
        window = torch.repeat_interleave(torch.arange(self.count), torch.tensor(self.lengths))
        return window[:, None] == window[None, :]


class FixedTowerEncoder(nn.Module):
    """``FixedTowerEncoder(model, adapter, frames)(pixel_values_videos) -> [T * tokens_per_frame, D]``.

    A fixed-size tower (LLaVA-style: every frame at one size through CLIP/SigLIP/InternViT, the
    feature layer, the projector and the pooling or pixel shuffle the adapter's ``video_features``
    names): nothing depends on the video beyond its frame count, so the model's own forward is
    captured as it is, for ``frames`` frames. The input is the family's case pixels
    (``adapter.pixel_shape``: ``[1, T, C, S, S]`` for LLaVA, ``[T, C, S, S]`` for InternVL). The
    model's modules are shared (no copies).
    """

    def __init__(self, model: nn.Module, adapter, frames: int) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter
        config = model.config
        self.frames = int(frames)
        self._input_shape = tuple(int(x) for x in adapter.pixel_shape(config, self.frames))
        self.num_tokens = self.frames * adapter.tokens_per_frame(config) + adapter.trailing_video_tokens

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        if tuple(pixel_values_videos.shape) != self.input_shape:
            raise ValueError(f"pixel_values_videos has shape {tuple(pixel_values_videos.shape)}; this encoder was "
                             f"built for {list(self.input_shape)}")
        dtype = next(self.model.parameters()).dtype
        return self.adapter.video_features(self.model, pixel_values_videos.to(dtype))


def vision_position_ids(h: int, w: int, merge: int) -> torch.Tensor:
    """(row, col) of each patch of one frame in the processor's order: [h*w, 2] int64."""
    rows = torch.arange(h).view(h // merge, merge, 1, 1).expand(h // merge, merge, w // merge, merge)
    cols = torch.arange(w).view(1, 1, w // merge, merge).expand(h // merge, merge, w // merge, merge)
    # block-major: (block row, block col, row in block, col in block)
    rows = rows.permute(0, 2, 1, 3).reshape(-1)
    cols = cols.permute(0, 2, 1, 3).reshape(-1)
    return torch.stack([rows, cols], dim=-1)


def _rotary_tables(
    h: int, w: int, merge: int, inv_freq: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [h*w, head_dim] float32 for one frame (Qwen2VLVisionRotaryEmbedding's layout)."""
    pos = vision_position_ids(h, w, merge).float()  # [hw, 2]
    freqs = pos[..., None] * inv_freq  # [hw, 2, head_dim/4]
    cos, sin = freqs.cos() * scaling, freqs.sin() * scaling

    def layout(f: torch.Tensor) -> torch.Tensor:  # [h freqs | w freqs] twice: rotates the whole head
        hw = torch.cat([f[:, 0], f[:, 1]], dim=-1)
        return torch.cat([hw, hw], dim=-1)

    return layout(cos), layout(sin)


def position_taps(h: int, w: int, merge: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resampling (corners aligned) of a ``side x side`` position table to one frame of ``h x w``
    patches in the processor's order: table rows [h*w, 4] int64 and their weights [h*w, 4] float32
    (the taps (r0, c0), (r0, c1), (r1, c0), (r1, c1); a tap past the table's edge is clamped and weighs 0)."""
    pos = vision_position_ids(h, w, merge)

    def axis(index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        src = index.float() * (side - 1) / max(size - 1, 1)  # float32, as F.interpolate(align_corners=True)
        low = torch.floor(src)
        taps = torch.stack([low, low + 1], dim=-1)
        weights = (1 - (src[:, None] - taps).abs()).clamp(min=0)
        return taps.long().clamp(0, side - 1), weights

    row_taps, row_weights = axis(pos[:, 0], h)
    col_taps, col_weights = axis(pos[:, 1], w)
    index = (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, 4)
    weight = (row_weights[:, :, None] * col_weights[:, None, :]).reshape(-1, 4)
    return index, weight

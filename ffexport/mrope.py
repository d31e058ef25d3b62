"""Qwen2-VL multimodal RoPE position ids, in numpy (no torch: the runtime uses this too).

The rule is the one Qwen2-VL was released and trained with (transformers <= 5.2): text tokens
count up by one; a video's tokens get (t, h, w) grid positions offset by the position where the
video starts; the text after a video starts at the LARGEST position the video used plus one, so
the temporal length counts. transformers 5.3+ instead advances by ``max(h, w) // merge`` after a
video, ignoring its temporal length, which moves every later position whenever the video has more
frames than rows or columns of merged patches. We keep the released rule.

Qwen2.5-VL counts a video's temporal axis in time: grid step ``t`` takes the temporal index
``int(t * temporal_step)`` with ``temporal_step = seconds_per_grid * tokens_per_second``
(truncated like the released code's ``.long()``); Qwen2-VL's step is 1. A build records its step
in the manifest (``model.positions``, docs/build-format.md) so the runtime computes the same ids.

Qwen3-VL writes a video as one frame block per temporal group with timestamp text between blocks;
its positions (:func:`block_position_ids`, the manifest's rule ``mrope_blocks``) treat every block
as a ``(1, h, w)`` grid, so the text after a block continues at ``max(h, w) // merge`` past the
block's start (the rule above and transformers 5.3+ agree when t = 1).
"""

from __future__ import annotations

import numpy as np


def video_spans(input_ids: np.ndarray, video_token_id: int) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of ``video_token_id`` in a 1-D id array."""
    is_video = np.asarray(input_ids).reshape(-1) == video_token_id
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_video.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def mrope_position_ids(
    input_ids: np.ndarray,
    video_grid_thw: np.ndarray,
    *,
    video_token_id: int,
    spatial_merge_size: int,
    temporal_step: float = 1,
) -> tuple[np.ndarray, int]:
    """Position ids [3, L] int64 for one sequence with videos, and the RoPE delta.

    ``input_ids`` [L] or [1, L]; ``video_grid_thw`` [num_videos, 3] (patch grid before merging),
    one row per maximal run of video tokens, in order. The delta (``max position + 1 - L``) places
    generated tokens: the token at index ``L + k`` gets position ``L + k + delta`` on all three axes.
    ``temporal_step``: temporal index per grid step (1: Qwen2-VL; see the module docstring).
    """
    if not temporal_step > 0:
        raise ValueError(f"temporal_step must be positive, got {temporal_step}")
    ids = np.asarray(input_ids).reshape(-1)
    grids = np.asarray(video_grid_thw, dtype=np.int64).reshape(-1, 3)
    spans = video_spans(ids, video_token_id)
    if len(spans) != len(grids):
        raise ValueError(f"{len(spans)} video token spans but {len(grids)} rows in video_grid_thw")
    parts: list[np.ndarray] = []
    cursor, next_pos = 0, 0
    for (start, end), (t, h, w) in zip(spans, grids):
        gh, gw = int(h) // spatial_merge_size, int(w) // spatial_merge_size
        if end - start != int(t) * gh * gw:
            raise ValueError(
                f"video span of {end - start} tokens does not match grid {int(t)}x{int(h)}x{int(w)} "
                f"({int(t) * gh * gw} tokens after {spatial_merge_size}x{spatial_merge_size} merging)"
            )
        text = np.arange(start - cursor, dtype=np.int64) + next_pos
        parts.append(np.broadcast_to(text, (3, text.size)))
        base = next_pos + text.size
        steps = np.arange(int(t)) if temporal_step == 1 else \
            (np.arange(int(t), dtype=np.float64) * temporal_step).astype(np.int64)
        tt, hh, ww = np.meshgrid(steps, np.arange(gh), np.arange(gw), indexing="ij")
        video = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]).astype(np.int64) + base
        parts.append(video)
        next_pos = int(video.max()) + 1
        cursor = end
    tail = np.arange(ids.size - cursor, dtype=np.int64) + next_pos
    parts.append(np.broadcast_to(tail, (3, tail.size)))
    positions = np.concatenate(parts, axis=1).astype(np.int64)
    delta = int(positions.max()) + 1 - ids.size if ids.size else 0
    return positions, delta


def block_position_ids(
    input_ids: np.ndarray, video_grid_thw: np.ndarray, *, video_token_id: int, spatial_merge_size: int,
) -> tuple[np.ndarray, int]:
    """Qwen3-VL's position ids [3, L] and delta: each of a video's ``t`` temporal groups is its own run of
    video tokens (a frame block) with the grid ``(1, h, w)``, as transformers' ``get_rope_index`` splits
    ``video_grid_thw``."""
    grid = np.asarray(video_grid_thw, dtype=np.int64).reshape(-1, 3)
    blocks = np.repeat(grid, grid[:, 0], axis=0)
    blocks[:, 0] = 1
    return mrope_position_ids(input_ids, blocks, video_token_id=video_token_id, spatial_merge_size=spatial_merge_size)

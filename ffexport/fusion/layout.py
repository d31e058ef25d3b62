"""Where a video's tokens sit in the LLM input: a list of frame blocks, maybe with text between them.

This is the data a model adapter declares about its prompt layout; the FrameFusion math
(:mod:`ffexport.fusion.reducers`, the decoder, the static schedule and the oracle) reads it and
never branches on the model family.

Vocabulary::

    region       the tokens from the first block's first token to the last block's last token,
                 [video_start, video_start + region_length) in the sequence. The graphs take
                 ``video_start`` as an input; everything else here is fixed by the bucket.
    frame block  ``FrameBlock(start, length, patches_per_frame)``: ``length`` visual tokens at
                 offsets ``[start, start + length)`` of the region, ``length / patches_per_frame``
                 whole frames of ``patches_per_frame`` tokens each, in raster order.
    text         region rows between blocks (timestamps, ``FrameN:``, ``<img>``/``</img>``,
                 newlines). Never merged, never pruned, never counted as visual; they keep their
                 positions (and their rotary positions) while visual tokens around them go.

Examples::

    Qwen2-VL / Qwen2.5-VL   one block: FrameLayout.contiguous(t * P, P)
    LLaVA-NeXT-Video        one block: FrameLayout.contiguous(frames * 144, 144)
    Qwen3-VL                one block per 2-frame group, separated by
                            ``<vision_end> <t seconds> <vision_start>`` text:
                            FrameLayout.from_token_ids(ids[s:], video_token_id, P)
    InternVL                one block per frame separated by ``</img>\\nFrame2: <img>`` text:
                            FrameLayout([FrameBlock(0, 256, 256), FrameBlock(256 + k, 256, 256), ...])

FrameFusion on a layout (what the dynamic reference, the static graph and the oracle all do):
the patch id of a visual token is its offset inside its block modulo ``patches_per_frame``;
merging compares a token with the same patch of the previous frame, which for a block's first
frame is the last frame of the previous block; pruning ranks the visual tokens only. Every block
must have the same ``patches_per_frame`` (a patch must have a partner in the previous block).

A layout with one block at offset 0 is *contiguous*: it is the classic span ``[s, s + N)`` and
takes exactly the code path (and graph) it took before frame blocks existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ffexport.errors import ScheduleError


@dataclass(frozen=True)
class FrameBlock:
    """``length`` visual tokens at region offsets ``[start, start + length)``, whole frames of
    ``patches_per_frame`` tokens each."""

    start: int
    length: int
    patches_per_frame: int

    @property
    def frames(self) -> int:
        return self.length // self.patches_per_frame

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class FrameLayout:
    """The video as frame blocks (in sequence order, not overlapping, the first at offset 0)."""

    blocks: tuple[FrameBlock, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise ScheduleError("a frame layout needs at least one frame block")
        p = self.blocks[0].patches_per_frame
        previous_end = 0
        for i, b in enumerate(self.blocks):
            if b.patches_per_frame != p:
                raise ScheduleError(
                    f"frame block {i} has {b.patches_per_frame} patches per frame, block 0 has {p}: "
                    "every block must have the same (a patch merges with the same patch of the previous block)"
                )
            if p < 1 or b.length < p or b.length % p:
                raise ScheduleError(
                    f"frame block {i}: {b.length} tokens is not a positive whole number of {p}-token frames"
                )
            if (i == 0 and b.start != 0) or b.start < previous_end:
                raise ScheduleError(
                    f"frame block {i} starts at region offset {b.start}: the first block starts at 0 and "
                    "blocks must follow each other without overlapping"
                )
            previous_end = b.end

    # ------------------------------------------------------------ constructors
    @classmethod
    def contiguous(cls, visual_tokens: int, patches_per_frame: int) -> "FrameLayout":
        """One block of ``visual_tokens`` tokens (the classic contiguous video span)."""
        return cls((FrameBlock(0, visual_tokens, patches_per_frame),))

    @classmethod
    def from_token_ids(cls, ids: Sequence[int] | np.ndarray, video_token_id: int,
                       patches_per_frame: int) -> tuple[int, "FrameLayout"]:
        """``(video_start, layout)`` from a prompt's token ids: each maximal run of ``video_token_id``
        is one frame block. Raises :class:`ScheduleError` when there is no video token."""
        ids = np.asarray(ids).reshape(-1)
        where = np.flatnonzero(ids == video_token_id)
        if where.size == 0:
            raise ScheduleError(f"the prompt has no video token (id {video_token_id})")
        start = int(where[0])
        breaks = np.flatnonzero(np.diff(where) != 1)
        firsts = np.concatenate([where[:1], where[breaks + 1]])
        lasts = np.concatenate([where[breaks], where[-1:]])
        blocks = tuple(
            FrameBlock(int(a) - start, int(b - a) + 1, patches_per_frame) for a, b in zip(firsts, lasts, strict=True)
        )
        return start, cls(blocks)

    # ------------------------------------------------------------------ facts
    @property
    def patches_per_frame(self) -> int:
        return self.blocks[0].patches_per_frame

    @property
    def visual_tokens(self) -> int:
        return sum(b.length for b in self.blocks)

    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.blocks)

    @property
    def region_length(self) -> int:
        """Tokens from the first block's start to the last block's end (visual and text)."""
        return self.blocks[-1].end

    @property
    def text_tokens(self) -> int:
        """Text tokens between the blocks."""
        return self.region_length - self.visual_tokens

    @property
    def is_contiguous(self) -> bool:
        """One block (no text inside the region): the classic span."""
        return len(self.blocks) == 1

    def visual_offsets(self) -> np.ndarray:
        """Region offsets of the visual tokens, in order, int64 [visual_tokens]."""
        return np.concatenate([np.arange(b.start, b.end, dtype=np.int64) for b in self.blocks])

    def text_mask(self) -> np.ndarray:
        """bool [region_length]: True for the text rows between blocks."""
        mask = np.ones(self.region_length, dtype=bool)
        mask[self.visual_offsets()] = False
        return mask

    def region_patch_ids(self) -> np.ndarray:
        """int64 [region_length]: a visual row's patch id (offset in its block mod P); 0 for text rows."""
        ids = np.zeros(self.region_length, dtype=np.int64)
        for b in self.blocks:
            ids[b.start:b.end] = np.arange(b.length, dtype=np.int64) % b.patches_per_frame
        return ids

    # ------------------------------------------------------------------ I/O
    def to_json(self) -> list[list[int]]:
        """``[[start, length], ...]`` (patches per frame is the schedule's)."""
        return [[b.start, b.length] for b in self.blocks]

    @classmethod
    def from_json(cls, data: Any, patches_per_frame: int, *, source: str = "schedule") -> "FrameLayout":
        try:
            return cls(tuple(FrameBlock(int(s), int(n), patches_per_frame) for s, n in data))
        except (TypeError, ValueError) as e:
            raise ScheduleError(f"{source}: 'blocks' must be a list of [start, length] pairs ({e})") from e

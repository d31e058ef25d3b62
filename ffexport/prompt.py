"""Token ids of a Qwen2-VL-Instruct chat prompt around one video.

The layout is what Qwen2-VL-Instruct's chat template renders for
``[system, user: (video, text)]`` with ``add_generation_prompt=True``, after the processor has
expanded the single ``<|video_pad|>`` into one pad token per merged visual token::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|video_pad|> * N<|vision_end|>{prompt}<|im_end|>\\n
    <|im_start|>assistant\\n

Only the tokenizer is needed (numpy out, no torch), so this works with the tiny tokenizer and a
real Qwen2-VL tokenizer alike.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
VIDEO_PAD_TOKEN = "<|video_pad|>"

_REQUIRED_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", VIDEO_PAD_TOKEN)


def build_video_prompt_ids(
    tokenizer: Any,
    *,
    num_video_tokens: int,
    prompt: str,
    system: str | None = DEFAULT_SYSTEM_PROMPT,
) -> np.ndarray:
    """Return int64 ``[1, L]`` ids of a one-video Qwen2-VL chat prompt ending at the assistant turn.

    ``num_video_tokens`` is the number of LLM-side video tokens, ``prod(video_grid_thw) //
    merge_size**2``. ``system=None`` leaves out the system turn entirely (note: Qwen2-VL's own
    template would insert the default system turn instead). Text is tokenized without extra
    special tokens (no BOS/EOS). Raises ``ValueError`` if the tokenizer lacks Qwen2-VL's special
    tokens, or if ``prompt``/``system`` themselves contain video pad tokens (which would make the
    video span ambiguous).
    """
    if num_video_tokens < 1:
        raise ValueError(f"num_video_tokens must be a positive integer, got {num_video_tokens}")
    video_token_id = _special_token_id(tokenizer, VIDEO_PAD_TOKEN)
    for token in _REQUIRED_TOKENS:
        _special_token_id(tokenizer, token)

    system_turn = "" if system is None else f"<|im_start|>system\n{system}<|im_end|>\n"
    before = f"{system_turn}<|im_start|>user\n<|vision_start|>"
    after = f"<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n"
    # Tokenizing the text on both sides of the pad run separately is equivalent to tokenizing the
    # whole expanded string: added special tokens always split the text, so no token can span them.
    before_ids = _encode(tokenizer, before)
    after_ids = _encode(tokenizer, after)
    ids = np.array(before_ids + [video_token_id] * num_video_tokens + after_ids, dtype=np.int64)

    found = int(np.count_nonzero(ids == video_token_id))
    if found != num_video_tokens:
        raise ValueError(
            f"prompt or system text contains {found - num_video_tokens} extra {VIDEO_PAD_TOKEN} token(s); "
            "remove them so the video span is unambiguous"
        )
    logger.debug("video prompt: %d ids (%d video tokens)", ids.size, num_video_tokens)
    return ids[None, :]


def group_timestamps(indices: np.ndarray, fps: float, temporal_patch_size: int) -> list[float]:
    """Seconds of each temporal group as ``Qwen3VLProcessor`` computes them: the indices padded with the
    last to a multiple of the group size, each group the mean of its first and last frame's time."""
    times = [int(i) / fps for i in indices]
    times += [times[-1]] * (-len(times) % temporal_patch_size)
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]


def timestamped_video_prompt_ids(tokenizer: Any, *, tokens_per_block: int, timestamps: list[float],
                                 prompt: str) -> np.ndarray:
    """int64 [1, L]: a Qwen3-VL user turn with the video as its processor writes it (one
    ``<t seconds><|vision_start|>pads<|vision_end|>`` per temporal group), then the assistant turn;
    tokenized in one piece without extra special tokens (the processor's way)."""
    if tokens_per_block < 1 or not timestamps:
        raise ValueError(f"a video needs blocks of at least one token, got {len(timestamps)} of {tokens_per_block}")
    video = "".join(f"<{s:.1f} seconds><|vision_start|>" + VIDEO_PAD_TOKEN * tokens_per_block + "<|vision_end|>"
                    for s in timestamps)
    text = f"<|im_start|>user\n{video}{prompt}<|im_end|>\n<|im_start|>assistant\n"
    ids = np.asarray([_encode(tokenizer, text)], dtype=np.int64)
    video_token_id = _special_token_id(tokenizer, VIDEO_PAD_TOKEN)
    if int(np.count_nonzero(ids == video_token_id)) != tokens_per_block * len(timestamps):
        raise ValueError(f"the prompt text contains {VIDEO_PAD_TOKEN} tokens of its own; remove them")
    return ids


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no BOS/EOS added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def _special_token_id(tokenizer: Any, token: str) -> int:
    """The id of ``token`` as one single token, or ``ValueError`` if the tokenizer does not know it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if token_id is None or (unk_id is not None and token_id == unk_id):
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no {token!r} token; "
            "use a Qwen2-VL tokenizer or ffexport.models.tiny_tokenizer.build_tiny_tokenizer()"
        )
    return int(token_id)

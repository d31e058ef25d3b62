"""A tiny, offline, deterministic byte-level tokenizer with Qwen2-VL's special tokens.

Tests and tiny random-weight models need a tokenizer without downloading Qwen2-VL's 151k-token
vocabulary. This one is a byte-level BPE with the 256 byte symbols and no merges (token id ==
byte value, so any UTF-8 text round-trips), followed by Qwen2-VL's special tokens as added
special tokens, an ``eos``/``pad`` setup like Qwen2-VL-Instruct's, and a Qwen2-VL-style chat
template. It is built in memory with the ``tokenizers`` library; nothing is read from disk or the
network, and two builds serialize identically.
"""

from __future__ import annotations

import logging

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

NUM_BYTE_TOKENS = 256

# Qwen2-VL's special tokens, in Qwen2-VL's own relative order. Their ids here are
# NUM_BYTE_TOKENS + position (256 .. 263).
QWEN2_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Embedding rows a tiny model should allocate: the tokenizer's length rounded up to 16.
TINY_VOCAB_SIZE = -(-(NUM_BYTE_TOKENS + len(QWEN2_VL_SPECIAL_TOKENS)) // 16) * 16

TINY_MODEL_MAX_LENGTH = 32768

# A Qwen2-VL-Instruct style template: a default system turn when the conversation does not start
# with one, ``<|im_start|>role\n...<|im_end|>\n`` turns, and each image / video part rendered as
# one pad token between vision start/end markers (the processor later expands the pad token to
# the number of visual tokens). ``add_vision_id`` prefixes "Picture N: " / "Video N: ".
# The pieces are concatenated without layout whitespace, so no ``{%-`` trimming is used (trimming
# would also eat the newlines that belong to the format).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set counts = namespace(image=0, video=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set counts.image = counts.image + 1 %}"
    "{% if add_vision_id %}Picture {{ counts.image }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set counts.video = counts.video + 1 %}"
    "{% if add_vision_id %}Video {{ counts.video }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


def byte_to_unicode() -> dict[int, str]:
    """The byte -> printable character table that byte-level pre-tokenizers use.

    Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to
    themselves; the other 68 bytes map, in increasing order, to code points 256, 257, ... so every
    byte has a visible, whitespace-free symbol. This must match ``tokenizers``' ByteLevel.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(NUM_BYTE_TOKENS):
        if b not in table:
            table[b] = chr(NUM_BYTE_TOKENS + extra)
            extra += 1
    return table


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tiny byte-level tokenizer (vocab of 256 bytes + 8 Qwen2-VL special tokens).

    ``eos_token`` is ``<|im_end|>`` (what Qwen2-VL-Instruct stops on) and ``pad_token`` is
    ``<|endoftext|>``; ``tokenizer.image_token`` / ``tokenizer.video_token`` name the pad tokens
    so transformers' Qwen2-VL processor can find them. No BOS is added (as in Qwen2).
    """
    table = byte_to_unicode()
    vocab = {table[b]: b for b in range(NUM_BYTE_TOKENS)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # No normalizer: Qwen2's NFC normalization would break byte-exact round trips.
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN2_VL_SPECIAL_TOKENS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        model_max_length=TINY_MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    _check_layout(tokenizer)
    logger.debug("built tiny tokenizer: %d tokens (vocab size %d)", len(tokenizer), TINY_VOCAB_SIZE)
    return tokenizer


def tiny_special_token_ids() -> dict[str, int]:
    """The special token ids a Qwen2-VL config needs, for the tiny tokenizer.

    Keys: ``video_token_id``, ``image_token_id``, ``vision_start_token_id``,
    ``vision_end_token_id``, ``eos_token_id``, ``pad_token_id``.
    """
    ids = {token: NUM_BYTE_TOKENS + index for index, token in enumerate(QWEN2_VL_SPECIAL_TOKENS)}
    return {
        "video_token_id": ids["<|video_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def _check_layout(tokenizer: PreTrainedTokenizerFast) -> None:
    """Fail loudly if the tokenizers library assigned ids other than the documented ones."""
    expected = {token: NUM_BYTE_TOKENS + index for index, token in enumerate(QWEN2_VL_SPECIAL_TOKENS)}
    actual = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2_VL_SPECIAL_TOKENS}
    if actual != expected or len(tokenizer) > TINY_VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer layout changed: ids {actual}, length {len(tokenizer)}")

"""Tests for the tiny offline byte-level tokenizer with Qwen2-VL special tokens."""

from __future__ import annotations

import pytest
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from ffexport.models.tiny_tokenizer import (
    QWEN2_VL_SPECIAL_TOKENS,
    TINY_VOCAB_SIZE,
    build_tiny_tokenizer,
    byte_to_unicode,
    tiny_special_token_ids,
)

TEXTS = [
    "Describe the video.",
    "  leading spaces, trailing tab\t\nand\r\nline breaks  ",
    "Ünïcödé: 中文, 日本語, 한국어, emoji 🎬👍🏽, combining e\u0301 vs é, zero\u200bwidth",
    "code: def f(x):\n    return x ** 2  # comment",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_plain_text_round_trips_and_ids_are_bytes(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == list(text.encode("utf-8"))  # byte-level with no merges: id == byte value
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids(tokenizer) -> None:
    for offset, token in enumerate(QWEN2_VL_SPECIAL_TOKENS):
        assert tokenizer.encode(token, add_special_tokens=False) == [256 + offset]
    text = "<|im_start|>user\n<|vision_start|><|video_pad|><|video_pad|><|vision_end|>hi<|im_end|>\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(tiny_special_token_ids()["video_token_id"]) == 2
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi\n"


def test_special_token_ids_and_attributes(tokenizer) -> None:
    ids = tiny_special_token_ids()
    assert ids == {
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None  # Qwen2 adds no BOS
    assert tokenizer.video_token == "<|video_pad|>" and tokenizer.image_token == "<|image_pad|>"
    assert len(set(ids.values())) == len(ids)


def test_vocab_size_covers_every_id(tokenizer) -> None:
    assert len(tokenizer) == 256 + len(QWEN2_VL_SPECIAL_TOKENS)
    assert TINY_VOCAB_SIZE >= len(tokenizer) and TINY_VOCAB_SIZE % 16 == 0
    assert max(tokenizer.get_vocab().values()) < TINY_VOCAB_SIZE


def test_byte_table_matches_tokenizers_byte_level() -> None:
    table = byte_to_unicode()
    assert sorted(table) == list(range(256))
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())


def test_build_is_deterministic() -> None:
    first, second = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert first.chat_template == second.chat_template


def test_chat_template_renders_qwen2_vl_layout(tokenizer) -> None:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What moves?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    rendered = tokenizer.apply_chat_template(with_system, tokenize=False, add_vision_id=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nVideo 1: <|vision_start|><|video_pad|><|vision_end|>What moves?<|im_end|>\n"
    )
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    assert "<|vision_start|><|image_pad|><|vision_end|>x<|im_end|>" in tokenizer.apply_chat_template(
        image, tokenize=False
    )


def test_save_and_auto_tokenizer_round_trip(tokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = TEXTS[2] + "<|vision_start|><|video_pad|><|vision_end|>" + TEXTS[1]
    assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text
    assert len(loaded) == len(tokenizer)
    assert loaded.eos_token_id == tokenizer.eos_token_id and loaded.pad_token_id == tokenizer.pad_token_id
    assert loaded.video_token_id == tiny_special_token_ids()["video_token_id"]
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.get_vocab() == tokenizer.get_vocab()

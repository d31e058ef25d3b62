"""Tests for ffexport.prompt.build_video_prompt_ids with the tiny tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.models.tiny_tokenizer import build_tiny_tokenizer, tiny_special_token_ids
from ffexport.prompt import DEFAULT_SYSTEM_PROMPT, build_video_prompt_ids

VIDEO_ID = tiny_special_token_ids()["video_token_id"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _expected_text(num_video_tokens: int, prompt: str, system: str | None) -> str:
    system_turn = "" if system is None else f"<|im_start|>system\n{system}<|im_end|>\n"
    return (
        f"{system_turn}<|im_start|>user\n<|vision_start|>"
        + "<|video_pad|>" * num_video_tokens
        + f"<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n"
    )


def _video_span(ids: np.ndarray) -> tuple[int, int]:
    positions = np.nonzero(ids == VIDEO_ID)[0]
    return int(positions[0]), int(positions[-1]) + 1


@pytest.mark.parametrize("num_video_tokens", [1, 7, 144])
@pytest.mark.parametrize("system", [DEFAULT_SYSTEM_PROMPT, "Answer in one word.", None])
def test_layout_span_and_round_trip(tokenizer, num_video_tokens: int, system: str | None) -> None:
    prompt = "What is moving? Réponds en français 🙂"
    ids = build_video_prompt_ids(tokenizer, num_video_tokens=num_video_tokens, prompt=prompt, system=system)
    assert ids.dtype == np.int64 and ids.ndim == 2 and ids.shape[0] == 1
    row = ids[0]
    start, end = _video_span(row)
    assert end - start == num_video_tokens
    assert np.all(row[start:end] == VIDEO_ID)  # one contiguous span
    special = tiny_special_token_ids()
    assert row[start - 1] == special["vision_start_token_id"]
    assert row[end] == special["vision_end_token_id"]
    text = _expected_text(num_video_tokens, prompt, system)
    assert tokenizer.decode(row.tolist()) == text
    # same ids as tokenizing the fully expanded prompt in one go
    assert row.tolist() == tokenizer.encode(text, add_special_tokens=False)


def test_matches_the_chat_template_after_pad_expansion(tokenizer) -> None:
    """The processor's path: render the chat template, then expand the single video pad."""
    prompt, num_video_tokens = "Summarize the clip.", 12
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expanded = rendered.replace("<|video_pad|>", "<|video_pad|>" * num_video_tokens)
    ids = build_video_prompt_ids(tokenizer, num_video_tokens=num_video_tokens, prompt=prompt)
    assert ids[0].tolist() == tokenizer.encode(expanded, add_special_tokens=False)


def test_default_system_prompt_is_qwen2_vl_default(tokenizer) -> None:
    ids = build_video_prompt_ids(tokenizer, num_video_tokens=2, prompt="hi")
    assert tokenizer.decode(ids[0].tolist()).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    )


def test_rejects_bad_counts_and_pad_tokens_in_text(tokenizer) -> None:
    with pytest.raises(ValueError, match="num_video_tokens"):
        build_video_prompt_ids(tokenizer, num_video_tokens=0, prompt="hi")
    with pytest.raises(ValueError, match="extra <\\|video_pad\\|>"):
        build_video_prompt_ids(tokenizer, num_video_tokens=3, prompt="look <|video_pad|> here")


def test_rejects_a_tokenizer_without_qwen2_vl_tokens() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "hi": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(ValueError, match="video_pad"):
        build_video_prompt_ids(plain, num_video_tokens=1, prompt="hi")


def test_works_with_a_qwen2_tokenizer_class() -> None:
    """Qwen2's own tokenizer class (its split regex, NFC normalizer, BPE merges, unk token) on a
    small vocabulary: the real Qwen2-VL vocabulary cannot be downloaded here, but this exercises
    the same code path with merges that could straddle the span boundaries if tokenized wrongly."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    from ffexport.models.tiny_tokenizer import QWEN2_VL_SPECIAL_TOKENS, byte_to_unicode

    table = byte_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    merges = [("Ġ", "w"), ("h", "a"), ("Ġw", "ha"), ("Ċ", "Ċ"), ("a", "s"), ("s", "y"), (">", "Ċ")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    qwen2 = Qwen2Tokenizer(vocab=vocab, merges=merges)
    specials = [AddedToken(t, special=True, normalized=False) for t in QWEN2_VL_SPECIAL_TOKENS]
    qwen2.add_tokens(specials, special_tokens=True)
    video_id = qwen2.convert_tokens_to_ids("<|video_pad|>")

    prompt = "\nwhat happens? e\u0301\n\n"
    ids = build_video_prompt_ids(qwen2, num_video_tokens=6, prompt=prompt, system="sys")[0]
    assert np.count_nonzero(ids == video_id) == 6
    positions = np.nonzero(ids == video_id)[0]
    assert positions[-1] - positions[0] == 5
    expected = _expected_text(6, prompt, "sys")
    assert ids.tolist() == qwen2.encode(expected, add_special_tokens=False)
    assert qwen2.decode(ids.tolist()) == expected.replace("e\u0301", "\u00e9")  # Qwen2 normalizes to NFC


def test_video_prompt_and_tiny_tokenizer_modules_do_not_import_torch() -> None:
    """These modules must stay usable on machines without torch (the runtime's preprocessing path)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = "\n".join(
        [
            "import sys",
            "from ffexport.video import synthetic_video, preprocess_video",
            "from ffexport.prompt import build_video_prompt_ids",
            "from ffexport.models.tiny_tokenizer import build_tiny_tokenizer",
            "from ffexport.case import case_from_video, load_case",
            "from ffexport.mrope import mrope_position_ids",
            "pixels, grid = preprocess_video(synthetic_video('pan', frames=2, height=56, width=56))",
            "ids = build_video_prompt_ids(build_tiny_tokenizer(), num_video_tokens=4, prompt='hi')",
            "assert 'torch' not in sys.modules, 'torch was imported'",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]

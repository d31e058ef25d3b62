"""LLaVA-OneVision's prompt is what the released llava-hf checkpoints' chat template renders.

Source of the template: transformers' conversion script for these checkpoints,
``src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py`` (huggingface/transformers,
its module constant ``chat_template``; read at commit 01080c629600d4ff3121446bb4f4a2e240c2cf41). The script
passes it to ``LlavaOnevisionProcessor(chat_template=...)`` and ``processor.save_pretrained`` writes it to the
checkpoint's ``chat_template.json``: the stored page of llava-hf/llava-onevision-qwen2-7b-si-hf's file
(revision 974bbb6, "Upload processor", 824 bytes) holds this text, and llava-onevision-qwen2-7b-ov-hf's file
list (revision 871fbb1, "Upload processor") gives its file the same 824 bytes; its text was not read
(no network here). Later revisions of some llava-hf OneVision checkpoints list an 826-byte file whose text
was not read either. transformers' own processor tests use another template (a space after the role, no
newline after ``<|im_end|>``), not a checkpoint's. docs/families.md says what was and was not checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ffexport.models.llava_style import tokenize_like_the_processor
from ffexport.video import synthetic_video

#: the conversion script's ``chat_template``, character for character ("\n" are newlines in its source too)
CONVERSION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: the size of the released chat_template.json (7b-si-hf at 974bbb6, 7b-ov-hf at 871fbb1)
CHECKPOINT_FILE_BYTES = 824
PROMPT = "What happens in this video?"


@pytest.fixture(scope="module")
def onevision():
    from ffexport.models import LoadModel

    return LoadModel("llava-onevision-tiny")()


def _render(tokenizer, content: list[dict]) -> str:
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, chat_template=CONVERSION_TEMPLATE, add_generation_prompt=True,
                                         tokenize=False)


def test_the_template_is_the_released_files_text_and_size():
    """``ProcessorMixin.save_pretrained`` writes ``{"chat_template": ...}`` with indent 2, sorted keys and a
    final newline: this template written so is the 824 bytes of the released files (the text read for
    llava-onevision-qwen2-7b-si-hf at 974bbb6, the size listed for llava-onevision-qwen2-7b-ov-hf at 871fbb1)."""
    saved = json.dumps({"chat_template": CONVERSION_TEMPLATE}, indent=2, sort_keys=True) + "\n"
    assert len(saved.encode()) == CHECKPOINT_FILE_BYTES


@pytest.mark.parametrize("order", ["video first", "text first"])
def test_onevision_prompt_is_the_checkpoint_template(onevision, order):
    """The adapter's prompt text (``<video>`` where the processor expands it) is the template's rendering of
    one user turn with a video and a question, whatever their order in the message (the template renders
    videos before text), plus the generation prompt."""
    content = [{"type": "video"}, {"type": "text", "text": PROMPT}]
    rendered = _render(onevision.tokenizer, content if order == "video first" else content[::-1])
    assert rendered == onevision.adapter.prompt.text("<video>", PROMPT)
    assert rendered == f"<|im_start|>user\n<video>\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"


def test_onevision_case_ids_are_the_rendered_template_expanded(onevision):
    """The case's input ids equal the rendered template with ``<video>`` expanded as
    ``LlavaOnevisionProcessor.replace_video_token`` does (frames x 196-style tokens + 1 newline token),
    tokenized in one piece."""
    config = onevision.config
    case = onevision.case_from_video(synthetic_video("pan", frames=3, height=96, width=96, seed=2), PROMPT)
    token = onevision.tokenizer.convert_ids_to_tokens(config.video_token_index)
    count = onevision.adapter.video_tokens(config, 3)
    assert count == 3 * onevision.adapter.tokens_per_frame(config) + 1
    rendered = _render(onevision.tokenizer, [{"type": "video"}, {"type": "text", "text": PROMPT}])
    want = tokenize_like_the_processor(onevision.tokenizer, rendered.replace("<video>", token * count))
    np.testing.assert_array_equal(case.input_ids, want)

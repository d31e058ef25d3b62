"""How a family writes a video into its prompt: frame blocks of video tokens with text between them.

A processor that puts text between a video's frames (InternVL: ``Frame1: <img>`` + the frame's
tokens + ``</img>``, frames joined by ``\\n``) is described by a :class:`VideoText`; the adapter
builds its prompts with it and the build records it in the manifest (``model.video_text``,
docs/build-format.md), so the torch-free runtime writes the same text. Video tokens are written as
the token's string and the whole prompt is tokenized in one piece, as the processors do after they
expand the video placeholder. numpy-free, torch-free.

Families whose video is one contiguous run of video tokens (Qwen2-VL, LLaVA-NeXT-Video) have no
``VideoText``: their video is the token repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VideoText:
    """Block ``i`` (1-based) is ``prefix.format(index=i)`` + its video tokens + ``suffix.format(index=i)``;
    blocks are joined by ``separator``."""

    prefix: str = ""
    suffix: str = ""
    separator: str = ""

    def text(self, token: str, block_tokens: Sequence[int]) -> str:
        """The video's text: one block of ``n`` copies of ``token`` per entry of ``block_tokens``."""
        return self.separator.join(
            self.prefix.format(index=i + 1) + token * int(n) + self.suffix.format(index=i + 1)
            for i, n in enumerate(block_tokens)
        )

    def to_json(self) -> dict[str, str]:
        return {"prefix": self.prefix, "suffix": self.suffix, "separator": self.separator}

    @classmethod
    def from_json(cls, data: Any) -> "VideoText":
        """From the manifest's ``model.video_text``; :class:`ValueError` when a field is missing or not text."""
        if not isinstance(data, dict):
            raise ValueError("is not an object")
        fields = {}
        for key in ("prefix", "suffix", "separator"):
            value = data.get(key)
            if not isinstance(value, str):
                raise ValueError(f"has no text field {key!r}")
            fields[key] = value
        text = cls(**fields)
        try:
            text.text("x", [1, 1])
        except (KeyError, IndexError, ValueError) as e:  # a placeholder other than {index}
            raise ValueError(f"has a prefix or suffix that is not a format string of {{index}} ({e!r})") from e
        return text

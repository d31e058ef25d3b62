"""The build's tokenizer (``DIR/tokenizer/tokenizer.json``) through the ``tokenizers`` library only.

:class:`BuildTokenizer` offers the three methods the rest of ffexport calls on a tokenizer
(``encode``, ``convert_tokens_to_ids``, ``convert_ids_to_tokens``, ``decode``), so :func:`ffexport.prompt.build_video_prompt_ids`
works with it exactly as with a transformers tokenizer, without importing transformers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from ffexport.errors import InputError
from ffexport.runtime.manifest import REBUILD


class BuildTokenizer:
    """A ``tokenizers.Tokenizer`` loaded from ``tokenizer.json``, with the transformers-style methods ffexport uses."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as e:  # the tokenizers library raises plain Exception for unreadable files
            raise InputError(f"{self.path} is not a readable tokenizer ({' '.join(str(e).split())}): {REBUILD}") from e

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def convert_ids_to_tokens(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(int(token_id))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

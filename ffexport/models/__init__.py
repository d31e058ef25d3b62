"""Model adapters (one file per family) and the presets users name with ``--model``.

Attributes load lazily (PEP 562): ``import ffexport.models.tiny_tokenizer`` stays torch-free,
while ``from ffexport.models import LoadModel`` imports torch and registers every family.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAMILIES", "PRESETS", "LoadModel", "LoadedModel", "Preset", "require_stage"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'ffexport.models' has no attribute {name!r}")
    from ffexport.models import loading, qwen2_vl, registry  # noqa: F401  (qwen2_vl registers itself)
    from ffexport.models import qwen2_5_vl, qwen3_vl  # noqa: F401  (register themselves)
    from ffexport.models import internvl, llava_next_video, llava_onevision  # noqa: F401  (register themselves)

    return {**vars(registry), **vars(loading)}[name]

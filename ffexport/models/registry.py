"""Registries of model families (adapters) and presets (named models), both refusing duplicates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A plain name -> entry dict that refuses to register a name twice."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self):
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries


@dataclass(frozen=True)
class Preset:
    """A named model: its family, the Hugging Face repo its weights come from (None: built here),
    and a factory for its config (the architecture, used with --random-weights)."""

    name: str
    family: str
    description: str
    config: Callable[[], Any]
    hub_id: str | None = None
    tiny: bool = False
    #: (min_pixels, max_pixels) for video frames; None: the model's processor defaults
    video_pixels: tuple[int, int] | None = None


FAMILIES: Registry[Any] = Registry("model family")
PRESETS: Registry[Preset] = Registry("preset")


#: every pipeline stage a command may need; an adapter's ``stages`` lists those it supports
STAGES = ("case", "reference", "build", "run", "calibrate", "explain", "bench")


def require_stage(model: str, stage: str | None) -> None:
    """Refuse, with one line (:class:`~ffexport.errors.ModelError`, exit 3), a ``stage`` that ``model``'s
    family does not support yet (its adapter's ``stages``; an adapter without one supports all).
    ``model`` is a preset name or a model directory; anything else is left to the loader to refuse."""
    import json
    from pathlib import Path

    from ffexport.errors import ModelError

    if not stage:
        return
    preset = PRESETS.get(model)
    family = preset.family if preset is not None else None
    config = Path(model) / "config.json"
    if family is None and config.is_file():
        try:
            family = json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError):
            return
    adapter = FAMILIES.get(family) if family is not None else None
    stages = getattr(adapter, "stages", None)
    if adapter is None or stages is None or stage in stages:
        return
    missing = getattr(adapter, "missing", {}).get(stage)
    raise ModelError(
        f"{model} ({family}): ffexport {stage} is not done for this family yet "
        f"(done: {', '.join(s for s in STAGES if s in stages) or 'none'})"
        + (f"; missing: {missing}" if missing else "") + "; see docs/families.md"
    )

"""Model adapters (one file per family) and the presets users name with ``--model``.

Importing this package registers every family and preset.
"""

from ffexport.models import qwen2_vl  # noqa: F401  (registers the family and its presets)
from ffexport.models.loading import LoadedModel, LoadModel
from ffexport.models.registry import FAMILIES, PRESETS, Preset

__all__ = ["FAMILIES", "PRESETS", "LoadModel", "LoadedModel", "Preset"]

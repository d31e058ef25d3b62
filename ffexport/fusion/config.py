"""FrameFusion's settings (the authors' defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ffexport.errors import InputError


@dataclass(frozen=True, kw_only=True)
class FusionConfig:
    """``cost``: average share of visual-token compute per layer the budget allows;
    ``similarity``: cosine similarity at or above which a token merges into its predecessor;
    ``ratio_lower_bound``: a merge step removing a smaller share ends merging;
    ``budget_layers``: depth the cost formula assumes (None: the model's depth; 28: the authors')."""

    cost: float = 0.3
    similarity: float = 0.6
    ratio_lower_bound: float = 0.1
    budget_layers: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.cost <= 1.0:
            raise InputError(f"--cost must be in (0, 1], got {self.cost}")
        if not -1.0 <= self.similarity <= 1.0:
            raise InputError(f"--similarity must be a cosine similarity in [-1, 1], got {self.similarity}")
        if not 0.0 <= self.ratio_lower_bound <= 1.0:
            raise InputError(f"--ratio-lower-bound must be in [0, 1], got {self.ratio_lower_bound}")
        if self.budget_layers is not None and self.budget_layers < 1:
            raise InputError(f"--budget-layers must be a positive integer, got {self.budget_layers}")

    def layers_for(self, model_depth: int) -> int:
        """The depth the budget uses for a model with ``model_depth`` decoder layers."""
        return self.budget_layers if self.budget_layers is not None else model_depth

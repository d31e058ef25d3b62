"""Stage 1 of the pipeline: resolve ``--model`` and load it (offline, always)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ffexport.errors import ModelError
from ffexport.models.registry import FAMILIES, PRESETS, Preset
from ffexport.video.processor_config import QWEN2_VL_DEFAULTS, read_processor_config

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
TINY_SEED = 0


@dataclass
class LoadedModel:
    """A model ready for the pipeline: its adapter, the Hugging Face module, a tokenizer (or None)."""

    name: str
    adapter: Any
    model: torch.nn.Module
    tokenizer: Any | None
    source: str
    #: (min_pixels, max_pixels) for video frames; None: the processor's defaults
    video_pixels: tuple[int, int] | None = None
    #: a model directory's video processor settings (ffexport.video.processor_config); None: a preset's
    processor: Any | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers(self.config)

    def case_from_video(self, frames, prompt: str):
        """A :class:`~ffexport.case.Case` for this model from uint8 frames [T, H, W, 3] and a prompt."""
        from ffexport.case import case_from_video
        from ffexport.errors import InputError

        if self.tokenizer is None:
            raise InputError(f"{self.name} has no tokenizer, so a prompt cannot be tokenized; pass --inputs CASE.npz")
        if hasattr(self.adapter, "case_from_video"):  # families with their own processor names and prompt
            budget = {"video_pixels": self.video_pixels} if hasattr(self.adapter, "pixel_budget") else {}
            return self.adapter.case_from_video(self.config, frames, prompt, tokenizer=self.tokenizer, **budget)
        vision = self.config.vision_config
        return case_from_video(
            frames, prompt, tokenizer=self.tokenizer, patch_size=vision.patch_size,
            temporal_patch_size=vision.temporal_patch_size, merge_size=vision.spatial_merge_size,
            video_pixels=self.video_pixels,
        )


def _hub_snapshot(hub_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of ``hub_id``, or None (never downloads)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


class LoadModel:
    """Load a preset (``qwen2vl-7b``), the tiny test model, or a local Hugging Face directory.

    ``random_weights`` builds the preset's full architecture with random weights (structure and
    speed work; no files needed). ``weights`` points a preset at a local directory.
    """

    def __init__(
        self,
        model: str = "qwen2vl-tiny",
        *,
        random_weights: bool = False,
        weights: str | Path | None = None,
        dtype: str = "float32",
        seed: int = TINY_SEED,
        structure_only: bool = False,
        layers: int | None = None,
        vision_layers: int | None = None,
        device: str = "cpu",
    ) -> None:
        if dtype not in DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}; use one of {sorted(set(DTYPES))}")
        self.model = model
        self.random_weights = random_weights
        self.weights = Path(weights) if weights is not None else None
        self.dtype = DTYPES[dtype]
        self.seed = seed
        #: build the preset's architecture on the meta device: shapes and graph structure, no weights
        self.structure_only = structure_only
        #: random/structure-only presets: keep the first ``layers`` decoder layers and the first
        #: ``vision_layers`` vision blocks (full width, less depth: benchmarks and parity of big models)
        for name, value in (("layers", layers), ("vision layers", vision_layers)):
            if value is not None and value < 1:
                raise ModelError(f"{name} must be at least 1, got {value}")
        self.layers = layers
        self.vision_layers = vision_layers
        #: where random weights are drawn ("cuda" initializes a 7B model in seconds, not minutes)
        self.device = device

    def __call__(self) -> LoadedModel:
        preset = PRESETS.get(self.model)
        if preset is not None:
            if preset.tiny or self.random_weights or self.structure_only:
                return self._random(preset)
            if self.layers is not None or self.vision_layers is not None:
                raise ModelError("--layers/--vision-layers truncate random-weight models only (add --random-weights)")
            directory = self.weights or self._find_weights(preset)
            return self._from_directory(directory, name=preset.name)
        path = Path(self.model)
        if path.is_dir():
            return self._from_directory(path, name=path.name)
        raise ModelError(
            f"unknown model {self.model!r}: not a preset ({', '.join(PRESETS.names())}) "
            "and not a local directory with config.json"
        )

    # ----------------------------------------------------------------- helpers
    def _random(self, preset: Preset) -> LoadedModel:
        adapter = FAMILIES.get(preset.family)
        config = preset.config()
        config._attn_implementation = "sdpa"
        depth_note = self._truncate(config)
        if self.structure_only:
            log.info("building %s's structure (no weights, meta device)", preset.name)
            with torch.device("meta"):
                model = adapter.model_class._from_config(config, dtype=self.dtype).eval()
            return LoadedModel(preset.name, adapter, model, None, f"structure only (no weights){depth_note}",
                               preset.video_pixels)
        torch.manual_seed(self.seed)
        log.info("building %s with random weights (seed %d)", preset.name, self.seed)
        with torch.device(self.device):
            model = adapter.model_class._from_config(config, dtype=self.dtype).eval()
        tokenizer = None
        if preset.tiny:
            from ffexport.models.tiny_tokenizer import build_tiny_tokenizer

            tokenizer = build_tiny_tokenizer()
        elif preset.hub_id and (snapshot := _hub_snapshot(preset.hub_id)) is not None:
            tokenizer = _load_tokenizer(snapshot)
        return LoadedModel(preset.name, adapter, model, tokenizer, f"random weights (seed {self.seed}){depth_note}",
                           preset.video_pixels)

    def _truncate(self, config) -> str:
        """Apply ``layers``/``vision_layers`` to a preset's config; return a note for the model's source."""
        notes = []
        text, vision = config.text_config, config.vision_config
        if self.layers is not None:
            if self.layers > text.num_hidden_layers:
                raise ModelError(f"--layers {self.layers}: the model has only {text.num_hidden_layers} decoder layers")
            text.num_hidden_layers = self.layers
            if getattr(text, "layer_types", None) is not None:
                text.layer_types = text.layer_types[: self.layers]
            notes.append(f"first {self.layers} decoder layers")
        if self.vision_layers is not None:
            depth = "depth" if hasattr(vision, "depth") else "num_hidden_layers"  # Qwen2-VL / CLIP-like towers
            if self.vision_layers > getattr(vision, depth):
                raise ModelError(f"--vision-layers {self.vision_layers}: the model has only {getattr(vision, depth)} "
                                 "vision blocks")
            setattr(vision, depth, self.vision_layers)
            notes.append(f"first {self.vision_layers} vision blocks")
            levels = list(getattr(vision, "deepstack_visual_indexes", None) or ())
            if levels:  # Qwen3-VL: the DeepStack levels of the blocks kept (the first ones, names unchanged)
                kept = [i for i in levels if i < self.vision_layers]
                if not kept:  # the decoder adds at least one level; a tower without any is not this model
                    raise ModelError(f"--vision-layers {self.vision_layers} keeps none of the tower's DeepStack levels "
                                     f"(blocks {levels}); keep at least {levels[0] + 1} vision blocks")
                vision.deepstack_visual_indexes = kept
                notes.append(f"DeepStack levels {len(vision.deepstack_visual_indexes)} of {len(levels)}")
        return f", {', '.join(notes)}" if notes else ""

    def _find_weights(self, preset: Preset) -> Path:
        snapshot = _hub_snapshot(preset.hub_id) if preset.hub_id else None
        if snapshot is None:
            raise ModelError(
                f"weights for {preset.name} not found: looked in the Hugging Face cache {_hub_cache_dir()} "
                f"for {preset.hub_id}; pass --weights DIR, --model DIR, or --random-weights"
            )
        return snapshot

    def _from_directory(self, directory: Path, *, name: str) -> LoadedModel:
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise ModelError(f"{directory} has no config.json; it is not a Hugging Face model directory")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise ModelError(f"{config_file} is not readable JSON ({e})") from e
        adapter = FAMILIES.get(model_type)
        if adapter is None:
            supported = ", ".join(f"{a.model_class.__name__} ({name})" for name, a in FAMILIES.items())
            raise ModelError(
                f"{directory}: model_type {model_type!r} is not supported; supported architectures: {supported}"
            )
        if not any(directory.glob("*.safetensors")):
            raise ModelError(f"{directory} has no *.safetensors weights")
        log.info("loading %s from %s", name, directory)
        try:
            model = adapter.model_class.from_pretrained(
                directory, dtype=self.dtype, local_files_only=True, attn_implementation="sdpa"
            ).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"could not load weights from {directory}: {e}") from e
        processor = read_processor_config(directory, defaults=getattr(adapter, "processor_defaults", QWEN2_VL_DEFAULTS))
        log.info("video processor settings from %s: pixels %d..%d", processor.source, *processor.pixels)
        return LoadedModel(name, adapter, model, _load_tokenizer(directory), str(directory),
                           processor.pixels, processor)


def family_of(model: str) -> str | None:
    """The family a ``--model`` value names (a preset, or a local directory's ``model_type``), or None
    when that cannot be told without loading (LoadModel then says what is wrong)."""
    preset = PRESETS.get(model)
    if preset is not None:
        return preset.family
    config_file = Path(model) / "config.json"
    try:
        return json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _load_tokenizer(directory: Path):
    """The tokenizer saved beside the weights, or None when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as e:
        log.warning("no tokenizer in %s (%s); text decoding is unavailable", directory, e)
        return None

"""``ffexport build``: a model and a list of buckets -> verified static-bucket ONNX graphs.

For every bucket: a schedule (given, or the default policy), the vision graph for its grid and the
reduced prefill with the schedule baked in; once per build: the token embedding and the one-token
decode step. Every graph is captured with torch.onnx (dynamo), its parameters moved to the shared
``weights.bin``, checked (onnx.checker full, strict shape inference) and run in ONNX Runtime against
the PyTorch reference (the parity gate). The manifest is rewritten atomically after each bucket,
and a bucket is marked usable only when all its graphs passed; a re-run skips finished, verified
buckets. Layout and names: docs/build-format.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ffexport
from ffexport.case import Case
from ffexport.errors import InputError, ValidationError
from ffexport.export.buckets import Bucket, model_bucket
from ffexport.export.attention_rewrite import choose_attention
from ffexport.export.builddir import BuildDirectory, committed_weights, fault_point
from ffexport.export.capture import OPSET, CaptureOnnx, GraphSpec, save_checked
from ffexport.export.graphs import (
    DEEPSTACK_INPUT, DecodeStep, DeepStackPrefillGraph, EmbedTokens, PrefillGraph, StaticDecodeStep, cache_capacities,
    present_names, static_decode_spec,
)
from ffexport.export.manifest import (
    MANIFEST_FORMAT, file_intact, file_record, graph_io, load_manifest, now, write_manifest,
)
from ffexport.export.parity import BF16, FP16, FP32, GraphReport, OrtRunner, OutputReport, ParityGate, compare
from ffexport.export.plugin_mode import check_ops, plugin_record, prefill_steps
from ffexport.export.quantize import Int8Fidelity, QuantizeInt8, compare_int8, decoder_weight_keys
from ffexport.errors import CaptureError
from ffexport.export.policy import SYNTHETIC_PROMPT_IDS, calibration_case, video_case
from ffexport.export.vision import FixedTowerEncoder, VisionEncoder
from ffexport.export.weights import WEIGHTS_FILE, SharedWeights
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.schedule import Schedule
from ffexport.io import save_json
from ffexport.models.loading import LoadedModel
from ffexport.progress import Steps
from ffexport.reference import Reference
from ffexport.video import synthetic_video

log = logging.getLogger(__name__)

#: extra parity videos besides the calibration clip: other motion, and static content (tied scores)
PARITY_VIDEOS = (("pan", 1), ("static", 2))
#: the dtype the model is loaded and the graphs captured in; int8 graphs are quantized from fp32 ones
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}
#: the parity gate of the captured graphs (int8: the fp32 graphs it is quantized from, then INT8_FIDELITY)
TOLERANCES = {"fp32": FP32, "fp16": FP16, "bf16": BF16, "int8": FP32}
#: the int8 graphs' own gate against the PyTorch fp32 reference (ffexport/export/quantize.py)
INT8_FIDELITY = Int8Fidelity()
#: why bf16 graphs are not built for the onnxruntime backend
BF16_NEEDS_TENSORRT = ("bf16 graphs cannot be validated here: ONNX Runtime's CPU provider has no bfloat16 kernels; "
                       "build them with --backend tensorrt (TensorRT runs the parity gate) or --graph-only "
                       "(structure for ffexport lint), or use --precision fp16")
#: why int8 graphs are ONNX Runtime only
INT8_NEEDS_ONNXRUNTIME = ("--precision int8 builds ONNX Runtime graphs only (dynamic quantization: DynamicQuantizeLinear "
                          "and MatMulInteger, which are not TensorRT paths; TensorRT int8 needs QDQ graphs and "
                          "calibration, which this version does not build): use --backend onnxruntime without "
                          "--plugins, or --precision fp16 for TensorRT")


def graph_precision(precision: str) -> str:
    """The precision the graphs are captured in: int8 graphs are quantized from fp32 ones."""
    return "fp32" if precision == "int8" else precision


def int8_file(fp32_file: str) -> str:
    """The int8 graph quantized from ``fp32_file``: ``<name>.onnx`` -> ``<name>.int8.onnx`` beside it."""
    return fp32_file.removesuffix(".onnx") + ".int8.onnx"


def check_int8(*, precision: str, backend: str, plugins: tuple[str, ...] = (), ops: str = "standard",
               graph_only: bool = False) -> None:
    """Refuse (:class:`InputError`, one line) an int8 build this version cannot make or verify."""
    if precision != "int8":
        return
    if backend != "onnxruntime" or plugins:
        raise InputError(INT8_NEEDS_ONNXRUNTIME)
    if ops != "standard":
        raise InputError("--precision int8 quantizes standard-op graphs only: use --ops standard")
    if graph_only:
        raise InputError("--precision int8 quantizes the model's weights; --graph-only has none (lint the fp32 "
                         "structure, which int8 builds quantize, with --precision fp32)")


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    buckets: tuple[str, ...]
    out: Path
    schedule: Schedule | None = None
    schedule_source: str | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    precision: str = "fp32"
    max_text: int = 256
    check_tokens: int = 4
    overwrite: bool = False
    quiet: bool = False
    #: structure only (meta-device model): graphs without weights, for ffexport lint; no parity
    graph_only: bool = False
    #: "onnxruntime" (graphs only), "tensorrt" (also one engine per graph, gated the same way) or
    #: "tensorrt-rtx" (also one engine per graph built ahead of time for ``compute_capabilities``, not run)
    backend: str = "onnxruntime"
    plugins: tuple[str, ...] = ()
    #: ``--backend tensorrt-rtx``: the GPU generations the engines are built for ahead of time ("SM89", ...)
    compute_capabilities: tuple[str, ...] = ()
    #: "standard" (merge/prune steps in standard ONNX ops) or "plugin" (one FrameFusionMerge /
    #: FrameFusionPrune node per step; ffexport/export/plugin_mode.py)
    ops: str = "standard"
    #: generated tokens the decode engine's cache profile allows beyond the prompt
    max_new_tokens: int = 512
    #: where a given schedule came from (its calibration record; ffexport.calibrate.choose)
    schedule_origin: dict[str, Any] | None = None
    #: without a given schedule, use the shipped calibrated one that fits (ffexport.calibrate.shipped)
    shipped_schedules: bool = True
    #: also write <bucket>/fidelity.json: static schedule vs dynamic reference on the parity videos
    fidelity: bool = False
    #: "fused" / "explicit" attention in the graphs; None: the backend's default
    #: (ffexport.export.attention_rewrite.choose_attention)
    attention: str | None = None


@dataclass
class BuildReport:
    out: Path
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Build:
    """``Build(loaded, config)() -> BuildReport``; raises ValidationError when a bucket fails parity."""

    def __init__(self, loaded: LoadedModel, config: BuildConfig) -> None:
        if config.precision not in PRECISIONS:
            raise InputError(f"--precision {config.precision}: this version builds {', '.join(PRECISIONS)} graphs")
        dtype = next(loaded.model.parameters()).dtype
        if dtype != PRECISIONS[config.precision]:
            raise InputError(f"--precision {config.precision} needs the model loaded in {PRECISIONS[config.precision]}, "
                             f"not {dtype}")
        if config.max_text < 1:
            raise InputError(f"--max-text must be positive, got {config.max_text}")
        if config.precision == "bf16" and config.backend != "tensorrt" and not config.graph_only:
            raise InputError(BF16_NEEDS_TENSORRT)
        check_int8(precision=config.precision, backend=config.backend, plugins=config.plugins, ops=config.ops,
                   graph_only=config.graph_only)
        #: the precision of the captured graphs (int8: quantized after they passed the fp32 gate)
        self.graph_precision = graph_precision(config.precision)
        check_ops(ops=config.ops, precision=self.graph_precision, backend=config.backend, plugins=config.plugins,
                  graph_only=config.graph_only)
        self.loaded = loaded
        self.config = config
        self.out = Path(config.out)
        #: DeepStack levels the vision graph returns and the prefill graph takes (Qwen3-VL; 0: none)
        self.deepstack_levels = 0 if self._fixed_tower() else len(self._vision_tower().deepstack)
        self.buckets = [self._parse_bucket(b) for b in dict.fromkeys(config.buckets)]
        if not self.buckets:
            raise InputError("give at least one --bucket FRAMESxHEIGHTxWIDTH")
        for b in self.buckets:
            if b.rounded:
                log.info("bucket %s: %dx%d pixels are resized to %dx%d (the model's resize rule)",
                         b.name, b.height, b.width, *b.resized)
            if config.schedule is not None and (config.schedule.visual_tokens, config.schedule.patches_per_frame) != (
                    b.visual_tokens, b.patches_per_frame):
                raise InputError(
                    f"the schedule is for {config.schedule.visual_tokens} visual tokens ({config.schedule.patches_per_frame} "
                    f"per frame); bucket {b.name} has {b.visual_tokens} ({b.patches_per_frame} per frame)")
        if config.schedule is not None:
            config.schedule.validate(loaded.num_layers)
        if config.graph_only and loaded.tokenizer is not None and next(loaded.model.parameters()).device.type != "meta":
            raise InputError("--graph-only builds the structure without weights; it takes a preset name")
        self.decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
        self._static_decode: dict[str, dict[str, Any]] = {}
        #: the PyTorch fp32 static reference of each (bucket, parity video), from the end-to-end check
        self._references: dict[tuple[str, str], Any] = {}
        self._quantize: QuantizeInt8 | None = None
        self.steps, self.translations = prefill_steps(config.ops)
        self.embed = loaded.model.model.language_model.embed_tokens
        self.attention = choose_attention(config.attention, backend=config.backend, precision=self.graph_precision,
                                          graph_only=config.graph_only)
        self.capture = CaptureOnnx(structure_only=config.graph_only, attention=self.attention)
        self.runner = OrtRunner()
        self.engines = None
        if config.backend == "tensorrt":  # fail before any work when TensorRT or the GPU is missing
            from ffexport.export.tensorrt import EngineFromGraph, gpu_record

            gpu_record()
            self.engines = EngineFromGraph(timing_cache=self.out / "timing.cache", plugins=config.plugins)
        elif config.backend == "tensorrt-rtx":  # engines built ahead of time, no GPU needed (and none run)
            from ffexport.export.tensorrt import EngineFromGraph
            from ffexport.export.trt_toolkit import require_rtx

            self.engines = EngineFromGraph(toolkit=require_rtx(), compute_capabilities=config.compute_capabilities,
                                           plugins=config.plugins)
        elif config.backend != "onnxruntime":
            raise InputError(f"--backend {config.backend}: use onnxruntime, tensorrt or tensorrt-rtx")
        self.tolerance = TOLERANCES[config.precision]
        self.gate = ParityGate(self.tolerance, runner=self.runner)

    # ================================================================ driver
    def __call__(self) -> BuildReport:
        """Locked, and with ``--overwrite`` built beside the old build and swapped in (builddir.py)."""
        with BuildDirectory(self.out, overwrite=self.config.overwrite) as directory:
            self.out = directory.path
            try:
                report = self._build()
            except ValidationError as e:
                if directory.replacing:
                    raise ValidationError(f"{e.args[0]}; --overwrite: the previous build in {directory.out} is kept "
                                          "and the new one discarded") from e
                raise
            finally:
                self.out = directory.out
            directory.commit()
        report.out = self.out
        return report

    def _build(self) -> BuildReport:
        manifest = self._open_directory()
        if self.config.graph_only:
            return self._graph_only(manifest)
        report = BuildReport(self.out)
        store = SharedWeights(self.out, committed=manifest["files"].get(WEIGHTS_FILE, {}).get("bytes", 0))
        self._save_tokenizer(manifest)
        shared_ok = self._shared_ok(manifest)  # a damaged shared graph: every bucket is checked again with it
        todo = [b for b in self.buckets if not (shared_ok and self._finished(manifest, b))]
        for b in self.buckets:
            if b not in todo:
                log.info("bucket %s: already built and verified, skipped", b.name)
                report.skipped.append(b.name)
        self._uncommit(manifest, todo)
        shared_missing = not self._shared_ok(manifest)
        steps_total = len(todo) * 4 + (2 if shared_missing and todo else 0)
        with Steps(steps_total, "building", quiet=self.config.quiet) as steps:
            for b in todo:
                entry = self._build_bucket(b, store, manifest, steps, shared_missing)
                shared_missing = False
                manifest["buckets"] = [e for e in manifest["buckets"] if e["name"] != b.name] + [entry]
                self._record_files(manifest)
                fault_point("before manifest")
                write_manifest(self.out, manifest)
                fault_point("after manifest")
                (report.built if entry["usable"] else report.failed).append(b.name)
        if report.failed:
            raise ValidationError(
                f"bucket(s) {', '.join(report.failed)} failed the parity gate (see <bucket>/parity.json); "
                "they are recorded as not usable")
        return report

    # ================================================================ graph only
    def _graph_only(self, manifest: dict[str, Any]) -> BuildReport:
        """Capture every graph of every bucket from a meta-device model: structure for ``ffexport
        lint`` (TensorRT limits) at real sizes, in seconds and without weights. Nothing is validated
        and no bucket is usable; the manifest says so."""
        report = BuildReport(self.out)
        manifest["graph_only"] = True
        layers, cfg = self.loaded.num_layers, self.loaded.config
        hidden = cfg.text_config.hidden_size
        meta = {"device": "meta"}
        dtype = PRECISIONS[self.config.precision]
        parts = self.loaded.adapter.decoder_parts(self.loaded.model)
        with Steps(len(self.buckets) * 2 + 2, "capturing graphs", quiet=self.config.quiet) as steps:
            for b in self.buckets:
                layout = self._nominal_layout(b)
                self._check_text_between_blocks(layout, b)
                if self.config.schedule is not None:
                    schedule, source = self.config.schedule, self.config.schedule_source or "given"
                    self._check_schedule_blocks(schedule, layout, b)
                else:
                    from ffexport.export.policy import nominal_schedule

                    nominal = nominal_schedule(b, self.config.fusion, layers, layout)
                    schedule, source = nominal.schedule, nominal.source
                steps.start(f"{b.name}: vision graph")
                vision = self._vision_module(b).to("meta")  # the model is on the meta device; the encoder's tables too
                pixels = torch.zeros(vision.input_shape, dtype=torch.float32, **meta)
                vision_file = f"{b.name}.vision.onnx"
                self._save_structure(GraphSpec("vision", vision, (pixels,), ["pixel_values_videos"],
                                               _vision_outputs(vision)), vision_file)
                steps.advance()
                steps.start(f"{b.name}: prefill graph")
                # the text between frame blocks is part of the prompt's text (at least one token after them)
                length = max(b.visual_tokens + min(64, self.config.max_text), layout.region_length + 1)
                example = TorchInputs(torch.zeros(1, length, hidden, dtype=dtype, **meta),
                                      torch.zeros(3, length, dtype=torch.int64, **meta),
                                      torch.zeros((), dtype=torch.int64, **meta), 0,
                                      deepstack=self._example_deepstack(b, dtype, device="meta"))
                prefill_file = f"{b.name}.prefill.onnx"
                prefill = self._prefill_module(schedule)
                self._save_structure(self._prefill_spec(prefill, b, example), prefill_file)
                steps.advance()
                manifest["buckets"] = [e for e in manifest["buckets"] if e["name"] != b.name] + [{
                    "name": b.name, "frames": b.frames, "height": b.height, "width": b.width,
                    "resized": list(b.resized), "grid_thw": list(b.grid_thw), "visual_tokens": b.visual_tokens,
                    "patches_per_frame": b.patches_per_frame, **_blocks_record(layout),
                    "schedule": schedule.to_json(), "schedule_source": source,
                    "graphs": {"vision": {"file": vision_file, **graph_io(self.out / vision_file)},
                               "prefill": {"file": prefill_file, **graph_io(self.out / prefill_file),
                                   **plugin_record(self.out / prefill_file)}},
                    "parity": {"passed": False, "validated": False,
                               "note": "graph only: captured without weights; nothing was run"},
                    "usable": False}]
                report.built.append(b.name)
            steps.start("embed graph")
            ids = torch.zeros(1, 8, dtype=torch.int64, **meta)
            self._save_structure(GraphSpec("embed", EmbedTokens(self.embed), (ids,), ["input_ids"], ["inputs_embeds"],
                                           ({1: torch.export.Dim("L", min=2, max=32768)},)), "embed.onnx")
            steps.advance()
            steps.start("decode graph")
            past = [torch.zeros(1, parts.num_kv_heads, 16 + i, parts.head_dim, dtype=dtype, **meta)
                    for i in range(layers) for _ in range(2)]
            dims = [torch.export.Dim(f"past_{i}", min=1, max=32768) for i in range(layers)]
            dynamic = {"input_ids": None, "position_ids": None,
                       "past": tuple({2: dims[i // 2]} for i in range(2 * layers))}
            token, position = torch.zeros(1, 1, dtype=torch.int64, **meta), torch.zeros(3, 1, dtype=torch.int64, **meta)
            self._save_structure(GraphSpec("decode", DecodeStep(self.decoder, self.embed), (token, position, *past),
                                           ["input_ids", "position_ids", *present_names(layers, "past_key_values")],
                                           ["logits", *present_names(layers)], dynamic), "decode.onnx")
            steps.advance()
        for name in ("embed", "decode"):
            manifest["graphs"][name] = {"file": f"{name}.onnx", **graph_io(self.out / f"{name}.onnx"),
                                        "parity": {"passed": False, "validated": False, "note": "graph only"}}
        manifest["files"] = {g["file"]: file_record(self.out, g["file"]) for g in
                             [*manifest["graphs"].values(), *(x for e in manifest["buckets"] for x in e["graphs"].values())]}
        write_manifest(self.out, manifest)
        log.info("graph-only build %s: %d bucket(s) captured without weights (lint them with: ffexport lint %s)",
                 self.out, len(report.built), self.out)
        return report

    def _save_structure(self, spec: GraphSpec, filename: str) -> Path:
        import onnx

        model = self.capture(spec)
        tmp = self.out / f".{filename}.partial"
        onnx.save(model, str(tmp))
        os.replace(tmp, self.out / filename)
        return self.out / filename

    # ================================================================ directory
    def _open_directory(self) -> dict[str, Any]:
        """The committed manifest of ``self.out`` (locked by :meth:`__call__`), or a new one. Bytes of
        ``weights.bin`` past the committed length are dropped later (SharedWeights); committed bytes
        that no longer match their SHA-256 make every bucket be rebuilt."""
        out = self.out
        manifest = load_manifest(out)
        if manifest is not None:
            _, intact = committed_weights(out, manifest, WEIGHTS_FILE)
            if not intact:
                log.warning("%s does not match the sha256 its manifest records (damaged since it was built): "
                            "rebuilding every bucket from a new weight file", out / WEIGHTS_FILE)
                manifest = None
        if manifest is None:
            out.mkdir(parents=True, exist_ok=True)
            return self._new_manifest()
        model = manifest["model"]
        wanted = self._model_facts()
        if (model.get("name"), model.get("source")) != (wanted["name"], wanted["source"]) or \
                manifest.get("precision") != self.config.precision or manifest.get("max_text") != self.config.max_text:
            raise InputError(
                f"{out} holds a build of {model.get('name')} ({model.get('source')}, {manifest.get('precision')}, "
                f"max_text {manifest.get('max_text')}); use another --out or pass --overwrite to replace it")
        built_attention = manifest.get("attention", {}).get("mode", "explicit")
        if built_attention != self.attention.mode:  # one build never mixes attention formulations
            raise InputError(f"{out} holds a build with --attention {built_attention}; use another --out, or pass "
                             f"--overwrite to rebuild it with --attention {self.attention.mode}")
        built_ops = manifest.get("ops", "standard")
        if built_ops != self.config.ops:  # one build never mixes standard and plugin prefill graphs
            raise InputError(f"{out} holds a build with --ops {built_ops}; use another --out, or pass --overwrite to "
                             f"rebuild it with --ops {self.config.ops}")
        return manifest

    def _model_facts(self) -> dict[str, Any]:
        cfg, loaded = self.loaded.config, self.loaded
        text, vision = cfg.text_config, cfg.vision_config
        tok = loaded.tokenizer
        # Qwen3-VL's text config has no eos_token_id field (the released one sits in generation_config.json)
        eos = tok.eos_token_id if tok is not None and tok.eos_token_id is not None else \
            getattr(text, "eos_token_id", None) if getattr(text, "eos_token_id", None) is not None else \
            getattr(cfg, "eos_token_id", None)
        parts = loaded.adapter.decoder_parts(loaded.model)
        return {
            "name": loaded.name, "family": loaded.adapter.family, "source": loaded.source,
            "num_layers": loaded.num_layers, "hidden_size": text.hidden_size, "vocab_size": text.vocab_size,
            "num_kv_heads": parts.num_kv_heads, "head_dim": parts.head_dim,
            "video_token_id": loaded.adapter.video_token_id(cfg),
            # Qwen families; None for fixed-size towers (LLaVA-style: no vision markers, no merge / temporal patch)
            "vision_start_token_id": getattr(cfg, "vision_start_token_id", None),
            "vision_end_token_id": getattr(cfg, "vision_end_token_id", None), "eos_token_id": eos,
            "spatial_merge_size": getattr(vision, "spatial_merge_size", None), "patch_size": _side(vision.patch_size),
            "temporal_patch_size": getattr(vision, "temporal_patch_size", None),
            "video_pixels": list(loaded.video_pixels) if loaded.video_pixels else None,
            "video_processor": (loaded.processor.to_json() if getattr(loaded, "processor", None) is not None
                                else None),
            "positions": loaded.adapter.positions_record(cfg),
            # fixed-size towers: frame preprocessing and chat template for the runtime (Qwen: none)
            **(loaded.adapter.runtime_record(cfg) if hasattr(loaded.adapter, "runtime_record") else {}),
        }

    def _vision_tower(self):
        """The family's vision tower as data (its adapter's ``vision_tower``; ffexport/export/vision.py)."""
        return self.loaded.adapter.vision_tower(self.loaded.config.vision_config)

    def _fixed_tower(self) -> bool:
        """A fixed-size tower (LLaVA-style adapters declare ``tokens_per_frame``; Qwen ones a ``vision_tower``)."""
        return not hasattr(self.loaded.adapter, "vision_tower")

    def _parse_bucket(self, text: str) -> Bucket:
        """The family's bucket rule (a fixed-size tower, or a patch grid within the model's pixel limits)."""
        return model_bucket(self.loaded.adapter, self.loaded.config, text, video_pixels=self.loaded.video_pixels)

    def _vision_module(self, bucket: Bucket) -> torch.nn.Module:
        """The bucket's vision graph module: the Qwen towers per grid, a fixed-size tower per frame count."""
        if self._fixed_tower():
            return FixedTowerEncoder(self.loaded.model, self.loaded.adapter, bucket.frames).eval()
        return VisionEncoder(self.loaded.model.model.visual, bucket.grid_thw, self._vision_tower()).eval()

    def _nominal_layout(self, bucket: Bucket) -> FrameLayout:
        """The bucket's frame blocks without running the model (graph-only builds): the adapter's
        ``bucket_layout`` (from its tokenizer when there is one), else one contiguous block."""
        adapter, cfg = self.loaded.adapter, self.loaded.config
        if hasattr(adapter, "bucket_layout"):
            # grid families (Qwen3-VL: one block per temporal group) also need the block's token count
            grid = {} if self._fixed_tower() else {"patches_per_frame": bucket.patches_per_frame}
            return adapter.bucket_layout(cfg, bucket.frames, self.loaded.tokenizer, **grid)
        return FrameLayout.contiguous(bucket.visual_tokens, bucket.patches_per_frame)

    @staticmethod
    def _bucket_layout(bucket: Bucket, torch_inputs: list["TorchInputs"]) -> FrameLayout:
        """The frame blocks of a bucket, as the adapter lays out the parity prompts (``adapter.layout``
        through the reference's prepared inputs); every parity prompt must have the same."""
        layouts = {ti.layout or FrameLayout.contiguous(bucket.visual_tokens, bucket.patches_per_frame)
                   for ti in torch_inputs}
        if len(layouts) != 1:
            raise InputError(f"bucket {bucket.name}: the parity prompts place their frame blocks differently "
                             f"({'; '.join(str(x.to_json()) for x in layouts)}); a bucket's graphs take one layout")
        (layout,) = layouts
        if (layout.visual_tokens, layout.patches_per_frame) != (bucket.visual_tokens, bucket.patches_per_frame):
            raise InputError(f"bucket {bucket.name}: the prompt's frame blocks hold {layout.visual_tokens} tokens of "
                             f"{layout.patches_per_frame} per frame, the bucket {bucket.visual_tokens} of "
                             f"{bucket.patches_per_frame}")
        return layout

    def _check_text_between_blocks(self, layout: FrameLayout, bucket: Bucket) -> None:
        """The text between frame blocks is prompt text: ``--max-text`` must leave room for it and more."""
        if layout.text_tokens >= self.config.max_text:
            raise InputError(f"bucket {bucket.name}: the text between its {len(layout.blocks)} frame blocks is "
                             f"{layout.text_tokens} tokens, --max-text {self.config.max_text} leaves no room for the "
                             f"prompt; pass a larger --max-text (e.g. {layout.text_tokens + 256})")

    @staticmethod
    def _check_schedule_blocks(schedule: Schedule, layout: FrameLayout, bucket: Bucket) -> None:
        if schedule.frame_layout != layout:
            raise InputError(f"the schedule's frame blocks {schedule.frame_layout.to_json()} are not bucket "
                             f"{bucket.name}'s {layout.to_json()} (the prompt's text between frames); make the "
                             "schedule for this model and bucket")

    def _new_manifest(self) -> dict[str, Any]:
        import onnx
        import onnxruntime
        import transformers

        return {
            "format": MANIFEST_FORMAT, "created": now(), "model": self._model_facts(),
            "precision": self.config.precision, "max_text": self.config.max_text, "ops": self.config.ops,
            "tokenizer": None,
            "graphs": {}, "buckets": [], "files": {},
            "tools": {"ffexport": ffexport.__version__, "torch": torch.__version__,
                      "transformers": transformers.__version__, "onnx": onnx.__version__,
                      "onnxruntime": onnxruntime.__version__, "opset": self.attention.opset},
            "attention": self.attention.to_json(),
        }

    def _save_tokenizer(self, manifest: dict[str, Any]) -> None:
        tok = self.loaded.tokenizer
        if tok is None:  # the schedule and the parity gate ran on synthetic prompt ids; run takes --inputs only
            manifest["prompt_ids"] = SYNTHETIC_PROMPT_IDS
            return
        if manifest.get("tokenizer"):
            return
        target = self.out / "tokenizer"
        tok.save_pretrained(target)
        manifest["tokenizer"] = "tokenizer"

    def _record_files(self, manifest: dict[str, Any]) -> None:
        names = [WEIGHTS_FILE]
        if manifest.get("tokenizer"):
            names += [f"{manifest['tokenizer']}/{p.name}" for p in sorted((self.out / manifest["tokenizer"]).iterdir())]
        names += [g["file"] for g in manifest["graphs"].values()]
        for entry in manifest["buckets"]:
            names += [g["file"] for g in [*entry["graphs"].values(), *entry.get("engines", {}).values()]]
        # int8 builds: the fp32 graphs the int8 ones were quantized from (gated, kept for replay)
        graphs = [*manifest["graphs"].values(), *(g for e in manifest["buckets"] for g in e["graphs"].values())]
        names += [g["quantized"]["from"] for g in graphs if "quantized" in g]
        names += [e["file"] for e in manifest.get("engines", {}).values()]
        # a listed file that is gone is left out: the runtime then refuses the build, naming it
        manifest["files"] = {n: file_record(self.out, n) for n in names if (self.out / n).is_file()}

    def _finished(self, manifest: dict[str, Any], bucket: Bucket) -> bool:
        for entry in manifest["buckets"]:
            if entry["name"] == bucket.name and entry.get("usable"):
                wanted = self.config.schedule.to_json() if self.config.schedule is not None else None
                if wanted is not None and entry["schedule"] != wanted:
                    return False
                if self.engines is not None and not self._engines_done(manifest, entry):
                    return False
                files = manifest["files"]
                return all(g["file"] in files and file_intact(self.out, g["file"], files[g["file"]])
                           for g in entry["graphs"].values())
        return False

    def _engines_done(self, manifest: dict[str, Any], entry: dict[str, Any]) -> bool:
        """Whether a bucket (and the shared graphs) already has intact engines of this build's backend
        (and compute capabilities): a re-run with ``--backend tensorrt[-rtx]`` on a finished ONNX build
        must build them."""
        bucket_graphs = ("vision", "prefill", *(("decode_static",) if entry["graphs"].get("decode_static") else ()))
        return self._engines_ok(manifest, entry.get("engines") or {}, bucket_graphs) and \
            self._engines_ok(manifest, manifest.get("engines") or {}, ("embed", "decode"))

    def _engines_ok(self, manifest: dict[str, Any], records: dict[str, Any], graphs: tuple[str, ...]) -> bool:
        from ffexport.export.trt_toolkit import compute_capability_value

        runtime = "tensorrt-rtx" if self.config.backend == "tensorrt-rtx" else "tensorrt"
        wanted = [compute_capability_value(c) for c in self.config.compute_capabilities]
        files = manifest["files"]
        return all(
            (r := records.get(g)) is not None and r.get("runtime") == runtime
            and (runtime == "tensorrt" or r.get("compute_capabilities") == wanted)
            and r["file"] in files and file_intact(self.out, r["file"], files[r["file"]]) for g in graphs)

    def _uncommit(self, manifest: dict[str, Any], todo: list[Bucket]) -> None:
        """Before rewriting a bucket's files under the name the manifest has for it, commit a manifest
        without that bucket, so a committed manifest never points at a file being rewritten (the
        commit protocol, docs/build-format.md). Buckets under new names need nothing."""
        names = {b.name for b in todo}
        stale_engines = self.engines is not None and todo and "engines" in manifest and \
            not self._engines_ok(manifest, manifest["engines"], ("embed", "decode"))
        if not stale_engines and not any(e["name"] in names for e in manifest["buckets"]):
            return
        if stale_engines:  # the shared engines are built again with this backend's settings
            manifest.pop("engines")
        manifest["buckets"] = [e for e in manifest["buckets"] if e["name"] not in names]
        self._record_files(manifest)
        write_manifest(self.out, manifest)

    def _shared_ok(self, manifest: dict[str, Any]) -> bool:
        files = manifest["files"]
        return all(name in manifest["graphs"] and manifest["graphs"][name]["parity"]["passed"]
                   and file_intact(self.out, manifest["graphs"][name]["file"], files.get(manifest["graphs"][name]["file"], {"bytes": -1, "sha256": ""}))
                   for name in ("embed", "decode"))

    # ================================================================ graphs
    def _save_graph(self, spec: GraphSpec, filename: str, store: SharedWeights) -> Path:
        model = self.capture(spec)
        store.externalize(model)
        return save_checked(model, self.out, filename)

    def _prefill_spec(self, module: PrefillGraph, bucket: Bucket, example: "TorchInputs") -> GraphSpec:
        n = bucket.visual_tokens
        region = module.prefill.schedule.frame_layout.region_length  # n for one block; text between blocks beyond
        length = torch.export.Dim("L", min=region + 1, max=n + self.config.max_text)
        dynamic = ({1: length}, {1: length}, None) + ((None,) if example.deepstack is not None else ())
        return GraphSpec(
            "prefill", module, example.args(), list(example.feeds()), ["logits", *present_names(self.loaded.num_layers)],
            dynamic, translations=self.translations,
        )

    def _prefill_module(self, schedule: Schedule) -> PrefillGraph:
        """The bucket's prefill graph module (with the DeepStack input where the tower has levels)."""
        kind = DeepStackPrefillGraph if self.deepstack_levels else PrefillGraph
        return kind(self.decoder, schedule, steps=self.steps).eval()

    def _example_deepstack(self, bucket: Bucket, dtype: torch.dtype, device: str = "cpu") -> torch.Tensor | None:
        """Zeros of the prefill graph's DeepStack input for ``bucket`` (None without DeepStack)."""
        if not self.deepstack_levels:
            return None
        hidden = self.loaded.config.text_config.hidden_size
        return torch.zeros(self.deepstack_levels, bucket.visual_tokens, hidden, dtype=dtype, device=device)

    def _save_static_decode(self, bucket: Bucket, schedule: Schedule, store: SharedWeights) -> dict[str, Any]:
        """The bucket's static decode graph: caches preallocated per layer (docs/build-format.md)."""
        capacities = cache_capacities(schedule, self.loaded.num_layers, max_text=self.config.max_text,
                                      max_new_tokens=self.config.max_new_tokens)
        file = f"{bucket.name}.decode_static.onnx"
        self._save_graph(static_decode_spec(self.decoder, self.embed, capacities,
                                            max_new_tokens=self.config.max_new_tokens), file, store)
        record = {"file": file, "capacities": capacities, **graph_io(self.out / file)}
        self._static_decode[bucket.name] = record  # the end-to-end gate decodes with it too
        return record

    # ================================================================ one bucket
    def _build_bucket(self, bucket: Bucket, store: SharedWeights, manifest: dict[str, Any], steps: Steps,
                      shared_missing: bool) -> dict[str, Any]:
        name = bucket.name
        steps.start(f"{name}: schedule")
        from ffexport.calibrate.choose import ChooseSchedule

        chosen = ChooseSchedule(self.config.fusion, given=self.config.schedule, given_source=self.config.schedule_source,
                                given_origin=self.config.schedule_origin,
                                shipped=self.config.shipped_schedules)(self.loaded, bucket)
        schedule, source = chosen.schedule, chosen.source
        cases = self._parity_cases(bucket)
        torch_inputs = [self._torch_inputs(c) for c in cases]
        for c, ti in zip(cases, torch_inputs):
            text = c.input_ids.shape[1] - bucket.visual_tokens
            if text > self.config.max_text:
                raise InputError(f"the parity prompt has {text} text tokens; --max-text must be at least that")
        layout = self._bucket_layout(bucket, torch_inputs)
        self._check_text_between_blocks(layout, bucket)
        self._check_schedule_blocks(schedule, layout, bucket)
        steps.advance()

        steps.start(f"{name}: export vision graph")
        grid = bucket.grid_thw
        vision = self._vision_module(bucket)
        vision_file = f"{name}.vision.onnx"
        self._save_graph(GraphSpec("vision", vision, (torch.from_numpy(cases[0].pixel_values_videos),),
                                   ["pixel_values_videos"], _vision_outputs(vision)), vision_file, store)
        steps.advance()

        steps.start(f"{name}: export prefill graph")
        prefill = self._prefill_module(schedule)
        prefill_file = f"{name}.prefill.onnx"
        self._save_graph(self._prefill_spec(prefill, bucket, torch_inputs[0]), prefill_file, store)
        steps.advance()

        decode_static = self._save_static_decode(bucket, schedule, store)

        if shared_missing:
            self._build_shared(manifest, store, steps, cases[0], torch_inputs[0], prefill)

        steps.start(f"{name}: parity")
        bucket_dir = self.out / name
        bucket_dir.mkdir(exist_ok=True)
        reports, e2e = self._bucket_parity(bucket, schedule, cases, torch_inputs, vision, prefill,
                                           vision_file, prefill_file, bucket_dir)
        contract = self._contract(bucket, schedule, chosen.origin, cases, torch_inputs, vision_file, prefill_file,
                                  layout)
        steps.advance()
        shared = all(manifest["graphs"][g]["parity"]["passed"] for g in ("embed", "decode"))
        passed = shared and all(r.passed for r in reports) and all(x["tokens_equal"] and x["logits"]["passed"] for x in e2e)
        passed = passed and contract["passed"]
        fp32_passed, int8, graphs = passed, None, {"prefill": prefill_file, "decode_static": decode_static["file"]}
        if self.config.precision == "int8":  # quantized only once the fp32 graphs passed their gate
            int8 = self._int8(bucket, store, manifest, cases, vision_file, graphs, decode_static) if passed else \
                {"passed": False, "note": "not quantized: the fp32 graphs failed their parity gate"}
            passed = passed and int8["passed"]
        schedule.save(bucket_dir / "schedule.json", overwrite=True)
        fidelity = {}
        if self.config.fidelity:  # static schedule vs dynamic reference on the parity videos (a figure, not a gate)
            from ffexport.calibrate.report import bucket_fidelity

            fidelity = {"fidelity": bucket_fidelity(self.loaded, schedule, self.config.fusion, cases,
                                                    [n for n, _ in self._case_names()], bucket_dir / "fidelity.json",
                                                    max_new_tokens=self.config.check_tokens)}
        tol = self.tolerance
        save_json({"bucket": name, "precision": self.config.precision, "tolerance": {"atol": tol.atol, "rtol": tol.rtol},
                   "cases": [c_name for c_name, _ in self._case_names()],
                   "graphs": [r.to_json() for r in reports], "end_to_end": e2e, "shared_graphs_passed": shared,
                   "schedule_kind": contract["schedule_kind"], "contract": contract,
                   **({"fp32_graphs_passed": fp32_passed, "int8": int8} if int8 is not None else {}),
                   "passed": passed,
                   "replay": "polygraphy run <graph> --onnxrt --load-inputs parity/<graph>.inputs.json "
                             f"--load-outputs parity/<graph>.outputs.json --atol {tol.atol} --rtol {tol.rtol}"},
                  bucket_dir / "parity.json", overwrite=True)
        engines = {}
        if self.engines is not None and passed:
            engines, engine_passed = self._build_engines(bucket, manifest, cases, torch_inputs, vision, prefill,
                                                         vision_file, prefill_file)
            passed = passed and engine_passed
        status = "passed" if passed else "FAILED"
        worst = max(o.max_abs for r in reports for o in r.outputs)
        log.info("bucket %s: %d -> %d visual tokens, parity %s (worst |diff| %.1e)", name, bucket.visual_tokens,
                 schedule.final_visual_tokens, status, worst)
        return {
            "name": name, "frames": bucket.frames, "height": bucket.height, "width": bucket.width,
            "resized": list(bucket.resized), "grid_thw": list(grid), "visual_tokens": bucket.visual_tokens,
            "patches_per_frame": bucket.patches_per_frame, **_blocks_record(layout), "schedule": schedule.to_json(),
            "schedule_source": source, "schedule_origin": chosen.origin, "schedule_kind": contract["schedule_kind"],
            "graphs": {"vision": {"file": vision_file, **graph_io(self.out / vision_file)},
                       "prefill": {"file": graphs["prefill"], **graph_io(self.out / graphs["prefill"]),
                                   **plugin_record(self.out / graphs["prefill"]), **self._quantized("prefill", int8)},
                       "decode_static": {**decode_static, "file": graphs["decode_static"],
                                         **graph_io(self.out / graphs["decode_static"]),
                                         **self._quantized("decode_static", int8)}},
            "parity": {"file": f"{name}/parity.json", "passed": passed, "validated": True,
                       "contract": contract_record(contract), **_int8_summary(int8)},
            "engines": engines, **fidelity,
            "usable": passed,
        }

    # ================================================================ int8
    def _int8(self, bucket: Bucket, store: SharedWeights, manifest: dict[str, Any], cases: list[Case],
              vision_file: str, graphs: dict[str, str], decode_static: dict[str, Any]) -> dict[str, Any]:
        """Quantize the bucket's prefill and static decode graphs (and, once per build, ``decode.onnx``)
        after their fp32 gate passed, point ``graphs`` at the int8 files, and gate the int8 pipeline
        against the PyTorch fp32 reference on every parity video (:data:`INT8_FIDELITY`)."""
        quantized = {kind: self._save_int8(file, store) for kind, file in graphs.items()}
        graphs.update({kind: int8_file(q.source) for kind, q in quantized.items()})
        decode = manifest["graphs"]["decode"]
        if "quantized" not in decode:  # the shared decode graph, once (it passed its fp32 gate)
            q = self._save_int8(decode["file"], store)
            file = int8_file(q.source)
            manifest["graphs"]["decode"] = {
                "file": file, **graph_io(self.out / file), "quantized": q.to_json(),
                "parity": {"passed": decode["parity"]["passed"], "precision": "int8", "fp32": decode["parity"],
                           "int8": "gated end to end with each bucket (<bucket>/parity.json, int8)"}}
        decode_file = manifest["graphs"]["decode"]["file"]
        fidelity, n_tokens = INT8_FIDELITY, self.config.check_tokens
        static = {**decode_static, "file": graphs["decode_static"]}
        compared = []
        for (case_name, _), case in zip(self._case_names(), cases):
            logits, tokens = run_graphs(self.runner, self.out, case, vision_file, graphs["prefill"], self.loaded.config,
                                        self.loaded.adapter, n_tokens, decode_file=decode_file)
            in_place = run_graphs(self.runner, self.out, case, vision_file, graphs["prefill"], self.loaded.config,
                                  self.loaded.adapter, n_tokens, static_decode=static)[1]
            reference = self._references[(bucket.name, case_name)]
            compared.append(compare_int8(case_name, logits, reference.logits, tokens,
                                         reference.generated_ids[0].tolist(), fidelity, static_tokens=in_place))
        passed = all(c.passed for c in compared)
        worst = max(compared, key=lambda c: c.logits_rel)
        log.info("bucket %s: int8 gate %s (logits max |diff| %.1f%% of their range, top-5 overlap >= %d, greedy tokens "
                 "equal on %d/%d videos)", bucket.name, "passed" if passed else "FAILED", 100 * worst.logits_rel,
                 min(c.top5_overlap for c in compared), sum(c.tokens_equal for c in compared), len(compared))
        return {
            "precision": "int8", "passed": passed,
            "compared": "embed and vision fp32, prefill and decode int8 (ONNX Runtime) against the PyTorch fp32 "
                        f"static reference: prefill logits and {n_tokens} greedy tokens per parity video",
            "thresholds": fidelity.to_json(),
            "worst": {"logits_rel": worst.logits_rel, "logits_max_abs": max(c.logits_max_abs for c in compared),
                      "top5_overlap": min(c.top5_overlap for c in compared),
                      "tokens_equal": all(c.tokens_equal for c in compared)},
            "cases": [c.__dict__ for c in compared],
            "graphs": {kind: q.to_json() for kind, q in quantized.items()},
        }

    def _save_int8(self, source: str, store: SharedWeights):
        """``<name>.onnx`` (fp32, gated) -> ``<name>.int8.onnx`` beside it, its tensors in ``weights.bin`` by
        content (the fp32 tensors it keeps are stored already; the int8 weights and scales are appended)."""
        import onnx

        if self._quantize is None:
            self._quantize = QuantizeInt8(decoder_weight_keys(self.decoder.parts))
        target = int8_file(source)
        scratch = self.out / f".{target}.quantizing"
        try:
            record = self._quantize(self.out / source, scratch)
            model = onnx.load(str(scratch), load_external_data=True)
        except ValueError as e:
            raise CaptureError(f"quantizing {source} to int8 failed: {e}") from e
        finally:
            scratch.unlink(missing_ok=True)
            scratch.with_name(scratch.name + ".data").unlink(missing_ok=True)
        store.externalize(model)
        self.runner.forget(self.out / target)
        save_checked(model, self.out, target)
        return record

    @staticmethod
    def _quantized(kind: str, int8: dict[str, Any] | None) -> dict[str, Any]:
        """A bucket graph's ``quantized`` record (int8 builds whose graphs were quantized)."""
        return {"quantized": int8["graphs"][kind]} if int8 and "graphs" in int8 else {}

    # ================================================================ TensorRT
    def _build_engines(self, bucket, manifest, cases, torch_inputs, vision, prefill, vision_file, prefill_file):
        """One engine per graph of the bucket (vision, prefill and, where the bucket has one, the static
        decode graph, whose shapes are all static: no optimization profile) and the shared graphs once. Engines that run here
        (``--backend tensorrt``) are run on the calibration clip and compared with PyTorch like the ONNX
        Runtime gate; ahead-of-time engines (``--backend tensorrt-rtx``) are recorded as built, not run.
        A failure removes the engine files this call wrote."""
        from ffexport.export.tensorrt import run_engine
        from ffexport.export.trt_toolkit import EngineProfiles

        profiles = EngineProfiles(visual_tokens=tuple(b.visual_tokens for b in self.buckets),
                                  max_text=self.config.max_text, max_new_tokens=self.config.max_new_tokens)
        layers = self.loaded.num_layers
        pixels = cases[0].pixel_values_videos
        engines, passed, written = {}, True, []
        graphs = [("vision", vision_file), ("prefill", prefill_file)]
        static = self._static_decode.get(bucket.name)
        if static is not None:
            graphs.append(("decode_static", static["file"]))
        try:
            for graph, file in graphs:
                engine_file = self.out / file.replace(".onnx", ".engine")
                written.append(engine_file)
                record = self.engines(self.out / file, engine_file, profiles.for_graph(graph, bucket.visual_tokens))
                engines[graph] = record
                if not self.engines.runs_here:
                    continue
                ti = torch_inputs[0]
                with torch.no_grad():
                    if graph == "vision":
                        feeds = {"pixel_values_videos": pixels}
                        # torch: bf16 has no numpy
                        expected = dict(zip(_vision_outputs(vision), _as_tuple(vision(torch.from_numpy(pixels)))))
                    elif graph == "decode_static":
                        feeds, expected = self._static_decode_step(prefill, ti, static["capacities"])
                    else:
                        # torch tensors (Polygraphy's TrtRunner takes them): bf16 has no numpy dtype
                        feeds = ti.feeds()
                        expected = dict(zip(["logits", *present_names(layers)], prefill(*ti.args())))
                got = run_engine(engine_file, feeds)
                outputs = [compare(k, got[k], v, self.tolerance).__dict__ for k, v in expected.items()]
                record["parity"] = {"passed": all(o["passed"] for o in outputs), "outputs": outputs}
                passed = passed and record["parity"]["passed"]
            if "engines" not in manifest:  # the shared graphs, once per build
                shared = {}
                for kind in ("embed", "decode"):
                    written.append(self.out / f"{kind}.engine")
                    shared[kind] = self.engines(self.out / f"{kind}.onnx", self.out / f"{kind}.engine",
                                                profiles.for_graph(kind))
                manifest["engines"] = shared
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return engines, passed

    def _static_decode_step(self, prefill: PrefillGraph, ti, capacities: list[int]):
        """Feeds and PyTorch's outputs for one step of the static decode graph after the prefill of ``ti``:
        the prefill's caches copied into buffers of the graph's capacities, its greedy token next."""
        layers = self.loaded.num_layers
        logits, *presents = prefill(*ti.args())
        caches, lengths = [], []
        for i, present in enumerate(presents):
            cache = present.new_zeros(*present.shape[:2], capacities[i // 2], present.shape[3])
            cache[:, :, :present.shape[2]] = present
            caches.append(cache)
            lengths.append(present.shape[2])
        inputs = (logits.reshape(-1, logits.shape[-1])[-1].argmax().reshape(1, 1),
                  torch.full((3, 1), int(ti.positions.max()) + 1, dtype=torch.int64),
                  torch.tensor(lengths[::2], dtype=torch.int64), *caches)
        names = ["input_ids", "position_ids", "cache_lengths", *present_names(layers, "past_key_values")]
        outputs = StaticDecodeStep(self.decoder, self.embed).eval()(*inputs)
        return dict(zip(names, inputs)), dict(zip(["logits", *present_names(layers)], outputs))

    # ================================================================ shared graphs
    def _build_shared(self, manifest, store, steps, case: Case, inputs: "TorchInputs", prefill: PrefillGraph):
        steps.start("export token embedding graph")
        embed = EmbedTokens(self.embed).eval()
        ids = torch.from_numpy(case.input_ids)
        length = torch.export.Dim("L", min=2, max=32768)
        self._save_graph(GraphSpec("embed", embed, (ids,), ["input_ids"], ["inputs_embeds"], ({1: length},)),
                         "embed.onnx", store)
        steps.advance()
        steps.start("export decode graph")
        layers = self.loaded.num_layers
        with torch.no_grad():
            logits, *presents = prefill(*inputs.args())
        token = torch.tensor([[int(logits.argmax())]])
        position = torch.full((3, 1), case.input_ids.shape[1] + inputs.delta, dtype=torch.int64)
        decode = DecodeStep(self.decoder, self.embed).eval()
        dims = [torch.export.Dim(f"past_{i}", min=1, max=32768) for i in range(layers)]
        dynamic = {"input_ids": None, "position_ids": None, "past": tuple({2: dims[i // 2]} for i in range(2 * layers))}
        past_names = present_names(layers, "past_key_values")
        self._save_graph(GraphSpec("decode", decode, (token, position, *presents), ["input_ids", "position_ids", *past_names],
                                   ["logits", *present_names(layers)], dynamic), "decode.onnx", store)
        steps.advance()
        parity_dir = self.out / "parity"
        embed_report, _ = self.gate("embed", self.out / "embed.onnx", {"input_ids": case.input_ids},
                                    {"inputs_embeds": embed(ids).detach().numpy()}, parity_dir)
        feeds = {"input_ids": token.numpy(), "position_ids": position.numpy()}
        feeds.update({n: t.numpy() for n, t in zip(past_names, presents)})
        with torch.no_grad():
            expected = decode(token, position, *presents)
        expected_np = dict(zip(["logits", *present_names(layers)], (t.numpy() for t in expected)))
        decode_report, _ = self.gate("decode", self.out / "decode.onnx", feeds, expected_np, parity_dir)
        for name, report in (("embed", embed_report), ("decode", decode_report)):
            manifest["graphs"][name] = {"file": f"{name}.onnx", **graph_io(self.out / f"{name}.onnx"),
                                        "parity": report.to_json()}
            if not report.passed:
                log.warning("the shared %s graph does not match PyTorch (see manifest.json)", name)

    # ================================================================ parity
    def _case_names(self):
        from ffexport.export.policy import CALIBRATION_KIND, CALIBRATION_SEED

        return [(f"synthetic:{CALIBRATION_KIND}:{CALIBRATION_SEED}", (CALIBRATION_KIND, CALIBRATION_SEED))] + [
            (f"synthetic:{k}:{s}", (k, s)) for k, s in PARITY_VIDEOS]

    def _parity_cases(self, bucket: Bucket) -> list[Case]:
        cases = [calibration_case(self.loaded, bucket)]
        h, w = bucket.resized
        for kind, seed in PARITY_VIDEOS:
            clip = synthetic_video(kind, frames=bucket.frames, height=h, width=w, seed=seed)
            cases.append(video_case(self.loaded, clip, "What is in this video?"))
        return cases

    def _torch_inputs(self, case: Case) -> "TorchInputs":
        ref = Reference(self.loaded)
        p = ref.prepare(case)
        return TorchInputs(p.inputs_embeds, p.position_ids, p.video_start, p.rope_delta, p.layout, p.deepstack)

    def _bucket_parity(self, bucket, schedule, cases, torch_inputs, vision, prefill, vision_file, prefill_file,
                       bucket_dir) -> tuple[list[GraphReport], list[dict[str, Any]]]:
        reports: dict[str, GraphReport] = {}
        e2e = []
        names = self._case_names()
        for i, (case, ti) in enumerate(zip(cases, torch_inputs)):
            save = bucket_dir / "parity" if i == 0 else None
            pixels = case.pixel_values_videos
            with torch.no_grad():
                feats = {k: v.numpy() for k, v in zip(_vision_outputs(vision), _as_tuple(vision(torch.from_numpy(pixels))))}
            vis_report, _ = self.gate("vision", self.out / vision_file, {"pixel_values_videos": pixels}, feats, save)
            with torch.no_grad():
                outs = prefill(*ti.args())
            expected = dict(zip(["logits", *present_names(self.loaded.num_layers)], (t.numpy() for t in outs)))
            feeds = {k: v.numpy() for k, v in ti.feeds().items()}
            pre_report, _ = self.gate("prefill", self.out / prefill_file, feeds, expected, save)
            for r in (vis_report, pre_report):
                reports[r.graph] = _worst(reports.get(r.graph), r)
            e2e.append(self._end_to_end(names[i][0], bucket, schedule, case, vision_file, prefill_file))
        return list(reports.values()), e2e

    def _contract(self, bucket, schedule, origin, cases, torch_inputs, vision_file, prefill_file,
                  layout: FrameLayout) -> dict[str, Any]:
        """The parity contract and the oracle on every parity video (:mod:`ffexport.export.contract`)."""
        from ffexport.export.contract import ParityVideo, ScheduleContract, schedule_kind

        videos = [ParityVideo(n, c, ti.embeds, ti.positions, ti.start, ti.deepstack)
                  for (n, _), c, ti in zip(self._case_names(), cases, torch_inputs)]

        def export_prefill(other: Schedule, directory: Path) -> Path:
            module = self._prefill_module(other)
            return self._save_contract_graph(self._prefill_spec(module, bucket, torch_inputs[0]), directory,
                                             f"{bucket.name}.prefill.onnx")

        contract = ScheduleContract(
            self.loaded, fusion=self.config.fusion, runner=self.runner, out=self.out, vision_file=vision_file,
            prefill_file=prefill_file, export_prefill=export_prefill, tolerance=self.tolerance,
            precision=self.graph_precision, tokens=self.config.check_tokens, visual_tokens=bucket.visual_tokens,
            patches_per_frame=bucket.patches_per_frame, layout=layout)(schedule, schedule_kind(origin), videos)
        log.info("bucket %s: contract %s on %d video(s) (static graph on the realized schedule vs dynamic: max |diff| "
                 "%s), oracle %s (%d compared, %d ambiguous, %d not run), %.1f s, %d graph(s) exported",
                 bucket.name, "passed" if contract["contract_passed"] else "FAILED", contract["compared"],
                 _fmt(contract["logits_max_abs"]), "passed" if contract["oracle"]["passed"] else "FAILED",
                 contract["oracle"]["compared"], contract["oracle"]["ambiguous"], contract["oracle"]["not_run"],
                 contract["seconds"], contract["graphs_exported"])
        return contract

    def _save_contract_graph(self, spec: GraphSpec, directory: Path, filename: str) -> Path:
        """A graph for the contract check only, in ``directory`` with its own weight file (the build's
        ``weights.bin`` is never touched by the check)."""
        directory.mkdir(parents=True, exist_ok=True)
        model = self.capture(spec)
        SharedWeights(directory).externalize(model)
        return save_checked(model, directory, filename)

    def _end_to_end(self, case_name, bucket, schedule, case, vision_file, prefill_file):
        """The whole ONNX Runtime pipeline (embed, vision, prefill, decode) vs the PyTorch static
        reference with the deployed schedule: greedy tokens and prefill logits (the graphs against the
        code they were captured from; the contract with the dynamic reference is :meth:`_contract`)."""
        n_tokens = self.config.check_tokens
        ort_logits, ort_tokens = run_graphs(self.runner, self.out, case, vision_file, prefill_file,
                                            self.loaded.config, self.loaded.adapter, n_tokens)
        static_decode = self._static_decode.get(bucket.name)
        in_place = ort_tokens if static_decode is None else run_graphs(
            self.runner, self.out, case, vision_file, prefill_file, self.loaded.config, self.loaded.adapter, n_tokens,
            static_decode=static_decode)[1]
        static = Reference(self.loaded, schedule=schedule, max_new_tokens=n_tokens)(case)
        self._references[(bucket.name, case_name)] = static  # the int8 gate compares with it too
        record = {
            "case": case_name,
            "logits": compare("logits", ort_logits, static.logits, self.tolerance).__dict__,
            "tokens_equal": ort_tokens == static.generated_ids[0].tolist() and in_place == ort_tokens,
            "generated_ids": ort_tokens,
            "static_decode_ids": in_place,
        }
        return record


def contract_record(contract: dict[str, Any]) -> dict[str, Any]:
    """The manifest's summary of a bucket's contract check (the details are in parity.json)."""
    oracle = contract["oracle"]
    return {"schedule_kind": contract["schedule_kind"], "passed": contract["passed"], "compared": contract["compared"],
            "logits_max_abs": contract["logits_max_abs"], "proven": contract["proven"],
            "oracle": {k: oracle[k] for k in ("compared", "ambiguous", "not_run", "passed", "logits_max_abs", "note")},
            "fidelity": contract["fidelity"]}


def _int8_summary(int8: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's summary of a bucket's int8 gate (the details are in parity.json)."""
    if int8 is None:
        return {}
    return {"precision": "int8", "int8": {k: int8[k] for k in ("passed", "thresholds", "worst", "note") if k in int8}}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1e}"


@dataclass(frozen=True)
class TorchInputs:
    """A case as the prefill takes it (PyTorch vision features in place)."""

    embeds: torch.Tensor
    positions: torch.Tensor
    start: torch.Tensor
    delta: int
    #: the video's frame blocks (None: one contiguous block)
    layout: FrameLayout | None = None
    #: Qwen3-VL's DeepStack levels [k, N, D] (None: the family has none)
    deepstack: torch.Tensor | None = None

    def args(self) -> tuple[torch.Tensor, ...]:
        """The prefill graph's inputs, in order."""
        return tuple(self.feeds().values())

    def feeds(self) -> dict[str, torch.Tensor]:
        """The prefill graph's inputs by name."""
        feeds = {"inputs_embeds": self.embeds, "position_ids": self.positions, "video_start": self.start}
        if self.deepstack is not None:
            feeds[DEEPSTACK_INPUT] = self.deepstack
        return feeds


def _vision_outputs(vision: torch.nn.Module) -> list[str]:
    """The vision graph's output names (the DeepStack levels second where the tower has them)."""
    return list(getattr(vision, "output_names", ["video_features"]))


def _as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)



def _blocks_record(layout: FrameLayout) -> dict[str, Any]:
    """The manifest's ``frame_blocks`` of a bucket whose video has text between frame blocks (what the
    runtime's prompt must reproduce; docs/build-format.md); nothing for one contiguous block."""
    return {} if layout.is_contiguous else {"frame_blocks": layout.to_json()}


def _side(value) -> int:
    """A square size given as ``n`` or ``[n, n]`` (InternViT's configs use the pair)."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _worst(a: GraphReport | None, b: GraphReport) -> GraphReport:
    """Per output, the larger error of two runs of the same graph (and pass only if both passed)."""
    if a is None:
        return b
    merged = GraphReport(a.graph, a.file, a.runtime)
    for x, y in zip(a.outputs, b.outputs, strict=True):
        merged.outputs.append(OutputReport(x.name, x.shape, max(x.max_abs, y.max_abs), max(x.max_rel, y.max_rel),
                                           x.atol, x.rtol, x.passed and y.passed))
    return merged


def run_graphs(runner: OrtRunner, out: Path, case: Case, vision_file: str, prefill_file: str, config, adapter,
               max_new_tokens: int, *, static_decode: dict[str, Any] | None = None,
               decode_file: str = "decode.onnx") -> tuple[np.ndarray, list[int]]:
    """Run a case through the saved graphs with ONNX Runtime (embed -> vision -> prefill -> decode);
    ``static_decode`` (a bucket's manifest record): decode with that graph, caches updated in place;
    otherwise with ``decode_file``."""
    # the video tokens: one run, or frame blocks with text between them; features go to them in order
    video_rows = np.flatnonzero(case.input_ids[0] == adapter.video_token_id(config))
    start = int(video_rows[0])
    embeds = runner.run(out / "embed.onnx", {"input_ids": case.input_ids})["inputs_embeds"]
    vision = runner.run(out / vision_file, {"pixel_values_videos": case.pixel_values_videos})
    feats = vision["video_features"]
    embeds = embeds.copy()
    embeds[0, video_rows] = feats
    positions, delta = adapter.position_ids(config, case.input_ids, case.video_grid_thw)
    deepstack = {k: vision[k] for k in (DEEPSTACK_INPUT,) if k in vision}  # Qwen3-VL: the levels go as they are
    outs = runner.run(out / prefill_file, {"inputs_embeds": embeds, "position_ids": positions,
                                           "video_start": np.array(start, dtype=np.int64), **deepstack})
    logits = outs["logits"]
    layers = adapter.num_layers(config)
    past = {f"past_key_values.{i}.{k}": outs[f"present.{i}.{k}"] for i in range(layers) for k in ("key", "value")}
    tokens: list[int] = []
    step_logits = logits
    first = case.input_ids.shape[1] + delta
    if static_decode is not None:
        from ffexport.runtime.kv_cache import StaticCacheDecoder

        decoder = StaticCacheDecoder(runner.session(out / static_decode["file"]), static_decode["capacities"])
        decoder.start({name[len("past_key_values."):]: value for name, value in past.items()})
    for k in range(max_new_tokens):
        token = int(step_logits[0].argmax())
        tokens.append(token)
        if k == max_new_tokens - 1:
            break
        if static_decode is not None:
            step_logits = decoder.step(token, first + k)
            continue
        feeds = {"input_ids": np.array([[token]], dtype=np.int64),
                 "position_ids": np.full((3, 1), first + k, dtype=np.int64), **past}
        outs = runner.run(out / decode_file, feeds)
        step_logits = outs["logits"]
        past = {f"past_key_values.{i}.{kk}": outs[f"present.{i}.{kk}"] for i in range(layers) for kk in ("key", "value")}
    return logits, tokens

"""``PrefillBench(loaded, config)()``: one bucket's prefill variants, timed side by side.

Inputs: the bucket's calibration clip (the default policy's synthetic video) with the default
prompt, preprocessed and run through the vision encoder once; a model without a tokenizer (random
weights of a preset not in the local cache) gets a fixed synthetic text around the video instead.
Schedule: the one the dynamic reference realizes on these inputs (what ``ffexport build``'s default
policy deploys for the bucket), or a given one.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ffexport
from ffexport.bench.flops import ModelDims, prefill_flops
from ffexport.bench.memory import PeakMemory
from ffexport.bench.timer import Timer, Timing
from ffexport.case import Case
from ffexport.errors import InputError, ScheduleError
from ffexport.export.buckets import Bucket, fixed_size_tower, model_bucket
from ffexport.export.policy import CALIBRATION_KIND, CALIBRATION_SEED, calibration_case
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel
from ffexport.progress import Steps

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")
DEVICES = ("cpu", "cuda")
#: text around the video when the model has no tokenizer: ids before and after the video span
SYNTHETIC_TEXT = (20, 14)


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    bucket: str
    runtime: str = "torch"
    device: str = "cpu"
    fusion: FusionConfig = field(default_factory=FusionConfig)
    schedule: Schedule | None = None
    repeats: int = 5
    warmup: int = 1
    #: CPU threads for PyTorch and ONNX Runtime (None: every core this process may use)
    threads: int | None = None
    #: longest text the captured ONNX graphs accept (as ``ffexport build --max-text``)
    max_text: int = 256
    #: also time CUDA-graph replays of the full and static prefills (--device cuda)
    cuda_graphs: bool = True
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise InputError(f"--runtime {self.runtime}: use one of {', '.join(RUNTIMES)}")
        if self.device not in DEVICES:
            raise InputError(f"--device {self.device}: use one of {', '.join(DEVICES)}")
        if self.repeats < 1 or self.warmup < 0:
            raise InputError(f"--repeats must be >= 1 and --warmup >= 0, got {self.repeats}, {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be positive, got {self.threads}")


@dataclass
class Variant:
    name: str
    timing: Timing
    final_visual_tokens: int
    flops: int
    note: str = ""
    #: where the memory figure comes from when not the timing's own (ONNX Runtime: a fresh process)
    memory: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "final_visual_tokens": self.final_visual_tokens, "flops": self.flops,
                "note": self.note, **self.timing.to_json(),
                **({"process_memory": self.memory} if self.memory is not None else {})}


@dataclass
class BenchResult:
    meta: dict[str, Any]
    schedule: Schedule
    dynamic_schedule: Schedule | None
    variants: list[Variant]
    flops_full: int
    flops_static: int
    ideal: float
    #: the same schedule's FLOP ratio on the preset's full depth (truncated random-weight models)
    ideal_full_depth: float | None
    share: dict[str, Any]
    export: dict[str, Any] | None = None

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def headline(self) -> tuple[str, str]:
        """The pair the speed-up compares: CUDA graphs on both sides when both were captured."""
        if self.variant("full (CUDA graph)") and self.variant("static (CUDA graph)"):
            return "full (CUDA graph)", "static (CUDA graph)"
        return "full", "static"

    @property
    def speedup(self) -> float:
        full, static = (self.variant(n) for n in self.headline)
        return full.timing.median / static.timing.median

    @property
    def paired_speedup(self) -> float:
        """Median over rounds of full/static within the same round: the rounds are interleaved, so each
        pair saw nearly the same machine load (robust when the load drifts during a run)."""
        full, static = (self.variant(n) for n in self.headline)
        return statistics.median(f / s for f, s in zip(full.timing.samples, static.timing.samples))

    def to_json(self) -> dict[str, Any]:
        dyn = self.variant("dynamic")
        return {
            "format": "ffexport.bench/1", **self.meta,
            "schedule": self.schedule.to_json(),
            "dynamic_schedule": self.dynamic_schedule.to_json() if self.dynamic_schedule is not None else None,
            "same_token_budget": self.dynamic_schedule == self.schedule if self.dynamic_schedule else None,
            "flops": {"full": self.flops_full, "static": self.flops_static},
            "ideal_speedup": self.ideal, "ideal_speedup_full_depth": self.ideal_full_depth,
            "speedup": self.speedup, "speedup_pair": list(self.headline), "paired_speedup": self.paired_speedup,
            "measured_over_ideal": self.speedup / self.ideal,
            "dynamic_over_static": (dyn.timing.median / self.variant("static").timing.median) if dyn else None,
            "merge_prune_share": self.share, "export": self.export,
            "variants": [v.to_json() for v in self.variants],
        }


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bench_case(loaded: LoadedModel, bucket: Bucket) -> tuple[Case, str]:
    """The calibration clip at the bucket's size with the default prompt (or a synthetic text)."""
    from ffexport.calibrate.collect import bucket_case, in_frame_blocks

    if loaded.tokenizer is not None:
        return calibration_case(loaded, bucket), f"synthetic:{CALIBRATION_KIND} seed {CALIBRATION_SEED}, default prompt"
    # the adapter's prompt (template, or frame blocks) in the tiny byte tokenizer's ids, as calibrate does
    if fixed_size_tower(loaded.adapter) or in_frame_blocks(loaded, bucket):
        from ffexport.video import synthetic_video

        h, w = bucket.resized
        clip = synthetic_video(CALIBRATION_KIND, frames=bucket.frames, height=h, width=w, seed=CALIBRATION_SEED)
        return bucket_case(loaded, clip, bucket), (f"synthetic:{CALIBRATION_KIND} seed {CALIBRATION_SEED}, default "
                                                   "prompt in stand-in byte ids (no tokenizer)")
    from ffexport.video import preprocess_video, synthetic_video

    cfg, vision = loaded.config, loaded.config.vision_config
    h, w = bucket.resized
    clip = synthetic_video(CALIBRATION_KIND, frames=bucket.frames, height=h, width=w, seed=CALIBRATION_SEED)
    low, high = loaded.video_pixels or (None, None)
    pixels, grid = preprocess_video(clip, patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                                    merge_size=vision.spatial_merge_size, min_pixels=low, max_pixels=high)
    special = [cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.image_token_id]
    rng = np.random.default_rng(0)
    before, after = (rng.integers(0, min(special), size=k) for k in SYNTHETIC_TEXT)
    ids = np.concatenate([before, [cfg.vision_start_token_id], np.full(bucket.visual_tokens, cfg.video_token_id),
                          [cfg.vision_end_token_id], after]).astype(np.int64)
    text = ids.size - bucket.visual_tokens
    source = f"synthetic:{CALIBRATION_KIND} seed {CALIBRATION_SEED}, {text} synthetic text tokens (no tokenizer)"
    return Case(ids.reshape(1, -1), pixels, grid.reshape(1, 3).astype(np.int64)), source


def prepare_inputs(loaded: LoadedModel, case: Case, device: str):
    """The prefill's inputs on ``device``: embeddings with the vision encoder's features in place, the
    positions, the video start. A family whose adapter prepares its own inputs (``prepare_inputs``: a
    fixed-size tower and 1D positions) does it on the CPU; the Qwen families run the vision encoder on
    ``device`` (a GPU encodes thousands of patches in seconds) with M-RoPE positions."""
    from ffexport.bench.torch_runtime import TorchInputs

    model, adapter, config = loaded.model, loaded.adapter, loaded.config
    if hasattr(adapter, "prepare_inputs"):
        return _adapter_inputs(loaded, case, device)
    model.to(device)
    start, end = case.video_span(adapter.video_token_id(config))
    positions, _ = adapter.position_ids(config, case.input_ids, case.video_grid_thw)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        pixels = torch.from_numpy(case.pixel_values_videos).to(device=device, dtype=dtype)
        features = adapter.video_features(model, pixels, torch.from_numpy(case.video_grid_thw).to(device))
        embeds = adapter.embed_tokens(model, torch.from_numpy(case.input_ids).to(device)).clone()
        embeds[0, start:end] = features.to(embeds.dtype)
    return TorchInputs(embeds, torch.from_numpy(positions).to(device), torch.tensor(start, dtype=torch.int64,
                       device=device), end - start, adapter.patches_per_frame(config, case.grid))


def _adapter_inputs(loaded: LoadedModel, case: Case, device: str):
    """The adapter's own inputs (prepared with the model on the CPU), then the model and inputs on ``device``:
    with the prompt's frame blocks (text between them: InternVL, Qwen3-VL) and DeepStack levels (Qwen3-VL)
    where the family has them, as the build's prefill graphs take them."""
    from ffexport.bench.torch_runtime import TorchInputs

    model = loaded.model.to("cpu")
    p = loaded.adapter.prepare_inputs(model, case)
    layout, deepstack = p.get("layout"), p.get("deepstack")
    model.to(device)
    return TorchInputs(p["inputs_embeds"].to(device), p["position_ids"].to(device),
                       p["video_start"].to(device), int(p["visual_tokens"]), int(p["patches_per_frame"]),
                       None if layout is None or layout.is_contiguous else layout,
                       None if deepstack is None else deepstack.to(device))


def _check_blocks(schedule: Schedule | None, inputs) -> None:
    """A given schedule must lay its frame blocks out as the bucket's prompt does (one line otherwise)."""
    if schedule is None:
        return
    layout = inputs.empty_schedule().frame_layout
    if schedule.frame_layout != layout:
        raise ScheduleError(f"the schedule's frame blocks {schedule.frame_layout.to_json()} are not the bucket's "
                            f"prompt's {layout.to_json()}")


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": _default_threads(), "memory_gib": _memory_gib(), "platform": platform.platform(),
            "python": platform.python_version()}


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes compete for the cores)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(ffexport.__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class PrefillBench:
    """``PrefillBench(loaded, config)() -> BenchResult``."""

    def __init__(self, loaded: LoadedModel, config: BenchConfig) -> None:
        self.loaded, self.config = loaded, config
        self.bucket = model_bucket(loaded.adapter, loaded.config, config.bucket, video_pixels=loaded.video_pixels)
        s = config.schedule
        if s is not None:
            if (s.visual_tokens, s.patches_per_frame) != (self.bucket.visual_tokens, self.bucket.patches_per_frame):
                raise ScheduleError(f"the schedule is for {s.visual_tokens} visual tokens ({s.patches_per_frame} per "
                                    f"frame); bucket {self.bucket.name} has {self.bucket.visual_tokens} "
                                    f"({self.bucket.patches_per_frame} per frame)")
            s.validate(loaded.num_layers)
        self.dtype = next(loaded.model.parameters()).dtype
        if config.runtime == "onnxruntime" and self.dtype not in (torch.float32, torch.float16):
            raise InputError(f"--runtime onnxruntime benchmarks fp32 or fp16 graphs, not {self.dtype} (use --dtype "
                             "float32 or float16)")
        self.threads = config.threads or _default_threads()

    # ---------------------------------------------------------------- driver
    def __call__(self) -> BenchResult:
        from ffexport.bench.torch_runtime import realized_schedule

        cfg, loaded, bucket = self.config, self.loaded, self.bucket
        device = cfg.device
        load_start = _load_average()
        torch.set_num_threads(self.threads)
        total = 3 + (2 if cfg.runtime == "onnxruntime" else 1)
        with Steps(total, f"bench {bucket.name}", quiet=cfg.quiet) as steps:
            steps.start("inputs (vision encoder)")
            case, case_source = bench_case(loaded, bucket)
            inputs = prepare_inputs(loaded, case, device)
            _check_blocks(cfg.schedule, inputs)
            decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
            steps.advance()
            steps.start("schedule (dynamic reference)")
            dynamic = realized_schedule(decoder, inputs, cfg.fusion)
            schedule = cfg.schedule or dynamic
            if not any(s.remove for s in schedule.stages):
                raise ScheduleError("the schedule removes no visual token (nothing to compare); lower --similarity "
                                    "or give a --schedule")
            steps.advance()
            # every token but the visual ones is text: the prompt and, with frame blocks, the text between them
            text_tokens = case.input_ids.shape[1] - bucket.visual_tokens
            text_cfg = loaded.config.text_config
            dims = ModelDims.from_config(text_cfg)
            n = bucket.visual_tokens
            flops = {
                "full": prefill_flops(dims, None, text_tokens=text_tokens, visual_tokens=n).total,
                "static": prefill_flops(dims, schedule, text_tokens=text_tokens, visual_tokens=n).total,
                "dynamic": prefill_flops(dims, dynamic, text_tokens=text_tokens, visual_tokens=n).total,
            }
            ideal_full_depth = self._ideal_full_depth(dims, schedule, text_tokens)
            if cfg.runtime == "torch":
                variants, share, export = self._torch(decoder, inputs, schedule, dynamic, flops, steps)
            else:
                variants, share, export = self._onnxruntime(inputs, schedule, flops, steps)
        meta = {
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": git_commit(), "ffexport": ffexport.__version__,
            "model": loaded.name, "model_source": loaded.source, "num_layers": loaded.num_layers,
            "hidden_size": text_cfg.hidden_size, "dtype": str(self.dtype).removeprefix("torch."),
            "bucket": bucket.name, "grid_thw": list(bucket.grid_thw), "visual_tokens": n,
            "patches_per_frame": bucket.patches_per_frame, "text_tokens": text_tokens, "inputs": case_source,
            "frame_blocks": len(schedule.frame_layout.blocks),
            "text_between_blocks": schedule.frame_layout.text_tokens,
            "deepstack_levels": 0 if inputs.deepstack is None else int(inputs.deepstack.shape[0]),
            "fusion": {"cost": cfg.fusion.cost, "similarity": cfg.fusion.similarity,
                       "ratio_lower_bound": cfg.fusion.ratio_lower_bound,
                       "budget_layers": cfg.fusion.layers_for(loaded.num_layers)},
            "schedule_source": "given" if cfg.schedule is not None else "realized by the dynamic reference on the inputs",
            "runtime": cfg.runtime, "device": device, "threads": self.threads,
            "warmup": cfg.warmup, "repeats": cfg.repeats, "machine": machine_facts(), "tools": self._tools(),
            "load_average_start": load_start, "load_average_end": _load_average(),
        }
        if device == "cuda":
            meta["gpu"] = torch.cuda.get_device_name(0)
        return BenchResult(meta, schedule, dynamic, variants, flops["full"], flops["static"],
                           flops["full"] / flops["static"], ideal_full_depth, share, export)

    def _tools(self) -> dict[str, str]:
        tools = {"torch": torch.__version__}
        if self.config.runtime == "onnxruntime":
            import onnxruntime

            tools["onnxruntime"] = onnxruntime.__version__
        return tools

    def _ideal_full_depth(self, dims: ModelDims, schedule: Schedule, text_tokens: int) -> float | None:
        from ffexport.models import PRESETS

        preset = PRESETS.get(self.loaded.name)
        if preset is None:
            return None
        depth = preset.config().text_config.num_hidden_layers
        if depth == dims.layers:
            return None
        deep = ModelDims(**{**dims.__dict__, "layers": depth})
        n = schedule.visual_tokens
        return (prefill_flops(deep, None, text_tokens=text_tokens, visual_tokens=n).total
                / prefill_flops(deep, schedule, text_tokens=text_tokens, visual_tokens=n).total)

    def _timer(self, steps: Steps, sync=None) -> Timer:
        return Timer(warmup=self.config.warmup, repeats=self.config.repeats, sync=sync,
                     memory=lambda: PeakMemory(self.config.device), progress=steps.start)

    # ---------------------------------------------------------------- PyTorch
    def _torch(self, decoder, inputs, schedule, dynamic, flops, steps):
        from ffexport.bench.torch_runtime import StepTimedDecoder, TorchPrefillVariants, step_share, synchronizer

        cfg = self.config
        sync = synchronizer(cfg.device)
        built = TorchPrefillVariants(decoder, inputs, schedule, cfg.fusion, dynamic, device=cfg.device,
                                     cuda_graphs=cfg.cuda_graphs)()
        timings = self._timer(steps, sync)(built.calls)
        steps.advance()
        steps.start("merge/prune share")
        timed = StepTimedDecoder(self.loaded.adapter.decoder_parts(self.loaded.model), sync)
        share = step_share(timed, inputs, schedule, cfg.repeats)
        steps.advance()
        variants = []
        for name, timing in timings.items():
            s = built.schedules[name]
            kind = "full" if s is None else "dynamic" if name == "dynamic" else "static"
            final = s.final_visual_tokens if s is not None else inputs.visual_tokens
            variants.append(Variant(name, timing, final, flops[kind], built.notes[name]))
        return variants, share, None

    # ---------------------------------------------------------------- ONNX Runtime
    def _onnxruntime(self, inputs, schedule, flops, steps):
        import onnxruntime as ort

        from ffexport.bench.ort_runtime import ExportPrefillGraphs, prefill_input_names, probe_memory, profile_share
        from ffexport.bench.probe import providers_for, session_options

        cfg = self.config
        providers = providers_for(cfg.device)
        empty = inputs.empty_schedule()
        example = tuple(t.cpu() for t in inputs.args())
        feeds = dict(zip(prefill_input_names(inputs.deepstack is not None), (t.numpy() for t in example), strict=True))
        with tempfile.TemporaryDirectory(prefix="ffexport-bench-") as tmp:
            directory = Path(tmp)
            export = ExportPrefillGraphs(self.loaded.adapter.decoder_parts(self.loaded.model), directory,
                                         max_text=cfg.max_text)
            steps.start("export the static prefill graph")
            start = time.perf_counter()
            with PeakMemory("cpu") as export_memory:
                static_path, step_names = export("static", schedule, example)
            export_info = {"graph": "static prefill", "seconds": time.perf_counter() - start,
                           "memory": export_memory.to_json(),
                           "note": "in process: capture (torch.onnx dynamo), optimize, weights to the shared file, "
                                   "save; the PyTorch model is resident"}
            steps.start("export the full-model prefill graph")
            full_path, _ = export("full", empty, example)
            steps.advance()
            options = session_options(self.threads)
            sessions = {"full": ort.InferenceSession(str(full_path), options, providers=providers),
                        "static": ort.InferenceSession(str(static_path), options, providers=providers)}
            calls = {name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()}
            timings = Timer(warmup=cfg.warmup, repeats=cfg.repeats, memory=lambda: PeakMemory("cpu"),
                            progress=steps.start)(calls)
            steps.advance()
            del sessions, calls
            steps.start("merge/prune share (ONNX Runtime profiler), memory (fresh processes)")
            share = profile_share(static_path, feeds, step_names, threads=self.threads, runs=cfg.repeats,
                                  device=cfg.device, workdir=directory)
            feeds_file = directory / "feeds.npz"
            np.savez(feeds_file, **feeds)
            memory = {name: probe_memory(path, feeds_file, threads=self.threads, device=cfg.device)
                      for name, path in (("full", full_path), ("static", static_path))}
            steps.advance()
        variants = [
            Variant("full", timings["full"], inputs.visual_tokens, flops["full"], "ONNX graph, no reduction",
                    memory["full"]),
            Variant("static", timings["static"], schedule.final_visual_tokens, flops["static"],
                    "ONNX graph, schedule baked in", memory["static"]),
        ]
        return variants, share, export_info

"""``ffexport bench --race``: ffexport against what a user runs today, in one process.

Four variants generate the same greedy continuation from the same inputs (the same
``inputs_embeds`` with the vision features in place, the same M-RoPE positions, the same threads):

(a) ``transformers sdpa``: transformers' ``Qwen2VLForConditionalGeneration`` with
    ``attn_implementation="sdpa"``, no reduction, its own ``DynamicCache`` (what users run today);
(b) ``onnxruntime full``: the full model exported like ``ffexport build`` (fused attention), ONNX
    Runtime prefill, then the build's static decode graph (``graphs.static_decode_spec``: caches
    preallocated at the prompt's length + ``new_tokens`` rows per layer, updated in place through IO
    binding by :class:`ffexport.runtime.kv_cache.StaticCacheDecoder`, as ``ffexport run`` decodes);
(c) ``ffexport reduced``: the static FrameFusion prefill graph and its own static decode graph,
    sized to the reduced per-layer caches (``graphs.cache_capacities`` of the schedule);
(d) ``dynamic reference``: ffexport's PyTorch reference with the data-dependent reducer.

Rounds are interleaved (the variants' order rotates); per variant: prefill (the prompt's logits),
time to first token (vision encoder + prefill; the encoder is the same for every variant and timed
once), decode tokens/s over the remaining ``new_tokens - 1`` steps, end to end (vision + prefill +
decode of ``new_tokens`` tokens; the ONNX Runtime variants' decode includes copying the prompt's
caches into the preallocated buffers, once per generation) and the peak resident memory of a generation (in process; the
weights of every variant stay resident, so "+MiB" is what the generation itself adds).
The FLOP ideal counts what the graphs compute: causal pairs (fused attention skips the masked half).
The end-to-end ideal adds the vision encoder (the same for every variant) and the decode steps over
each variant's caches (``flops.generation_flops``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import ffexport
from ffexport.bench.flops import (GenerationFlops, ModelDims, VisionDims, generation_flops, ideal_by_stage,
                                  vision_flops)
from ffexport.bench.memory import PeakMemory
from ffexport.bench.prefill import _load_average, bench_case, git_commit, machine_facts, prepare_inputs
from ffexport.errors import InputError, ScheduleError
from ffexport.export.buckets import model_bucket
from ffexport.export.graphs import cache_capacities
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.reducers import DynamicReducer
from ffexport.fusion.schedule import Schedule
from ffexport.models.loading import LoadedModel
from ffexport.progress import Steps
from ffexport.runtime.kv_cache import StaticCacheDecoder

log = logging.getLogger(__name__)

TRANSFORMERS, ORT_FULL, REDUCED, DYNAMIC = "transformers sdpa", "onnxruntime full", "ffexport reduced", "dynamic reference"
VARIANTS = (TRANSFORMERS, ORT_FULL, REDUCED, DYNAMIC)


@dataclass(frozen=True, kw_only=True)
class RaceConfig:
    bucket: str
    fusion: FusionConfig = field(default_factory=FusionConfig)
    schedule: Schedule | None = None
    repeats: int = 3
    warmup: int = 1
    threads: int | None = None
    max_text: int = 256
    new_tokens: int = 64
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0 or self.new_tokens < 1:
            raise InputError(f"--repeats and --new-tokens must be >= 1 and --warmup >= 0, got {self.repeats}, "
                             f"{self.new_tokens}, {self.warmup}")


@dataclass
class Generation:
    """One variant's samples: seconds per round, and the greedy tokens (the same every round)."""

    name: str
    prefill: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    memory: Any = None
    visual_tokens: int = 0
    flops: int = 0

    def median(self, what: str) -> float:
        return statistics.median(getattr(self, what))


@dataclass
class RaceResult:
    meta: dict[str, Any]
    schedule: Schedule
    vision_seconds: float
    variants: dict[str, Generation]
    generation_full: GenerationFlops
    generation_reduced: GenerationFlops

    @property
    def flops_full(self) -> int:
        return self.generation_full.prefill

    @property
    def flops_reduced(self) -> int:
        return self.generation_reduced.prefill

    @property
    def ideal(self) -> float:
        return self.flops_full / self.flops_reduced

    @property
    def ideal_end_to_end(self) -> float:
        """FLOPs of the full model's generation (vision + prefill + decode) over the reduced one's."""
        return self.generation_full.total / self.generation_reduced.total

    @property
    def ideal_end_to_end_by_stage(self) -> float:
        """transformers' measured stages, each scaled by its own FLOP ratio (``flops.ideal_by_stage``)."""
        t = self.variants[TRANSFORMERS]
        return ideal_by_stage(self.vision_seconds, t.median("prefill"), t.median("decode"), self.generation_full,
                              self.generation_reduced)

    def ttft(self, name: str) -> float:
        return self.vision_seconds + self.variants[name].median("prefill")

    def end_to_end(self, name: str) -> float:
        return self.ttft(name) + self.variants[name].median("decode")

    def decode_rate(self, name: str) -> float | None:
        steps = self.meta["new_tokens"] - 1
        return steps / self.variants[name].median("decode") if steps else None

    #: whose greedy tokens each variant must reproduce: the full ONNX graph those of transformers, the
    #: reduced graph those of the dynamic reference that realized its schedule (the parity contract)
    PAIRS = {ORT_FULL: TRANSFORMERS, REDUCED: DYNAMIC}

    def same_tokens(self, name: str) -> str:
        other = self.PAIRS.get(name)
        if other is None:
            return "-"
        equal = self.variants[name].tokens == self.variants[other].tokens
        return f"{'=' if equal else '!='} {other}"

    @property
    def prefill_speedup(self) -> float:
        return self.variants[TRANSFORMERS].median("prefill") / self.variants[REDUCED].median("prefill")

    @property
    def end_to_end_speedup(self) -> float:
        return self.end_to_end(TRANSFORMERS) / self.end_to_end(REDUCED)

    def to_json(self) -> dict[str, Any]:
        ref = self.variants[TRANSFORMERS].tokens
        return {
            "format": "ffexport.bench.race/1", **self.meta, "schedule": self.schedule.to_json(),
            "vision_seconds": self.vision_seconds, "flops": {"full": self.flops_full, "reduced": self.flops_reduced},
            "end_to_end_flops": {"full": vars(self.generation_full), "reduced": vars(self.generation_reduced)},
            "ideal_prefill_speedup": self.ideal, "prefill_speedup": self.prefill_speedup,
            "ideal_end_to_end_speedup": self.ideal_end_to_end, "end_to_end_speedup": self.end_to_end_speedup,
            "ideal_end_to_end_by_stage": self.ideal_end_to_end_by_stage,
            "variants": [{
                "name": g.name, "visual_tokens_left": g.visual_tokens, "flops": g.flops,
                "prefill_s": g.prefill, "decode_s": g.decode, "prefill_median_s": g.median("prefill"),
                "ttft_s": self.ttft(g.name), "decode_tokens_per_s": self.decode_rate(g.name),
                "end_to_end_s": self.end_to_end(g.name), "tokens": g.tokens, "tokens_equal_transformers": g.tokens == ref,
                "tokens_equal_dynamic": g.tokens == self.variants[DYNAMIC].tokens,
                "memory": g.memory.to_json() if g.memory is not None else None,
            } for g in self.variants.values()],
        }


class _Variant:
    """``prefill() -> (first token, state)`` and ``step(token, position, state) -> (next token, state)``."""

    prefill: Callable[[], tuple[int, Any]]
    step: Callable[[int, int, Any], tuple[int, Any]]


class Race:
    """``Race(loaded, config)() -> RaceResult``."""

    def __init__(self, loaded: LoadedModel, config: RaceConfig) -> None:
        self.loaded, self.config = loaded, config
        rule = loaded.adapter.positions_record(loaded.config).get("rule")
        if rule != "mrope":
            raise InputError(f"--race feeds transformers' model M-RoPE position ids; {loaded.name} has {rule!r} "
                             "positions, not wired into the race (run ffexport bench without --race)")
        self.bucket = model_bucket(loaded.adapter, loaded.config, config.bucket, video_pixels=loaded.video_pixels)
        if next(loaded.model.parameters()).dtype != torch.float32:
            raise InputError("--race compares fp32 graphs (ONNX Runtime CPU); load the model in float32")
        if getattr(loaded.model.config, "_attn_implementation", None) != "sdpa":
            raise InputError("--race needs the transformers model with attn_implementation='sdpa'")
        from ffexport.bench.prefill import _default_threads

        self.threads = config.threads or _default_threads()

    def __call__(self) -> RaceResult:
        import onnxruntime as ort

        from ffexport.bench.ort_runtime import ExportPrefillGraphs
        from ffexport.bench.probe import session_options
        from ffexport.bench.torch_runtime import realized_schedule

        cfg, loaded, bucket = self.config, self.loaded, self.bucket
        torch.set_num_threads(self.threads)
        load_start = _load_average()
        with Steps(4, f"race {bucket.name}", quiet=cfg.quiet) as steps, \
                tempfile.TemporaryDirectory(prefix="ffexport-race-") as tmp:
            steps.start("inputs (vision encoder)")
            case, source = bench_case(loaded, bucket)
            start = time.perf_counter()
            inputs = prepare_inputs(loaded, case, "cpu")
            vision_seconds = time.perf_counter() - start
            decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
            steps.advance()
            steps.start("schedule (dynamic reference)")
            dynamic = realized_schedule(decoder, inputs, cfg.fusion)
            schedule = cfg.schedule or dynamic
            if not any(s.remove for s in schedule.stages):
                raise ScheduleError("the schedule removes no visual token (nothing to race); lower --similarity or "
                                    "give a --schedule")
            steps.advance()
            steps.start("export the full and reduced prefill graphs and their static decode graphs")
            example = (inputs.embeds, inputs.positions, inputs.start)
            export = ExportPrefillGraphs(loaded.adapter.decoder_parts(loaded.model), Path(tmp), max_text=cfg.max_text)
            empty = Schedule(schedule.visual_tokens, schedule.patches_per_frame, ())
            text_tokens = case.input_ids.shape[1] - bucket.visual_tokens
            options = session_options(self.threads)
            session = lambda path: ort.InferenceSession(str(path), options,  # noqa: E731
                                                        providers=["CPUExecutionProvider"])
            ort_variants, capacities = {}, {}
            for name, kind, graph_schedule in ((ORT_FULL, "full", empty), (REDUCED, "static", schedule)):
                prefill_path, _ = export(kind, graph_schedule, example)
                capacities[name] = cache_capacities(graph_schedule, loaded.num_layers, max_text=text_tokens,
                                                    max_new_tokens=cfg.new_tokens)
                decode_path = self._export_static_decode(export, decoder, capacities[name], f"{kind}.decode_static")
                ort_variants[name] = self._onnxruntime(
                    session(prefill_path), StaticCacheDecoder(session(decode_path), capacities[name]), inputs)
            steps.advance()
            first_position = int(inputs.positions.max()) + 1
            variants = {TRANSFORMERS: self._transformers(inputs), **ort_variants, DYNAMIC: self._dynamic(decoder, inputs)}
            results = self._rounds(variants, first_position, steps)
        dims = ModelDims.from_config(loaded.config.text_config)
        n = bucket.visual_tokens
        groups = [int(h * w) for t, h, w in case.video_grid_thw for _ in range(int(t))]
        vision = vision_flops(VisionDims.from_config(loaded.config.vision_config), groups)
        flops = {key: generation_flops(dims, s, text_tokens=text_tokens, visual_tokens=n, vision=vision,
                                       new_tokens=cfg.new_tokens)
                 for key, s in ((ORT_FULL, None), (REDUCED, schedule), (DYNAMIC, dynamic))}
        for name, g in results.items():
            g.flops = flops.get(name, flops[ORT_FULL]).prefill
            g.visual_tokens = {REDUCED: schedule.final_visual_tokens, DYNAMIC: dynamic.final_visual_tokens}.get(name, n)
        import onnxruntime
        import transformers

        meta = {
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": git_commit(),
            "ffexport": ffexport.__version__, "model": loaded.name, "model_source": loaded.source,
            "num_layers": loaded.num_layers, "hidden_size": loaded.config.text_config.hidden_size, "dtype": "float32",
            "bucket": bucket.name, "visual_tokens": n, "text_tokens": text_tokens, "inputs": source,
            "fusion": {"cost": cfg.fusion.cost, "similarity": cfg.fusion.similarity},
            "schedule_source": "given" if cfg.schedule is not None else "realized by the dynamic reference on the inputs",
            "threads": self.threads, "warmup": cfg.warmup, "repeats": cfg.repeats, "new_tokens": cfg.new_tokens,
            "attention": "fused (ONNX Runtime: com.microsoft.GroupQueryAttention in the prefill graphs)",
            "decode": {"graph": "static decode graph (graphs.StaticDecodeStep), caches updated in place through IO "
                                "binding (runtime.kv_cache.StaticCacheDecoder)",
                       "cache_capacities": capacities},
            "machine": machine_facts(), "load_average_start": load_start, "load_average_end": _load_average(),
            "tools": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "onnxruntime": onnxruntime.__version__},
        }
        return RaceResult(meta, schedule, vision_seconds, results, flops[ORT_FULL], flops[REDUCED])

    # ---------------------------------------------------------------- rounds
    def _rounds(self, variants: dict[str, _Variant], first_position: int, steps: Steps) -> dict[str, Generation]:
        cfg = self.config
        names = list(variants)
        out = {name: Generation(name) for name in names}
        for r in range(cfg.warmup + cfg.repeats):
            warm = r < cfg.warmup
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                steps.start(f"{'warm-up' if warm else 'round'} {r + 1 if warm else r - cfg.warmup + 1}: {name}")
                measure = out[name].memory is None and (warm or cfg.warmup == 0)
                with PeakMemory("cpu") if measure else _nothing() as record:
                    prefill, decode, tokens = self._generate(variants[name], first_position)
                if measure:
                    out[name].memory = record
                if not warm:
                    out[name].prefill.append(prefill)
                    out[name].decode.append(decode)
                out[name].tokens = tokens
        steps.advance()
        return out

    def _generate(self, variant: _Variant, first_position: int) -> tuple[float, float, list[int]]:
        start = time.perf_counter()
        token, state = variant.prefill()
        prefill = time.perf_counter() - start
        tokens = [token]
        start = time.perf_counter()
        for k in range(self.config.new_tokens - 1):
            token, state = variant.step(token, first_position + k, state)
            tokens.append(token)
        return prefill, time.perf_counter() - start, tokens

    # ---------------------------------------------------------------- the variants
    def _transformers(self, inputs) -> _Variant:
        from transformers import DynamicCache

        import inspect

        model = self.loaded.model
        positions = inputs.positions[:, None, :]
        text_config = self.loaded.config.text_config
        # transformers 5.x renames past_key_values to cache (the old name warns until 5.40)
        key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

        def prefill():
            cache = DynamicCache(config=text_config)
            with torch.no_grad():
                out = model(inputs_embeds=inputs.embeds, position_ids=positions, use_cache=True, logits_to_keep=1,
                            **{key: cache})
            return int(out.logits[0, -1].argmax()), cache

        def step(token, position, cache):
            with torch.no_grad():
                out = model(input_ids=torch.tensor([[token]]), position_ids=torch.full((3, 1, 1), position),
                            use_cache=True, logits_to_keep=1, **{key: cache})
            return int(out.logits[0, -1].argmax()), cache

        v = _Variant()
        v.prefill, v.step = prefill, step
        return v

    def _onnxruntime(self, prefill_session, decoder, inputs) -> _Variant:
        """ONNX Runtime prefill, then ``decoder`` (a :class:`StaticCacheDecoder`): its first step copies the
        prompt's caches into the preallocated buffers; every step after binds the same buffers, so the host
        writes the token and reads the logits whatever the context."""
        layers = self.loaded.num_layers
        feeds = {"inputs_embeds": inputs.embeds.numpy(), "position_ids": inputs.positions.numpy(),
                 "video_start": inputs.start.numpy()}
        kinds = [(i, k) for i in range(layers) for k in ("key", "value")]

        def prefill():
            outs = prefill_session.run(None, feeds)
            return int(outs[0][0].argmax()), {f"{i}.{k}": outs[1 + j] for j, (i, k) in enumerate(kinds)}

        def step(token, position, presents):
            if presents is not None:  # the first step of a generation
                decoder.start(presents)
            return int(decoder.step(token, position).argmax()), None

        v = _Variant()
        v.prefill, v.step = prefill, step
        return v

    def _dynamic(self, decoder: ReducedDecoder, inputs) -> _Variant:
        fusion = self.config.fusion
        embed = self.loaded.model.model.language_model.embed_tokens

        def prefill():
            reducer = DynamicReducer(fusion, fusion.layers_for(decoder.num_layers))
            with torch.no_grad():
                result = decoder.prefill(inputs.embeds, inputs.positions, inputs.start, inputs.visual_tokens,
                                         inputs.patches_per_frame, reducer)
            return int(result.logits[0].argmax()), result.presents

        def step(token, position, past):
            with torch.no_grad():
                result = decoder.decode(embed(torch.tensor([[token]])), torch.full((3, 1), position), past)
            return int(result.logits[0].argmax()), result.presents

        v = _Variant()
        v.prefill, v.step = prefill, step
        return v

    def _export_static_decode(self, export, decoder, capacities: list[int], name: str) -> Path:
        """The build's static decode graph (``graphs.static_decode_spec``) for these per-layer cache
        ``capacities``, captured like the prefills (weights in the shared file)."""
        import onnx

        from ffexport.export.graphs import static_decode_spec

        embed = self.loaded.model.model.language_model.embed_tokens
        model = export.capture(static_decode_spec(decoder, embed, capacities, max_new_tokens=self.config.new_tokens))
        for node in model.graph.node:
            del node.metadata_props[:]
        export.store.externalize(model)
        path = export.directory / f"{name}.onnx"
        onnx.save(model, str(path))
        return path


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


# ---------------------------------------------------------------- report
def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def render_race(result: RaceResult, stream=None) -> None:
    """Plain lines (a table), ending with the two headline lines."""
    import sys

    stream = stream or sys.stdout
    m = result.meta
    load = lambda v: "-" if not v else " ".join(f"{x:.1f}" for x in v)  # noqa: E731
    print(f"race: model {m['model']} ({m['model_source']}), {m['num_layers']} layers, fp32; bucket {m['bucket']}: "
          f"{m['visual_tokens']} visual + {m['text_tokens']} text tokens; {m['threads']} threads; {m['warmup']} warm-up + "
          f"{m['repeats']} interleaved rounds; {m['new_tokens']} new tokens; load average {load(m['load_average_start'])} "
          f"at the start, {load(m['load_average_end'])} at the end", file=stream)
    print(f"schedule ({m['schedule_source']}): {result.schedule.visual_tokens} -> "
          f"{result.schedule.final_visual_tokens} visual tokens; vision encoder {result.vision_seconds:.3f} s "
          "(the same for every variant, in time to first token and end to end)", file=stream)
    header = ["variant", "visual left", "prefill ms", "TTFT ms", "decode tok/s", "end-to-end ms", "peak MiB",
              "+MiB", "greedy tokens"]
    rows = []
    for name, g in result.variants.items():
        rate = result.decode_rate(name)
        mem = g.memory
        rows.append([name, str(g.visual_tokens), f"{g.median('prefill') * 1e3:,.1f}", f"{result.ttft(name) * 1e3:,.1f}",
                     "-" if rate is None else f"{rate:.1f}", f"{result.end_to_end(name) * 1e3:,.1f}",
                     _mb(mem.peak if mem else None), _mb(mem.delta if mem else None), result.same_tokens(name)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=stream)
    print(f"end-to-end ideal by stage: {result.ideal_end_to_end_by_stage:.2f}x (transformers' vision, prefill and "
          "decode times, each scaled by its FLOP ratio; the FLOP ideal below prices a memory-bound decode FLOP like "
          "a prefill FLOP)", file=stream)
    print(f"prefill speedup vs transformers sdpa: {result.prefill_speedup:.2f}x (ideal {result.ideal:.2f}x)",
          file=stream)
    print(f"end-to-end speedup vs transformers sdpa: {result.end_to_end_speedup:.2f}x "
          f"(ideal {result.ideal_end_to_end:.2f}x)", file=stream)

"""The PyTorch variants of one bucket's prefill: full model, static schedule, dynamic reference.

All three are :meth:`ReducedDecoder.prefill` on the same inputs (with a family's frame blocks and
DeepStack levels where it has them, as the build's prefill graphs take them): no reducer (the full model), a
:class:`StaticReducer` with the schedule the dynamic reference realizes on these inputs (so static
and dynamic work at the same token budget), and the :class:`DynamicReducer` itself (host syncs and
data-dependent shapes). On a CUDA device the static and full prefills are also captured as CUDA
graphs (static shapes allow it; the dynamic reference cannot be captured).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import PrefillResult, ReducedDecoder, StaticPrefill
from ffexport.fusion.layout import FrameLayout
from ffexport.fusion.reducers import DynamicReducer, StaticReducer
from ffexport.fusion.schedule import Schedule

log = logging.getLogger(__name__)


def synchronizer(device: str) -> Callable[[], None]:
    """What to call before and after a timed region: ``torch.cuda.synchronize`` on a GPU."""
    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


class StepTimedDecoder(ReducedDecoder):
    """The decoder with each FrameFusion step timed (synchronized before and after): the visual
    tokens' gather, the reducer's decision and merge/prune math, and the gathers that shrink the
    sequence. The last queries' importance (computed in the attention) is not a step here."""

    def __init__(self, parts, sync: Callable[[], None]) -> None:
        super().__init__(parts)
        self.sync = sync
        self.step_seconds = 0.0

    def _step(self, reducer, layer, where, hidden, cos, sin, span, importance):
        if not reducer.acts(layer, where):
            return super()._step(reducer, layer, where, hidden, cos, sin, span, importance)
        self.sync()
        start = time.perf_counter()
        out = super()._step(reducer, layer, where, hidden, cos, sin, span, importance)
        self.sync()
        self.step_seconds += time.perf_counter() - start
        return out


@dataclass
class TorchInputs:
    embeds: torch.Tensor
    positions: torch.Tensor
    start: torch.Tensor
    visual_tokens: int
    patches_per_frame: int
    #: the prompt's frame blocks (text between them); None: one contiguous visual span
    layout: FrameLayout | None = None
    #: Qwen3-VL's DeepStack levels [k, N, D] (added after layers 0..k-1); None without
    deepstack: torch.Tensor | None = None

    def args(self) -> tuple[torch.Tensor, ...]:
        """The static prefill's tensor inputs: embeddings, positions, video start (and the DeepStack levels)."""
        head = (self.embeds, self.positions, self.start)
        return head if self.deepstack is None else (*head, self.deepstack)

    def empty_schedule(self) -> Schedule:
        """No step, on these inputs' frame blocks (the full model as a static prefill)."""
        return Schedule(self.visual_tokens, self.patches_per_frame, (), self.layout)


def run_prefill(decoder: ReducedDecoder, inputs: TorchInputs, reducer) -> PrefillResult:
    """``decoder.prefill`` on ``inputs`` (blocks and DeepStack levels included) with ``reducer`` (None: full)."""
    with torch.no_grad():
        return decoder.prefill(inputs.embeds, inputs.positions, inputs.start, inputs.visual_tokens,
                               inputs.patches_per_frame, reducer, inputs.layout, inputs.deepstack)


def realized_schedule(decoder: ReducedDecoder, inputs: TorchInputs, fusion: FusionConfig) -> Schedule:
    """The schedule the dynamic reference realizes on these inputs (with their frame blocks)."""
    reducer = DynamicReducer(fusion, fusion.layers_for(decoder.num_layers))
    run_prefill(decoder, inputs, reducer)
    return reducer.schedule(inputs.visual_tokens, inputs.patches_per_frame, inputs.layout)


def cuda_graphed(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    """Capture ``module(*args)`` as a CUDA graph (static input buffers, warm-up on a side stream);
    the returned callable replays it. Needs static shapes and no host syncs: the static prefill."""
    static_args = tuple(a.clone() for a in args)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            module(*static_args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        outputs = module(*static_args)

    def replay():
        graph.replay()
        return outputs

    # the graph reads its inputs from these buffers: they must live as long as the replay does (freed,
    # their memory goes back to the allocator and the replay reads whatever eager work wrote there)
    replay.inputs = static_args
    return replay


@dataclass
class TorchVariants:
    """The callables to time, and what each one is."""

    calls: dict[str, Callable[[], Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    #: variant -> schedule it runs (None: full model)
    schedules: dict[str, Schedule | None] = field(default_factory=dict)


class TorchPrefillVariants:
    """``TorchPrefillVariants(decoder, inputs, schedule, fusion, device=...)() -> TorchVariants``."""

    def __init__(self, decoder: ReducedDecoder, inputs: TorchInputs, schedule: Schedule, fusion: FusionConfig,
                 dynamic_schedule: Schedule, *, device: str = "cpu", cuda_graphs: bool = True) -> None:
        self.decoder, self.inputs, self.schedule, self.fusion = decoder, inputs, schedule, fusion
        self.dynamic_schedule = dynamic_schedule
        self.device = device
        self.cuda_graphs = cuda_graphs and device == "cuda"

    def _prefill(self, reducer_factory):
        def run():
            return run_prefill(self.decoder, self.inputs, reducer_factory())
        return run

    def __call__(self) -> TorchVariants:
        v = TorchVariants()
        layers = self.fusion.layers_for(self.decoder.num_layers)
        v.calls["full"] = self._prefill(lambda: None)
        v.notes["full"], v.schedules["full"] = "no reduction", None
        v.calls["static"] = self._prefill(lambda: StaticReducer(self.schedule))
        v.notes["static"], v.schedules["static"] = "StaticReducer(schedule)", self.schedule
        v.calls["dynamic"] = self._prefill(lambda: DynamicReducer(self.fusion, layers))
        v.notes["dynamic"], v.schedules["dynamic"] = "DynamicReducer (reference)", self.dynamic_schedule
        if self.cuda_graphs:
            args = self.inputs.args()
            empty = self.inputs.empty_schedule()
            for name, schedule in (("full (CUDA graph)", empty), ("static (CUDA graph)", self.schedule)):
                try:
                    v.calls[name] = cuda_graphed(StaticPrefill(self.decoder, schedule).eval(), args)
                    v.notes[name] = "torch.cuda.CUDAGraph replay"
                    v.schedules[name] = None if schedule is empty else schedule
                except Exception as e:  # capture failures are a result to report, not a crash
                    log.warning("CUDA graph capture of %s failed: %s: %s", name, type(e).__name__, e)
        return v


def step_share(decoder: StepTimedDecoder, inputs: TorchInputs, schedule: Schedule, runs: int) -> dict[str, Any]:
    """Share of the static prefill's time spent in FrameFusion steps, over ``runs`` synchronized runs
    (median of the per-run shares)."""
    shares, totals = [], []
    for _ in range(runs):
        decoder.step_seconds = 0.0
        decoder.sync()
        start = time.perf_counter()
        run_prefill(decoder, inputs, StaticReducer(schedule))
        decoder.sync()
        total = time.perf_counter() - start
        shares.append(decoder.step_seconds / total)
        totals.append(total)
    return {"method": "decoder steps timed in place (synchronized), static prefill", "runs": runs,
            "steps": statistics.median(shares), "per_run": shares, "importance": None}

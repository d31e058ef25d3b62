"""The ONNX Runtime variants of one bucket's prefill: the static graph and the full-model graph.

Both graphs are captured like ``ffexport build`` captures a prefill (torch.onnx dynamo, the same
dynamic text length, weights in one shared external file) into a temporary directory, and run in
ONNX Runtime sessions with the same options (CPU, ``intra_op_num_threads`` = the cores used).

Merge/prune share: the graphs are captured from a decoder that calls each FrameFusion step (the
visual tokens' gather, the merge/prune math, the gathers that shrink the sequence) through a
submodule, so the exporter records the step's scope in each of its nodes' metadata (the ops are
the same as ``ffexport build``'s). ONNX Runtime's profiler times every node; the share is the step
nodes' time over the whole run's. The prune's importance (the last queries' attention scores,
computed inside the attention) is not a step here, as in the PyTorch measurement. Nodes ONNX
Runtime fused or created (names not in the graph) stay unattributed and are reported as such.

Memory: each graph is loaded and run once in a fresh subprocess (:mod:`ffexport.bench.probe`):
the peak resident memory a serving process needs for that bucket's prefill.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ffexport.bench.probe import providers_for, session_options
from ffexport.errors import RunError
from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.export.graphs import DEEPSTACK_INPUT, DeepStackPrefillGraph, PrefillGraph, present_names
from ffexport.export.weights import SharedWeights
from ffexport.fusion.decoder import ReducedDecoder
from ffexport.fusion.schedule import Schedule

log = logging.getLogger(__name__)

SCOPE = "framefusion_step"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"


class _StepScope(nn.Module):
    """A module boundary around each FrameFusion step, so the exporter names its nodes' scope."""

    def forward(self, step, *args):
        return step(*args)


class ScopedStepDecoder(ReducedDecoder):
    """The decoder with every FrameFusion step called through a ``framefusion_step`` submodule: the
    captured graph computes the same ops; each step node's metadata carries the scope."""

    def __init__(self, parts) -> None:
        super().__init__(parts)
        self.framefusion_step = _StepScope()

    def _step(self, reducer, layer, where, *rest):
        if not reducer.acts(layer, where):
            return super()._step(reducer, layer, where, *rest)
        return self.framefusion_step(super()._step, reducer, layer, where, *rest)


def step_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the main graph's nodes that the exporter placed in a FrameFusion step's scope."""
    names = set()
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == SCOPES_KEY and SCOPE in prop.value:
                names.add(node.name)
    return names


class ExportPrefillGraphs:
    """``ExportPrefillGraphs(parts, directory)(name, schedule, example) -> (path, step node names)``:
    capture a prefill like ``ffexport build`` does (same dynamic text length, weights moved to the
    shared ``directory/weights.bin``) from a :class:`ScopedStepDecoder`."""

    def __init__(self, parts, directory: Path, *, max_text: int = 256) -> None:
        self.decoder = ScopedStepDecoder(parts)
        self.directory, self.max_text = Path(directory), max_text
        self.capture = CaptureOnnx(keep_metadata=True)
        self.store = SharedWeights(self.directory)

    def __call__(self, name: str, schedule: Schedule, example: tuple[torch.Tensor, ...]) -> tuple[Path, set[str]]:
        """``example``: embeddings, positions, video start, and for a DeepStack model its levels (a fourth
        input, as the build's Qwen3-VL prefill graph); ``schedule`` carries the prompt's frame blocks."""
        n = schedule.visual_tokens
        region = schedule.frame_layout.region_length  # n for one block; the text between blocks beyond
        length = torch.export.Dim("L", min=region + 1, max=n + self.max_text)
        deepstack = len(example) == 4
        kind = DeepStackPrefillGraph if deepstack else PrefillGraph
        dynamic = ({1: length}, {1: length}, None) + ((None,) if deepstack else ())
        spec = GraphSpec(f"{name} prefill", kind(self.decoder, schedule).eval(), example,
                         list(prefill_input_names(deepstack)), ["logits", *present_names(self.decoder.num_layers)],
                         dynamic)
        model = self.capture(spec)
        steps = step_nodes(model)
        for node in model.graph.node:  # the metadata has served; keep the file small
            del node.metadata_props[:]
        self.store.externalize(model)
        path = self.directory / f"{name}.prefill.onnx"
        onnx.save(model, str(path))
        return path, steps


def prefill_input_names(deepstack: bool) -> tuple[str, ...]:
    """The prefill graph's inputs as ``ffexport build`` names them (the DeepStack levels last, where there are some)."""
    names = ("inputs_embeds", "position_ids", "video_start")
    return (*names, DEEPSTACK_INPUT) if deepstack else names


def profile_share(path: Path, feeds: dict[str, np.ndarray], steps: set[str], *, threads: int, runs: int,
                  device: str, workdir: Path) -> dict[str, Any]:
    """Run the graph ``runs + 1`` times with ONNX Runtime's profiler; per timed run, the share of the
    run's time spent in step nodes (median over runs; the first run is a warm-up)."""
    import onnxruntime as ort

    options = session_options(threads, profile_prefix=str(workdir / "ort_profile"))
    session = ort.InferenceSession(str(path), options, providers=providers_for(device))
    for _ in range(runs + 1):
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    graph_nodes = {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}
    run_events = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[1:]
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_run = []
    for run in run_events:
        lo, hi = run["ts"], run["ts"] + run["dur"]
        sums = {"step": 0, "other": 0, "unattributed": 0}
        for e in nodes:
            if lo <= e["ts"] <= hi:
                name = e["name"][: -len("_kernel_time")]
                kind = "step" if name in steps else "other" if name in graph_nodes else "unattributed"
                sums[kind] += e["dur"]
        per_run.append({k: v / run["dur"] for k, v in sums.items()} | {"run_us": run["dur"]})
    trace.unlink(missing_ok=True)
    if not per_run:
        return {"method": "ONNX Runtime profiler", "runs": 0, "steps": None, "importance": None}
    median = {k: statistics.median(r[k] for r in per_run) for k in ("step", "other", "unattributed")}
    return {"method": "ONNX Runtime profiler: time of the nodes in the steps' scope over the run's time",
            "runs": len(per_run), "steps": median["step"], "importance": None, "other_nodes": median["other"],
            "unattributed": median["unattributed"], "step_nodes": len(steps), "graph_nodes": len(graph_nodes),
            "per_run": per_run}


def probe_memory(path: Path, feeds_file: Path, *, threads: int, device: str) -> dict[str, Any]:
    """Peak resident memory of a fresh process that loads ``path`` and runs it once."""
    cmd = [sys.executable, "-m", "ffexport.bench.probe", str(path), str(feeds_file), "--threads", str(threads),
           "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RunError(f"the memory probe could not run {path.name}: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

"""One static FrameFusion merge step alone, as an ONNX graph in ONNX Runtime on CPU: the time of the
merge's formulation, with the per-node profile (issue 14: "FrameFusion steps <= 2% of prefill time").

    PYTHONPATH=. python benchmarks/merge_step.py [--frames 16] [--patches 256] [--hidden 1536] [--remove-share 0.7]
                                    [--threads 2] [--rounds 15] [--profile DIR] [--json OUT]

The step is ``StandardSteps().merge`` (patch order, chain key, top-M bisection, the group means, the
compactions) captured by the build's exporter (:class:`ffexport.export.capture.CaptureOnnx`: the same
translations and optimizer), N = frames x patches visual tokens of width ``hidden``. ``patch_ids`` is a
graph input (a bucket's first prefill step constant-folds it; later steps cannot), the values are
random with 20% of the rows repeating the same patch of the previous frame.

Two formulations of the group means run side by side, interleaved in one process (rotating order):

- ``before``: the formulation before 2026-12-03, kept here for comparison: the rows permuted to
  patch order for the key (a gather and two slices over [N, D]), and the group sums by a Hillis-Steele
  segmented scan over the [N, D] rows in patch order (log2(frames) steps, each a shifted copy, a
  ``Where`` and an ``Add`` over [N, D]), read at the groups' ends;
- ``current``: ``StandardSteps().merge`` as it is now (what the graphs hold).

Both must return the same kept positions and values within 1e-5 (relative to the values' scale), or
the script says MISMATCH and exits 1. ``--profile DIR`` also writes ONNX Runtime's profile of one run
of each and prints the slowest node types.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ffexport.export.capture import CaptureOnnx, GraphSpec
from ffexport.fusion import ops
from ffexport.fusion.reducers import StandardSteps

STATIC = 0.2  # share of rows that repeat the same patch of the previous frame


def closeness_before(visual, patch_ids, order):
    """``ops.chain_closeness`` before 2026-12-03: rows permuted to patch order, neighbours sliced."""
    xs = visual.index_select(0, order).to(torch.float32)
    ps = patch_ids.index_select(0, order)
    unit = xs / torch.linalg.vector_norm(xs, dim=-1, keepdim=True)
    gap = -0.5 * ((unit[1:] - unit[:-1]) ** 2).sum(dim=-1)
    gap = torch.where(ps[1:] == ps[:-1], gap, torch.full_like(gap, 4 * ops.NO_PREDECESSOR))
    return torch.cat([torch.full((1,), 4 * ops.NO_PREDECESSOR), gap])


def merge_before(visual, patch_ids, order, merged, m, max_run):
    """``ops.merge`` before 2026-12-03: segmented running sums over the [N, D] rows in patch order."""
    n = visual.shape[0]
    xs = visual.index_select(0, order).to(torch.float32)
    unmerged = 1.0 - merged.to(torch.float32)
    group = torch.cumsum(unmerged, dim=0).to(torch.int64) - 1
    acc, shift, limit = xs, 1, min(max_run, n)
    while shift < limit:
        pad = torch.zeros((shift,) + tuple(xs.shape[1:]), dtype=xs.dtype)
        previous = torch.cat([pad, acc[:-shift]], dim=0)
        same = torch.cat([torch.zeros(shift, dtype=torch.bool), group[shift:] == group[:-shift]])
        acc = acc + torch.where(same.unsqueeze(-1), previous, torch.zeros_like(previous))
        shift *= 2
    is_last = torch.cat([group[1:] != group[:-1], torch.ones(1, dtype=torch.bool)])
    last = ops.compact_index(is_last.to(torch.float32), n - m)
    first = ops.compact_index(unmerged, n - m)
    sizes = (last - first + 1).to(torch.float32)
    means = (acc.index_select(0, last) / sizes.unsqueeze(-1)).to(visual.dtype)
    keep = torch.zeros(n, dtype=torch.float32).scatter(0, order, unmerged)
    kept = ops.compact_index(keep, n - m)
    group_of_position = torch.zeros(n, dtype=torch.int64).scatter(0, order, group)
    return kept, means.index_select(0, group_of_position.index_select(0, kept))


def step_before(visual, patch_ids, remove, patches, frames):
    """The whole merge step as the graphs held it before 2026-12-03."""
    order = ops.patch_order(patch_ids, patches)
    flags = ops.top_flags(closeness_before(visual, patch_ids, order), remove)
    return merge_before(visual, patch_ids, order, flags, remove, frames)


def step_current(visual, patch_ids, remove, patches, frames):
    """The merge step as the graphs hold it now (what ``ffexport build`` exports)."""
    return StandardSteps().merge(visual, patch_ids, remove, patches, frames)


class MergeStep(torch.nn.Module):
    """``(visual [N, D], patch_ids [N]) -> (kept, values)``: one top-``remove`` merge."""

    def __init__(self, remove: int, patches: int, frames: int, step) -> None:
        super().__init__()
        self.remove, self.patches, self.frames, self.step = remove, patches, frames, step

    def forward(self, visual: torch.Tensor, patch_ids: torch.Tensor):
        return self.step(visual, patch_ids, self.remove, self.patches, self.frames)


def make_inputs(frames: int, patches: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = frames * patches
    visual = torch.randn(n, hidden, generator=gen)
    repeat = torch.rand(n, generator=gen) < STATIC
    for i in range(patches, n):
        if repeat[i]:
            visual[i] = visual[i - patches]
    return visual, torch.arange(n, dtype=torch.int64) % patches


def session(model: onnx.ModelProto, threads: int, profile: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def node_profile(path: str) -> dict[str, float]:
    """ms per node type (summed over nodes) from one ONNX Runtime profile (the last run in it)."""
    events = [e for e in json.loads(Path(path).read_text()) if e.get("cat") == "Node"
              and e.get("name", "").endswith("_kernel_time")]
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        totals[event["args"].get("op_name", "?")] += event["dur"] / 1000.0
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--remove-share", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    visual, patch_ids = make_inputs(args.frames, args.patches, args.hidden)
    n = visual.shape[0]
    remove = int(args.remove_share * n)
    variants = {"before": step_before, "current": step_current}
    feeds = {"visual": visual.numpy(), "patch_ids": patch_ids.numpy()}
    sessions, nodes, outputs = {}, {}, {}
    for name, fn in variants.items():
        spec = GraphSpec(f"merge_{name}", MergeStep(remove, args.patches, args.frames, fn), (visual, patch_ids),
                         ["visual", "patch_ids"], ["kept", "values"])
        model = CaptureOnnx(opset=18)(spec)
        nodes[name] = len(model.graph.node)
        sessions[name] = session(model, args.threads)
        outputs[name] = sessions[name].run(None, feeds)
        with torch.no_grad():
            eager = MergeStep(remove, args.patches, args.frames, fn)(visual, patch_ids)
        if not np.array_equal(outputs[name][0], eager[0].numpy()) or \
                np.abs(outputs[name][1] - eager[1].numpy()).max() > 1e-5:
            print(f"MISMATCH: {name}: ONNX Runtime != PyTorch")
            return 1
    kept_equal = np.array_equal(outputs["before"][0], outputs["current"][0])
    diff = float(np.abs(outputs["before"][1] - outputs["current"][1]).max())
    if not kept_equal or diff > 1e-5:
        print(f"MISMATCH: before vs current: kept equal {kept_equal}, max |diff| {diff:.2e}")
        return 1

    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.rounds + 1):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            start = time.perf_counter()
            sessions[name].run(None, feeds)
            if round_:  # round 0 warms up
                times[name].append((time.perf_counter() - start) * 1000.0)
    result = {"n": n, "hidden": args.hidden, "remove": remove, "threads": args.threads, "rounds": args.rounds,
              "max_abs_diff": diff, "variants": {}}
    print(f"merge step alone: N={n} ({args.frames} x {args.patches}), D={args.hidden}, remove {remove}, "
          f"{args.threads} threads, {args.rounds} interleaved rounds; outputs agree (max |diff| {diff:.1e})")
    for name in names:
        median = statistics.median(times[name])
        result["variants"][name] = {"nodes": nodes[name], "median_ms": median, "samples_ms": times[name]}
        print(f"  {name:8s} {nodes[name]:4d} nodes  median {median:9.1f} ms  "
              f"(min {min(times[name]):.1f}, max {max(times[name]):.1f})")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        for name, fn in variants.items():
            spec = GraphSpec(f"merge_{name}", MergeStep(remove, args.patches, args.frames, fn), (visual, patch_ids),
                             ["visual", "patch_ids"], ["kept", "values"])
            profiled = session(CaptureOnnx(opset=18)(spec), args.threads, args.profile / name)
            profiled.run(None, feeds)
            profiled.run(None, feeds)
            per_op = node_profile(profiled.end_profiling())
            result["variants"][name]["profile_ms"] = per_op
            top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(per_op.items())[:8])
            print(f"  {name} profile (2 runs, ms per op type): {top}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

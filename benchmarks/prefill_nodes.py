"""Node counts of the static FrameFusion prefill graph against the full prefill graph (issue 14:
"static prefill graph nodes <= 1.5x the full graph's").

    PYTHONPATH=. python benchmarks/prefill_nodes.py [--model qwen2vl-tiny] [--bucket 8x112x112] [--schedule FILE]

Both graphs are captured as ``ffexport bench --runtime onnxruntime`` captures them
(:class:`ffexport.bench.ort_runtime.ExportPrefillGraphs`: the build's exporter, translations,
optimizer and attention rewrite), the full graph from the same decoder with no stages. The schedule is
the one the dynamic reference realizes on the bucket's calibration clip (what ``ffexport build``
deploys by default), or ``--schedule FILE``. Prints the schedule, both counts, their ratio, the step
nodes (in the steps' scope) and the op types the static graph adds.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2vl-tiny")
    parser.add_argument("--bucket", default="8x112x112")
    parser.add_argument("--schedule", type=Path)
    args = parser.parse_args()

    import onnx
    import torch

    from ffexport.bench.ort_runtime import ExportPrefillGraphs
    from ffexport.bench.prefill import bench_case, prepare_inputs
    from ffexport.bench.torch_runtime import realized_schedule
    from ffexport.export.buckets import parse_bucket
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.fusion.schedule import Schedule
    from ffexport.models import LoadModel

    loaded = LoadModel(args.model)()
    vc = loaded.config.vision_config
    bucket = parse_bucket(args.bucket, patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
                          merge_size=vc.spatial_merge_size, video_pixels=loaded.video_pixels)
    case, _ = bench_case(loaded, bucket)
    inputs = prepare_inputs(loaded, case, "cpu")
    if args.schedule is not None:
        schedule = Schedule.from_json(json.loads(args.schedule.read_text()))
    else:
        decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
        schedule = realized_schedule(decoder, inputs, FusionConfig())
    example = (inputs.embeds, inputs.positions, inputs.start)
    with tempfile.TemporaryDirectory(prefix="ffexport-nodes-") as tmp, torch.no_grad():
        export = ExportPrefillGraphs(loaded.adapter.decoder_parts(loaded.model), Path(tmp))
        full_path, _ = export("full", Schedule(schedule.visual_tokens, schedule.patches_per_frame, ()), example)
        static_path, steps = export("static", schedule, example)
        full = onnx.load(str(full_path), load_external_data=False).graph.node
        static = onnx.load(str(static_path), load_external_data=False).graph.node
    added = collections.Counter(n.op_type for n in static) - collections.Counter(n.op_type for n in full)
    stages = ", ".join(f"{s.op} {s.remove} at layer {s.layer} {s.where}" for s in schedule.stages)
    print(f"{args.model} {args.bucket}: {schedule.visual_tokens} visual tokens; schedule: {stages or 'none'}")
    print(f"full prefill: {len(full)} nodes; static prefill: {len(static)} nodes ({len(static) / len(full):.2f}x); "
          f"in the steps' scope: {len(steps)}")
    print("op types the static graph adds: " + ", ".join(f"{op} {k}" for op, k in added.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

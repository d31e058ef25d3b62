"""The vision encoder: the exported vision graph in ONNX Runtime vs transformers' own ``model.visual``
(SDPA), same pixels, same threads, one process (issue 14 item 4). Not a test.

    python benchmarks/vision_ort.py [--model qwen2vl-2b] [--bucket 64x448x448] [--vision-layers 1]
                                    [--rounds 3] [--threads 2] [--profile]

Random weights of the preset (real widths), ``--vision-layers`` blocks, fp32 on CPU. The graph is
captured as ``ffexport build`` captures a bucket's vision graph (:class:`ffexport.export.vision.VisionEncoder`
for the bucket's grid, ``CaptureOnnx`` with the build's default attention for ONNX Runtime fp32) and
run with the race's session options (``bench.probe.session_options``). transformers: the adapter's
``video_features`` (``get_video_features``: ``model.visual`` + merger), what ``ffexport bench --race``
times. Both run once as a warm-up, then in interleaved rounds (median). The outputs are compared
(max |diff|; the build's parity gate is 1e-4 in fp32). ``--profile``: ONNX Runtime's profiler over
one more run, time per op type.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2vl-2b")
    p.add_argument("--bucket", default="64x448x448")
    p.add_argument("--vision-layers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from ffexport.bench.prefill import bench_case
    from ffexport.bench.probe import session_options
    from ffexport.export.buckets import model_bucket
    from ffexport.export.capture import CaptureOnnx, GraphSpec
    from ffexport.export.vision import VisionEncoder
    from ffexport.export.weights import SharedWeights
    from ffexport.models import LoadModel

    torch.set_num_threads(args.threads)
    loaded = LoadModel(args.model, random_weights=True, layers=1, vision_layers=args.vision_layers)()
    model = loaded.model.eval()
    bucket = model_bucket(loaded.adapter, loaded.config, args.bucket, video_pixels=loaded.video_pixels)
    case, _ = bench_case(loaded, bucket)
    pixels = torch.from_numpy(case.pixel_values_videos).float()
    grid = torch.from_numpy(case.video_grid_thw)
    tower = loaded.adapter.vision_tower(loaded.config.vision_config) if hasattr(loaded.adapter, "vision_tower") else None
    encoder = VisionEncoder(model.model.visual, tuple(int(x) for x in case.video_grid_thw[0]), tower).eval()
    work = Path(tempfile.mkdtemp(prefix="vision_ort_"))
    graph = CaptureOnnx()(GraphSpec("vision", encoder, (pixels,), ["pixel_values_videos"], encoder.output_names))
    SharedWeights(work).externalize(graph)
    onnx.save(graph, str(work / "vision.onnx"))
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    del graph
    session = ort.InferenceSession(str(work / "vision.onnx"), session_options(args.threads),
                                   providers=["CPUExecutionProvider"])
    feeds = {"pixel_values_videos": pixels.numpy()}

    def run_ort():
        return session.run(None, feeds)[0]

    def run_transformers():
        with torch.no_grad():
            return loaded.adapter.video_features(model, pixels, grid).numpy()

    print(f"# {args.model} vision tower, {args.vision_layers} block(s), bucket {bucket.name} ({bucket.visual_tokens} "
          f"visual tokens, grid {case.video_grid_thw.tolist()}), fp32, {args.threads} threads, {args.rounds} rounds; "
          f"load at start {os.getloadavg()}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"# graph ops: {dict(ops.most_common())}")
    first = {"onnxruntime": [], "transformers": []}
    for name, fn in (("onnxruntime", run_ort), ("transformers", run_transformers)):  # warm-up (cold timing noted)
        t0 = time.perf_counter()
        first[name] = fn()
        print(f"# cold first call {name}: {time.perf_counter() - t0:.2f} s")
    diff = float(np.abs(first["onnxruntime"] - first["transformers"]).max())
    times = {"onnxruntime": [], "transformers": []}
    for r in range(args.rounds):
        order = [("onnxruntime", run_ort), ("transformers", run_transformers)][:: 1 if r % 2 == 0 else -1]
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("| bucket | vision blocks | transformers s | onnxruntime s | ort / transformers | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {bucket.name} | {args.vision_layers} | {med['transformers']:.2f} | {med['onnxruntime']:.2f} | "
          f"{med['onnxruntime'] / med['transformers']:.2f} | {diff:.2e} |")
    print(f"# samples {json.dumps(times)}")
    if args.profile:
        options = session_options(args.threads, profile_prefix=str(work / "profile"))
        profiled = ort.InferenceSession(str(work / "vision.onnx"), options, providers=["CPUExecutionProvider"])
        profiled.run(None, feeds)
        profiled.run(None, feeds)
        events = json.loads(Path(profiled.end_profiling()).read_text())
        runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
        last = runs[-1]
        per_op = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and \
                    last["ts"] <= e["ts"] <= last["ts"] + last["dur"]:
                per_op[e["args"].get("op_name", "?")] += e["dur"]
        total = sum(per_op.values())
        print(f"# profiled run {last['dur'] / 1e6:.2f} s; kernel time by op type:")
        for op, us in per_op.most_common(12):
            print(f"#   {op}: {us / 1e6:.3f} s ({us / total:.0%})")
    print(f"# load at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Long videos on a 2-core CPU: peak memory and prefill time of the full and the reduced prefill graph
(ONNX Runtime, fused attention) against the number of visual tokens (issue 14 item 5).

    python benchmarks/long_video.py OUT_DIR [--bucket 16x448x448 ...] [--threads 2] [--layers 4] [--kinds reduced]

Model: Qwen2-VL-2B width (``qwen2vl-2b --random-weights``), ``--layers`` decoder layers, 1 vision block,
fp32, cost 0.3 with the 28-layer budget. Per bucket: the dynamic reference realizes the schedule on the
calibration clip, both prefill graphs are captured as ``ffexport bench`` captures them, and each runs
once in a fresh process (``python -m ffexport.bench.probe``: peak resident memory of the run and its
wall time). ``--kinds reduced`` captures and runs the reduced graph alone (32k tokens: the full graph
may not fit). Writes OUT_DIR/long_video.json and OUT_DIR/long_video.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--bucket", action="append")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--kinds", default="reduced,full", help="comma-separated: reduced, full")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - {"reduced", "full"}:
        parser.error(f"--kinds: reduced and/or full, not {args.kinds!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    buckets = args.bucket or ["16x448x448", "32x448x448", "64x448x448", "128x448x448"]

    import numpy as np
    import torch

    from ffexport.bench.ort_runtime import ExportPrefillGraphs, probe_memory
    from ffexport.bench.prefill import bench_case, prepare_inputs
    from ffexport.bench.torch_runtime import realized_schedule
    from ffexport.export.buckets import parse_bucket
    from ffexport.fusion.config import FusionConfig
    from ffexport.fusion.decoder import ReducedDecoder
    from ffexport.fusion.schedule import Schedule
    from ffexport.models import LoadModel

    torch.set_num_threads(args.threads)
    loaded = LoadModel("qwen2vl-2b", random_weights=True, layers=args.layers, vision_layers=1)()
    fusion = FusionConfig(cost=0.3, budget_layers=28)
    record_path = out / "long_video.json"
    records = json.loads(record_path.read_text()) if record_path.exists() else []
    vc = loaded.config.vision_config
    for name in buckets:
        bucket = parse_bucket(name, patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
                              merge_size=vc.spatial_merge_size, video_pixels=loaded.video_pixels)
        case, _ = bench_case(loaded, bucket)
        inputs = prepare_inputs(loaded, case, "cpu")
        decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
        schedule = realized_schedule(decoder, inputs, fusion)
        example = (inputs.embeds, inputs.positions, inputs.start)
        with tempfile.TemporaryDirectory(prefix="ffexport-long-") as tmp:
            export = ExportPrefillGraphs(loaded.adapter.decoder_parts(loaded.model), Path(tmp), max_text=256)
            graphs = {}
            if "reduced" in kinds:
                graphs["reduced"], _ = export("static", schedule, example)
            if "full" in kinds:
                empty = Schedule(schedule.visual_tokens, schedule.patches_per_frame, ())
                graphs["full"], _ = export("full", empty, example)
            feeds = Path(tmp) / "feeds.npz"
            np.savez(feeds, inputs_embeds=example[0].numpy(), position_ids=example[1].numpy(),
                     video_start=example[2].numpy())
            row = {"bucket": name, "visual_tokens": bucket.visual_tokens, "tokens": int(example[0].shape[1]),
                   "final_visual_tokens": schedule.final_visual_tokens, "schedule": schedule.to_json(),
                   "load_average": list(os.getloadavg()), "threads": args.threads, "layers": args.layers,
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            for kind, path in graphs.items():
                row[kind] = probe_memory(path, feeds, threads=args.threads, device="cpu")
                print(name, kind, json.dumps(row[kind]), file=sys.stderr, flush=True)
        earlier = next((r for r in records if r["bucket"] == name), None)
        if earlier is not None and earlier["schedule"] == row["schedule"]:  # a --kinds run adds to the bucket's row
            row.update({k: earlier[k] for k in ("reduced", "full") if k in earlier and k not in row})
        records = [r for r in records if r["bucket"] != name] + [row]
        record_path.write_text(json.dumps(records, indent=1))
    plot(records, out / "long_video.png")
    return 0


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(records, key=lambda r: r["visual_tokens"])
    fig, (mem, sec) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("full", "o-"), ("reduced", "s-")):
        rows = [r for r in records if kind in r]  # a bucket run with --kinds reduced has no full graph
        tokens = [r["visual_tokens"] for r in rows]
        mem.plot(tokens, [r[kind]["run_delta_bytes"] / 2**30 for r in rows], style, label=f"{kind} prefill")
        sec.plot(tokens, [r[kind]["run_seconds"] for r in rows], style, label=f"{kind} prefill")
    mem.set(xlabel="visual tokens", ylabel="memory the run adds (GiB)", title="peak memory of one prefill run")
    sec.set(xlabel="visual tokens", ylabel="seconds", title="prefill time (one run, shared 2-core CPU)")
    for ax in (mem, sec):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Qwen2-VL-2B width, 4 layers, fp32, ONNX Runtime CPU, fused attention, cost 0.3")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

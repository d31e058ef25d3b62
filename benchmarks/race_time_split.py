"""Where a race's end-to-end time goes, beside what its FLOPs would predict (docs/benchmarks.md).

    PYTHONPATH=. python benchmarks/race_time_split.py RACE.json [RACE.json ...]

For each ``ffexport bench --race`` JSON: the FLOPs of the vision encoder, the prefill and the decode
steps (``ffexport/bench/flops.py``, the same count the race prints its ideals from; recomputed from the
preset's config, the bucket and the recorded schedule, so a JSON written before the end-to-end ideal
existed gets it too), the measured seconds of each part per variant, and the rate each part ran at
(GFLOP/s). Decode's rate far below the prefill's says its time is not set by its FLOPs; the ideal by
stage (``flops.ideal_by_stage``: transformers' measured stages, each scaled by its own FLOP ratio) is
printed beside the FLOP ideal.
"""

from __future__ import annotations

import argparse
import json
import sys

from ffexport.bench.flops import ModelDims, VisionDims, generation_flops, ideal_by_stage, vision_flops
from ffexport.export.buckets import parse_bucket
from ffexport.fusion.schedule import Schedule
from ffexport.models import PRESETS


def split(path: str) -> dict:
    data = json.loads(open(path).read())
    config = PRESETS.get(data["model"]).config()
    text, vision = config.text_config, config.vision_config
    text.num_hidden_layers = data["num_layers"]
    depth = 1 if "first 1 vision blocks" in data["model_source"] else vision.depth
    vision.depth = depth
    bucket = parse_bucket(data["bucket"], patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                          merge_size=vision.spatial_merge_size)
    groups = [int(h * w) for t, h, w in [bucket.grid_thw] for _ in range(int(t))]
    dims = ModelDims.from_config(text)
    vis = vision_flops(VisionDims.from_config(vision), groups)
    schedule = Schedule.from_json(data["schedule"])
    kw = dict(text_tokens=data["text_tokens"], visual_tokens=data["visual_tokens"], vision=vis,
              new_tokens=data["new_tokens"])
    full, reduced = generation_flops(dims, None, **kw), generation_flops(dims, schedule, **kw)
    variants = {v["name"]: v for v in data["variants"]}
    steps = data["new_tokens"] - 1
    rows = []
    for name, flops in (("transformers sdpa", full), ("onnxruntime full", full), ("ffexport reduced", reduced)):
        v = variants[name]
        prefill = v["prefill_median_s"]
        decode = v["end_to_end_s"] - v["ttft_s"]
        rows.append({"variant": name, "vision_s": data["vision_seconds"], "prefill_s": prefill,
                     "decode_s_per_token": decode / steps, "end_to_end_s": v["end_to_end_s"],
                     "vision_gflops": flops.vision / 1e9, "prefill_gflops": flops.prefill / 1e9,
                     "decode_gflops_per_token": flops.decode / steps / 1e9,
                     "vision_rate": flops.vision / 1e9 / data["vision_seconds"],
                     "prefill_rate": flops.prefill / 1e9 / prefill, "decode_rate": flops.decode / 1e9 / decode})
    ideal = full.total / reduced.total
    base = variants["transformers sdpa"]
    by_stage = ideal_by_stage(data["vision_seconds"], base["prefill_median_s"], base["end_to_end_s"] - base["ttft_s"],
                              full, reduced)
    measured = base["end_to_end_s"] / variants["ffexport reduced"]["end_to_end_s"]
    return {"file": path, "bucket": data["bucket"], "layers": data["num_layers"], "ideal_end_to_end": ideal,
            "ideal_by_stage": by_stage, "end_to_end": measured, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+")
    args = parser.parse_args(argv)
    for path in args.json:
        s = split(path)
        print(f"{s['file']}: {s['bucket']}, {s['layers']} layers: end to end {s['end_to_end']:.2f}x, "
              f"FLOP ideal {s['ideal_end_to_end']:.2f}x ({s['end_to_end'] / s['ideal_end_to_end']:.2f} of it), "
              f"ideal by stage {s['ideal_by_stage']:.2f}x ({s['end_to_end'] / s['ideal_by_stage']:.2f} of it)")
        print("  variant            vision s  prefill s  decode s/token  end-to-end s  | GFLOP: vision  prefill  "
              "decode/token | GFLOP/s: vision  prefill  decode")
        for r in s["rows"]:
            print(f"  {r['variant']:<18} {r['vision_s']:8.1f}  {r['prefill_s']:9.1f}  {r['decode_s_per_token']:14.3f}  "
                  f"{r['end_to_end_s']:12.1f}  | {r['vision_gflops']:13,.0f}  {r['prefill_gflops']:7,.0f}  "
                  f"{r['decode_gflops_per_token']:12.2f} | {r['vision_rate']:15.1f}  {r['prefill_rate']:7.1f}  "
                  f"{r['decode_rate']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

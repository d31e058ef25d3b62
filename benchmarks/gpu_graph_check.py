"""Diagnose CUDA-graph replays of the static prefill: capture StaticPrefill for a schedule on a GPU,
replay it, and compare with the eager run (logits). Synchronizes after every step and prints where
it stops. Usage: python benchmarks/gpu_graph_check.py [--model qwen2vl-tiny] [--layers N] [--bucket FxHxW]"""

from __future__ import annotations

import argparse
import sys

import torch

from ffexport.bench.prefill import bench_case, prepare_inputs
from ffexport.bench.torch_runtime import cuda_graphed, realized_schedule
from ffexport.export.buckets import parse_bucket
from ffexport.fusion.config import FusionConfig
from ffexport.fusion.decoder import ReducedDecoder, StaticPrefill
from ffexport.models import LoadModel


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="qwen2vl-tiny")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--bucket", default="8x112x112")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--full-first", action="store_true",
                   help="capture the full model's graph first, as ffexport bench does, then the static one")
    a = p.parse_args()
    loaded = LoadModel(a.model, random_weights=True, layers=a.layers, dtype=a.dtype, device="cuda")()
    vision = loaded.config.vision_config
    bucket = parse_bucket(a.bucket, patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                          merge_size=vision.spatial_merge_size, video_pixels=loaded.video_pixels)
    case, _ = bench_case(loaded, bucket)
    inputs = prepare_inputs(loaded, case, "cuda")
    decoder = ReducedDecoder(loaded.adapter.decoder_parts(loaded.model))
    schedule = realized_schedule(decoder, inputs, FusionConfig(budget_layers=28))
    print("schedule:", schedule.to_json()["stages"], flush=True)
    module = StaticPrefill(decoder, schedule).eval()
    args = (inputs.embeds, inputs.positions, inputs.start)
    with torch.no_grad():
        eager = module(*args)[0].float()
    torch.cuda.synchronize()
    print("eager ok", flush=True)
    if a.full_first:
        from ffexport.fusion.schedule import Schedule

        full = cuda_graphed(StaticPrefill(decoder, Schedule(inputs.visual_tokens, inputs.patches_per_frame, ())).eval(),
                            args)
        full()
        torch.cuda.synchronize()
        print("full graph captured and replayed", flush=True)
    replay = cuda_graphed(module, args)
    torch.cuda.synchronize()
    print("captured", flush=True)
    out = replay()[0].float()
    torch.cuda.synchronize()
    print(f"replayed: max |graph - eager| = {(out - eager).abs().max().item():.3e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

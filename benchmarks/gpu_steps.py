"""Time one static FrameFusion merge step and one prune step in PyTorch on a GPU (the standard-op
formulation that the exported graphs use: counting-sort patch order, bisection top-k, chain-grid
averages by one batched matmul (a segmented scan before 2026-12-03), compaction), at the sizes ``plugins/tests/kernel_check.cpp`` times the CUDA plugin
kernels at, so the two can be compared side by side.

    python benchmarks/gpu_steps.py [--repeats 50]

Each step also runs on the CPU with the same inputs: kept positions must be identical and values
close, otherwise the script says MISMATCH and exits 1. Timings: CUDA events, warm-up, median.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from ffexport.fusion import ops

SIZES = [(32, 256, 3584), (64, 256, 3584)]  # frame groups x patches per frame x hidden (Qwen2-VL-7B)
REMOVE, STATIC = 0.3, 0.2  # as kernel_check: remove 30% of the tokens; 20% of rows repeat their predecessor


def merge_step(visual: torch.Tensor, patch_ids: torch.Tensor, patches: int, frames: int, remove: int):
    order = ops.patch_order(patch_ids, patches)
    key = ops.chain_closeness(visual, patch_ids, order)
    flags = ops.top_flags(key, remove)
    return ops.merge(visual, patch_ids, order, flags, remove, max_run=frames, num_patches=patches)


def make_inputs(frames: int, patches: int, d: int, dtype: torch.dtype, gen: torch.Generator):
    n = frames * patches
    visual = torch.randn(n, d, generator=gen)
    repeat = torch.rand(n, generator=gen) < STATIC
    for i in range(patches, n):  # a token equal to the same patch in the previous frame
        if repeat[i]:
            visual[i] = visual[i - patches]
    patch_ids = torch.arange(n, dtype=torch.int64) % patches
    return visual.to(dtype), patch_ids


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    gen = torch.Generator().manual_seed(20261124)
    ok = True
    for frames, patches, d in SIZES:
        n = frames * patches
        m = int(REMOVE * n)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            visual, patch_ids = make_inputs(frames, patches, d, dtype, gen)
            kept_cpu, values_cpu = merge_step(visual, patch_ids, patches, frames, m)
            gv, gp = visual.cuda(), patch_ids.cuda()
            kept_gpu, values_gpu = merge_step(gv, gp, patches, frames, m)
            same = torch.equal(kept_gpu.cpu(), kept_cpu)
            err = (values_gpu.float().cpu() - values_cpu.float()).abs().max().item()
            ms = median_ms(lambda: merge_step(gv, gp, patches, frames, m), args.repeats)
            ok = ok and same
            print(f"merge {str(dtype).removeprefix('torch.'):8s} n={n:<6d} D={d} remove={m:<5d} "
                  f"kept {'identical' if same else 'MISMATCH'}, values max |diff| {err:.1e}, {ms:.3f} ms")
    for n in (8192, 16384):
        keep = n - int(0.7 * n)
        importance = torch.softmax(torch.randn(n, generator=gen) * 3, dim=0)
        kept_cpu = ops.prune(importance, keep)
        gi = importance.cuda()
        same = torch.equal(ops.prune(gi, keep).cpu(), kept_cpu)
        ok = ok and same
        ms = median_ms(lambda: ops.prune(gi, keep), args.repeats)
        print(f"prune float32  n={n:<6d} keep={keep:<6d} kept {'identical' if same else 'MISMATCH'}, {ms:.3f} ms")
    print("all steps agree with the CPU" if ok else "MISMATCHES (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

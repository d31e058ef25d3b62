/*
 * FrameFusionMerge CUDA kernel: one static merge step (ops.patch_order, ops.chain_closeness,
 * ops.top_flags, ops.merge) on the device. Usable without TensorRT (libffexport_kernels.a).
 */
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace ffexport
{

//! Bytes of scratch launchFrameFusionMerge needs for n tokens and P patches per frame.
size_t frameFusionMergeWorkspaceSize(int64_t n, int64_t patchesPerFrame);

/*!
 * Enqueue one merge step on `stream`.
 *   visual    [n, d] of `dtype` (a ValueType: float32, float16, bfloat16), device memory
 *   patchIds  [n] int64 in [0, patchesPerFrame) (out-of-range ids are clamped; the kernel cannot
 *             report them: the CPU reference refuses them)
 *   kept      [n - remove] int64 out: span positions of the surviving tokens, ascending
 *   values    [n - remove, d] of `dtype` out: their new values (run averages, float32 math)
 *   workspace at least frameFusionMergeWorkspaceSize(n, patchesPerFrame) bytes
 * Returns cudaErrorInvalidValue when the arguments fail validateMerge (nothing is enqueued), else
 * the launch status.
 */
cudaError_t launchFrameFusionMerge(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patchIds,
    int64_t remove, int64_t patchesPerFrame, int64_t maxRun, int64_t* kept, void* values, void* workspace,
    size_t workspaceSize, cudaStream_t stream);

} // namespace ffexport

/*
 * FrameFusionPrune CUDA kernel: one static prune step (ops.prune: top-K by log2 importance) on the
 * device. Usable without TensorRT (libffexport_kernels.a).
 */
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace ffexport
{

//! Bytes of scratch launchFrameFusionPrune needs for n tokens.
size_t frameFusionPruneWorkspaceSize(int64_t n);

/*!
 * Enqueue one prune step on `stream`.
 *   importance [n] float32 (positive attention means), device memory
 *   kept       [keep] int64 out: positions of the `keep` most important tokens, ascending
 *   workspace  at least frameFusionPruneWorkspaceSize(n) bytes
 * Returns cudaErrorInvalidValue when the arguments fail validatePrune (nothing is enqueued), else
 * the launch status.
 */
cudaError_t launchFrameFusionPrune(float const* importance, int64_t n, int64_t keep, int64_t* kept, void* workspace,
    size_t workspaceSize, cudaStream_t stream);

} // namespace ffexport

#include "frameFusionPruneKernel.h"

#include "frameFusionDevice.cuh"

namespace ffexport
{
namespace
{

struct PruneScratch
{
    float* x;   // [n] selection keys (log2 importance)
    int* flags; // [n] 1 for kept tokens (sequence order)

    PruneScratch(void* base, int64_t n)
    {
        kernels::WorkspaceCarver carve(base);
        x = carve.take<float>(n);
        flags = carve.take<int>(n);
        bytes = carve.used();
    }

    size_t bytes;
};

} // namespace

size_t frameFusionPruneWorkspaceSize(int64_t n)
{
    return PruneScratch(nullptr, n).bytes;
}

cudaError_t launchFrameFusionPrune(float const* importance, int64_t n, int64_t keep, int64_t* kept, void* workspace,
    size_t workspaceSize, cudaStream_t stream)
{
    if (!validatePrune(n, kValueFloat32, keep).empty() || n == kUnknownDim || importance == nullptr
        || kept == nullptr || workspace == nullptr || workspaceSize < frameFusionPruneWorkspaceSize(n))
    {
        return cudaErrorInvalidValue;
    }
    PruneScratch const s(workspace, n);
    int const count = static_cast<int>(n);
    int const k = static_cast<int>(keep);
    cudaError_t const status = cudaMemsetAsync(kept, 0, sizeof(int64_t) * k, stream);
    if (status != cudaSuccess)
    {
        return status;
    }
    using kernels::kScanThreads;
    kernels::topFlagsKernel<kScanThreads><<<1, kScanThreads, 0, stream>>>(importance, count, k, 1, kImportanceEps, s.x, s.flags);
    kernels::compactKernel<kScanThreads><<<1, kScanThreads, 0, stream>>>(s.flags, count, k, kept);
    return cudaGetLastError();
}

} // namespace ffexport

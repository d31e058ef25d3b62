#include "frameFusionMergeKernel.h"

#include "frameFusionDevice.cuh"

namespace ffexport
{
namespace
{

using kernels::fromFloat;
using kernels::kRowThreads;
using kernels::kScanThreads;
using kernels::toFloat;

struct MergeScratch
{
    int* counts;   // [P] tokens per patch
    int* cursor;   // [P] next patch-order slot of each patch
    int* order;    // [n] patch order -> span position
    int* inverse;  // [n] span position -> patch order
    float* norms;  // [n] row norms (span order)
    float* key;    // [n] merge keys (patch order)
    float* x;      // [n] selection scratch
    int* flags;    // [n] merged flags (patch order)
    int* groupOf;  // [n] group of each patch-order slot
    int* firstOf;  // [n + 1] patch-order slot of each group's unmerged token; firstOf[groups] = n
    int* keep;     // [n] 1 for surviving tokens (span order)

    MergeScratch(void* base, int64_t n, int64_t patches)
    {
        kernels::WorkspaceCarver carve(base);
        counts = carve.take<int>(patches);
        cursor = carve.take<int>(patches);
        order = carve.take<int>(n);
        inverse = carve.take<int>(n);
        norms = carve.take<float>(n);
        key = carve.take<float>(n);
        x = carve.take<float>(n);
        flags = carve.take<int>(n);
        groupOf = carve.take<int>(n);
        firstOf = carve.take<int>(n + 1);
        keep = carve.take<int>(n);
        bytes = carve.used();
    }

    size_t bytes;
};

__device__ __forceinline__ int patchOf(int64_t const* patchIds, int i, int patches)
{
    int64_t const p = patchIds[i];
    return p < 0 ? 0 : (p >= patches ? patches - 1 : static_cast<int>(p));
}

__global__ void countPatchesKernel(int64_t const* patchIds, int n, int patches, int* counts)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    {
        atomicAdd(counts + patchOf(patchIds, i, patches), 1);
    }
}

/*
 * ops.patch_order as a stable counting sort, in one block: cursor = exclusive scan of the counts;
 * then tokens in tiles of kScanThreads (sequence order), warps in turn, each token taking
 * cursor[patch] + (earlier lanes of its warp with the same patch).
 */
__global__ void __launch_bounds__(kScanThreads) patchOrderKernel(
    int64_t const* patchIds, int n, int patches, int const* counts, int* cursor, int* order, int* inverse)
{
    using Scan = cub::BlockScan<int, kScanThreads>;
    __shared__ typename Scan::TempStorage temp;
    int carry = 0;
    for (int base = 0; base < patches; base += kScanThreads)
    {
        int const p = base + threadIdx.x;
        int const count = p < patches ? counts[p] : 0;
        int before = 0;
        int tileTotal = 0;
        __syncthreads();
        Scan(temp).ExclusiveSum(count, before, tileTotal);
        if (p < patches)
        {
            cursor[p] = carry + before;
        }
        carry += tileTotal;
    }
    __syncthreads();
    int const lane = threadIdx.x & 31;
    int const warp = threadIdx.x >> 5;
    unsigned const lowerLanes = (1u << lane) - 1u;
    for (int base = 0; base < n; base += kScanThreads)
    {
        int const i = base + threadIdx.x;
        bool const valid = i < n;
        int const p = valid ? patchOf(patchIds, i, patches) : -1;
        unsigned const same = __match_any_sync(0xffffffffu, p);
        int const rank = __popc(same & lowerLanes);
        int const leader = __ffs(same) - 1;
        for (int w = 0; w < kScanThreads / 32; ++w)
        {
            if (warp == w)
            {
                int const start = valid ? cursor[p] : 0;
                __syncwarp();
                if (valid)
                {
                    order[start + rank] = i;
                    inverse[i] = start + rank;
                    if (lane == leader)
                    {
                        cursor[p] = start + __popc(same);
                    }
                }
            }
            __syncthreads();
        }
    }
}

__device__ float blockSum(float value)
{
    using Reduce = cub::BlockReduce<float, kRowThreads>;
    __shared__ typename Reduce::TempStorage temp;
    __shared__ float total;
    float const sum = Reduce(temp).Sum(value);
    if (threadIdx.x == 0)
    {
        total = sum;
    }
    __syncthreads();
    return total;
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) rowNormKernel(T const* visual, int d, float* norms)
{
    T const* row = visual + static_cast<int64_t>(blockIdx.x) * d;
    float sum = 0.0f;
    for (int k = threadIdx.x; k < d; k += kRowThreads)
    {
        float const v = toFloat(row[k]);
        sum += v * v;
    }
    float const total = blockSum(sum);
    if (threadIdx.x == 0)
    {
        norms[blockIdx.x] = sqrtf(total);
    }
}

//! ops.chain_closeness: -|a/|a| - b/|b||^2 / 2 for slot j and its chain predecessor, -8 for a chain head.
template <typename T>
__global__ void __launch_bounds__(kRowThreads) closenessKernel(T const* visual, int64_t const* patchIds, int d,
    int patches, int const* order, float const* norms, float* key)
{
    int const j = blockIdx.x;
    int const a = order[j];
    int const b = j > 0 ? order[j - 1] : a;
    if (j == 0 || patchOf(patchIds, a, patches) != patchOf(patchIds, b, patches))
    {
        if (threadIdx.x == 0)
        {
            key[j] = 4.0f * kNoPredecessor;
        }
        return;
    }
    T const* rowA = visual + static_cast<int64_t>(a) * d;
    T const* rowB = visual + static_cast<int64_t>(b) * d;
    float const normA = norms[a];
    float const normB = norms[b];
    float sum = 0.0f;
    for (int k = threadIdx.x; k < d; k += kRowThreads)
    {
        float const diff = __fdiv_rn(toFloat(rowA[k]), normA) - __fdiv_rn(toFloat(rowB[k]), normB);
        sum += diff * diff;
    }
    float const total = blockSum(sum);
    if (threadIdx.x == 0)
    {
        key[j] = -0.5f * total;
    }
}

/*
 * Groups in patch order (an unmerged token and the merged run after it) and the surviving tokens in
 * span order: groupOf, firstOf, then kept = positions of unmerged tokens, ascending. One block.
 */
__global__ void __launch_bounds__(kScanThreads) groupKernel(
    int const* flags, int const* order, int n, int survivors, int* groupOf, int* firstOf, int* keep, int64_t* kept)
{
    using Scan = cub::BlockScan<int, kScanThreads>;
    __shared__ typename Scan::TempStorage temp;
    int carry = 0;
    for (int base = 0; base < n; base += kScanThreads)
    {
        int const j = base + threadIdx.x;
        int const unmerged = j < n && !flags[j] ? 1 : 0;
        int inclusive = 0;
        int tileTotal = 0;
        __syncthreads();
        Scan(temp).InclusiveSum(unmerged, inclusive, tileTotal);
        if (j < n)
        {
            int const group = carry + inclusive - 1;
            groupOf[j] = group < 0 ? 0 : group;
            if (unmerged)
            {
                firstOf[group] = j;
            }
            keep[order[j]] = unmerged;
        }
        carry += tileTotal;
    }
    if (threadIdx.x == 0)
    {
        firstOf[carry] = n;
    }
    __syncthreads();
    kernels::compactPositions<kScanThreads>(temp, keep, n, survivors, kept);
}

//! values[r] = mean of the rows of kept[r]'s group (float32 sums, in patch order).
template <typename T>
__global__ void __launch_bounds__(kRowThreads) averageKernel(T const* visual, int d, int const* order,
    int const* inverse, int const* groupOf, int const* firstOf, int64_t const* kept, T* values)
{
    int const r = blockIdx.x;
    int const first = inverse[kept[r]];
    int const end = firstOf[groupOf[first] + 1];
    float const size = static_cast<float>(end - first);
    T* out = values + static_cast<int64_t>(r) * d;
    for (int k = threadIdx.x; k < d; k += kRowThreads)
    {
        float sum = 0.0f;
        for (int j = first; j < end; ++j)
        {
            sum += toFloat(visual[static_cast<int64_t>(order[j]) * d + k]);
        }
        out[k] = fromFloat<T>(__fdiv_rn(sum, size));
    }
}

template <typename T>
cudaError_t enqueueMerge(T const* visual, int n, int d, int64_t const* patchIds, int remove, int patches,
    int64_t* kept, T* values, MergeScratch const& s, cudaStream_t stream)
{
    int const survivors = n - remove;
    cudaError_t status = cudaMemsetAsync(s.counts, 0, sizeof(int) * patches, stream);
    if (status == cudaSuccess)
    {
        status = cudaMemsetAsync(kept, 0, sizeof(int64_t) * survivors, stream);
    }
    if (status != cudaSuccess)
    {
        return status;
    }
    int const countBlocks = (n + kRowThreads - 1) / kRowThreads < 1024 ? (n + kRowThreads - 1) / kRowThreads : 1024;
    countPatchesKernel<<<countBlocks, kRowThreads, 0, stream>>>(patchIds, n, patches, s.counts);
    patchOrderKernel<<<1, kScanThreads, 0, stream>>>(patchIds, n, patches, s.counts, s.cursor, s.order, s.inverse);
    rowNormKernel<T><<<n, kRowThreads, 0, stream>>>(visual, d, s.norms);
    closenessKernel<T><<<n, kRowThreads, 0, stream>>>(visual, patchIds, d, patches, s.order, s.norms, s.key);
    kernels::topFlagsKernel<kScanThreads><<<1, kScanThreads, 0, stream>>>(s.key, n, remove, 0, kSimilarityEps, s.x, s.flags);
    groupKernel<<<1, kScanThreads, 0, stream>>>(s.flags, s.order, n, survivors, s.groupOf, s.firstOf, s.keep, kept);
    averageKernel<T><<<survivors, kRowThreads, 0, stream>>>(visual, d, s.order, s.inverse, s.groupOf, s.firstOf, kept, values);
    return cudaGetLastError();
}

} // namespace

size_t frameFusionMergeWorkspaceSize(int64_t n, int64_t patchesPerFrame)
{
    return MergeScratch(nullptr, n, patchesPerFrame).bytes;
}

cudaError_t launchFrameFusionMerge(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patchIds,
    int64_t remove, int64_t patchesPerFrame, int64_t maxRun, int64_t* kept, void* values, void* workspace,
    size_t workspaceSize, cudaStream_t stream)
{
    if (!validateMerge(n, d, dtype, remove, patchesPerFrame, maxRun).empty() || n == kUnknownDim
        || d == kUnknownDim || d > (int64_t{1} << 31) - 1 || visual == nullptr || patchIds == nullptr
        || kept == nullptr || values == nullptr || workspace == nullptr
        || workspaceSize < frameFusionMergeWorkspaceSize(n, patchesPerFrame))
    {
        return cudaErrorInvalidValue;
    }
    MergeScratch const scratch(workspace, n, patchesPerFrame);
    int const rows = static_cast<int>(n);
    int const width = static_cast<int>(d);
    int const m = static_cast<int>(remove);
    int const patches = static_cast<int>(patchesPerFrame);
    switch (dtype)
    {
    case kValueFloat32:
        return enqueueMerge(static_cast<float const*>(visual), rows, width, patchIds, m, patches, kept,
            static_cast<float*>(values), scratch, stream);
    case kValueFloat16:
        return enqueueMerge(static_cast<__half const*>(visual), rows, width, patchIds, m, patches, kept,
            static_cast<__half*>(values), scratch, stream);
    default:
        return enqueueMerge(static_cast<__nv_bfloat16 const*>(visual), rows, width, patchIds, m, patches, kept,
            static_cast<__nv_bfloat16*>(values), scratch, stream);
    }
}

} // namespace ffexport

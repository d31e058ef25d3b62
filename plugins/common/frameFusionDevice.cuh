/*
 * Device code shared by the FrameFusion kernels: element conversions, block reductions and the
 * single-block top-k selection of ops.top_flags (bisection, tie window, positional tie-break).
 * Included by the kernels' .cu files only.
 */
#pragma once

#include "frameFusionValidate.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

namespace ffexport
{
namespace kernels
{

//! Threads of the single-block kernels (selection, scans): one block of 1024 loops over the tokens.
constexpr int kScanThreads = 1024;
//! Threads of the per-row kernels (norms, distances, averages).
constexpr int kRowThreads = 256;

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}
__device__ __forceinline__ float toFloat(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

//! Reduction operators (cub's own changed names across CCCL versions).
struct MinOp
{
    __device__ __forceinline__ float operator()(float a, float b) const
    {
        return fminf(a, b);
    }
};
struct MaxOp
{
    __device__ __forceinline__ float operator()(float a, float b) const
    {
        return fmaxf(a, b);
    }
};

//! Aligned carving of a workspace: sizes first (base == nullptr), then pointers.
class WorkspaceCarver
{
public:
    explicit WorkspaceCarver(void* base)
        : mBase(static_cast<char*>(base))
    {
    }

    template <typename T>
    T* take(int64_t count)
    {
        size_t const offset = mUsed;
        mUsed += (static_cast<size_t>(count) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
        return mBase == nullptr ? nullptr : reinterpret_cast<T*>(mBase + offset);
    }

    size_t used() const
    {
        return mUsed;
    }

private:
    static constexpr size_t kAlign = 256;
    char* mBase;
    size_t mUsed{0};
};

/*
 * ops.top_flags in one block: `flags[i]` = 1 for the `count` highest scores, near-ties at the cut
 * (within eps of it) taken lowest position first. `x` is scratch [n]. relative: rank log2 of
 * scores clamped to FLT_MIN (importances). NaN ranks just below the lowest real score.
 */
template <int Threads>
__global__ void __launch_bounds__(Threads) topFlagsKernel(
    float const* scores, int n, int count, int relative, float eps, float* x, int* flags)
{
    using Reduce = cub::BlockReduce<float, Threads>;
    using ReduceInt = cub::BlockReduce<int, Threads>;
    using Scan = cub::BlockScan<int, Threads>;
    __shared__ union
    {
        typename Reduce::TempStorage reduce;
        typename ReduceInt::TempStorage reduceInt;
        typename Scan::TempStorage scan;
    } temp;
    __shared__ float sharedA;
    __shared__ float sharedB;
    __shared__ int sharedCount;

    float const inf = __int_as_float(0x7f800000);
    // selection key and the lowest real score
    float lowest = inf;
    for (int i = threadIdx.x; i < n; i += Threads)
    {
        float v = scores[i];
        if (relative && !isnan(v))
        {
            v = log2f(v < FLT_MIN ? FLT_MIN : v);
        }
        x[i] = v;
        if (!isnan(v))
        {
            lowest = fminf(lowest, v);
        }
    }
    float const blockLowest = Reduce(temp.reduce).Reduce(lowest, MinOp{});
    if (threadIdx.x == 0)
    {
        sharedA = blockLowest;
    }
    __syncthreads();
    lowest = sharedA;
    float low = inf;
    float high = -inf;
    for (int i = threadIdx.x; i < n; i += Threads)
    {
        float v = x[i];
        if (isnan(v))
        {
            v = lowest - 1.0f;
            x[i] = v;
        }
        low = fminf(low, v);
        high = fmaxf(high, v);
    }
    float const blockLow = Reduce(temp.reduce).Reduce(low, MinOp{});
    __syncthreads();
    float const blockHigh = Reduce(temp.reduce).Reduce(high, MaxOp{});
    if (threadIdx.x == 0)
    {
        sharedA = blockLow;
        sharedB = blockHigh + 1.0f;
    }
    __syncthreads();
    low = sharedA;
    high = sharedB;
    // the cut value: bisection on count(x >= mid) >= count (every thread keeps the same low/high)
    for (int step = 0; step < kBisectSteps; ++step)
    {
        float const mid = __fdiv_rn(__fadd_rn(low, high), 2.0f);
        int atLeast = 0;
        for (int i = threadIdx.x; i < n; i += Threads)
        {
            atLeast += x[i] >= mid ? 1 : 0;
        }
        int const total = ReduceInt(temp.reduceInt).Sum(atLeast);
        if (threadIdx.x == 0)
        {
            sharedCount = total;
        }
        __syncthreads();
        if (sharedCount >= count)
        {
            low = mid;
        }
        else
        {
            high = mid;
        }
        __syncthreads();
    }
    int above = 0;
    for (int i = threadIdx.x; i < n; i += Threads)
    {
        above += __fsub_rn(x[i], low) > eps ? 1 : 0;
    }
    int const totalAbove = ReduceInt(temp.reduceInt).Sum(above);
    if (threadIdx.x == 0)
    {
        sharedCount = totalAbove;
    }
    __syncthreads();
    int const need = count - sharedCount;
    // near-ties in position order: a running count over tiles of `Threads` tokens
    int carry = 0;
    for (int base = 0; base < n; base += Threads)
    {
        int const i = base + threadIdx.x;
        float const distance = i < n ? __fsub_rn(x[i], low) : -inf;
        int const isAbove = distance > eps ? 1 : 0;
        int const isNear = (distance >= -eps && !isAbove) ? 1 : 0;
        int before = 0;
        int tileTotal = 0;
        __syncthreads();
        Scan(temp.scan).ExclusiveSum(isNear, before, tileTotal);
        if (i < n)
        {
            flags[i] = (isAbove || (isNear && carry + before + 1 <= need)) ? 1 : 0;
        }
        carry += tileTotal;
    }
}

/*
 * Positions (ascending) of the rows with keep[i] != 0, written to out[0 .. count): ops.compact_index.
 * Called by all threads of one block of `Threads`, with the block's scan storage; the slots of `out`
 * past the kept rows are left as they are.
 */
template <int Threads>
__device__ __forceinline__ void compactPositions(
    typename cub::BlockScan<int, Threads>::TempStorage& temp, int const* keep, int n, int count, int64_t* out)
{
    using Scan = cub::BlockScan<int, Threads>;
    int carry = 0;
    for (int base = 0; base < n; base += Threads)
    {
        int const i = base + threadIdx.x;
        int const flag = i < n && keep[i] ? 1 : 0;
        int rank = 0;
        int tileTotal = 0;
        __syncthreads();
        Scan(temp).ExclusiveSum(flag, rank, tileTotal);
        if (flag && carry + rank < count)
        {
            out[carry + rank] = i;
        }
        carry += tileTotal;
    }
}

/*
 * compactPositions as a kernel of one block; `out` must be zeroed first (slots stay 0 when fewer
 * than `count` rows are kept).
 */
template <int Threads>
__global__ void __launch_bounds__(Threads) compactKernel(int const* keep, int n, int count, int64_t* out)
{
    __shared__ typename cub::BlockScan<int, Threads>::TempStorage temp;
    compactPositions<Threads>(temp, keep, n, count, out);
}

} // namespace kernels
} // namespace ffexport

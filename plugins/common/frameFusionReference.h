/*
 * CPU reference of the FrameFusion plugins: the same steps as ffexport/fusion/ops.py, in plain C++.
 *
 * Numerics: float32 values; sums over the hidden dimension (norms, squared distances) are accumulated
 * in double and rounded to float32 (the correctly rounded fp32 result: torch's own summation order is
 * unspecified), run sums in float32 as the kernels do. The selection (bisection, tie windows,
 * positional tie-break) repeats ops.top_flags operation by operation in float32.
 *
 * These functions expect validated arguments (frameFusionValidate.h); the C ABI
 * (frameFusionReferenceApi.cpp) validates before calling them.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ffexport
{
namespace reference
{

//! ops.patch_order: the permutation sorting tokens by patch id, then position (a counting sort).
std::vector<int32_t> patchOrder(int64_t const* patchIds, int64_t n, int64_t patchesPerFrame);

//! ops.chain_closeness: merge keys in patch order (-8 for a chain's first token). `rows` [n, d] float32.
std::vector<float> chainCloseness(float const* rows, int64_t n, int64_t d, int64_t const* patchIds,
    std::vector<int32_t> const& order);

//! ops.top_flags: 0/1 flags of the `count` highest scores; `relative` ranks log2 of positive scores.
std::vector<uint8_t> topFlags(float const* scores, int64_t n, int64_t count, bool relative);

//! ops.merge. `flags` in patch order (exactly `remove` ones, never a chain's first token). Writes
//! `kept` [n - remove] and `values` [n - remove, d] (float32). Returns "" or an error message.
std::string mergeRuns(float const* rows, int64_t n, int64_t d, int64_t const* patchIds,
    std::vector<int32_t> const& order, std::vector<uint8_t> const& flags, int64_t remove, int64_t* kept,
    float* values);

//! ops.compact_index of ops.top_flags(importance, keep, relative=True) = ops.prune.
void prune(float const* importance, int64_t n, int64_t keep, int64_t* kept);

} // namespace reference
} // namespace ffexport

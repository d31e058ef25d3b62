/*
 * FrameFusion plugins: attribute, shape and dtype validation, in ONE place.
 *
 * Header-only and free of TensorRT and CUDA so that the plugins (createPlugin, configurePlugin,
 * getOutputShapes, supportsFormatCombination, enqueue), the CUDA launchers and the CPU reference's
 * C ABI all refuse the same things with the same message. Every function returns an empty string
 * when the arguments are acceptable, else one line saying what is wrong.
 *
 * A token count of kUnknownDim (-1) means "not known yet" (a dynamic dimension at build time): checks
 * that need it are skipped.
 */
#pragma once

#include <cstdint>
#include <string>

namespace ffexport
{

//! Element types of the merge step's `visual` input and `values` output (also the C ABI's codes).
enum ValueType : int32_t
{
    kValueFloat32 = 0,
    kValueFloat16 = 1,
    kValueBFloat16 = 2,
};

constexpr int64_t kUnknownDim = -1;
//! Counts are exact in float32 and indices fit int32 below this many tokens (ops.compact_index).
constexpr int64_t kMaxTokens = int64_t{1} << 24;

//! Similarity given to a chain's first token (ops.NO_PREDECESSOR); the merge key uses 4x it.
constexpr float kNoPredecessor = -2.0f;
//! Tie windows and bisection length of ops.top_flags.
constexpr float kSimilarityEps = 1e-9f;
constexpr float kImportanceEps = 1e-5f;
constexpr int kBisectSteps = 40;

inline char const* valueTypeName(int32_t type)
{
    switch (type)
    {
    case kValueFloat32: return "float32";
    case kValueFloat16: return "float16";
    case kValueBFloat16: return "bfloat16";
    default: return "unknown";
    }
}

inline size_t valueTypeSize(int32_t type)
{
    return type == kValueFloat32 ? 4 : 2;
}

//! The attributes alone (createPlugin, before any shape is known).
inline std::string validateMergeAttributes(int64_t remove, int64_t patchesPerFrame, int64_t maxRun)
{
    if (remove < 1)
    {
        return "FrameFusionMerge: attribute remove=" + std::to_string(remove) + " must be >= 1";
    }
    if (patchesPerFrame < 1)
    {
        return "FrameFusionMerge: attribute patches_per_frame=" + std::to_string(patchesPerFrame) + " must be >= 1";
    }
    if (maxRun < 1)
    {
        return "FrameFusionMerge: attribute max_run=" + std::to_string(maxRun) + " must be >= 1 (the number of frames)";
    }
    if (patchesPerFrame > kMaxTokens || maxRun > kMaxTokens)
    {
        return "FrameFusionMerge: patches_per_frame and max_run must be below 2^24";
    }
    return {};
}

//! Attributes with the input shape `visual` [n, d] and its element type (a ValueType code).
inline std::string validateMerge(int64_t n, int64_t d, int32_t dtype, int64_t remove, int64_t patchesPerFrame,
    int64_t maxRun)
{
    std::string error = validateMergeAttributes(remove, patchesPerFrame, maxRun);
    if (!error.empty())
    {
        return error;
    }
    if (dtype != kValueFloat32 && dtype != kValueFloat16 && dtype != kValueBFloat16)
    {
        return "FrameFusionMerge: visual must be float32, float16 or bfloat16 (got type code " + std::to_string(dtype)
            + ")";
    }
    if (d != kUnknownDim && d < 1)
    {
        return "FrameFusionMerge: visual must be [n, D] with D >= 1 (got D=" + std::to_string(d) + ")";
    }
    if (n == kUnknownDim)
    {
        return {};
    }
    if (n < 2 || n > kMaxTokens)
    {
        return "FrameFusionMerge: visual must have 2 <= n < 2^24 rows (got n=" + std::to_string(n) + ")";
    }
    if (remove >= n)
    {
        return "FrameFusionMerge: remove=" + std::to_string(remove) + " must be < n=" + std::to_string(n);
    }
    if (n > patchesPerFrame * maxRun)
    {
        return "FrameFusionMerge: n=" + std::to_string(n) + " tokens exceed patches_per_frame * max_run = "
            + std::to_string(patchesPerFrame * maxRun);
    }
    // every patch chain keeps its first token and holds at most max_run tokens
    int64_t const chains = (n + maxRun - 1) / maxRun;
    if (remove > n - chains)
    {
        return "FrameFusionMerge: remove=" + std::to_string(remove) + " exceeds the " + std::to_string(n - chains)
            + " tokens that can merge (n=" + std::to_string(n) + ", max_run=" + std::to_string(maxRun)
            + ": each patch chain keeps its first token)";
    }
    return {};
}

//! The patch ids' values (the CPU reference checks them; a kernel cannot report per-value errors).
inline std::string validatePatchIds(int64_t const* patchIds, int64_t n, int64_t patchesPerFrame, int64_t maxRun,
    int64_t* countsScratch)
{
    for (int64_t p = 0; p < patchesPerFrame; ++p)
    {
        countsScratch[p] = 0;
    }
    for (int64_t i = 0; i < n; ++i)
    {
        int64_t const p = patchIds[i];
        if (p < 0 || p >= patchesPerFrame)
        {
            return "FrameFusionMerge: patch_ids[" + std::to_string(i) + "]=" + std::to_string(p) + " is outside [0, "
                + std::to_string(patchesPerFrame) + ")";
        }
        if (++countsScratch[p] > maxRun)
        {
            return "FrameFusionMerge: patch " + std::to_string(p) + " occurs more than max_run="
                + std::to_string(maxRun) + " times";
        }
    }
    return {};
}

inline std::string validatePruneAttributes(int64_t keep)
{
    if (keep < 1)
    {
        return "FrameFusionPrune: attribute keep=" + std::to_string(keep) + " must be >= 1";
    }
    return {};
}

//! Attributes with the input shape `importance` [n] and its element type (float32 only).
inline std::string validatePrune(int64_t n, int32_t dtype, int64_t keep)
{
    std::string error = validatePruneAttributes(keep);
    if (!error.empty())
    {
        return error;
    }
    if (dtype != kValueFloat32)
    {
        return std::string("FrameFusionPrune: importance must be float32 (got ") + valueTypeName(dtype) + ")";
    }
    if (n == kUnknownDim)
    {
        return {};
    }
    if (n < 2 || n > kMaxTokens)
    {
        return "FrameFusionPrune: importance must have 2 <= n < 2^24 values (got n=" + std::to_string(n) + ")";
    }
    if (keep >= n)
    {
        return "FrameFusionPrune: keep=" + std::to_string(keep) + " must be < n=" + std::to_string(n);
    }
    return {};
}

} // namespace ffexport

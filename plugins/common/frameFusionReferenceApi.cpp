#include "frameFusionReferenceApi.h"

#include "frameFusionFloat.h"
#include "frameFusionReference.h"
#include "frameFusionValidate.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace
{

int fail(int code, std::string const& text, char* message, size_t messageSize)
{
    if (message != nullptr && messageSize > 0)
    {
        size_t const length = text.size() < messageSize - 1 ? text.size() : messageSize - 1;
        std::memcpy(message, text.data(), length);
        message[length] = '\0';
    }
    return code;
}

std::vector<float> toFloat(void const* data, int32_t dtype, int64_t count)
{
    std::vector<float> out(static_cast<size_t>(count));
    if (dtype == ffexport::kValueFloat32)
    {
        std::memcpy(out.data(), data, static_cast<size_t>(count) * sizeof(float));
        return out;
    }
    auto const* bits = static_cast<uint16_t const*>(data);
    for (int64_t i = 0; i < count; ++i)
    {
        out[static_cast<size_t>(i)] = dtype == ffexport::kValueFloat16 ? ffexport::float16ToFloat(bits[i])
                                                                        : ffexport::bfloat16ToFloat(bits[i]);
    }
    return out;
}

void fromFloat(std::vector<float> const& values, int32_t dtype, void* out)
{
    if (dtype == ffexport::kValueFloat32)
    {
        std::memcpy(out, values.data(), values.size() * sizeof(float));
        return;
    }
    auto* bits = static_cast<uint16_t*>(out);
    for (size_t i = 0; i < values.size(); ++i)
    {
        bits[i] = dtype == ffexport::kValueFloat16 ? ffexport::floatToFloat16(values[i])
                                                   : ffexport::floatToBFloat16(values[i]);
    }
}

//! The C-ABI wrapper of every function: `validate` returns "" or an INVALID_ARGUMENT message, then
//! `body` returns "" or an INVALID_DATA message; exceptions become INTERNAL. The message goes into
//! `message` (at most messageSize bytes) and the code is returned.
template <typename Validate, typename Body>
int guarded(char* message, size_t messageSize, Validate&& validate, Body&& body)
{
    try
    {
        std::string const invalid = validate();
        if (!invalid.empty())
        {
            return fail(FFE_ERROR_INVALID_ARGUMENT, invalid, message, messageSize);
        }
        std::string const error = body();
        return error.empty() ? FFE_OK : fail(FFE_ERROR_INVALID_DATA, error, message, messageSize);
    }
    catch (std::bad_alloc const&)
    {
        return fail(FFE_ERROR_INTERNAL, "FrameFusion reference: out of memory", message, messageSize);
    }
    catch (std::exception const& e)
    {
        return fail(FFE_ERROR_INTERNAL, std::string("FrameFusion reference: ") + e.what(), message, messageSize);
    }
    catch (...)
    {
        return fail(FFE_ERROR_INTERNAL, "FrameFusion reference: unknown error", message, messageSize);
    }
}

//! A validation that finds nothing wrong (for functions that only refuse data).
std::string nothing()
{
    return {};
}

bool missing(void const* pointer)
{
    return pointer == nullptr;
}

//! The first problem: `error` when set, else the message of the first refusal that holds, else "".
std::string firstProblem(std::string error, std::initializer_list<std::pair<bool, char const*>> refusals)
{
    for (auto const& refusal : refusals)
    {
        if (error.empty() && refusal.first)
        {
            error = refusal.second;
        }
    }
    return error;
}

//! validatePatchIds (ids in [0, P), chains of at most maxRun tokens): "" or its message.
std::string checkPatchIds(int64_t const* patchIds, int64_t n, int64_t patchesPerFrame, int64_t maxRun)
{
    std::vector<int64_t> counts(static_cast<size_t>(patchesPerFrame));
    return ffexport::validatePatchIds(patchIds, n, patchesPerFrame, maxRun, counts.data());
}

//! The rows widened to float32, their patch order and merge keys: the merge's first steps.
struct MergeKeys
{
    std::vector<float> rows;
    std::vector<int32_t> order;
    std::vector<float> key;
};

//! Checks the patch ids, then runs `use` on the merge's first steps; "" or the first problem.
template <typename Use>
std::string withMergeKeys(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patchIds,
    int64_t patchesPerFrame, int64_t maxRun, Use&& use)
{
    std::string const bad = checkPatchIds(patchIds, n, patchesPerFrame, maxRun);
    if (!bad.empty())
    {
        return bad;
    }
    MergeKeys keys;
    keys.rows = toFloat(visual, dtype, n * d);
    keys.order = ffexport::reference::patchOrder(patchIds, n, patchesPerFrame);
    keys.key = ffexport::reference::chainCloseness(keys.rows.data(), n, d, patchIds, keys.order);
    return use(static_cast<MergeKeys const&>(keys));
}

} // namespace

extern "C" {

int ffe_reference_abi_version(void)
{
    return 1;
}

int ffe_validate_merge(int64_t n, int64_t d, int32_t dtype, int64_t remove, int64_t patches_per_frame,
    int64_t max_run, char* message, size_t message_size)
{
    return guarded(
        message, message_size,
        [&]() { return ffexport::validateMerge(n, d, dtype, remove, patches_per_frame, max_run); }, nothing);
}

int ffe_validate_prune(int64_t n, int32_t dtype, int64_t keep, char* message, size_t message_size)
{
    return guarded(
        message, message_size, [&]() { return ffexport::validatePrune(n, dtype, keep); }, nothing);
}

int ffe_merge(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patch_ids, int64_t remove,
    int64_t patches_per_frame, int64_t max_run, int64_t* kept, void* values, char* message, size_t message_size)
{
    return guarded(
        message, message_size,
        [&]()
        {
            return firstProblem(ffexport::validateMerge(n, d, dtype, remove, patches_per_frame, max_run),
                {{n == ffexport::kUnknownDim || d == ffexport::kUnknownDim,
                     "FrameFusionMerge: the reference needs known n and D"},
                    {missing(visual) || missing(patch_ids) || missing(kept) || missing(values),
                        "FrameFusionMerge: a NULL array"}});
        },
        [&]()
        {
            return withMergeKeys(visual, dtype, n, d, patch_ids, patches_per_frame, max_run,
                [&](MergeKeys const& merge)
                {
                    std::vector<uint8_t> const flags
                        = ffexport::reference::topFlags(merge.key.data(), n, remove, false);
                    std::vector<float> out(static_cast<size_t>((n - remove) * d));
                    std::string const failed = ffexport::reference::mergeRuns(
                        merge.rows.data(), n, d, patch_ids, merge.order, flags, remove, kept, out.data());
                    if (failed.empty())
                    {
                        fromFloat(out, dtype, values);
                    }
                    return failed;
                });
        });
}

int ffe_prune(float const* importance, int64_t n, int64_t keep, int64_t* kept, char* message, size_t message_size)
{
    return guarded(
        message, message_size,
        [&]()
        {
            return firstProblem(ffexport::validatePrune(n, ffexport::kValueFloat32, keep),
                {{n == ffexport::kUnknownDim, "FrameFusionPrune: the reference needs a known n"},
                    {missing(importance) || missing(kept), "FrameFusionPrune: a NULL array"}});
        },
        [&]()
        {
            ffexport::reference::prune(importance, n, keep, kept);
            return std::string();
        });
}

int ffe_patch_order(int64_t const* patch_ids, int64_t n, int64_t patches_per_frame, int64_t* order, char* message,
    size_t message_size)
{
    return guarded(
        message, message_size,
        [&]()
        {
            return firstProblem({}, {{n < 1 || patches_per_frame < 1 || missing(patch_ids) || missing(order),
                                        "patch order: needs n >= 1, patches_per_frame >= 1 and arrays"}});
        },
        [&]()
        {
            std::string const bad = checkPatchIds(patch_ids, n, patches_per_frame, n);
            if (bad.empty())
            {
                std::vector<int32_t> const result = ffexport::reference::patchOrder(patch_ids, n, patches_per_frame);
                std::copy(result.begin(), result.end(), order);
            }
            return bad;
        });
}

int ffe_chain_closeness(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patch_ids,
    int64_t patches_per_frame, float* key, char* message, size_t message_size)
{
    return guarded(
        message, message_size,
        [&]()
        {
            return firstProblem(ffexport::validateMerge(n, d, dtype, 1, patches_per_frame, n),
                {{missing(visual) || missing(patch_ids) || missing(key) || d == ffexport::kUnknownDim,
                    "chain closeness: needs known shapes and arrays"}});
        },
        [&]()
        {
            return withMergeKeys(visual, dtype, n, d, patch_ids, patches_per_frame, n,
                [&](MergeKeys const& merge)
                {
                    std::copy(merge.key.begin(), merge.key.end(), key);
                    return std::string();
                });
        });
}

int ffe_top_flags(float const* scores, int64_t n, int64_t count, int32_t relative, uint8_t* flags, char* message,
    size_t message_size)
{
    return guarded(
        message, message_size,
        [&]()
        {
            return firstProblem({}, {{n < 1 || count < 0 || count > n || missing(scores) || missing(flags),
                                        "top flags: needs n >= 1, 0 <= count <= n and arrays"}});
        },
        [&]()
        {
            std::vector<uint8_t> const result = ffexport::reference::topFlags(scores, n, count, relative != 0);
            std::copy(result.begin(), result.end(), flags);
            return std::string();
        });
}

} // extern "C"

#include "frameFusionReferenceApi.h"

#include "frameFusionFloat.h"
#include "frameFusionReference.h"
#include "frameFusionValidate.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>
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

//! Runs `body` (returning "" or an INVALID_DATA message), turning exceptions into error codes.
template <typename Body>
int guarded(Body&& body, char* message, size_t messageSize)
{
    try
    {
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

bool missing(void const* pointer)
{
    return pointer == nullptr;
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
    std::string const error = ffexport::validateMerge(n, d, dtype, remove, patches_per_frame, max_run);
    return error.empty() ? FFE_OK : fail(FFE_ERROR_INVALID_ARGUMENT, error, message, message_size);
}

int ffe_validate_prune(int64_t n, int32_t dtype, int64_t keep, char* message, size_t message_size)
{
    std::string const error = ffexport::validatePrune(n, dtype, keep);
    return error.empty() ? FFE_OK : fail(FFE_ERROR_INVALID_ARGUMENT, error, message, message_size);
}

int ffe_merge(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patch_ids, int64_t remove,
    int64_t patches_per_frame, int64_t max_run, int64_t* kept, void* values, char* message, size_t message_size)
{
    std::string error = ffexport::validateMerge(n, d, dtype, remove, patches_per_frame, max_run);
    if (error.empty() && (n == ffexport::kUnknownDim || d == ffexport::kUnknownDim))
    {
        error = "FrameFusionMerge: the reference needs known n and D";
    }
    if (error.empty() && (missing(visual) || missing(patch_ids) || missing(kept) || missing(values)))
    {
        error = "FrameFusionMerge: a NULL array";
    }
    if (!error.empty())
    {
        return fail(FFE_ERROR_INVALID_ARGUMENT, error, message, message_size);
    }
    return guarded(
        [&]() -> std::string
        {
            std::vector<int64_t> counts(static_cast<size_t>(patches_per_frame));
            std::string const bad = ffexport::validatePatchIds(patch_ids, n, patches_per_frame, max_run, counts.data());
            if (!bad.empty())
            {
                return bad;
            }
            std::vector<float> const rows = toFloat(visual, dtype, n * d);
            std::vector<int32_t> const order = ffexport::reference::patchOrder(patch_ids, n, patches_per_frame);
            std::vector<float> const key
                = ffexport::reference::chainCloseness(rows.data(), n, d, patch_ids, order);
            std::vector<uint8_t> const flags = ffexport::reference::topFlags(key.data(), n, remove, false);
            std::vector<float> out(static_cast<size_t>((n - remove) * d));
            std::string const failed = ffexport::reference::mergeRuns(
                rows.data(), n, d, patch_ids, order, flags, remove, kept, out.data());
            if (failed.empty())
            {
                fromFloat(out, dtype, values);
            }
            return failed;
        },
        message, message_size);
}

int ffe_prune(float const* importance, int64_t n, int64_t keep, int64_t* kept, char* message, size_t message_size)
{
    std::string error = ffexport::validatePrune(n, ffexport::kValueFloat32, keep);
    if (error.empty() && n == ffexport::kUnknownDim)
    {
        error = "FrameFusionPrune: the reference needs a known n";
    }
    if (error.empty() && (missing(importance) || missing(kept)))
    {
        error = "FrameFusionPrune: a NULL array";
    }
    if (!error.empty())
    {
        return fail(FFE_ERROR_INVALID_ARGUMENT, error, message, message_size);
    }
    return guarded(
        [&]() -> std::string
        {
            ffexport::reference::prune(importance, n, keep, kept);
            return {};
        },
        message, message_size);
}

int ffe_patch_order(int64_t const* patch_ids, int64_t n, int64_t patches_per_frame, int64_t* order, char* message,
    size_t message_size)
{
    if (n < 1 || patches_per_frame < 1 || missing(patch_ids) || missing(order))
    {
        return fail(FFE_ERROR_INVALID_ARGUMENT, "patch order: needs n >= 1, patches_per_frame >= 1 and arrays",
            message, message_size);
    }
    return guarded(
        [&]() -> std::string
        {
            std::vector<int64_t> counts(static_cast<size_t>(patches_per_frame));
            std::string const bad = ffexport::validatePatchIds(patch_ids, n, patches_per_frame, n, counts.data());
            if (!bad.empty())
            {
                return bad;
            }
            std::vector<int32_t> const result = ffexport::reference::patchOrder(patch_ids, n, patches_per_frame);
            std::copy(result.begin(), result.end(), order);
            return {};
        },
        message, message_size);
}

int ffe_chain_closeness(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patch_ids,
    int64_t patches_per_frame, float* key, char* message, size_t message_size)
{
    std::string error = ffexport::validateMerge(n, d, dtype, 1, patches_per_frame, n);
    if (error.empty() && (missing(visual) || missing(patch_ids) || missing(key) || d == ffexport::kUnknownDim))
    {
        error = "chain closeness: needs known shapes and arrays";
    }
    if (!error.empty())
    {
        return fail(FFE_ERROR_INVALID_ARGUMENT, error, message, message_size);
    }
    return guarded(
        [&]() -> std::string
        {
            std::vector<int64_t> counts(static_cast<size_t>(patches_per_frame));
            std::string const bad = ffexport::validatePatchIds(patch_ids, n, patches_per_frame, n, counts.data());
            if (!bad.empty())
            {
                return bad;
            }
            std::vector<float> const rows = toFloat(visual, dtype, n * d);
            std::vector<int32_t> const order = ffexport::reference::patchOrder(patch_ids, n, patches_per_frame);
            std::vector<float> const result = ffexport::reference::chainCloseness(rows.data(), n, d, patch_ids, order);
            std::copy(result.begin(), result.end(), key);
            return {};
        },
        message, message_size);
}

int ffe_top_flags(float const* scores, int64_t n, int64_t count, int32_t relative, uint8_t* flags, char* message,
    size_t message_size)
{
    if (n < 1 || count < 0 || count > n || missing(scores) || missing(flags))
    {
        return fail(FFE_ERROR_INVALID_ARGUMENT, "top flags: needs n >= 1, 0 <= count <= n and arrays", message,
            message_size);
    }
    return guarded(
        [&]() -> std::string
        {
            std::vector<uint8_t> const result = ffexport::reference::topFlags(scores, n, count, relative != 0);
            std::copy(result.begin(), result.end(), flags);
            return {};
        },
        message, message_size);
}

} // extern "C"

/*
 * ffexport_kernel_check: runs the FrameFusion CUDA kernels on random inputs, compares them with the
 * CPU reference (libffexport_reference.so) and times them. Needs a CUDA device (none on the
 * development machines: a GPU session runs it).
 *
 *   ffexport_kernel_check            small random cases (correctness) + 16384 x 3584 fp32/fp16 timing
 *   ffexport_kernel_check --quick    small random cases only
 *
 * Exit status 0 when every case matches (kept positions identical; values within 1e-5 for float32,
 * 1e-3 relative for float16/bfloat16), 1 on a mismatch, 2 when no device is usable.
 */
#include "frameFusionFloat.h"
#include "frameFusionMergeKernel.h"
#include "frameFusionPruneKernel.h"
#include "frameFusionReferenceApi.h"
#include "frameFusionValidate.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace
{

struct Failure
{
};

void check(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(status));
        throw Failure{};
    }
}

struct MergeCase
{
    int64_t frames;
    int64_t patches;
    int64_t d;
    int32_t dtype;
    double removeFraction;
    double staticFraction; // share of tokens that repeat the previous frame's row exactly
    double thinFraction = 0.0; // share of tokens gone before this step (a thinned span, e.g. several frame blocks)
};

//! Random rows, sequence order frame-major; some tokens repeat their patch's previous row (ties).
std::vector<float> makeRows(MergeCase const& c, std::mt19937_64& rng)
{
    int64_t const n = c.frames * c.patches;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::vector<float> rows(static_cast<size_t>(n * c.d));
    for (int64_t i = 0; i < n; ++i)
    {
        float* row = rows.data() + i * c.d;
        if (i >= c.patches && unit(rng) < c.staticFraction)
        {
            std::memcpy(row, row - c.patches * c.d, sizeof(float) * c.d);
            continue;
        }
        for (int64_t k = 0; k < c.d; ++k)
        {
            row[k] = normal(rng);
        }
        if (i >= c.patches && unit(rng) < 0.5) // similar to the previous frame
        {
            float const* previous = row - c.patches * c.d;
            for (int64_t k = 0; k < c.d; ++k)
            {
                row[k] = previous[k] + 0.1f * row[k];
            }
        }
    }
    return rows;
}

std::vector<uint8_t> encode(std::vector<float> const& values, int32_t dtype)
{
    size_t const size = ffexport::valueTypeSize(dtype);
    std::vector<uint8_t> out(values.size() * size);
    for (size_t i = 0; i < values.size(); ++i)
    {
        if (dtype == ffexport::kValueFloat32)
        {
            std::memcpy(out.data() + 4 * i, &values[i], 4);
            continue;
        }
        uint16_t const bits = dtype == ffexport::kValueFloat16 ? ffexport::floatToFloat16(values[i])
                                                               : ffexport::floatToBFloat16(values[i]);
        std::memcpy(out.data() + 2 * i, &bits, 2);
    }
    return out;
}

float decode(uint8_t const* data, int32_t dtype, size_t i)
{
    if (dtype == ffexport::kValueFloat32)
    {
        float v;
        std::memcpy(&v, data + 4 * i, 4);
        return v;
    }
    uint16_t bits;
    std::memcpy(&bits, data + 2 * i, 2);
    return dtype == ffexport::kValueFloat16 ? ffexport::float16ToFloat(bits) : ffexport::bfloat16ToFloat(bits);
}

template <typename Launch>
float timeMs(Launch&& launch, int repeats)
{
    cudaEvent_t start;
    cudaEvent_t stop;
    check(cudaEventCreate(&start), "event");
    check(cudaEventCreate(&stop), "event");
    launch(); // warm-up
    check(cudaEventRecord(start), "record");
    for (int r = 0; r < repeats; ++r)
    {
        launch();
    }
    check(cudaEventRecord(stop), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return ms / static_cast<float>(repeats);
}

//! Returns true when the kernel matches the reference.
bool runMerge(MergeCase const& c, std::mt19937_64& rng, bool timed)
{
    std::vector<float> rows = makeRows(c, rng);
    // patch id = offset in the frame (in its frame block) mod P; a thinned span keeps a subset, in order
    std::vector<int64_t> patchIds;
    std::vector<bool> seen(static_cast<size_t>(c.patches), false);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    int64_t n = 0, chains = 0;
    for (int64_t i = 0; i < c.frames * c.patches; ++i)
    {
        if (c.thinFraction > 0.0 && unit(rng) < c.thinFraction)
        {
            continue;
        }
        std::copy_n(rows.begin() + i * c.d, c.d, rows.begin() + n * c.d);
        patchIds.push_back(i % c.patches);
        chains += seen[static_cast<size_t>(i % c.patches)] ? 0 : 1;
        seen[static_cast<size_t>(i % c.patches)] = true;
        ++n;
    }
    if (n - chains < 1)
    {
        return true; // nothing can merge: no case
    }
    rows.resize(static_cast<size_t>(n * c.d));
    int64_t remove = std::max<int64_t>(1, static_cast<int64_t>(c.removeFraction * static_cast<double>(n)));
    remove = std::min(remove, n - chains);
    std::vector<uint8_t> const visual = encode(rows, c.dtype);
    int64_t const survivors = n - remove;
    size_t const valueBytes = static_cast<size_t>(survivors * c.d) * ffexport::valueTypeSize(c.dtype);
    std::vector<int64_t> keptRef(static_cast<size_t>(survivors));
    std::vector<uint8_t> valuesRef(valueBytes);
    char message[512] = {0};
    if (ffe_merge(visual.data(), c.dtype, n, c.d, patchIds.data(), remove, c.patches, c.frames, keptRef.data(),
            valuesRef.data(), message, sizeof(message))
        != FFE_OK)
    {
        std::fprintf(stderr, "reference refused the case: %s\n", message);
        return false;
    }

    void* dVisual = nullptr;
    void* dIds = nullptr;
    void* dKept = nullptr;
    void* dValues = nullptr;
    void* dWork = nullptr;
    size_t const work = ffexport::frameFusionMergeWorkspaceSize(n, c.patches);
    check(cudaMalloc(&dVisual, visual.size()), "malloc");
    check(cudaMalloc(&dIds, sizeof(int64_t) * n), "malloc");
    check(cudaMalloc(&dKept, sizeof(int64_t) * survivors), "malloc");
    check(cudaMalloc(&dValues, valueBytes), "malloc");
    check(cudaMalloc(&dWork, work), "malloc");
    check(cudaMemcpy(dVisual, visual.data(), visual.size(), cudaMemcpyHostToDevice), "copy");
    check(cudaMemcpy(dIds, patchIds.data(), sizeof(int64_t) * n, cudaMemcpyHostToDevice), "copy");
    auto launch = [&]()
    {
        check(ffexport::launchFrameFusionMerge(dVisual, c.dtype, n, c.d, static_cast<int64_t const*>(dIds), remove,
                  c.patches, c.frames, static_cast<int64_t*>(dKept), dValues, dWork, work, nullptr),
            "launchFrameFusionMerge");
    };
    launch();
    check(cudaDeviceSynchronize(), "merge");
    std::vector<int64_t> kept(static_cast<size_t>(survivors));
    std::vector<uint8_t> values(valueBytes);
    check(cudaMemcpy(kept.data(), dKept, sizeof(int64_t) * survivors, cudaMemcpyDeviceToHost), "copy");
    check(cudaMemcpy(values.data(), dValues, valueBytes, cudaMemcpyDeviceToHost), "copy");
    float ms = 0.0f;
    if (timed)
    {
        ms = timeMs(launch, 20);
    }
    cudaFree(dVisual);
    cudaFree(dIds);
    cudaFree(dKept);
    cudaFree(dValues);
    cudaFree(dWork);

    int64_t keptMismatch = 0;
    for (int64_t r = 0; r < survivors; ++r)
    {
        keptMismatch += kept[static_cast<size_t>(r)] != keptRef[static_cast<size_t>(r)] ? 1 : 0;
    }
    double worst = 0.0;
    bool valuesOk = true;
    double const rtol = c.dtype == ffexport::kValueFloat32 ? 1e-5 : 1e-3;
    double const atol = c.dtype == ffexport::kValueFloat32 ? 1e-5 : 1e-3;
    if (keptMismatch == 0)
    {
        for (size_t i = 0; i < static_cast<size_t>(survivors * c.d); ++i)
        {
            double const a = decode(values.data(), c.dtype, i);
            double const b = decode(valuesRef.data(), c.dtype, i);
            double const diff = std::fabs(a - b);
            worst = std::max(worst, diff);
            if (!(diff <= atol + rtol * std::fabs(b)))
            {
                valuesOk = false;
            }
        }
    }
    bool const ok = keptMismatch == 0 && valuesOk;
    std::printf("merge %-8s%s n=%-6lld d=%-5lld P=%-5lld frames=%-3lld remove=%-6lld kept %s, max |diff| %.3g%s",
        ffexport::valueTypeName(c.dtype), c.thinFraction > 0.0 ? " thinned" : "", static_cast<long long>(n), static_cast<long long>(c.d),
        static_cast<long long>(c.patches), static_cast<long long>(c.frames), static_cast<long long>(remove),
        keptMismatch == 0 ? "identical" : (std::to_string(keptMismatch) + " differ").c_str(), worst,
        ok ? "" : "  MISMATCH");
    if (timed)
    {
        std::printf(", %.3f ms", ms);
    }
    std::printf("\n");
    return ok;
}

bool runPrune(int64_t n, double keepFraction, std::mt19937_64& rng, bool timed)
{
    int64_t const keep = std::min<int64_t>(n - 1, std::max<int64_t>(1, static_cast<int64_t>(keepFraction * n)));
    std::uniform_real_distribution<float> logUniform(-20.0f, 0.0f);
    std::vector<float> importance(static_cast<size_t>(n));
    for (auto& v : importance)
    {
        v = std::exp2(logUniform(rng));
    }
    for (int64_t i = 1; i < n; i += 7) // exact ties
    {
        importance[static_cast<size_t>(i)] = importance[static_cast<size_t>(i - 1)];
    }
    std::vector<int64_t> keptRef(static_cast<size_t>(keep));
    char message[512] = {0};
    if (ffe_prune(importance.data(), n, keep, keptRef.data(), message, sizeof(message)) != FFE_OK)
    {
        std::fprintf(stderr, "reference refused the case: %s\n", message);
        return false;
    }
    void* dImportance = nullptr;
    void* dKept = nullptr;
    void* dWork = nullptr;
    size_t const work = ffexport::frameFusionPruneWorkspaceSize(n);
    check(cudaMalloc(&dImportance, sizeof(float) * n), "malloc");
    check(cudaMalloc(&dKept, sizeof(int64_t) * keep), "malloc");
    check(cudaMalloc(&dWork, work), "malloc");
    check(cudaMemcpy(dImportance, importance.data(), sizeof(float) * n, cudaMemcpyHostToDevice), "copy");
    auto launch = [&]()
    {
        check(ffexport::launchFrameFusionPrune(static_cast<float const*>(dImportance), n, keep,
                  static_cast<int64_t*>(dKept), dWork, work, nullptr),
            "launchFrameFusionPrune");
    };
    launch();
    check(cudaDeviceSynchronize(), "prune");
    std::vector<int64_t> kept(static_cast<size_t>(keep));
    check(cudaMemcpy(kept.data(), dKept, sizeof(int64_t) * keep, cudaMemcpyDeviceToHost), "copy");
    float ms = timed ? timeMs(launch, 20) : 0.0f;
    cudaFree(dImportance);
    cudaFree(dKept);
    cudaFree(dWork);
    int64_t mismatch = 0;
    for (int64_t r = 0; r < keep; ++r)
    {
        mismatch += kept[static_cast<size_t>(r)] != keptRef[static_cast<size_t>(r)] ? 1 : 0;
    }
    std::printf("prune float32  n=%-6lld keep=%-6lld kept %s%s", static_cast<long long>(n),
        static_cast<long long>(keep), mismatch == 0 ? "identical" : (std::to_string(mismatch) + " differ").c_str(),
        mismatch == 0 ? "" : "  MISMATCH");
    if (timed)
    {
        std::printf(", %.3f ms", ms);
    }
    std::printf("\n");
    return mismatch == 0;
}

} // namespace

int main(int argc, char** argv)
{
    bool const quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        std::fprintf(stderr, "no CUDA device: nothing to check\n");
        return 2;
    }
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    std::mt19937_64 rng(20260101);
    bool ok = true;
    try
    {
        std::uniform_int_distribution<int> pick(0, 1 << 30);
        int32_t const dtypes[] = {ffexport::kValueFloat32, ffexport::kValueFloat16, ffexport::kValueBFloat16};
        for (int trial = 0; trial < 60; ++trial)
        {
            MergeCase c;
            c.frames = 1 + pick(rng) % 12;
            c.patches = 1 + pick(rng) % 300;
            c.d = 1 + pick(rng) % 200;
            c.dtype = dtypes[trial % 3];
            c.removeFraction = (pick(rng) % 100) / 100.0;
            c.staticFraction = (pick(rng) % 4) / 4.0;
            if (c.frames * c.patches < 2 || c.frames < 2)
            {
                c.frames = 2;
            }
            c.thinFraction = trial % 4 == 3 ? 0.4 : 0.0;
            ok = runMerge(c, rng, false) && ok;
            ok = runPrune(2 + pick(rng) % 5000, (pick(rng) % 100) / 100.0, rng, false) && ok;
        }
        if (!quick)
        {
            // a 64-frame 448x448 bucket of Qwen2-VL-7B: 32 frame groups x 256 patches = 8192 tokens; and 16384
            for (int64_t frames : {32, 64})
            {
                for (int32_t dtype : {ffexport::kValueFloat32, ffexport::kValueFloat16})
                {
                    ok = runMerge(MergeCase{frames, 256, 3584, dtype, 0.3, 0.2}, rng, true) && ok;
                }
            }
            ok = runPrune(8192, 0.7, rng, true) && ok;
            ok = runPrune(16384, 0.7, rng, true) && ok;
        }
    }
    catch (Failure const&)
    {
        return 1;
    }
    std::printf(ok ? "all cases match the CPU reference\n" : "MISMATCHES (see above)\n");
    return ok ? 0 : 1;
}

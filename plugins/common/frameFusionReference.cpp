#include "frameFusionReference.h"

#include "frameFusionValidate.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

namespace ffexport
{
namespace reference
{

std::vector<int32_t> patchOrder(int64_t const* patchIds, int64_t n, int64_t patchesPerFrame)
{
    // place of token i = tokens of smaller patch ids + earlier tokens of its own patch
    std::vector<int64_t> before(static_cast<size_t>(patchesPerFrame), 0);
    for (int64_t i = 0; i < n; ++i)
    {
        ++before[static_cast<size_t>(patchIds[i])];
    }
    int64_t total = 0;
    for (auto& count : before)
    {
        int64_t const c = count;
        count = total;
        total += c;
    }
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) // `before` doubles as the per-patch cursor
    {
        order[static_cast<size_t>(before[static_cast<size_t>(patchIds[i])]++)] = static_cast<int32_t>(i);
    }
    return order;
}

static float rowNorm(float const* row, int64_t d)
{
    double sum = 0.0;
    for (int64_t k = 0; k < d; ++k)
    {
        sum += static_cast<double>(row[k]) * static_cast<double>(row[k]);
    }
    return std::sqrt(static_cast<float>(sum));
}

std::vector<float> chainCloseness(float const* rows, int64_t n, int64_t d, int64_t const* patchIds,
    std::vector<int32_t> const& order)
{
    std::vector<float> norms(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
    {
        norms[static_cast<size_t>(i)] = rowNorm(rows + i * d, d);
    }
    std::vector<float> key(static_cast<size_t>(n), 4.0f * kNoPredecessor);
    for (int64_t j = 1; j < n; ++j)
    {
        int32_t const a = order[static_cast<size_t>(j)];
        int32_t const b = order[static_cast<size_t>(j - 1)];
        if (patchIds[a] != patchIds[b])
        {
            continue;
        }
        float const na = norms[static_cast<size_t>(a)];
        float const nb = norms[static_cast<size_t>(b)];
        double sum = 0.0;
        for (int64_t k = 0; k < d; ++k)
        {
            float const diff = rows[a * d + k] / na - rows[b * d + k] / nb;
            sum += static_cast<double>(diff * diff);
        }
        key[static_cast<size_t>(j)] = -0.5f * static_cast<float>(sum);
    }
    return key;
}

std::vector<uint8_t> topFlags(float const* scores, int64_t n, int64_t count, bool relative)
{
    std::vector<uint8_t> flags(static_cast<size_t>(n), 0);
    if (count == 0 || n == 0)
    {
        return flags;
    }
    // ops.selection_key: log2 of clamped importances; NaN just below the lowest real score
    std::vector<float> x(scores, scores + n);
    float lowest = std::numeric_limits<float>::infinity();
    for (auto& value : x)
    {
        if (relative && !std::isnan(value))
        {
            value = std::log2(value < FLT_MIN ? FLT_MIN : value);
        }
        if (!std::isnan(value) && value < lowest)
        {
            lowest = value;
        }
    }
    float low = std::numeric_limits<float>::infinity();
    float high = -std::numeric_limits<float>::infinity();
    for (auto& value : x)
    {
        if (std::isnan(value))
        {
            value = lowest - 1.0f;
        }
        low = value < low ? value : low;
        high = value > high ? value : high;
    }
    high = high + 1.0f;
    // the cut: the count-th largest, by bisection on count(x >= mid) >= count
    for (int step = 0; step < kBisectSteps; ++step)
    {
        float const mid = (low + high) / 2.0f;
        int64_t atLeast = 0;
        for (float const value : x)
        {
            atLeast += value >= mid ? 1 : 0;
        }
        if (atLeast >= count)
        {
            low = mid;
        }
        else
        {
            high = mid;
        }
    }
    float const eps = relative ? kImportanceEps : kSimilarityEps;
    int64_t above = 0;
    for (float const value : x)
    {
        above += (value - low) > eps ? 1 : 0;
    }
    int64_t const need = count - above;
    int64_t nearSeen = 0;
    for (int64_t i = 0; i < n; ++i)
    {
        float const distance = x[static_cast<size_t>(i)] - low;
        if (distance > eps)
        {
            flags[static_cast<size_t>(i)] = 1;
        }
        else if (distance >= -eps)
        {
            ++nearSeen; // the near ones, lowest positions first
            flags[static_cast<size_t>(i)] = nearSeen <= need ? 1 : 0;
        }
    }
    return flags;
}

std::string mergeRuns(float const* rows, int64_t n, int64_t d, int64_t const* patchIds,
    std::vector<int32_t> const& order, std::vector<uint8_t> const& flags, int64_t remove, int64_t* kept,
    float* values)
{
    // group of each token (patch order): one unflagged token plus the flagged run after it
    std::vector<int64_t> groupStart; // patch-order position of each group's unflagged token
    std::vector<int64_t> groupOfPosition(static_cast<size_t>(n), -1);
    int64_t flagged = 0;
    for (int64_t j = 0; j < n; ++j)
    {
        int32_t const token = order[static_cast<size_t>(j)];
        if (flags[static_cast<size_t>(j)])
        {
            ++flagged;
            if (groupStart.empty() || patchIds[order[static_cast<size_t>(j - 1)]] != patchIds[token])
            {
                return "FrameFusionMerge: the selection flagged the first token of a patch chain (remove="
                    + std::to_string(remove) + " exceeds the tokens that can merge; are rows zero or NaN?)";
            }
        }
        else
        {
            groupStart.push_back(j);
        }
        groupOfPosition[static_cast<size_t>(token)] = static_cast<int64_t>(groupStart.size()) - 1;
    }
    if (flagged != remove)
    {
        return "FrameFusionMerge: the selection flagged " + std::to_string(flagged) + " tokens, not remove="
            + std::to_string(remove) + " (NaN in visual?)";
    }
    int64_t const groups = static_cast<int64_t>(groupStart.size());
    std::vector<float> sums(static_cast<size_t>(d));
    std::vector<float> means(static_cast<size_t>(groups * d));
    for (int64_t g = 0; g < groups; ++g)
    {
        int64_t const first = groupStart[static_cast<size_t>(g)];
        int64_t const end = g + 1 < groups ? groupStart[static_cast<size_t>(g + 1)] : n;
        std::fill(sums.begin(), sums.end(), 0.0f);
        for (int64_t j = first; j < end; ++j)
        {
            float const* row = rows + static_cast<int64_t>(order[static_cast<size_t>(j)]) * d;
            for (int64_t k = 0; k < d; ++k)
            {
                sums[static_cast<size_t>(k)] += row[k];
            }
        }
        float const size = static_cast<float>(end - first);
        for (int64_t k = 0; k < d; ++k)
        {
            means[static_cast<size_t>(g * d + k)] = sums[static_cast<size_t>(k)] / size;
        }
    }
    // back to sequence order: the unflagged tokens, ascending, with their group's mean
    std::vector<uint8_t> keep(static_cast<size_t>(n), 0);
    for (int64_t j = 0; j < n; ++j)
    {
        keep[static_cast<size_t>(order[static_cast<size_t>(j)])] = flags[static_cast<size_t>(j)] ? 0 : 1;
    }
    int64_t r = 0;
    for (int64_t i = 0; i < n; ++i)
    {
        if (!keep[static_cast<size_t>(i)])
        {
            continue;
        }
        kept[r] = i;
        float const* mean = means.data() + groupOfPosition[static_cast<size_t>(i)] * d;
        std::copy(mean, mean + d, values + r * d);
        ++r;
    }
    return {};
}

void prune(float const* importance, int64_t n, int64_t keep, int64_t* kept)
{
    std::vector<uint8_t> const flags = topFlags(importance, n, keep, true);
    std::fill(kept, kept + keep, int64_t{0}); // as ops.compact_index when fewer are flagged (NaN)
    int64_t r = 0;
    for (int64_t i = 0; i < n && r < keep; ++i)
    {
        if (flags[static_cast<size_t>(i)])
        {
            kept[r++] = i;
        }
    }
}

} // namespace reference
} // namespace ffexport

// Positions, bucket choice, decode budget and engine checks: pure C++ (no TensorRT, no CUDA).
#include "ffexport/plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <sstream>

#include "ffexport/errors.h"
#include "files.h"

namespace ffexport {
namespace {

std::string grid_text(const std::array<int64_t, 3>& g) {
  return std::to_string(g[0]) + "x" + std::to_string(g[1]) + "x" + std::to_string(g[2]);
}

std::string runs_text(const std::vector<std::pair<int64_t, int64_t>>& runs) {
  std::string text;
  for (const auto& [a, b] : runs) text += (text.empty() ? "[" : ", [") + std::to_string(a) + ", " + std::to_string(b) + "]";
  return "[" + text + "]";
}

// Runs as Python prints a list of (offset, tokens) tuples: "[(0, 16), (31, 16)]".
std::string tuples_text(const std::vector<std::pair<int64_t, int64_t>>& runs) {
  std::string text;
  for (const auto& [a, b] : runs) text += (text.empty() ? "(" : ", (") + std::to_string(a) + ", " + std::to_string(b) + ")";
  return "[" + text + "]";
}

// The runs of video tokens as (offset from the first, tokens) (ffexport/runtime/session.py, _blocks).
std::vector<std::pair<int64_t, int64_t>> relative_runs(const std::vector<std::pair<int64_t, int64_t>>& runs) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& [a, b] : runs) out.emplace_back(a - runs.front().first, b - a);
  return out;
}

std::vector<std::pair<int64_t, int64_t>> block_pairs(const Bucket& bucket) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const FrameBlock& block : bucket.blocks) out.emplace_back(block.start, block.length);
  return out;
}

// The case's runs of video tokens (at least one: Python's _blocks).
std::vector<std::pair<int64_t, int64_t>> video_runs(const ModelFacts& m, const Inputs& in) {
  auto runs = video_spans(in.input_ids, m.video_token_id);
  if (runs.empty()) throw InputError("input_ids hold no video token (id " + std::to_string(m.video_token_id) + ")");
  return runs;
}

// A bucket with recorded frame_blocks takes a case whose runs are those blocks (Python's _grid_bucket /
// _fixed_tower_bucket line; `text` names what lies between the blocks).
void check_frame_blocks(const Bucket& b, const std::vector<std::pair<int64_t, int64_t>>& runs, const std::string& text) {
  const auto got = relative_runs(runs), wanted = block_pairs(b);
  if (got != wanted) {
    throw InputError("the case's video tokens sit in the frame blocks " + tuples_text(got) + " ([offset, tokens]); "
                     "bucket " + b.name + "'s graphs take " + tuples_text(wanted) + " (" + text +
                     ", tokenized by the build's tokenizer)");
  }
}

// Python's Runtime._check_block_case (ffexport/runtime/session.py): a grid case whose video is one frame
// block per temporal group (positions rule mrope_blocks, Qwen3-VL).
std::vector<std::pair<int64_t, int64_t>> check_block_case(const ModelFacts& m, const Inputs& in) {
  const auto [t, h, w] = in.video_grid_thw;
  const int64_t merge = m.spatial_merge_size;
  const std::string grid = std::to_string(t) + "x" + std::to_string(h) + "x" + std::to_string(w);
  if (std::min({t, h, w}) <= 0 || h % merge || w % merge) {
    throw InputError("video_grid_thw " + grid + " is not a valid grid for " + std::to_string(merge) + "x" +
                     std::to_string(merge) + " patch merging");
  }
  if (in.pixel_rows != t * h * w || in.pixel_cols != m.patch_dim()) {
    throw InputError("pixel_values_videos has shape [" + std::to_string(in.pixel_rows) + ", " +
                     std::to_string(in.pixel_cols) + "]; video_grid_thw " + grid + " needs [" + std::to_string(t * h * w) +
                     ", " + std::to_string(m.patch_dim()) + "]");
  }
  const auto runs = video_runs(m, in);
  const int64_t per_block = h * w / (merge * merge);
  std::string lengths;
  bool ok = static_cast<int64_t>(runs.size()) == t;
  for (const auto& [a, b] : runs) {
    lengths += (lengths.empty() ? "" : ", ") + std::to_string(b - a);
    ok = ok && b - a == per_block;
  }
  if (!ok) {
    throw InputError("input_ids hold video token runs of [" + lengths + "]; video_grid_thw " + grid + " gives " +
                     std::to_string(t) + " blocks of " + std::to_string(per_block));
  }
  return runs;
}

// Python's Case.check (ffexport/case.py), for a video as one or several runs of video tokens: the
// runs of the case, checked against the grid and the pixels.
std::vector<std::pair<int64_t, int64_t>> check_case(const ModelFacts& m, const Inputs& in) {
  const auto& g = in.video_grid_thw;
  const int64_t merge = m.spatial_merge_size;
  if (std::min({g[0], g[1], g[2]}) <= 0 || g[1] % merge || g[2] % merge) {
    throw InputError("video_grid_thw " + grid_text(g) + " is not a valid grid for " + std::to_string(merge) + "x" +
                     std::to_string(merge) + " patch merging");
  }
  const auto runs = video_spans(in.input_ids, m.video_token_id);
  if (runs.empty()) {
    throw InputError("input_ids must hold exactly one contiguous run of video tokens (id " +
                     std::to_string(m.video_token_id) + "); found 0");
  }
  int64_t total = 0;
  for (const auto& [a, b] : runs) total += b - a;
  const int64_t expected = g[0] * g[1] * g[2] / (merge * merge);
  if (total != expected) {
    throw InputError((runs.size() == 1 ? "the video span in input_ids has " + std::to_string(total)
                                       : "the " + std::to_string(runs.size()) + " runs of video tokens in input_ids hold " +
                                             std::to_string(total)) +
                     " tokens but video_grid_thw " + grid_text(g) + " gives " + std::to_string(expected));
  }
  if (in.pixel_rows != g[0] * g[1] * g[2]) {
    throw InputError("pixel_values_videos has " + std::to_string(in.pixel_rows) + " rows; video_grid_thw " +
                     grid_text(g) + " needs " + std::to_string(g[0] * g[1] * g[2]));
  }
  if (in.pixel_cols != m.patch_dim()) {
    throw InputError("pixel_values_videos rows have " + std::to_string(in.pixel_cols) + " values; the model expects " +
                     std::to_string(m.patch_dim()));
  }
  return runs;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text;
  for (int64_t d : shape) text += (text.empty() ? "" : ", ") + std::to_string(d);
  return "[" + text + "]";
}

// The rank of the vision graphs' input as the build records it: 5 ([1, T, C, S, S]) unless a bucket records
// InternVL's 4 ([T, C, S, S]) (Python: the smallest recorded rank, default 5).
size_t frames_rank(const Manifest& manifest) {
  size_t rank = 5;
  for (const Bucket& b : manifest.buckets) {
    if (!b.pixel_shape.empty()) rank = std::min(rank, b.pixel_shape.size());
  }
  return rank;
}

// Python's Runtime._fixed_tower_bucket (ffexport/runtime/session.py): frames as the vision graph takes them
// ([1, T, 3, S, S], InternVL's [T, 3, S, S]), the first usable bucket of that many frames, and its video
// tokens: the bucket's frame blocks, or one run of visual_tokens + trailing_video_tokens tokens.
const Bucket& fixed_tower_bucket(const Manifest& manifest, const Inputs& in,
                                 std::vector<std::pair<int64_t, int64_t>>& runs) {
  const ModelFacts& m = manifest.model;
  const int64_t size = m.frame_size;
  const std::vector<int64_t> shape = in.pixel_shape();
  const size_t rank = frames_rank(manifest);
  const size_t lead = rank - 4;  // the leading 1 of [1, T, 3, S, S]
  bool ok = in.fixed_tower && shape.size() == rank && shape[rank - 3] == 3 && shape[rank - 2] == size &&
            shape[rank - 1] == size;
  for (size_t i = 0; ok && i < lead; ++i) ok = shape[i] == 1;
  if (!ok) {
    const std::string dims = std::string(lead ? "1, " : "") + "frames, 3, " + std::to_string(size) + ", " +
                             std::to_string(size);
    throw InputError(std::string(rank == 5 ? "pixel_values_videos" : "pixel_values") + " must have shape [" + dims +
                     "] for this build, got " + shape_text(shape));
  }
  const int64_t frames = shape[lead];
  const Bucket* chosen = nullptr;
  for (const Bucket& b : manifest.buckets) {
    if (b.usable && b.frames == frames) {
      chosen = &b;
      break;
    }
  }
  if (!chosen) {
    std::string listing;
    for (const Bucket& b : manifest.buckets) listing += (listing.empty() ? "" : ", ") + b.describe();
    throw InputError("the case has " + std::to_string(frames) + " frames; no usable bucket of " + manifest.root +
                     " takes that many: " + (listing.empty() ? "none" : listing));
  }
  if (chosen->has_frame_blocks) {  // InternVL: text between frame blocks
    runs = video_runs(m, in);
    check_frame_blocks(*chosen, runs, "the family's text between frames");
    return *chosen;
  }
  runs = video_spans(in.input_ids, m.video_token_id);
  if (runs.size() != 1) {
    throw InputError("input_ids must hold exactly one contiguous run of video tokens (id " +
                     std::to_string(m.video_token_id) + "); found " + std::to_string(runs.size()));
  }
  const int64_t span = runs[0].second - runs[0].first;
  const int64_t count = chosen->visual_tokens + m.trailing_video_tokens;  // OneVision: the frames', then its newline
  if (span != count) {
    throw InputError("the video span in input_ids has " + std::to_string(span) + " tokens; " + std::to_string(frames) +
                     " frames give " + std::to_string(count));
  }
  return *chosen;
}

// The case's runs of video tokens must be `bucket`'s frame blocks, at the same offsets from the first.
void check_blocks(const ModelFacts& m, const Bucket& bucket, const std::vector<std::pair<int64_t, int64_t>>& runs) {
  if (m.one_d()) return;  // fixed_tower_bucket checked them
  if (bucket.has_frame_blocks) return check_frame_blocks(bucket, runs, "the text between blocks");
  if (bucket.contiguous()) {
    if (runs.size() != 1) {
      throw InputError("input_ids must hold exactly one contiguous run of video tokens (id " +
                       std::to_string(m.video_token_id) + "); found " + std::to_string(runs.size()));
    }
    return;
  }
  std::vector<std::pair<int64_t, int64_t>> relative, wanted;
  for (const auto& [a, b] : runs) relative.emplace_back(a - runs[0].first, b - a);
  for (const FrameBlock& block : bucket.blocks) wanted.emplace_back(block.start, block.length);
  if (relative != wanted) {
    throw InputError("bucket " + bucket.name + " holds the video as " + std::to_string(wanted.size()) +
                     " frame blocks [start, length] " + runs_text(wanted) + " (offsets from the first video token); "
                     "input_ids have " + std::to_string(relative.size()) + " runs " + runs_text(relative) +
                     ": the prompt must place the video as the build did (the same text between blocks)");
  }
}

}  // namespace

std::vector<std::pair<int64_t, int64_t>> video_spans(const std::vector<int64_t>& ids, int64_t video_token_id) {
  std::vector<std::pair<int64_t, int64_t>> spans;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t i = 0; i < n;) {
    if (ids[i] != video_token_id) {
      ++i;
      continue;
    }
    int64_t j = i;
    while (j < n && ids[j] == video_token_id) ++j;
    spans.emplace_back(i, j);
    i = j;
  }
  return spans;
}

int64_t temporal_index(int64_t step, double temporal_step) {
  if (temporal_step == 1.0) return step;
  const double scaled = static_cast<double>(step) * temporal_step;  // numpy: float64 product, astype(int64)
  if (!(scaled < 9.0e18)) {
    throw InputError("the M-RoPE temporal index of video grid step " + std::to_string(step) +
                     " does not fit in int64: the build's model.positions.temporal_step is out of range");
  }
  return static_cast<int64_t>(scaled);  // truncation toward zero, as Python's int() and numpy's astype
}

Positions mrope_position_ids(const std::vector<int64_t>& ids, const std::vector<std::array<int64_t, 3>>& grids,
                             int64_t video_token_id, int64_t spatial_merge_size, double temporal_step) {
  if (!(temporal_step > 0) || !std::isfinite(temporal_step)) {
    throw InputError("temporal_step must be positive and finite, got " + std::to_string(temporal_step));
  }
  const auto spans = video_spans(ids, video_token_id);
  if (spans.size() != grids.size()) {
    throw InputError(std::to_string(spans.size()) + " video token spans but " + std::to_string(grids.size()) +
                     " rows in video_grid_thw");
  }
  const int64_t length = static_cast<int64_t>(ids.size());
  Positions p;
  p.ids.assign(static_cast<size_t>(3 * length), 0);
  auto set = [&](int64_t index, int64_t t, int64_t h, int64_t w) {
    p.ids[index] = t;
    p.ids[length + index] = h;
    p.ids[2 * length + index] = w;
  };
  int64_t cursor = 0, next = 0, largest = -1;
  for (size_t v = 0; v < spans.size(); ++v) {
    const auto [start, end] = spans[v];
    const auto [t, h, w] = grids[v];
    const int64_t gh = h / spatial_merge_size, gw = w / spatial_merge_size;
    if (end - start != t * gh * gw) {
      throw InputError("video span of " + std::to_string(end - start) + " tokens does not match grid " +
                       std::to_string(t) + "x" + std::to_string(h) + "x" + std::to_string(w) + " (" +
                       std::to_string(t * gh * gw) + " tokens after " + std::to_string(spatial_merge_size) + "x" +
                       std::to_string(spatial_merge_size) + " merging)");
    }
    for (int64_t i = cursor; i < start; ++i) set(i, next + i - cursor, next + i - cursor, next + i - cursor);
    const int64_t base = next + (start - cursor);
    int64_t index = start;
    for (int64_t a = 0; a < t; ++a) {
      const int64_t time = temporal_index(a, temporal_step);
      for (int64_t b = 0; b < gh; ++b) {
        for (int64_t c = 0; c < gw; ++c) set(index++, base + time, base + b, base + c);
      }
    }
    // the temporal index grows with the step, so the video's largest position is at its last step or edge
    next = base + std::max({temporal_index(t - 1, temporal_step), gh - 1, gw - 1}) + 1;
    largest = std::max(largest, next - 1);
    cursor = end;
  }
  for (int64_t i = cursor; i < length; ++i) {
    set(i, next + i - cursor, next + i - cursor, next + i - cursor);
    largest = std::max(largest, next + i - cursor);
  }
  p.delta = length ? largest + 1 - length : 0;
  return p;
}

std::vector<std::array<int64_t, 3>> position_grids(const std::string& family, const std::array<int64_t, 3>& grid,
                                                   size_t runs) {
  if (family == "qwen2_vl" || family == "qwen2_5_vl") {
    if (runs != 1) {
      throw InputError("a " + family + " prompt holds a video as one run of video tokens; this one has " +
                       std::to_string(runs) + " (no position rule for a split video in this family)");
    }
    return {grid};
  }
  if (family == "qwen3_vl") {
    if (runs != static_cast<size_t>(grid[0])) {
      throw InputError("a qwen3_vl prompt holds a video of " + std::to_string(grid[0]) +
                       " temporal groups as one run of video tokens per group; this one has " + std::to_string(runs));
    }
    return std::vector<std::array<int64_t, 3>>(runs, {1, grid[1], grid[2]});
  }
  throw InputError("this runtime computes M-RoPE positions for the model families qwen2_vl, qwen2_5_vl and qwen3_vl; "
                   "the build's "
                   "model is of family '" + family + "': run it with `ffexport run`");
}

Positions one_d_position_ids(int64_t length) {
  Positions p;
  p.ids.reserve(static_cast<size_t>(3 * length));
  for (int row = 0; row < 3; ++row) {
    for (int64_t i = 0; i < length; ++i) p.ids.push_back(i);
  }
  p.delta = 0;
  return p;
}

Plan plan_case(const Manifest& manifest, const Inputs& inputs) {
  const ModelFacts& m = manifest.model;
  std::vector<std::pair<int64_t, int64_t>> runs;
  const Bucket* chosen = nullptr;
  if (m.one_d()) {
    chosen = &fixed_tower_bucket(manifest, inputs, runs);
  } else if (inputs.fixed_tower) {
    throw InputError("the case holds frames [1, frames, 3, S, S] (a fixed-size tower's); this build takes a Qwen grid's "
                     "patches [rows, values] with video_grid_thw (its positions are " + m.position_rule + ")");
  } else {
    runs = m.mrope_blocks() ? check_block_case(m, inputs) : check_case(m, inputs);
    for (const Bucket& b : manifest.buckets) {
      if (b.usable && b.grid_thw == inputs.video_grid_thw) {
        chosen = &b;
        break;
      }
    }
  }
  if (!chosen) {
    std::string listing;
    for (const Bucket& b : manifest.buckets) {
      listing += (listing.empty() ? "" : ", ") + b.describe() + " grid " + grid_text(b.grid_thw);
    }
    throw InputError("the case's video grid " + grid_text(inputs.video_grid_thw) + " matches no usable bucket of " +
                     manifest.root + "; buckets: " + (listing.empty() ? "none" : listing));
  }
  check_blocks(m, *chosen, runs);
  for (int64_t id : inputs.input_ids) {
    if (id < 0 || id >= m.vocab_size) {
      throw InputError("input_ids hold token ids outside the model's vocabulary [0, " + std::to_string(m.vocab_size) + ")");
    }
  }
  const int64_t length = static_cast<int64_t>(inputs.input_ids.size());
  const int64_t text = length - chosen->visual_tokens;
  if (text > manifest.max_text) {
    throw InputError("prompt is " + std::to_string(text) + " tokens; this build takes at most " +
                     std::to_string(manifest.max_text));
  }
  if (text < 1) throw InputError("the case has no text tokens around the video");
  Plan plan;
  plan.bucket = chosen;
  plan.length = length;
  plan.video_start = runs.front().first;
  plan.video_end = runs.back().second;
  plan.blocks = runs;
  plan.feature_rows = chosen->visual_tokens + (m.one_d() ? m.trailing_video_tokens : 0);
  plan.trailing = m.one_d() ? m.trailing_video_tokens : 0;
  plan.deepstack_shape = chosen->deepstack_shape;
  if (m.one_d()) {
    plan.positions = one_d_position_ids(length);
  } else if (m.mrope_blocks()) {  // Qwen3-VL: every block a (1, h, w) grid, step 1 (ffexport/mrope.py, block_position_ids)
    const auto& g = inputs.video_grid_thw;
    plan.positions = mrope_position_ids(inputs.input_ids, std::vector<std::array<int64_t, 3>>(runs.size(), {1, g[1], g[2]}),
                                        m.video_token_id, m.spatial_merge_size, 1.0);
  } else {
    plan.positions = mrope_position_ids(inputs.input_ids, position_grids(m.family, inputs.video_grid_thw, runs.size()),
                                        m.video_token_id, m.spatial_merge_size, m.temporal_step);
  }
  if (chosen->stages) {
    for (int64_t i = 0; i < m.num_layers; ++i) plan.cache_lengths.push_back(length - *chosen->removed_before(i));
  }
  return plan;
}

std::string mode_name(StaticDecodeMode mode) {
  switch (mode) {
    case StaticDecodeMode::kInPlace: return "in-place";
    case StaticDecodeMode::kTwoSets: return "two-sets";
    default: return "off";
  }
}

StaticDecodeMode parse_static_decode_mode(const std::string& text) {
  for (StaticDecodeMode mode : {StaticDecodeMode::kInPlace, StaticDecodeMode::kTwoSets, StaticDecodeMode::kOff}) {
    if (text == mode_name(mode)) return mode;
  }
  throw InputError("--static-decode takes in-place, two-sets or off, got '" + text + "'");
}

std::vector<int64_t> StaticDecodePlan::cache_lengths(int64_t step) const {
  std::vector<int64_t> out;
  for (int64_t length : prefill_lengths) out.push_back(length + step);
  return out;
}

Copy2D prefill_cache_copy(int64_t kv_heads, int64_t length, int64_t capacity, size_t row_bytes) {
  return {static_cast<size_t>(capacity) * row_bytes, static_cast<size_t>(length) * row_bytes,
          static_cast<size_t>(length) * row_bytes, static_cast<size_t>(kv_heads)};
}

StaticDecodePlan plan_static_decode(const ModelFacts& model, const Bucket& bucket,
                                    const std::vector<int64_t>& prefill_lengths, int64_t max_new_tokens,
                                    StaticDecodeMode mode) {
  StaticDecodePlan plan;
  if (!bucket.decode_static) {
    plan.reason = "bucket " + bucket.name + " has no static decode graph";
    return plan;
  }
  if (mode == StaticDecodeMode::kOff) {
    plan.reason = "the static decode is turned off";
    return plan;
  }
  plan.capacities = bucket.decode_static->capacities;
  plan.prefill_lengths = prefill_lengths;
  plan.sets = mode == StaticDecodeMode::kTwoSets ? 2 : 1;
  if (static_cast<int64_t>(prefill_lengths.size()) != model.num_layers ||
      plan.capacities.size() != prefill_lengths.size()) {
    throw RunError("the prefill returned " + std::to_string(prefill_lengths.size()) + " caches for " +
                   std::to_string(model.num_layers) + " layers and " + std::to_string(plan.capacities.size()) +
                   " static decode capacities: " + kRebuild);
  }
  for (int64_t i = 0; i < model.num_layers; ++i) {
    for (const char* kind : {"key", "value"}) {
      plan.caches.push_back({"past_key_values." + std::to_string(i) + "." + kind,
                             "present." + std::to_string(i) + "." + kind, i,
                             {1, model.num_kv_heads, plan.capacities[i], model.head_dim}});
    }
  }
  if (max_new_tokens < 2) {
    plan.reason = "no decode step (max_new_tokens " + std::to_string(max_new_tokens) + ")";
    return plan;
  }
  plan.room = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < prefill_lengths.size(); ++i) {
    if (prefill_lengths[i] >= plan.capacities[i]) {
      throw InputError("layer " + std::to_string(i) + "'s prompt cache has " + std::to_string(prefill_lengths[i]) +
                       " rows; the decode graph holds " + std::to_string(plan.capacities[i]));
    }
    plan.room = std::min(plan.room, plan.capacities[i] - prefill_lengths[i]);
  }
  if (plan.room < max_new_tokens - 1) {
    plan.reason = std::to_string(max_new_tokens) + " new tokens need " + std::to_string(max_new_tokens - 1) +
                  " decode steps; the static caches hold " + std::to_string(plan.room) + ": decode.engine decodes";
    return plan;
  }
  plan.use = true;
  return plan;
}

void check_decode_budget(const std::vector<int64_t>& prefill_lengths, int64_t max_new_tokens, int64_t max_cache) {
  if (max_new_tokens < 2 || prefill_lengths.empty()) return;
  const int64_t longest = *std::max_element(prefill_lengths.begin(), prefill_lengths.end());
  const int64_t needed = longest + max_new_tokens - 2;
  if (needed > max_cache) {
    throw InputError(std::to_string(max_new_tokens) + " new tokens need decode caches of up to " +
                     std::to_string(needed) + " tokens; this build's decode engine takes at most " +
                     std::to_string(max_cache) + ": ask for at most " + std::to_string(max_cache - longest + 2) +
                     " new tokens");
  }
}

bool is_eos(const ModelFacts& model, int64_t token) {
  return std::find(model.eos_token_ids.begin(), model.eos_token_ids.end(), token) != model.eos_token_ids.end();
}

int64_t argmax(const std::vector<float>& values) {
  int64_t best = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) return static_cast<int64_t>(i);
    if (values[i] > values[best]) best = static_cast<int64_t>(i);
  }
  return best;
}

std::string Version::str() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::optional<Version> parse_version(const std::string& text) {
  std::vector<int> parts;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, '.')) {
    if (item.empty() || item.size() > 6 || !std::all_of(item.begin(), item.end(), [](unsigned char c) {
          return std::isdigit(c);
        })) {
      return std::nullopt;
    }
    parts.push_back(std::stoi(item));
  }
  if (parts.size() < 3 || parts.size() > 4) return std::nullopt;
  return Version{parts[0], parts[1], parts[2]};
}

Version version_from_int(int32_t lib_version) {
  return Version{lib_version / 10000, (lib_version / 100) % 100, lib_version % 100};
}

std::optional<std::string> engine_mismatch(const EngineRecord& record, const Machine& machine) {
  const std::string& name = record.file;
  const std::string rebuild = ": rebuild the engines here with `ffexport build --backend tensorrt`";
  if (!machine.tensorrt) return name + " needs TensorRT " + record.tensorrt + "; no TensorRT library is loaded";
  const auto built = parse_version(record.tensorrt);
  if (!built) {
    return name + " records the TensorRT version '" + record.tensorrt + "', which is not a version: " + kRebuild;
  }
  if (!(*built == *machine.tensorrt)) {
    return name + " was built by TensorRT " + record.tensorrt + "; this machine has TensorRT " +
           machine.tensorrt->str() + rebuild;
  }
  if (machine.compute_capability.empty()) {
    return name + " needs an NVIDIA GPU (built for " + record.gpu_name + "); none is visible here";
  }
  if (record.compute_capability != machine.compute_capability) {
    return name + " was built for " + record.gpu_name + " (compute capability " + record.compute_capability +
           "); this GPU is " + machine.gpu_name + " (compute capability " + machine.compute_capability + ")" + rebuild;
  }
  return std::nullopt;
}

void check_plugins(const Manifest& manifest, const EngineRecord& record, const std::vector<std::string>& given) {
  if (!given.empty()) return;
  if (!record.plugins.empty()) {
    std::string listing;
    for (const std::string& p : record.plugins) listing += (listing.empty() ? "" : ", ") + p;
    throw InputError(record.file + " was built with the plugin libraries " + listing + "; pass them with --plugins");
  }
  if (manifest.ops == "plugin" && record.graph == "prefill") {
    throw InputError(record.file + " uses the FrameFusion plugin ops (the build was made with --ops plugin); pass "
                     "the plugin library with --plugins (build/libffexport_plugins.so)");
  }
}

void check_engines(const Manifest& manifest, const Bucket* bucket, const Machine& machine,
                   const std::vector<std::string>& plugins, bool static_decode) {
  std::vector<const EngineRecord*> records = {&manifest.engine("embed", nullptr), &manifest.engine("decode", nullptr)};
  for (const Bucket& b : manifest.buckets) {
    if (bucket ? &b == bucket : b.usable) {
      records.push_back(&manifest.engine("vision", &b));
      records.push_back(&manifest.engine("prefill", &b));
      if (static_decode && b.engines.count("decode_static")) records.push_back(&b.engines.at("decode_static"));
    }
  }
  for (const EngineRecord* record : records) {
    if (const auto problem = engine_mismatch(*record, machine)) throw RunError(*problem);
    check_plugins(manifest, *record, plugins);
    if (!is_file(manifest.path(record->file))) {
      throw RunError(manifest.path(record->file) + " is missing: " + kRebuild);
    }
  }
}

}  // namespace ffexport

// The runtime's arithmetic, free of TensorRT and CUDA (compiled and tested on any machine):
// M-RoPE position ids (the released Qwen2-VL rule with the build's temporal step, a port of
// ffexport/mrope.py) or 1D ones (LLaVA-style builds), which bucket a case runs in, the prefill/decode positions, the decode cache
// budget, and whether an engine recorded in the manifest can run on this machine.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ffexport/inputs.h"
#include "ffexport/manifest.h"

namespace ffexport {

// Maximal runs [start, end) of `video_token_id` in `ids`.
std::vector<std::pair<int64_t, int64_t>> video_spans(const std::vector<int64_t>& ids, int64_t video_token_id);

struct Positions {
  std::vector<int64_t> ids;  // [3, L] row-major: temporal, height, width axes
  int64_t delta = 0;         // max(position) + 1 - L
};

// The M-RoPE temporal index of video grid step `step`: int(step * temporal_step), the product in
// double and truncated as Python's int() / numpy's astype(int64) do (ffexport/mrope.py); `step` itself
// when temporal_step is 1. InputError when it does not fit in int64.
int64_t temporal_index(int64_t step, double temporal_step);

// Position ids for one sequence with one video per row of `grids` (ffexport/mrope.py,
// mrope_position_ids): text counts up by one; a video's token at grid step t, merged row h, column w
// gets (temporal_index(t), h, w) offset by where the video starts; text after a video continues at the
// largest position it used plus one. `temporal_step`: the manifest's model.positions.temporal_step
// (1: Qwen2-VL; Qwen2.5-VL counts time). InputError when the spans do not match the grids or the step
// is not positive and finite.
Positions mrope_position_ids(const std::vector<int64_t>& ids, const std::vector<std::array<int64_t, 3>>& grids,
                             int64_t video_token_id, int64_t spatial_merge_size, double temporal_step = 1.0);

// 1D positions (model.positions.rule "1d", LLaVA-style builds): arange(length) on all three rows, delta 0,
// so generated token k sits at length + k (ffexport/runtime/session.py, position_ids).
Positions one_d_position_ids(int64_t length);

// The video grids M-RoPE places for one video of `grid` in a prompt of model family `family`, one per
// run of video tokens: Qwen2-VL and Qwen2.5-VL the whole grid as one run (Qwen2.5-VL's time scaling is
// the manifest's temporal_step, applied by mrope_position_ids); Qwen3-VL one (1, h, w) grid per temporal
// group, each its own frame block (ffexport/models/qwen3_vl.py, position_ids). InputError for a family
// whose positions this runtime does not compute or a run count the family does not write.
std::vector<std::array<int64_t, 3>> position_grids(const std::string& family, const std::array<int64_t, 3>& grid,
                                                   size_t runs);

// What the runtime does with one case (everything decided before any engine runs).
struct Plan {
  const Bucket* bucket = nullptr;  // points into the manifest
  int64_t length = 0;              // L: prompt tokens, text + video
  int64_t video_start = 0;         // the region [video_start, video_end): the frame blocks and the text between
  int64_t video_end = 0;
  // Sequence rows [start, end) of each frame block, in order: video_features rows fill them one block
  // after the other (one block, [video_start, video_end), for a contiguous video).
  std::vector<std::pair<int64_t, int64_t>> blocks;
  // Rows of video_features: the bucket's visual tokens plus the family's trailing video tokens
  // (LLaVA-OneVision's newline: the last `trailing` rows of the last block, text to FrameFusion).
  int64_t feature_rows = 0;
  int64_t trailing = 0;
  // The prefill's DeepStack input [k, N, D] (Qwen3-VL: the vision engine's deepstack_features, passed as
  // they are); empty when the bucket's prefill takes none.
  std::vector<int64_t> deepstack_shape;
  Positions positions;
  // Rows of layer i's cache after the prefill: L minus the visual tokens the schedule removed before
  // layer i's attention (empty when the manifest records no schedule stages).
  std::vector<int64_t> cache_lengths;

  // Position of generated token k (0-based) on all three axes: L + k + delta. Token 0 comes from the
  // prefill logits; token k >= 1 is produced by the decode step fed token k-1 at position
  // decode_position(k - 1).
  int64_t decode_position(int64_t k) const { return length + k + positions.delta; }
};

// Check `inputs` against the build (grid valid for merging, video tokens as many as the grid gives,
// pixel rows and values per row, ids inside the vocabulary, text length 1..max_text) and pick the
// first usable bucket whose grid equals the case's (like ffexport/runtime/session.py). A build with
// 1D positions takes a fixed-size tower's case instead: frames [1, T, 3, S, S] pick the first usable
// bucket of T frames, and its one run of video tokens must hold the bucket's visual tokens. The case's runs
// of video tokens must be the bucket's frame blocks (one run for a contiguous video; for several
// blocks, the same lengths at the same offsets from the first, so the text between blocks has the
// length the graphs were built for). InputError otherwise, listing the buckets or the blocks.
Plan plan_case(const Manifest& manifest, const Inputs& inputs);

// Generated tokens 1..n-1 each need one decode step; step k reads per-layer caches of
// prefill_lengths[i] + k - 1 tokens. InputError when the longest exceeds `max_cache` (the decode
// engine's profile maximum); max_new_tokens 0 or 1 needs no decode step.
void check_decode_budget(const std::vector<int64_t>& prefill_lengths, int64_t max_new_tokens, int64_t max_cache);

// ---------------------------------------------------------------- static decode (<bucket>.decode_static)
// How the static decode engine's caches are bound. kInPlace: one buffer per cache bound as both
// past_key_values.* and present.* (what ONNX Runtime's IO binding does in ffexport/runtime/kv_cache.py;
// TensorRT does not document that an output may alias an input, see docs/cpp-runtime.md). kTwoSets:
// two buffers per cache, past and present swapped every step (fixed addresses, no aliasing; the
// graph copies the cache on the device each step). kOff: always decode.engine.
enum class StaticDecodeMode { kInPlace, kTwoSets, kOff };

std::string mode_name(StaticDecodeMode mode);
// "in-place", "two-sets", "off" -> the mode; InputError otherwise.
StaticDecodeMode parse_static_decode_mode(const std::string& text);

// One cache tensor of the static decode graph and its buffer.
struct CacheBinding {
  std::string past;               // past_key_values.{i}.key|value (input)
  std::string present;            // present.{i}.key|value (output)
  int64_t layer = 0;
  std::array<int64_t, 4> shape{};  // [1, kv heads, C_i, head dim]
};

struct StaticDecodePlan {
  bool use = false;                  // decode with the bucket's static graph (else decode.engine)
  std::string reason;                // why not, when !use
  std::vector<int64_t> capacities;   // C_i
  std::vector<int64_t> prefill_lengths;  // L_i: the prefill's cache rows, copied into rows [0, L_i)
  int64_t room = 0;                  // decode steps that fit in every cache: min(C_i - L_i)
  int sets = 1;                      // buffers per cache: 1 in place, 2 swapped
  std::vector<CacheBinding> caches;  // layer 0 key, layer 0 value, layer 1 key, ...

  // cache_lengths input of decode step `step` (0-based; the step fed generated token `step`): L_i + step.
  std::vector<int64_t> cache_lengths(int64_t step) const;
  // The buffer set bound to past_key_values.* and to present.* at decode step `step`; the prefill's
  // caches are copied into set 0.
  int past_set(int64_t step) const { return sets == 1 ? 0 : static_cast<int>(step % 2); }
  int present_set(int64_t step) const { return sets == 1 ? 0 : static_cast<int>((step + 1) % 2); }
};

// cudaMemcpy2D's arguments (bytes) that copy a prefill cache [1, kv_heads, length, head_dim] into the
// first `length` rows of each head of a static cache [1, kv_heads, capacity, head_dim]: one row of the
// copy per head. `row_bytes` = head_dim * element size.
struct Copy2D {
  size_t dst_pitch = 0, src_pitch = 0, width = 0, height = 0;
};
Copy2D prefill_cache_copy(int64_t kv_heads, int64_t length, int64_t capacity, size_t row_bytes);

// Whether and how to decode `max_new_tokens` tokens with `bucket`'s static decode graph after a prefill
// that left `prefill_lengths` rows per layer, as ffexport/runtime/session.py decides: not without a
// static graph, with mode kOff, or for fewer than 2 tokens (no decode step); InputError when a layer's
// prompt cache already fills its capacity (L_i >= C_i: a corrupt build); the dynamic decode.engine
// when more tokens are asked than the caches hold (room < max_new_tokens - 1).
StaticDecodePlan plan_static_decode(const ModelFacts& model, const Bucket& bucket,
                                    const std::vector<int64_t>& prefill_lengths, int64_t max_new_tokens,
                                    StaticDecodeMode mode);

// True when `token` ends generation.
bool is_eos(const ModelFacts& model, int64_t token);

// The first index of the largest value; a NaN wins, like numpy.argmax.
int64_t argmax(const std::vector<float>& values);

// Greedy decoding as in ffexport/runtime/session.py: token 0 = argmax(prefill_logits); while fewer
// than max_new_tokens tokens and the last is not an EOS token, token k = argmax(step(token k-1,
// position L + (k-1) + delta)). `step` runs one decode step and returns its logits.
template <typename Step>
std::vector<int64_t> greedy_decode(const Plan& plan, const ModelFacts& model, std::vector<float> prefill_logits,
                                   int64_t max_new_tokens, Step&& step) {
  std::vector<int64_t> tokens;
  std::vector<float> logits = std::move(prefill_logits);
  for (int64_t k = 0; k < max_new_tokens; ++k) {
    const int64_t token = argmax(logits);
    tokens.push_back(token);
    if (is_eos(model, token) || k == max_new_tokens - 1) break;
    logits = step(token, plan.decode_position(k));
  }
  return tokens;
}

// ---------------------------------------------------------------- engines vs this machine
struct Version {
  int major = 0, minor = 0, patch = 0;
  bool operator==(const Version& o) const { return major == o.major && minor == o.minor && patch == o.patch; }
  std::string str() const;
};

// "10.14.1" or "10.14.1.48" (the build number is ignored) -> {10, 14, 1}; nullopt when unparsable.
std::optional<Version> parse_version(const std::string& text);
// getInferLibVersion()'s integer ((major * 100 + minor) * 100 + patch) -> Version.
Version version_from_int(int32_t lib_version);

struct Machine {
  std::optional<Version> tensorrt;        // nullopt: no TensorRT library
  std::string gpu_name;                   // empty: no GPU visible
  std::string compute_capability;         // "9.0"; empty: no GPU visible
};

// Why the engine `record` cannot run on `machine` (one line), or nullopt when it can: the TensorRT
// major.minor.patch must be equal, the GPU's compute capability must be equal (the name may differ).
std::optional<std::string> engine_mismatch(const EngineRecord& record, const Machine& machine);

// The plugin libraries an engine or the build needs: InputError when `record` lists plugins or the
// build's prefill uses plugin ops (manifest "ops": "plugin") and none were given.
void check_plugins(const Manifest& manifest, const EngineRecord& record, const std::vector<std::string>& given);

// Everything checked before TensorRT is asked to deserialize the engines of the build (embed,
// decode) and of `bucket` (vision, prefill, and decode_static when the bucket records one; nullptr:
// every usable bucket): each has a record
// (InputError), matches `machine` (RunError with engine_mismatch's line), has its plugin libraries
// (InputError) and its file (RunError).
// `static_decode` false (StaticDecodeMode::kOff) leaves the decode_static engines out.
void check_engines(const Manifest& manifest, const Bucket* bucket, const Machine& machine,
                   const std::vector<std::string>& plugins, bool static_decode = true);

}  // namespace ffexport

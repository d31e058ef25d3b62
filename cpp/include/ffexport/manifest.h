// An ffexport build directory's manifest.json (format "ffexport.manifest/1"; docs/build-format.md).
//
// load_manifest() is the only way the C++ runtime learns about a build. Like the Python runtime
// (ffexport/runtime/manifest.py) it refuses, with one InputError line naming the file: no directory,
// no manifest.json, JSON that does not parse, another format, missing or mistyped fields, and any
// file listed under "files" that is missing or has another size. SHA-256 digests are not checked
// here (`ffexport run --verify BUILD` does). No TensorRT, no CUDA.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ffexport {

inline constexpr const char* kManifestFormat = "ffexport.manifest/1";
// Bucket schedules (ffexport/fusion/schedule.py): version 2 adds the frame blocks; version 1 is one block.
inline constexpr const char* kScheduleFormatV1 = "ffexport.schedule/1";
inline constexpr const char* kScheduleFormatV2 = "ffexport.schedule/2";
// The position rules this runtime computes (`model.positions.rule`): M-RoPE (ffexport/mrope.py), 1D
// (arange(L) on all three rows, delta 0: LLaVA-style builds and InternVL; ffexport/runtime/session.py,
// position_ids) and M-RoPE with every frame block a (1, h, w) grid (Qwen3-VL; ffexport/mrope.py,
// block_position_ids).
inline constexpr const char* kPositionRuleMrope = "mrope";
inline constexpr const char* kPositionRule1d = "1d";
inline constexpr const char* kPositionRuleMropeBlocks = "mrope_blocks";
// The vision graph's second output and the prefill graph's fourth input in Qwen3-VL builds: the DeepStack
// levels [k, N, D], passed from one to the other as they are.
inline constexpr const char* kDeepstack = "deepstack_features";

// The text a family writes around and between frame blocks (`model.video_text`, ffexport/video_text.py):
// block i (1-based) is prefix.format(index=i) + its video tokens + suffix.format(index=i), blocks joined
// by separator. The C++ runtime does not tokenize; it reads the record for what it says (the layout
// itself is the bucket's frame_blocks).
struct VideoText {
  std::string prefix, suffix, separator;
};

struct ModelFacts {
  std::string name;
  std::string family;
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t vocab_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t video_token_id = 0;
  std::vector<int64_t> eos_token_ids;
  int64_t spatial_merge_size = 0;
  int64_t patch_size = 0;
  int64_t temporal_patch_size = 0;
  // How position ids are built (`model.positions`; a build without it: M-RoPE, step 1, as in Python).
  std::string position_rule = kPositionRuleMrope;
  // M-RoPE temporal index per grid step of a video: the token at grid step t gets int(t * temporal_step)
  // (1 for Qwen2-VL; seconds_per_grid * tokens_per_second for Qwen2.5-VL).
  double temporal_step = 1.0;
  // A fixed-size tower's frame size S (`model.frame_preprocess.size`; rule "1d" only, else 0): its case
  // holds pixel_values_videos [1, frames, 3, S, S].
  int64_t frame_size = 0;
  // Video tokens after the frames' visual tokens (`model.trailing_video_tokens`, rule "1d" only):
  // LLaVA-OneVision's learned newline, 1. The vision graph returns visual_tokens + these rows, placed
  // over the whole run of video tokens; FrameFusion treats them as text.
  int64_t trailing_video_tokens = 0;
  // `model.video_text` (rule "1d" only; InternVL): text between frame blocks.
  std::optional<VideoText> video_text;

  bool one_d() const { return position_rule == kPositionRule1d; }
  bool mrope_blocks() const { return position_rule == kPositionRuleMropeBlocks; }

  // Values per row of pixel_values_videos: RGB x temporal patch x patch x patch.
  int64_t patch_dim() const { return 3 * temporal_patch_size * patch_size * patch_size; }
};

// A TensorRT engine the build recorded: `engines.<graph>` (embed, decode) or a bucket's
// `engines.<graph>` (vision, prefill).
struct EngineRecord {
  std::string graph;               // "embed", "decode", "vision", "prefill"
  std::string file;                // relative to the build directory
  std::string tensorrt;            // the version that built it, e.g. "10.14.1" or "10.14.1.48"
  std::string gpu_name;            // the GPU it was built on
  std::string compute_capability;  // e.g. "9.0"
  std::vector<std::string> plugins;  // plugin libraries it was built with (may be empty)
};

// One frame block of a bucket's video (ffexport/fusion/layout.py, FrameBlock): `length` video tokens
// (whole frames of patches_per_frame) at offsets [start, start + length) of the region, which starts at
// the first video token of the prompt. Text sits between blocks (timestamps, frame labels).
struct FrameBlock {
  int64_t start = 0;
  int64_t length = 0;
  bool operator==(const FrameBlock& o) const { return start == o.start && length == o.length; }
};

// One step of a bucket's static FrameFusion schedule.
struct ScheduleStage {
  int64_t layer = 0;
  std::string where;  // "before_attention" or "after_attention"
  std::string op;     // "merge" or "prune"
  int64_t remove = 0;
};

// A bucket's static decode graph (`graphs.decode_static`): one generated token over per-layer caches
// of fixed capacities, updated at row cache_lengths[i] (docs/build-format.md).
struct StaticDecodeGraph {
  std::string file;
  std::vector<int64_t> capacities;  // rows of layer i's cache (C_i), one per layer
};

struct Bucket {
  std::string name;  // FRAMESxHEIGHTxWIDTH
  int64_t frames = 0, height = 0, width = 0;
  std::array<int64_t, 3> grid_thw{};  // patch grid before merging
  int64_t visual_tokens = 0;
  int64_t patches_per_frame = 0;
  std::string vision, prefill;  // ONNX graph files
  // The vision graph's input shape as the build recorded it (`graphs.vision.inputs[0].shape`; empty when
  // not recorded or not static): a fixed-size tower's [1, T, 3, S, S], InternVL's [T, 3, S, S].
  std::vector<int64_t> pixel_shape;
  // The prefill graph's DeepStack input [k, N, D] (`graphs.prefill.inputs`, Qwen3-VL); empty: none.
  std::vector<int64_t> deepstack_shape;
  // The bucket's `frame_blocks` ([offset, tokens] from the first video token) when the build recorded
  // them (text between frame blocks: Qwen3-VL, InternVL); they equal the schedule's blocks.
  bool has_frame_blocks = false;
  bool usable = false;
  std::optional<bool> parity_passed;
  std::map<std::string, EngineRecord> engines;  // "vision", "prefill" [, "decode_static"] (TensorRT builds only)
  // The schedule as the manifest records it: its format ("" when the bucket has none), the video's
  // frame blocks (the bucket's frame_blocks when recorded, else the schedule's; one block
  // {0, visual_tokens} for version 1 or a schedule without blocks) and its
  // steps (nullopt when not recorded: then per-layer lengths are not known before the prefill runs).
  std::string schedule_format;
  std::vector<FrameBlock> blocks;
  std::optional<std::vector<ScheduleStage>> stages;
  std::optional<StaticDecodeGraph> decode_static;

  bool contiguous() const { return blocks.size() == 1; }
  // Tokens from the first block's start to the last block's end (video and the text between blocks).
  int64_t region_length() const { return blocks.empty() ? visual_tokens : blocks.back().start + blocks.back().length; }
  // Visual tokens removed before layer `layer`'s attention (nullopt when the stages are not recorded).
  std::optional<int64_t> removed_before(int64_t layer) const;

  // e.g. "8x112x112 (8 frames, 112x112)", plus why it is not offered when unusable.
  std::string describe() const;
};

struct FileEntry {
  int64_t bytes = 0;
  std::string sha256;
};

struct Manifest {
  std::string root;  // the build directory
  ModelFacts model;
  std::string precision;  // "fp32", "fp16"
  int64_t max_text = 0;
  std::string ops;  // "standard" (ONNX ops only; the default) or "plugin" (prefill needs the FrameFusion plugins)
  std::map<std::string, std::string> graphs;  // "embed", "decode" -> ONNX file
  std::vector<Bucket> buckets;                // all buckets, usable or not, in manifest order
  std::map<std::string, EngineRecord> engines;  // "embed", "decode" (TensorRT builds only)
  std::map<std::string, FileEntry> files;

  std::string path(const std::string& relative) const;  // root/relative
  std::string describe_buckets() const;                 // every bucket, comma-separated, or "none"

  // The record of the engine for `graph`: a bucket's (vision, prefill) or the build's (embed,
  // decode; pass bucket = nullptr). InputError when the build has no such engine.
  const EngineRecord& engine(const std::string& graph, const Bucket* bucket) const;
};

// Read and check build_dir/manifest.json (see the header comment).
Manifest load_manifest(const std::string& build_dir);

// Parse manifest text (for tests and tools); `source` names it in messages. Files are not checked.
Manifest parse_manifest(const std::string& text, const std::string& root, const std::string& source);

}  // namespace ffexport

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

struct Bucket {
  std::string name;  // FRAMESxHEIGHTxWIDTH
  int64_t frames = 0, height = 0, width = 0;
  std::array<int64_t, 3> grid_thw{};  // patch grid before merging
  int64_t visual_tokens = 0;
  int64_t patches_per_frame = 0;
  std::string vision, prefill;  // ONNX graph files
  bool usable = false;
  std::optional<bool> parity_passed;
  std::map<std::string, EngineRecord> engines;  // "vision", "prefill" (TensorRT builds only)

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

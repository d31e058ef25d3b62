// ffexport::Runtime: run an ffexport build's TensorRT engines on one pre-processed case.
//
//   ffexport::Runtime rt("build/", {/*plugins=*/{"build/libffexport_plugins.so"}});
//   ffexport::Inputs in = ffexport::load_inputs("case/");   // input_ids, pixel_values_videos, video_grid_thw
//   std::vector<int64_t> tokens = rt.generate(in, 64);      // greedy token ids, ending with EOS if generated
//
// The steps are those of the Python runtime (ffexport/runtime/session.py): embed.engine on input_ids;
// the bucket's vision engine on the pixels; the video features written over the video span of the
// embeddings (on the GPU; block by block when the bucket's video is several frame blocks with text
// between them); the bucket's prefill engine with M-RoPE positions (plan.h); then greedy decoding,
// generated token k at position L + k + delta, until an EOS token or the token budget: with the
// bucket's static decode engine when the build has one (per-layer caches allocated once at the
// build's capacities, the prefill's caches copied into their first rows, cache_lengths L_i + k; see
// StaticDecodeMode), else with decode.engine, each step's present.{i}.key/value fed back as
// past_key_values.{i}.* (per-layer cache lengths differ). Which bucket: the first usable one whose
// grid equals the case's.
//
// Before any engine is deserialized the constructor checks every engine the build records against
// this machine (TensorRT version from getInferLibVersion(), GPU compute capability from the CUDA
// runtime) and the plugin libraries; each failure is one ffexport::Error line. The header needs
// neither TensorRT nor CUDA; linking needs libnvinfer and the CUDA runtime.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ffexport/errors.h"
#include "ffexport/inputs.h"
#include "ffexport/manifest.h"
#include "ffexport/plan.h"

namespace ffexport {

struct RuntimeOptions {
  std::vector<std::string> plugins;  // TensorRT plugin libraries, loaded before any engine (--ops plugin builds)
  int device = 0;                    // CUDA device
  bool verbose = false;              // TensorRT's warnings and info on stderr (errors go into the exceptions)
  // How a bucket's static decode engine binds its caches (plan.h); kOff: always decode.engine.
  StaticDecodeMode static_decode = StaticDecodeMode::kTwoSets;  // in-place aliasing: unproven on TensorRT
};

struct Generation {
  std::vector<int64_t> tokens;  // greedy; ends with the EOS token when one was generated
  std::vector<float> logits;    // [vocab_size]: the prefill's last position
  std::string bucket;           // the bucket that ran
  std::string decoder;          // what decoded: "decode_static (in-place)", "decode_static (two-sets)", "decode" or "" (no step)
  std::vector<int64_t> cache_lengths;  // per layer, after the prefill (FrameFusion shortens the later layers)
  double prefill_ms = 0;        // embed + vision + prefill, including the logits' copy to the host
  double decode_ms = 0;         // every decode step
};

class Runtime {
 public:
  explicit Runtime(const std::string& build_dir, RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const Manifest& manifest() const;
  // What this machine offers (TensorRT version, GPU): what the engines were checked against.
  const Machine& machine() const;

  // Prefill `inputs` and decode up to `max_new_tokens` tokens greedily (0: prefill only).
  std::vector<int64_t> generate(const Inputs& inputs, int64_t max_new_tokens);
  // The same, with the prefill logits, per-layer cache lengths and timings.
  Generation run(const Inputs& inputs, int64_t max_new_tokens);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ffexport

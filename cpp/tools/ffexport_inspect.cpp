// ffexport-inspect: what the C++ runtime would do with a build and an inputs folder, without
// TensorRT or a GPU. Prints one JSON object on stdout; errors are one line on stderr.
//
//   ffexport-inspect BUILD_DIR [INPUTS_DIR] [--dump DIR] [--max-new-tokens N] [--static-decode MODE]
//                    [--tensorrt X.Y.Z --compute-capability M.m [--gpu-name NAME]] [--plugins LIB.so]...
//
// BUILD_DIR alone: the manifest as the runtime reads it. With INPUTS_DIR: "plan": the chosen bucket,
// the video region, the M-RoPE delta and the decode positions; "layout": the rows of each frame block
// (the rows video_features fill, in order: feature_rows of them, the last `trailing` a family's video
// tokens after the frames), the per-layer cache lengths the schedule gives and the prefill's DeepStack
// input shape (null: none); "static_decode" (a bucket with a static decode
// graph and schedule stages): whether it decodes, capacities, each step's cache_lengths, position and
// buffer sets, the cache bindings; --dump DIR writes the arrays the runtime
// feeds the engines (input_ids, pixel_values_videos, video_grid_thw as read; position_ids as
// computed) as .npy files. --tensorrt/--compute-capability describe a machine: every engine the
// case needs (all usable buckets' without INPUTS_DIR) is checked against it as the runtime does
// before loading, and a mismatch is the runtime's error line.
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ffexport/errors.h"
#include "ffexport/inputs.h"
#include "ffexport/manifest.h"
#include "ffexport/npy.h"
#include "ffexport/plan.h"

namespace {

using json = nlohmann::json;

constexpr const char* kUsage =
    "usage: ffexport-inspect BUILD_DIR [INPUTS_DIR] [--dump DIR] [--max-new-tokens N] [--static-decode MODE] "
    "[--tensorrt X.Y.Z --compute-capability M.m [--gpu-name NAME]] [--plugins LIB.so]...";

struct Args {
  std::string build, inputs, dump, tensorrt, compute_capability, gpu_name = "this GPU";
  std::vector<std::string> plugins;
  int64_t max_new_tokens = -1;
  ffexport::StaticDecodeMode static_decode = ffexport::StaticDecodeMode::kTwoSets;
};

Args parse(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw ffexport::InputError(std::string(flag) + " needs a value; " + kUsage);
      return argv[++i];
    };
    if (arg == "--dump") a.dump = value("--dump");
    else if (arg == "--tensorrt") a.tensorrt = value("--tensorrt");
    else if (arg == "--compute-capability") a.compute_capability = value("--compute-capability");
    else if (arg == "--gpu-name") a.gpu_name = value("--gpu-name");
    else if (arg == "--plugins") a.plugins.push_back(value("--plugins"));
    else if (arg == "--static-decode") a.static_decode = ffexport::parse_static_decode_mode(value("--static-decode"));
    else if (arg == "--max-new-tokens") {
      const std::string v = value("--max-new-tokens");
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9) {
        throw ffexport::InputError("--max-new-tokens takes a non-negative integer, got '" + v + "'");
      }
      a.max_new_tokens = std::stoll(v);
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    } else if (!arg.empty() && arg[0] == '-') {
      throw ffexport::InputError("unknown option " + arg + "; " + kUsage);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty() || positional.size() > 2) throw ffexport::InputError(kUsage);
  a.build = positional[0];
  if (positional.size() == 2) a.inputs = positional[1];
  if (!a.dump.empty() && a.inputs.empty()) throw ffexport::InputError("--dump needs an INPUTS_DIR");
  return a;
}

json engine_json(const ffexport::EngineRecord& e) {
  return {{"file", e.file}, {"tensorrt", e.tensorrt}, {"gpu", {{"name", e.gpu_name}, {"compute_capability", e.compute_capability}}},
          {"plugins", e.plugins}};
}

json blocks_json(const std::vector<ffexport::FrameBlock>& blocks) {
  json out = json::array();
  for (const auto& b : blocks) out.push_back({b.start, b.length});
  return out;
}

json static_decode_json(const ffexport::StaticDecodePlan& s, const ffexport::Plan& plan, int64_t steps, bool engine) {
  json out = {{"use", s.use}, {"reason", s.reason}, {"engine", engine}, {"capacities", s.capacities},
              {"prefill_lengths", s.prefill_lengths}, {"room", s.room}, {"sets", s.sets}};
  json bindings = json::array();
  for (const auto& c : s.caches) bindings.push_back({{"past", c.past}, {"present", c.present}, {"shape", c.shape}});
  out["bindings"] = bindings;
  json per_step = json::array();
  for (int64_t k = 0; s.use && k < steps; ++k) {
    per_step.push_back({{"cache_lengths", s.cache_lengths(k)}, {"position", plan.decode_position(k)},
                        {"past_set", s.past_set(k)}, {"present_set", s.present_set(k)}});
  }
  out["steps"] = per_step;
  return out;
}

json manifest_json(const ffexport::Manifest& m) {
  const auto& f = m.model;
  json buckets = json::array();
  for (const auto& b : m.buckets) {
    json engines = json::object();
    for (const auto& [graph, e] : b.engines) engines[graph] = engine_json(e);
    buckets.push_back({{"name", b.name}, {"frames", b.frames}, {"height", b.height}, {"width", b.width},
                       {"grid_thw", b.grid_thw}, {"visual_tokens", b.visual_tokens},
                       {"patches_per_frame", b.patches_per_frame}, {"vision", b.vision}, {"prefill", b.prefill},
                       {"usable", b.usable}, {"engines", engines}, {"schedule_format", b.schedule_format},
                       {"blocks", blocks_json(b.blocks)}, {"frame_blocks", b.has_frame_blocks},
                       {"pixel_shape", b.pixel_shape},
                       {"deepstack", b.deepstack_shape.empty() ? json() : json(b.deepstack_shape)}, {"stages", b.stages ? json(b.stages->size()) : json()},
                       {"decode_static", b.decode_static ? json{{"file", b.decode_static->file},
                                                                {"capacities", b.decode_static->capacities}}
                                                          : json()}});
  }
  json engines = json::object();
  for (const auto& [graph, e] : m.engines) engines[graph] = engine_json(e);
  return {{"model", {{"name", f.name}, {"family", f.family}, {"num_layers", f.num_layers}, {"hidden_size", f.hidden_size},
                     {"vocab_size", f.vocab_size}, {"num_kv_heads", f.num_kv_heads}, {"head_dim", f.head_dim},
                     {"video_token_id", f.video_token_id}, {"eos_token_ids", f.eos_token_ids},
                     {"spatial_merge_size", f.spatial_merge_size}, {"patch_size", f.patch_size},
                     {"temporal_patch_size", f.temporal_patch_size}, {"patch_dim", f.patch_dim()},
                     {"position_rule", f.position_rule}, {"temporal_step", f.temporal_step},
                     {"frame_size", f.frame_size}, {"trailing_video_tokens", f.trailing_video_tokens},
                     {"video_text", f.video_text ? json{{"prefix", f.video_text->prefix}, {"suffix", f.video_text->suffix},
                                                        {"separator", f.video_text->separator}}
                                                  : json()}}},
          {"precision", m.precision}, {"max_text", m.max_text}, {"ops", m.ops}, {"graphs", m.graphs},
          {"buckets", buckets}, {"engines", engines}, {"files", m.files.size()}};
}

int run(int argc, char** argv) {
  const Args args = parse(argc, argv);
  const ffexport::Manifest manifest = ffexport::load_manifest(args.build);
  json out = {{"manifest", manifest_json(manifest)}};
  const ffexport::Bucket* bucket = nullptr;
  if (!args.inputs.empty()) {
    const ffexport::Inputs inputs = ffexport::load_inputs(args.inputs);
    const ffexport::Plan plan = ffexport::plan_case(manifest, inputs);
    bucket = plan.bucket;
    const int64_t n = args.max_new_tokens < 0 ? 4 : args.max_new_tokens;
    std::vector<int64_t> decode_positions;
    for (int64_t k = 0; k + 1 < n; ++k) decode_positions.push_back(plan.decode_position(k));
    json blocks = json::array();
    for (const auto& [a, b] : plan.blocks) blocks.push_back({a, b});
    out["plan"] = {{"bucket", bucket->name}, {"length", plan.length}, {"video_start", plan.video_start},
                   {"video_end", plan.video_end}, {"delta", plan.positions.delta},
                   {"decode_positions", decode_positions}};
    out["layout"] = {{"blocks", blocks}, {"cache_lengths", plan.cache_lengths}, {"feature_rows", plan.feature_rows},
                     {"trailing", plan.trailing},
                     {"deepstack", plan.deepstack_shape.empty() ? json() : json(plan.deepstack_shape)}};
    if (bucket->decode_static && !plan.cache_lengths.empty()) {
      const auto s = ffexport::plan_static_decode(manifest.model, *bucket, plan.cache_lengths, n, args.static_decode);
      out["static_decode"] = static_decode_json(s, plan, n - 1, bucket->engines.count("decode_static") > 0);
    }
    if (!args.dump.empty()) {
      const std::string d = args.dump + "/";
      ffexport::write_npy(d + "input_ids.npy", {1, plan.length}, inputs.input_ids);
      ffexport::write_npy(d + "pixel_values_videos.npy", inputs.pixel_shape(), inputs.pixel_values_videos);
      if (!inputs.fixed_tower) {  // a fixed-size tower's case has no grid
        ffexport::write_npy(d + "video_grid_thw.npy", {1, 3},
                            std::vector<int64_t>(inputs.video_grid_thw.begin(), inputs.video_grid_thw.end()));
      }
      ffexport::write_npy(d + "position_ids.npy", {3, plan.length}, plan.positions.ids);
    }
  }
  if (!args.tensorrt.empty() || !args.compute_capability.empty()) {
    ffexport::Machine machine;
    if (!args.tensorrt.empty()) {
      machine.tensorrt = ffexport::parse_version(args.tensorrt);
      if (!machine.tensorrt) throw ffexport::InputError("--tensorrt takes a version like 10.14.1, got " + args.tensorrt);
    }
    machine.compute_capability = args.compute_capability;
    machine.gpu_name = args.compute_capability.empty() ? "" : args.gpu_name;
    ffexport::check_engines(manifest, bucket, machine, args.plugins,
                            args.static_decode != ffexport::StaticDecodeMode::kOff);
    out["engines_ok"] = true;
  }
  std::cout << out.dump(1) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ffexport::guarded_main([&] { return run(argc, argv); });
}

// Unit checks of ffexport_core (no TensorRT, no CUDA): run by ctest and by tests/cpp/test_cpp_runtime.py.
// Prints each failed check and exits non-zero when any failed.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>

#include "ffexport/errors.h"
#include "ffexport/manifest.h"
#include "ffexport/npy.h"
#include "ffexport/plan.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ++failures;                                                             \
      std::cerr << __FILE__ << ":" << __LINE__ << ": failed: " #cond << "\n"; \
    }                                                                         \
  } while (0)

// The message of the ffexport::Error `body` throws ("" when it throws nothing).
std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const ffexport::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void test_half() {
  using ffexport::float_to_half;
  using ffexport::half_to_float;
  CHECK(float_to_half(1.0f) == 0x3c00);
  CHECK(float_to_half(-2.0f) == 0xc000);
  CHECK(float_to_half(65504.0f) == 0x7bff);
  CHECK(float_to_half(65520.0f) == 0x7c00);            // ties to even: rounds up to infinity
  CHECK(float_to_half(1.0f + 1.0f / 2048) == 0x3c00);  // halfway, even stays
  CHECK(float_to_half(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);  // halfway to the smallest subnormal: even (0)
  CHECK(half_to_float(0x3555) == 0.333251953125f);
  CHECK(std::isnan(half_to_float(float_to_half(NAN))));
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite half survives the round trip
    if (float_to_half(half_to_float(static_cast<uint16_t>(h))) != h) {
      CHECK(false && "half round trip");
      break;
    }
  }
}

void test_npy(const std::string& dir) {
  const std::string path = dir + "/a.npy";
  ffexport::write_npy(path, {2, 3}, std::vector<int64_t>{1, 2, 3, 4, 5, -6});
  const ffexport::NpyArray a = ffexport::read_npy(path);
  CHECK(a.describe() == "int64 [2, 3]");
  CHECK(a.to_int64("a") == (std::vector<int64_t>{1, 2, 3, 4, 5, -6}));
  CHECK(contains(error_of([&] { a.to_float32("a"); }), "a must hold floats, got int64 [2, 3]"));
  CHECK(contains(error_of([&] { ffexport::write_npy(path, {1}, std::vector<int64_t>{1}); }), "already exists"));
  CHECK(contains(error_of([&] { ffexport::read_npy(dir + "/missing.npy"); }), "no such file"));
  ffexport::write_npy(dir + "/s.npy", {}, std::vector<float>{2.5f});
  const ffexport::NpyArray s = ffexport::read_npy(dir + "/s.npy");
  CHECK(s.shape.empty() && s.size() == 1 && s.to_float32("s")[0] == 2.5f);
}

void test_versions() {
  using ffexport::parse_version;
  CHECK(parse_version("10.14.1")->str() == "10.14.1");
  CHECK(parse_version("10.14.1.48") == parse_version("10.14.1"));
  CHECK(!parse_version("10.14"));
  CHECK(!parse_version("ten.14.1"));
  CHECK(ffexport::version_from_int(101401).str() == "10.14.1");
  CHECK(ffexport::version_from_int(110100).str() == "11.1.0");

  ffexport::EngineRecord r;
  r.graph = "decode";
  r.file = "decode.engine";
  r.tensorrt = "10.14.1.48";
  r.gpu_name = "NVIDIA H100 80GB HBM3";
  r.compute_capability = "9.0";
  ffexport::Machine here{ffexport::Version{10, 14, 1}, "NVIDIA H200", "9.0"};
  CHECK(!ffexport::engine_mismatch(r, here));  // same architecture, other name: runs
  here.tensorrt = ffexport::Version{10, 9, 0};
  CHECK(contains(ffexport::engine_mismatch(r, here).value_or(""),
                 "decode.engine was built by TensorRT 10.14.1.48; this machine has TensorRT 10.9.0: rebuild"));
  here = {ffexport::Version{10, 14, 1}, "NVIDIA A100", "8.0"};
  CHECK(contains(ffexport::engine_mismatch(r, here).value_or(""),
                 "built for NVIDIA H100 80GB HBM3 (compute capability 9.0); this GPU is NVIDIA A100 (compute capability 8.0)"));
  here = {ffexport::Version{10, 14, 1}, "", ""};
  CHECK(contains(ffexport::engine_mismatch(r, here).value_or(""), "needs an NVIDIA GPU"));
}

void test_positions_and_budget() {
  // 2 text tokens, a video of grid (2, 4, 6) -> 2*2*3 = 12 tokens, 3 text tokens.
  std::vector<int64_t> ids = {1, 2};
  ids.insert(ids.end(), 12, 9);
  ids.insert(ids.end(), {3, 4, 5});
  const auto p = ffexport::mrope_position_ids(ids, {{2, 4, 6}}, 9, 2);
  const int64_t L = static_cast<int64_t>(ids.size());
  CHECK(p.ids[0] == 0 && p.ids[1] == 1);
  CHECK(p.ids[2] == 2 && p.ids[L + 2] == 2 && p.ids[2 * L + 2] == 2);     // first video token
  CHECK(p.ids[13] == 3 && p.ids[L + 13] == 3 && p.ids[2 * L + 13] == 4);  // last: t=1, h=1, w=2
  CHECK(p.ids[14] == 5 && p.ids[L + 16] == 7);                            // text after: max(2+2) + 1
  CHECK(p.delta == 8 - L);
  CHECK(contains(error_of([&] { ffexport::mrope_position_ids(ids, {{2, 4, 4}}, 9, 2); }),
                 "video span of 12 tokens does not match grid 2x4x4"));

  // Qwen2.5-VL: grid step t at int(t * step). Grid (5, 2, 2): 5 tokens of one merged patch each.
  std::vector<int64_t> video = {1};
  video.insert(video.end(), 5, 9);
  video.push_back(3);
  const int64_t n = static_cast<int64_t>(video.size());
  auto temporal = [&](double step) {
    const auto q = ffexport::mrope_position_ids(video, {{5, 2, 2}}, 9, 2, step);
    return std::vector<int64_t>(q.ids.begin(), q.ids.begin() + n);
  };
  CHECK(temporal(1.0) == (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  CHECK(temporal(2.0) == (std::vector<int64_t>{0, 1, 3, 5, 7, 9, 10}));
  CHECK(temporal(0.5) == (std::vector<int64_t>{0, 1, 1, 2, 2, 3, 4}));     // int(0.5) = 0, int(1.5) = 1
  CHECK(temporal(25.0 / 12) == (std::vector<int64_t>{0, 1, 3, 5, 7, 9, 10}));  // 2.08, 4.17, 6.25, 8.33
  // largest position 4: the text token after the video
  CHECK(ffexport::mrope_position_ids(video, {{5, 2, 2}}, 9, 2, 0.5).delta == 5 - n);
  CHECK(ffexport::temporal_index(3, 0.1) == 0 && ffexport::temporal_index(10, 0.1) == 1);  // 0.30000000000000004, 1.0
  CHECK(ffexport::temporal_index(3, 1.0 / 3) == 1);                                         // 1.0 exactly in double
  CHECK(contains(error_of([] { ffexport::temporal_index(7, 1e300); }), "does not fit in int64"));
  CHECK(contains(error_of([&] { ffexport::mrope_position_ids(video, {{5, 2, 2}}, 9, 2, 0.0); }),
                 "temporal_step must be positive and finite"));
  // 1D positions: arange on all three rows, delta 0
  const ffexport::Positions flat = ffexport::one_d_position_ids(4);
  CHECK(flat.ids == (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}) && flat.delta == 0);

  ffexport::check_decode_budget({10, 7}, 5, 13);  // step 4 reads 10 + 3 = 13 cached tokens
  CHECK(contains(error_of([] { ffexport::check_decode_budget({10, 7}, 6, 13); }), "ask for at most 5 new tokens"));
  ffexport::check_decode_budget({100}, 1, 13);  // one token: prefill only
}

void test_greedy_decode() {
  ffexport::ModelFacts model;
  model.eos_token_ids = {7, 9};
  ffexport::Plan plan;
  plan.length = 20;
  plan.positions.delta = -5;
  auto one_hot = [](int64_t index) {
    std::vector<float> v(10, -1.0f);
    v[index] = 3.0f;
    return v;
  };
  std::vector<std::pair<int64_t, int64_t>> calls;  // (token fed, position)
  auto step = [&](int64_t token, int64_t position) {
    calls.emplace_back(token, position);
    return one_hot(token == 4 ? 9 : token + 1);  // 2 -> 3 -> 4 -> 9 (EOS)
  };
  CHECK(ffexport::greedy_decode(plan, model, one_hot(2), 10, step) == (std::vector<int64_t>{2, 3, 4, 9}));
  CHECK(calls == (std::vector<std::pair<int64_t, int64_t>>{{2, 15}, {3, 16}, {4, 17}}));  // L + k + delta
  calls.clear();
  CHECK(ffexport::greedy_decode(plan, model, one_hot(2), 2, step) == (std::vector<int64_t>{2, 3}));
  CHECK(calls.size() == 1);  // the budget's last token needs no further step
  CHECK(ffexport::greedy_decode(plan, model, one_hot(7), 5, step) == (std::vector<int64_t>{7}));
  CHECK(ffexport::greedy_decode(plan, model, one_hot(2), 0, step).empty());
  CHECK(ffexport::argmax({1.0f, 3.0f, 3.0f}) == 1);
  CHECK(ffexport::argmax({1.0f, NAN, 5.0f}) == 1);
}

void test_manifest_errors() {
  CHECK(contains(error_of([] { ffexport::parse_manifest("{\"format\": \"ffexport.manifest/2\"}", "b", "b/manifest.json"); }),
                 "b/manifest.json has format 'ffexport.manifest/2'; this runtime reads 'ffexport.manifest/1'"));
  CHECK(contains(error_of([] { ffexport::parse_manifest("{not json", "b", "m"); }), "m is not valid JSON"));
  CHECK(contains(error_of([] { ffexport::parse_manifest("{\"format\": \"ffexport.manifest/1\"}", "b", "m"); }),
                 "m: model is missing"));
  CHECK(contains(error_of([] { ffexport::load_manifest("/nonexistent/build"); }), "is not a build directory"));

  // model.positions: absent = M-RoPE step 1; the step as recorded; an unknown rule or a bad step is one line
  auto positions = [](const std::string& record) {
    const std::string text = R"({"format": "ffexport.manifest/1", "precision": "fp32", "max_text": 32,
      "model": {"name": "m", "family": "qwen2_5_vl", "num_layers": 1, "hidden_size": 4, "vocab_size": 30,
                "num_kv_heads": 1, "head_dim": 4, "video_token_id": 9, "eos_token_id": 1, "spatial_merge_size": 2,
                "patch_size": 1, "temporal_patch_size": 1)" + record + R"(},
      "graphs": {"embed": {"file": "e.onnx"}, "decode": {"file": "d.onnx"}}, "buckets": [],
      "files": {"e.onnx": {"bytes": 1, "sha256": ")" + std::string(64, 'a') + R"("},
                "d.onnx": {"bytes": 1, "sha256": ")" + std::string(64, 'a') + R"("}}})";
    return ffexport::parse_manifest(text, "b", "m").model;
  };
  CHECK(positions("").position_rule == "mrope" && positions("").temporal_step == 1.0);
  CHECK(positions(R"(, "positions": {"rule": "mrope", "temporal_step": 2.5})").temporal_step == 2.5);
  CHECK(positions(R"(, "positions": {"rule": "mrope", "temporal_step": 2})").temporal_step == 2.0);
  CHECK(contains(error_of([&] { positions(R"(, "positions": {"rule": "rope1d", "temporal_step": 1.0})"); }),
                 "m: model.positions.rule is 'rope1d'; this runtime builds positions by mrope"));
  CHECK(contains(error_of([&] { positions(R"(, "positions": {"rule": "mrope"})"); }),
                 "model.positions.temporal_step is missing"));
  CHECK(contains(error_of([&] { positions(R"(, "positions": {"rule": "mrope", "temporal_step": -1})"); }),
                 "model.positions.temporal_step must be positive, got -1"));
  CHECK(contains(error_of([&] { positions(R"(, "positions": {"rule": "mrope", "temporal_step": "2"})"); }),
                 "model.positions.temporal_step has the wrong type (string)"));
}

ffexport::Manifest block_manifest(const std::string& schedule, const std::string& decode_static) {
  const std::string text = R"({"format": "ffexport.manifest/1", "precision": "fp32", "max_text": 32,
    "model": {"name": "m", "family": "qwen3_vl", "num_layers": 2, "hidden_size": 4, "vocab_size": 300,
              "num_kv_heads": 2, "head_dim": 3, "video_token_id": 9, "eos_token_id": 1, "spatial_merge_size": 2,
              "patch_size": 1, "temporal_patch_size": 1},
    "graphs": {"embed": {"file": "e.onnx"}, "decode": {"file": "d.onnx"}},
    "buckets": [{"name": "b", "frames": 2, "height": 4, "width": 4, "resized": [4, 4], "grid_thw": [2, 4, 4],
                 "visual_tokens": 8, "patches_per_frame": 4, "usable": true, "schedule": )" + schedule + R"(,
                 "graphs": {"vision": {"file": "v.onnx"}, "prefill": {"file": "p.onnx"})" + decode_static + R"(}}],
    "files": {"e.onnx": {"bytes": 1, "sha256": ")" + std::string(64, 'a') + R"("}, "d.onnx": {"bytes": 1, "sha256": ")" +
                           std::string(64, 'a') + R"("}, "v.onnx": {"bytes": 1, "sha256": ")" + std::string(64, 'a') +
                           R"("}, "p.onnx": {"bytes": 1, "sha256": ")" + std::string(64, 'a') + R"("},
              "s.onnx": {"bytes": 1, "sha256": ")" + std::string(64, 'a') + R"("}}})";
  return ffexport::parse_manifest(text, "b", "m");
}

void test_blocks_and_static_decode() {
  const std::string v2 = R"({"format": "ffexport.schedule/2", "blocks": [[0, 4], [6, 4]], "stages": [
      {"layer": 0, "where": "before_attention", "op": "merge", "remove": 2},
      {"layer": 1, "where": "after_attention", "op": "prune", "remove": 3}]})";
  const std::string capacities = R"(, "decode_static": {"file": "s.onnx", "capacities": [40, 40]})";
  const ffexport::Manifest m = block_manifest(v2, capacities);
  const ffexport::Bucket& b = m.buckets[0];
  CHECK(b.blocks.size() == 2 && b.blocks[1] == (ffexport::FrameBlock{6, 4}) && b.region_length() == 10);
  CHECK(b.removed_before(0) == 2 && b.removed_before(1) == 2);  // the prune comes after layer 1's attention
  CHECK(b.decode_static && b.decode_static->capacities == (std::vector<int64_t>{40, 40}));
  CHECK(block_manifest(R"({"format": "ffexport.schedule/1"})", "").buckets[0].blocks.size() == 1);
  CHECK(contains(error_of([&] { block_manifest(R"({"format": "ffexport.schedule/2", "blocks": [[0, 4], [2, 4]]})", ""); }),
                 "starts at region offset 2"));

  // 3 text, block of 4, 2 text, block of 4, 3 text: a qwen3_vl prompt of grid (2, 4, 4)
  ffexport::Inputs in;
  in.input_ids = {5, 6, 7, 9, 9, 9, 9, 8, 8, 9, 9, 9, 9, 5, 6, 7};
  in.video_grid_thw = {2, 4, 4};
  in.pixel_rows = 32;
  in.pixel_cols = 3;
  in.pixel_values_videos.assign(96, 0.0f);
  const ffexport::Plan plan = ffexport::plan_case(m, in);
  CHECK(plan.video_start == 3 && plan.video_end == 13);
  CHECK(plan.blocks == (std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {9, 13}}));
  CHECK(plan.cache_lengths == (std::vector<int64_t>{14, 14}));
  CHECK(plan.positions.ids[9] == plan.positions.ids[3] + 2 + 2);  // block 2 starts after the text after block 1
  in.input_ids.insert(in.input_ids.begin() + 8, 8);                 // one more text token between the blocks
  CHECK(contains(error_of([&] { ffexport::plan_case(m, in); }), "holds the video as 2 frame blocks"));

  ffexport::ModelFacts model = m.model;
  auto s = ffexport::plan_static_decode(model, b, {14, 14}, 27, ffexport::StaticDecodeMode::kInPlace);
  CHECK(s.use && s.room == 26 && s.caches.size() == 4 && s.caches[3].present == "present.1.value");
  CHECK(s.caches[1].shape == (std::array<int64_t, 4>{1, 2, 40, 3}));
  CHECK(s.cache_lengths(3) == (std::vector<int64_t>{17, 17}) && s.past_set(3) == 0 && s.present_set(3) == 0);
  CHECK(!ffexport::plan_static_decode(model, b, {14, 14}, 28, ffexport::StaticDecodeMode::kInPlace).use);
  s = ffexport::plan_static_decode(model, b, {14, 14}, 5, ffexport::StaticDecodeMode::kTwoSets);
  CHECK(s.use && s.past_set(0) == 0 && s.present_set(0) == 1 && s.past_set(1) == 1 && s.present_set(1) == 0);

  // the prefill cache's rows land in the first rows of each head, the rest untouched
  const int64_t heads = 2, length = 3, capacity = 5, hd = 2;
  std::vector<float> present(heads * length * hd), cache(heads * capacity * hd, -1.0f);
  for (size_t i = 0; i < present.size(); ++i) present[i] = static_cast<float>(i);
  const ffexport::Copy2D c = ffexport::prefill_cache_copy(heads, length, capacity, hd * sizeof(float));
  for (size_t r = 0; r < c.height; ++r) {  // what cudaMemcpy2D does
    std::memcpy(reinterpret_cast<char*>(cache.data()) + r * c.dst_pitch,
                reinterpret_cast<const char*>(present.data()) + r * c.src_pitch, c.width);
  }
  bool same = true;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t row = 0; row < capacity; ++row) {
      for (int64_t x = 0; x < hd; ++x) {
        const float want = row < length ? present[(h * length + row) * hd + x] : -1.0f;
        same = same && cache[(h * capacity + row) * hd + x] == want;
      }
    }
  }
  CHECK(same);
}

}  // namespace

int main() {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("ffexport_core_test." + std::to_string(std::rand()) +
                                                 std::to_string(reinterpret_cast<uintptr_t>(&failures))))
          .string();
  std::filesystem::create_directories(dir);
  test_half();
  test_npy(dir);
  test_versions();
  test_positions_and_budget();
  test_greedy_decode();
  test_manifest_errors();
  test_blocks_and_static_decode();
  std::filesystem::remove_all(dir);
  if (failures) {
    std::cerr << failures << " check(s) failed\n";
    return 1;
  }
  std::cout << "ffexport_core_test: all checks passed\n";
  return 0;
}

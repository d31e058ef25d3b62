// ffexport::Runtime: vision -> prefill -> decode on a build's TensorRT engines (see runtime.h).
#include "ffexport/runtime.h"

#include <dlfcn.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "ffexport/npy.h"
#include "files.h"
#include "trt_engine.h"

namespace ffexport {
namespace {

using nvinfer1::DataType;
using trt::DeviceBuffer;
using trt::Engine;
using trt::Input;
using trt::make_dims;

std::string past_name(int64_t layer, const char* kind) {
  return "past_key_values." + std::to_string(layer) + "." + kind;
}
std::string present_name(int64_t layer, const char* kind) {
  return "present." + std::to_string(layer) + "." + kind;
}

// Host values in the engine's dtype for an integer input (int64 or int32 engines).
std::vector<uint8_t> integers_as(DataType type, const std::vector<int64_t>& values, const std::string& what) {
  std::vector<uint8_t> out;
  if (type == DataType::kINT64) {
    out.resize(values.size() * 8);
    std::memcpy(out.data(), values.data(), out.size());
  } else if (type == DataType::kINT32) {
    out.resize(values.size() * 4);
    for (size_t i = 0; i < values.size(); ++i) {
      const int32_t v = static_cast<int32_t>(values[i]);
      std::memcpy(&out[i * 4], &v, 4);
    }
  } else {
    throw RunError(what + " is " + trt::dtype_name(type) + " in the engine; expected int64 or int32: " + kRebuild);
  }
  return out;
}

// Host values in the engine's dtype for a float input (float32 or float16 engines).
std::vector<uint8_t> floats_as(DataType type, const std::vector<float>& values, const std::string& what) {
  std::vector<uint8_t> out;
  if (type == DataType::kFLOAT) {
    out.resize(values.size() * 4);
    std::memcpy(out.data(), values.data(), out.size());
  } else if (type == DataType::kHALF) {
    out.resize(values.size() * 2);
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t h = float_to_half(values[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  } else {
    throw RunError(what + " is " + trt::dtype_name(type) + " in the engine; expected float32 or float16: " + kRebuild);
  }
  return out;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Host bytes bound to one input for one run (TensorRT reads shape inputs from here; the rest is copied).
struct HostInput {
  std::vector<uint8_t> bytes;
  DeviceBuffer device;
  void upload(cudaStream_t stream, const std::string& what) {
    device.reserve(bytes.size());
    trt::check_cuda(cudaMemcpyAsync(device.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream),
                    "copying " + what + " to the GPU");
  }
};

}  // namespace

struct Runtime::Impl {
  Manifest manifest;
  RuntimeOptions options;
  trt::Logger logger;
  Machine machine;
  std::unique_ptr<nvinfer1::IRuntime> runtime;
  cudaStream_t stream = nullptr;
  std::unique_ptr<Engine> embed, decode;
  struct BucketEngines {
    std::unique_ptr<Engine> vision, prefill, decode_static;
    // The static decode's caches: per set, one buffer per cache (layer 0 key, layer 0 value, ...) of
    // its capacity, allocated at the first prompt and kept for the next ones (set 1: kTwoSets only).
    std::vector<DeviceBuffer> static_caches[2];
  };
  std::map<std::string, BucketEngines> buckets;
  DeviceBuffer embeds, features, deepstack, logits;
  std::vector<DeviceBuffer> caches[2];  // ping-pong: key/value of each layer, 2 * num_layers buffers per set

  Impl(const std::string& build_dir, RuntimeOptions opts)
      : manifest(load_manifest(build_dir)), options(std::move(opts)), logger(options.verbose) {
    load_plugins();
    machine = describe_machine();
    // one line before TensorRT sees any engine
    check_engines(manifest, nullptr, machine, options.plugins, options.static_decode != StaticDecodeMode::kOff);
    runtime.reset(nvinfer1::createInferRuntime(logger));
    if (!runtime) throw RunError("TensorRT cannot create a runtime (" + logger.take_error() + ")");
    trt::check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    const int64_t layers = manifest.model.num_layers;
    std::vector<std::string> past, present = {"logits"};
    for (int64_t i = 0; i < layers; ++i) {
      for (const char* kind : {"key", "value"}) {
        past.push_back(past_name(i, kind));
        present.push_back(present_name(i, kind));
      }
    }
    std::vector<std::string> decode_inputs = {"input_ids", "position_ids"};
    decode_inputs.insert(decode_inputs.end(), past.begin(), past.end());
    embed = load("embed", nullptr, {"input_ids"}, {"inputs_embeds"});
    decode = load("decode", nullptr, decode_inputs, present);
    for (auto& set : caches) set.resize(static_cast<size_t>(2 * layers));
  }

  ~Impl() {
    embed.reset();
    decode.reset();
    buckets.clear();
    if (stream) cudaStreamDestroy(stream);
  }

  void load_plugins() {
    for (const std::string& path : options.plugins) {
      if (!is_file(path)) throw InputError("plugin library " + path + " does not exist");
      // Never closed: the plugin creators registered on load must outlive every engine.
      if (!dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
        const char* why = dlerror();
        throw RunError("cannot load plugin library " + path + ": " + (why ? why : "unknown dlopen error"));
      }
    }
  }

  Machine describe_machine() const {
    Machine m;
    m.tensorrt = version_from_int(getInferLibVersion());
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();  // clear the sticky "no device" error; engine checks say "no GPU visible"
      return m;
    }
    if (options.device < 0 || options.device >= count) {
      throw InputError("CUDA device " + std::to_string(options.device) + " does not exist; this machine has " +
                       std::to_string(count));
    }
    trt::check_cuda(cudaSetDevice(options.device), "cudaSetDevice(" + std::to_string(options.device) + ")");
    cudaDeviceProp props{};
    trt::check_cuda(cudaGetDeviceProperties(&props, options.device), "cudaGetDeviceProperties");
    m.gpu_name = props.name;
    m.compute_capability = std::to_string(props.major) + "." + std::to_string(props.minor);
    return m;
  }

  std::unique_ptr<Engine> load(const std::string& graph, const Bucket* bucket, const std::vector<std::string>& inputs,
                               const std::vector<std::string>& outputs) {
    const EngineRecord& record = manifest.engine(graph, bucket);
    return std::make_unique<Engine>(*runtime, logger, manifest.path(record.file), inputs, outputs);
  }

  BucketEngines& bucket_engines(const Bucket& bucket) {
    auto it = buckets.find(bucket.name);
    if (it != buckets.end()) return it->second;
    std::vector<std::string> present = {"logits"};
    for (int64_t i = 0; i < manifest.model.num_layers; ++i) {
      present.push_back(present_name(i, "key"));
      present.push_back(present_name(i, "value"));
    }
    BucketEngines engines;
    // Qwen3-VL: the vision engine's DeepStack levels go to the prefill engine as they are
    const bool deepstack = !bucket.deepstack_shape.empty();
    std::vector<std::string> vision_outputs = {"video_features"};
    std::vector<std::string> prefill_inputs = {"inputs_embeds", "position_ids", "video_start"};
    if (deepstack) {
      vision_outputs.push_back(kDeepstack);
      prefill_inputs.push_back(kDeepstack);
    }
    engines.vision = load("vision", &bucket, {"pixel_values_videos"}, vision_outputs);
    engines.prefill = load("prefill", &bucket, prefill_inputs, present);
    if (engines.prefill->input_names().size() != prefill_inputs.size()) {
      std::string listing, fed;
      for (const std::string& name : engines.prefill->input_names()) listing += (listing.empty() ? "" : ", ") + name;
      for (const std::string& name : prefill_inputs) fed += (fed.empty() ? "" : ", ") + name;
      throw RunError(engines.prefill->path() + " takes the inputs " + listing + "; the manifest of bucket " +
                     bucket.name + " says " + fed + ": " + kRebuild);
    }
    if (options.static_decode != StaticDecodeMode::kOff && bucket.decode_static && bucket.engines.count("decode_static")) {
      std::vector<std::string> inputs = {"input_ids", "position_ids", "cache_lengths"};
      for (int64_t i = 0; i < manifest.model.num_layers; ++i) {
        for (const char* kind : {"key", "value"}) inputs.push_back(past_name(i, kind));
      }
      engines.decode_static = load("decode_static", &bucket, inputs, present);
      for (int64_t i = 0; i < manifest.model.num_layers; ++i) {
        const nvinfer1::Dims want = make_dims({1, manifest.model.num_kv_heads, bucket.decode_static->capacities[i],
                                               manifest.model.head_dim});
        for (const char* kind : {"key", "value"}) {
          const nvinfer1::Dims got = engines.decode_static->shape(past_name(i, kind));
          if (trt::dims_text(got) != trt::dims_text(want)) {
            throw RunError(engines.decode_static->path() + " takes " + past_name(i, kind) + " " + trt::dims_text(got) +
                           "; the manifest's capacities say " + trt::dims_text(want) + ": " + kRebuild);
          }
        }
      }
    }
    return buckets.emplace(bucket.name, std::move(engines)).first->second;
  }

  std::vector<int64_t> decode_static(BucketEngines& engines, const StaticDecodePlan& s, const Plan& plan,
                                     const Engine& prefill, const std::vector<float>& logits0, int64_t max_new_tokens);

  std::vector<float> read_logits(const Engine& engine, const nvinfer1::Dims& dims) {
    const int64_t vocab = manifest.model.vocab_size;
    if (trt::volume(dims) != vocab) {
      throw RunError(engine.path() + " returned logits " + trt::dims_text(dims) + "; expected " + std::to_string(vocab) +
                     " values: " + kRebuild);
    }
    const DataType type = engine.dtype("logits");
    std::vector<float> out(static_cast<size_t>(vocab));
    if (type == DataType::kFLOAT) {
      trt::check_cuda(cudaMemcpy(out.data(), logits.get(), out.size() * 4, cudaMemcpyDeviceToHost), "copying logits");
    } else if (type == DataType::kHALF) {
      std::vector<uint16_t> half(out.size());
      trt::check_cuda(cudaMemcpy(half.data(), logits.get(), half.size() * 2, cudaMemcpyDeviceToHost), "copying logits");
      for (size_t i = 0; i < half.size(); ++i) out[i] = half_to_float(half[i]);
    } else {
      throw RunError(engine.path() + " returns logits as " + trt::dtype_name(type) + ": " + kRebuild);
    }
    return out;
  }

  std::map<std::string, DeviceBuffer*> cache_outputs(int set) {
    std::map<std::string, DeviceBuffer*> out = {{"logits", &logits}};
    for (int64_t i = 0; i < manifest.model.num_layers; ++i) {
      out[present_name(i, "key")] = &caches[set][2 * i];
      out[present_name(i, "value")] = &caches[set][2 * i + 1];
    }
    return out;
  }

  Generation run(const Inputs& inputs, int64_t max_new_tokens) {
    if (max_new_tokens < 0) throw InputError("max_new_tokens must be non-negative, got " + std::to_string(max_new_tokens));
    const ModelFacts& m = manifest.model;
    const Plan plan = plan_case(manifest, inputs);
    const Bucket& bucket = *plan.bucket;
    BucketEngines& engines = bucket_engines(bucket);
    // the vision engine's rows: the visual tokens, plus OneVision's trailing newline
    const int64_t L = plan.length, D = m.hidden_size, N = plan.feature_rows;
    Generation result;
    result.bucket = bucket.name;
    const auto t0 = std::chrono::steady_clock::now();

    // embed
    HostInput ids{integers_as(embed->dtype("input_ids"), inputs.input_ids, "embed input_ids"), {}};
    ids.upload(stream, "input_ids");
    const auto embed_shapes = embed->run({{"input_ids", make_dims({1, L}), ids.device.get(), ids.bytes.data()}},
                                         {{"inputs_embeds", &embeds}}, stream);
    // vision
    HostInput pixels{floats_as(engines.vision->dtype("pixel_values_videos"), inputs.pixel_values_videos,
                               "pixel_values_videos"), {}};
    pixels.upload(stream, "pixel_values_videos");
    std::map<std::string, DeviceBuffer*> vision_outputs = {{"video_features", &features}};
    if (!plan.deepstack_shape.empty()) vision_outputs[kDeepstack] = &deepstack;
    const auto vision_shapes = engines.vision->run(
        {{"pixel_values_videos", make_dims(inputs.pixel_shape()), pixels.device.get(), nullptr}}, vision_outputs, stream);
    const nvinfer1::Dims e = embed_shapes.at("inputs_embeds"), f = vision_shapes.at("video_features");
    const DataType type = embed->dtype("inputs_embeds");
    if (trt::dims_text(e) != trt::dims_text(make_dims({1, L, D})) || trt::dims_text(f) != trt::dims_text(make_dims({N, D})) ||
        engines.vision->dtype("video_features") != type || engines.prefill->dtype("inputs_embeds") != type) {
      throw RunError("the engines of " + manifest.root + " returned embeddings " + trt::dims_text(e) + " " +
                     trt::dtype_name(type) + " and video features " + trt::dims_text(f) + " " +
                     trt::dtype_name(engines.vision->dtype("video_features")) + " for " + std::to_string(L) +
                     " tokens (" + std::to_string(N) + " video): " + kRebuild);
    }
    // the video features replace the video tokens' embeddings, on the GPU, block by block (the text
    // between frame blocks keeps its embeddings)
    const size_t row = static_cast<size_t>(D) * trt::dtype_size(type);
    int64_t feature_row = 0;
    for (const auto& [begin, end] : plan.blocks) {
      trt::check_cuda(cudaMemcpyAsync(static_cast<uint8_t*>(embeds.get()) + begin * row,
                                      static_cast<const uint8_t*>(features.get()) + feature_row * row,
                                      static_cast<size_t>(end - begin) * row, cudaMemcpyDeviceToDevice, stream),
                      "placing the video features");
      feature_row += end - begin;
    }
    std::vector<Input> prefill_inputs;
    if (!plan.deepstack_shape.empty()) {  // [k, N, D] from the vision engine to the prefill, on the GPU
      const nvinfer1::Dims levels = vision_shapes.at(kDeepstack);
      if (trt::dims_text(levels) != trt::dims_text(make_dims(plan.deepstack_shape)) ||
          engines.vision->dtype(kDeepstack) != engines.prefill->dtype(kDeepstack)) {
        throw RunError(engines.vision->path() + " returned " + kDeepstack + " " + trt::dims_text(levels) + " " +
                       trt::dtype_name(engines.vision->dtype(kDeepstack)) + "; the prefill takes " +
                       trt::dims_text(make_dims(plan.deepstack_shape)) + " " +
                       trt::dtype_name(engines.prefill->dtype(kDeepstack)) + ": " + kRebuild);
      }
      prefill_inputs.push_back({kDeepstack, levels, deepstack.get(), nullptr});
    }
    // prefill
    HostInput positions{integers_as(engines.prefill->dtype("position_ids"), plan.positions.ids, "position_ids"), {}};
    positions.upload(stream, "position_ids");
    HostInput start{integers_as(engines.prefill->dtype("video_start"), {plan.video_start}, "video_start"), {}};
    start.upload(stream, "video_start");
    prefill_inputs.insert(prefill_inputs.begin(),
                          {{"inputs_embeds", make_dims({1, L, D}), embeds.get(), nullptr},
                           {"position_ids", make_dims({3, L}), positions.device.get(), positions.bytes.data()},
                           {"video_start", make_dims({}), start.device.get(), start.bytes.data()}});
    const auto shapes = engines.prefill->run(prefill_inputs, cache_outputs(0), stream);
    std::vector<nvinfer1::Dims> cache_dims;
    for (int64_t i = 0; i < m.num_layers; ++i) {
      for (const char* kind : {"key", "value"}) cache_dims.push_back(shapes.at(present_name(i, kind)));
      result.cache_lengths.push_back(cache_dims[2 * i].d[2]);
    }
    if (!plan.cache_lengths.empty() && result.cache_lengths != plan.cache_lengths) {
      throw RunError(engines.prefill->path() + " returned caches of other lengths than bucket " + bucket.name +
                     "'s schedule gives: " + kRebuild);
    }
    result.logits = read_logits(*engines.prefill, shapes.at("logits"));
    result.prefill_ms = ms_since(t0);

    // greedy decoding: the static decode engine when the bucket has one and the caches hold the tokens
    if (engines.decode_static) {
      const StaticDecodePlan s = plan_static_decode(m, bucket, result.cache_lengths, max_new_tokens, options.static_decode);
      if (s.use) {
        const auto t1 = std::chrono::steady_clock::now();
        result.decoder = "decode_static (" + mode_name(options.static_decode) + ")";
        result.tokens = decode_static(engines, s, plan, *engines.prefill, result.logits, max_new_tokens);
        result.decode_ms = ms_since(t1);
        return result;
      }
    }
    if (max_new_tokens > 1) result.decoder = "decode";
    const nvinfer1::Dims cache_max = decode->profile_max(past_name(0, "key"));
    if (cache_max.nbDims == 4) check_decode_budget(result.cache_lengths, max_new_tokens, cache_max.d[2]);
    const auto t1 = std::chrono::steady_clock::now();
    int current = 0;
    HostInput token, position;
    auto step = [&](int64_t next, int64_t p) {
      token.bytes = integers_as(decode->dtype("input_ids"), {next}, "decode input_ids");
      token.upload(stream, "input_ids");
      position.bytes = integers_as(decode->dtype("position_ids"), {p, p, p}, "decode position_ids");
      position.upload(stream, "position_ids");
      std::vector<Input> feeds = {{"input_ids", make_dims({1, 1}), token.device.get(), token.bytes.data()},
                                  {"position_ids", make_dims({3, 1}), position.device.get(), position.bytes.data()}};
      for (int64_t i = 0; i < m.num_layers; ++i) {
        for (int j = 0; j < 2; ++j) {
          feeds.push_back({past_name(i, j ? "value" : "key"), cache_dims[2 * i + j], caches[current][2 * i + j].get(),
                           nullptr});
        }
      }
      const auto out = decode->run(feeds, cache_outputs(1 - current), stream);  // present.* -> the other set
      for (int64_t i = 0; i < m.num_layers; ++i) {
        for (int j = 0; j < 2; ++j) cache_dims[2 * i + j] = out.at(present_name(i, j ? "value" : "key"));
      }
      current = 1 - current;
      return read_logits(*decode, out.at("logits"));
    };
    result.tokens = greedy_decode(plan, m, result.logits, max_new_tokens, step);
    result.decode_ms = ms_since(t1);
    return result;
  }
};

// The static decode (plan.h, StaticDecodePlan): the prefill's caches (caches[0], [1, kvh, L_i, hd] each)
// copied into the first L_i rows of buffers of C_i rows allocated once per bucket; per step only the
// token, its position and the cache lengths go to the GPU and the logits come back.
std::vector<int64_t> Runtime::Impl::decode_static(BucketEngines& engines, const StaticDecodePlan& s, const Plan& plan,
                                                  const Engine& prefill, const std::vector<float>& logits0,
                                                  int64_t max_new_tokens) {
  const ModelFacts& m = manifest.model;
  Engine& engine = *engines.decode_static;
  const DataType type = engine.dtype(past_name(0, "key"));
  if (type != prefill.dtype(present_name(0, "key"))) {
    throw RunError(engine.path() + " holds its caches as " + trt::dtype_name(type) + "; the prefill returns " +
                   trt::dtype_name(prefill.dtype(present_name(0, "key"))) + ": " + kRebuild);
  }
  const size_t row = static_cast<size_t>(m.head_dim) * trt::dtype_size(type);
  for (int set = 0; set < s.sets; ++set) {
    std::vector<DeviceBuffer>& buffers = engines.static_caches[set];
    if (!buffers.empty()) continue;
    buffers.resize(s.caches.size());
    for (size_t j = 0; j < s.caches.size(); ++j) {
      const size_t bytes = static_cast<size_t>(m.num_kv_heads * s.capacities[s.caches[j].layer]) * row;
      buffers[j].reserve(bytes);
      // rows past cache_lengths are masked; they must still be finite
      trt::check_cuda(cudaMemsetAsync(buffers[j].get(), 0, bytes, stream), "clearing the static decode caches");
    }
  }
  for (size_t j = 0; j < s.caches.size(); ++j) {
    const int64_t layer = s.caches[j].layer;
    const Copy2D c = prefill_cache_copy(m.num_kv_heads, s.prefill_lengths[layer], s.capacities[layer], row);
    trt::check_cuda(cudaMemcpy2DAsync(engines.static_caches[0][j].get(), c.dst_pitch, caches[0][j].get(), c.src_pitch,
                                      c.width, c.height, cudaMemcpyDeviceToDevice, stream),
                    "copying the prefill's caches into the static decode caches");
  }
  HostInput token, position, lengths;
  int64_t k = 0;
  auto step = [&](int64_t next, int64_t p) {
    token.bytes = integers_as(engine.dtype("input_ids"), {next}, "decode input_ids");
    token.upload(stream, "input_ids");
    position.bytes = integers_as(engine.dtype("position_ids"), {p, p, p}, "decode position_ids");
    position.upload(stream, "position_ids");
    lengths.bytes = integers_as(engine.dtype("cache_lengths"), s.cache_lengths(k), "cache_lengths");
    lengths.upload(stream, "cache_lengths");
    std::vector<Input> feeds = {
        {"input_ids", make_dims({1, 1}), token.device.get(), token.bytes.data()},
        {"position_ids", make_dims({3, 1}), position.device.get(), position.bytes.data()},
        {"cache_lengths", make_dims({m.num_layers}), lengths.device.get(), lengths.bytes.data()}};
    std::map<std::string, DeviceBuffer*> outputs = {{"logits", &logits}};
    for (size_t j = 0; j < s.caches.size(); ++j) {
      const CacheBinding& c = s.caches[j];
      feeds.push_back({c.past, make_dims({c.shape[0], c.shape[1], c.shape[2], c.shape[3]}),
                       engines.static_caches[s.past_set(k)][j].get(), nullptr});
      outputs[c.present] = &engines.static_caches[s.present_set(k)][j];  // the same buffer in place
    }
    const auto out = engine.run(feeds, outputs, stream);
    ++k;
    return read_logits(engine, out.at("logits"));
  };
  return greedy_decode(plan, m, logits0, max_new_tokens, step);
}

Runtime::Runtime(const std::string& build_dir, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(build_dir, std::move(options))) {}

Runtime::~Runtime() = default;

const Manifest& Runtime::manifest() const { return impl_->manifest; }

const Machine& Runtime::machine() const { return impl_->machine; }

std::vector<int64_t> Runtime::generate(const Inputs& inputs, int64_t max_new_tokens) {
  return run(inputs, max_new_tokens).tokens;
}

Generation Runtime::run(const Inputs& inputs, int64_t max_new_tokens) { return impl_->run(inputs, max_new_tokens); }

}  // namespace ffexport

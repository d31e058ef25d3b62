// manifest.json -> ffexport::Manifest, with the same checks as ffexport/runtime/manifest.py.
#include "ffexport/manifest.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "ffexport/errors.h"
#include "files.h"

namespace ffexport {
namespace {

using json = nlohmann::json;

std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return text;
}

// Typed access to the manifest's fields; a missing or mistyped field is a corrupt build.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& where, const std::string& problem) const {
    throw InputError(source_ + ": " + where + " " + problem + ": " + kRebuild);
  }

  static std::string at(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }

  const json& get(const json& obj, const std::string& key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) fail(at(where, key), "is missing");
    return obj.at(key);
  }

  const json& object(const json& obj, const std::string& key, const std::string& where) const {
    const json& value = get(obj, key, where);
    if (!value.is_object()) fail(at(where, key), "has the wrong type (" + std::string(value.type_name()) + ")");
    return value;
  }

  const json& array(const json& obj, const std::string& key, const std::string& where) const {
    const json& value = get(obj, key, where);
    if (!value.is_array()) fail(at(where, key), "has the wrong type (" + std::string(value.type_name()) + ")");
    return value;
  }

  std::string string(const json& obj, const std::string& key, const std::string& where) const {
    const json& value = get(obj, key, where);
    if (!value.is_string()) fail(at(where, key), "has the wrong type (" + std::string(value.type_name()) + ")");
    return value.get<std::string>();
  }

  int64_t integer(const json& obj, const std::string& key, const std::string& where) const {
    const json& value = get(obj, key, where);
    if (!value.is_number_integer()) fail(at(where, key), "has the wrong type (" + std::string(value.type_name()) + ")");
    return value.get<int64_t>();
  }

  int64_t positive(const json& obj, const std::string& key, const std::string& where) const {
    const int64_t value = integer(obj, key, where);
    if (value < 1) fail(at(where, key), "must be positive, got " + std::to_string(value));
    return value;
  }

  bool boolean(const json& obj, const std::string& key, const std::string& where) const {
    const json& value = get(obj, key, where);
    if (!value.is_boolean()) fail(at(where, key), "has the wrong type (" + std::string(value.type_name()) + ")");
    return value.get<bool>();
  }

  // A path inside the build directory (no absolute paths, no "..", no backslashes).
  std::string relative(const std::string& name, const std::string& where) const {
    bool outside = name.empty() || name[0] == '/' || name.find('\\') != std::string::npos;
    size_t start = 0;
    while (!outside && start <= name.size()) {
      const size_t end = std::min(name.find('/', start), name.size());
      if (name.compare(start, end - start, "..") == 0 && end - start == 2) outside = true;
      start = end + 1;
    }
    if (outside) fail(where, "names a path outside the build directory ('" + name + "')");
    return name;
  }

  std::string file(const json& obj, const std::string& where) const {
    return relative(string(obj, "file", where), where + ".file");
  }

  ModelFacts model(const json& m) const {
    const std::string w = "model";
    ModelFacts f;
    const json& eos = get(m, "eos_token_id", w);
    if (eos.is_number_integer()) {
      f.eos_token_ids.push_back(eos.get<int64_t>());
    } else if (eos.is_array() && !eos.empty()) {
      for (const json& x : eos) {
        if (!x.is_number_integer()) fail("model.eos_token_id", "must be an integer or a list of integers");
        f.eos_token_ids.push_back(x.get<int64_t>());
      }
    } else {
      fail("model.eos_token_id", "must be an integer or a list of integers");
    }
    f.name = string(m, "name", w);
    f.family = string(m, "family", w);
    f.num_layers = positive(m, "num_layers", w);
    f.hidden_size = positive(m, "hidden_size", w);
    f.vocab_size = positive(m, "vocab_size", w);
    f.num_kv_heads = positive(m, "num_kv_heads", w);
    f.head_dim = positive(m, "head_dim", w);
    f.video_token_id = integer(m, "video_token_id", w);
    positions(m, f);  // first: it says which facts the family has (ffexport/runtime/manifest.py, model)
    // a fixed-size tower (rule "1d") has no merge or temporal patch (null in its manifest), as Python reads it
    f.spatial_merge_size = f.one_d() ? 1 : positive(m, "spatial_merge_size", w);
    f.patch_size = positive(m, "patch_size", w);
    f.temporal_patch_size = f.one_d() ? 1 : positive(m, "temporal_patch_size", w);
    if (f.one_d()) fixed_tower(m, f);
    return f;
  }

  // A fixed-size tower's facts (ffexport/runtime/manifest.py, fixed_tower): the frame size, the video
  // tokens after the frames (`trailing_video_tokens`, required) and the optional `video_text`.
  void fixed_tower(const json& m, ModelFacts& f) const {
    const std::string w = "model";
    f.frame_size = positive(object(m, "frame_preprocess", w), "size", "model.frame_preprocess");
    f.trailing_video_tokens = integer(m, "trailing_video_tokens", w);
    if (f.trailing_video_tokens < 0) {
      fail("model.trailing_video_tokens", "must be 0 or more, got " + std::to_string(f.trailing_video_tokens));
    }
    if (m.contains("video_text") && !m.at("video_text").is_null()) f.video_text = video_text(m.at("video_text"));
  }

  // `model.video_text` (ffexport/video_text.py, VideoText.from_json): three strings whose only
  // placeholder is {index} ({{ and }} are literal braces).
  VideoText video_text(const json& record) const {
    const std::string w = "model.video_text";
    if (!record.is_object()) fail(w, "is not an object");
    VideoText t;
    for (auto [key, field] : {std::pair<const char*, std::string*>{"prefix", &t.prefix}, {"suffix", &t.suffix},
                              {"separator", &t.separator}}) {
      if (!record.contains(key) || !record.at(key).is_string()) fail(w, std::string("has no text field '") + key + "'");
      *field = record.at(key).get<std::string>();
    }
    for (const std::string* text : {&t.prefix, &t.suffix}) {
      for (size_t i = 0; i < text->size(); ++i) {
        const char c = (*text)[i];
        if ((c == '{' || c == '}') && i + 1 < text->size() && (*text)[i + 1] == c) {
          ++i;  // an escaped brace
        } else if (c == '}') {
          fail(w, "has a prefix or suffix that is not a format string of {index} ('" + *text + "')");
        } else if (c == '{') {
          const size_t close = text->find('}', i);
          if (close == std::string::npos || text->substr(i + 1, close - i - 1) != "index") {
            fail(w, "has a prefix or suffix that is not a format string of {index} ('" + *text + "')");
          }
          i = close;
        }
      }
    }
    return t;
  }

  // `model.positions` (ffexport/runtime/manifest.py, positions): {"rule": "mrope", "temporal_step": s},
  // {"rule": "1d"} or {"rule": "mrope_blocks"}; absent in older builds (M-RoPE, step 1). A rule this runtime does not know is refused,
  // never run with other positions.
  void positions(const json& m, ModelFacts& f) const {
    if (!m.contains("positions") || m.at("positions").is_null()) return;
    const std::string w = "model.positions";
    const json& record = m.at("positions");
    if (!record.is_object()) fail(w, "has the wrong type (" + std::string(record.type_name()) + ")");
    const std::string rule = string(record, "rule", w);
    if (rule == kPositionRule1d || rule == kPositionRuleMropeBlocks) {  // no numbers (Qwen3-VL: step 1 per block)
      f.position_rule = rule;
      return;
    }
    if (rule != kPositionRuleMrope) {
      throw InputError(source_ + ": " + w + ".rule is '" + rule + "'; this runtime builds positions by " +
                       kPositionRuleMrope + ", " + kPositionRule1d + ", " + kPositionRuleMropeBlocks +
                       ": update ffexport or rebuild with this version");
    }
    const json& step = get(record, "temporal_step", w);
    if (!step.is_number()) fail(w + ".temporal_step", "has the wrong type (" + std::string(step.type_name()) + ")");
    const double value = step.get<double>();
    if (!(value > 0)) fail(w + ".temporal_step", "must be positive, got " + step.dump());
    if (!std::isfinite(value)) fail(w + ".temporal_step", "must be finite, got " + step.dump());
    f.position_rule = rule;
    f.temporal_step = value;
  }

  EngineRecord engine(const json& r, const std::string& graph, const std::string& where) const {
    EngineRecord e;
    e.graph = graph;
    e.file = file(r, where);
    e.tensorrt = string(r, "tensorrt", where);
    const json& gpu = object(r, "gpu", where);
    e.gpu_name = gpu.contains("name") && gpu.at("name").is_string() ? gpu.at("name").get<std::string>() : "";
    e.compute_capability = string(gpu, "compute_capability", where + ".gpu");
    if (r.contains("plugins")) {
      const json& plugins = r.at("plugins");
      if (!plugins.is_array()) fail(where + ".plugins", "must be a list of strings");
      for (const json& p : plugins) {
        if (!p.is_string()) fail(where + ".plugins", "must be a list of strings");
        e.plugins.push_back(p.get<std::string>());
      }
    }
    return e;
  }

  std::map<std::string, EngineRecord> engines(const json& obj, const std::string& where) const {
    std::map<std::string, EngineRecord> out;
    if (!obj.contains("engines") || obj.at("engines").is_null()) return out;
    const json& engines = obj.at("engines");
    if (!engines.is_object()) fail(at(where, "engines"), "is not an object");
    for (auto it = engines.begin(); it != engines.end(); ++it) {
      const std::string w = at(where, "engines." + it.key());
      if (!it.value().is_object()) fail(w, "is not an object");
      out.emplace(it.key(), engine(it.value(), it.key(), w));
    }
    return out;
  }

  // The bucket's `schedule` (ffexport/fusion/schedule.py): format 1 or 2, frame blocks checked as
  // FrameLayout checks them (whole frames, the first at 0, in order, not overlapping, N tokens in all).
  void schedule(const json& b, Bucket& out, int64_t num_layers, const std::string& where) const {
    out.blocks = {FrameBlock{0, out.visual_tokens}};
    if (b.contains("frame_blocks") && !b.at("frame_blocks").is_null()) {
      out.blocks = frame_blocks(b.at("frame_blocks"), out, where + ".frame_blocks");
      out.has_frame_blocks = true;
    }
    if (!b.contains("schedule") || b.at("schedule").is_null()) return;
    const std::string w = where + ".schedule";
    const json& s = b.at("schedule");
    if (!s.is_object()) fail(w, "is not an object");
    const json format = s.contains("format") ? s.at("format") : json();
    if (format != kScheduleFormatV1 && format != kScheduleFormatV2) {
      throw InputError(source_ + ": " + w + " has format " + (format.is_null() ? "None" : format.dump()) +
                       "; this runtime reads '" + kScheduleFormatV1 + "' and '" + kScheduleFormatV2 +
                       "': rebuild it with this version's `ffexport build`");
    }
    out.schedule_format = format.get<std::string>();
    for (const char* key : {"visual_tokens", "patches_per_frame"}) {
      if (!s.contains(key)) continue;
      const int64_t value = positive(s, key, w);
      const int64_t want = std::string(key) == "visual_tokens" ? out.visual_tokens : out.patches_per_frame;
      if (value != want) fail(at(w, key), "is " + std::to_string(value) + ", the bucket says " + std::to_string(want));
    }
    if (out.schedule_format == kScheduleFormatV2 && s.contains("blocks") && !s.at("blocks").is_null()) {
      const std::vector<FrameBlock> scheduled = blocks(s.at("blocks"), out, w + ".blocks");
      if (out.has_frame_blocks && scheduled != out.blocks) {
        fail(w + ".blocks", "differ from the bucket's frame_blocks (the prefill graph was built for one layout)");
      }
      out.blocks = scheduled;
    }
    if (s.contains("stages")) out.stages = stages(array(s, "stages", w), out, num_layers, w + ".stages");
  }

  // Frame blocks (a schedule's or a bucket's) together hold exactly the bucket's visual tokens.
  void holds_the_bucket(int64_t total, const Bucket& b, const std::string& where) const {
    if (total != b.visual_tokens) {
      fail(where, "hold " + std::to_string(total) + " video tokens, the bucket has " + std::to_string(b.visual_tokens));
    }
  }

  std::vector<FrameBlock> blocks(const json& raw, const Bucket& b, const std::string& where) const {
    if (!raw.is_array() || raw.empty()) fail(where, "must be a non-empty list of [start, length] pairs");
    std::vector<FrameBlock> out;
    int64_t end = 0, total = 0;
    const int64_t p = b.patches_per_frame;
    for (size_t i = 0; i < raw.size(); ++i) {
      const json& pair = raw[i];
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() || !pair[1].is_number_integer()) {
        fail(where, "must be a list of [start, length] pairs, got " + pair.dump());
      }
      const FrameBlock block{pair[0].get<int64_t>(), pair[1].get<int64_t>()};
      const std::string w = where + "[" + std::to_string(i) + "]";
      if (block.length < p || block.length % p) {
        fail(w, "holds " + std::to_string(block.length) + " tokens, not a positive whole number of " +
                    std::to_string(p) + "-token frames");
      }
      if ((i == 0 && block.start != 0) || block.start < end) {
        fail(w, "starts at region offset " + std::to_string(block.start) +
                    " (the first block starts at 0; blocks follow each other without overlapping)");
      }
      end = block.start + block.length;
      total += block.length;
      out.push_back(block);
    }
    holds_the_bucket(total, b, where);
    return out;
  }

  // A bucket's `frame_blocks` (ffexport/runtime/manifest.py, frame_blocks): [[offset, tokens], ...], the
  // first at 0, in order, not overlapping, holding the bucket's visual tokens.
  std::vector<FrameBlock> frame_blocks(const json& raw, const Bucket& b, const std::string& where) const {
    bool ok = raw.is_array() && !raw.empty();
    for (size_t i = 0; ok && i < raw.size(); ++i) {
      ok = raw[i].is_array() && raw[i].size() == 2 && raw[i][0].is_number_integer() && raw[i][1].is_number_integer();
    }
    if (!ok) fail(where, "is not a list of [offset, tokens] pairs");
    std::vector<FrameBlock> out;
    int64_t end = 0, total = 0;
    for (size_t i = 0; i < raw.size(); ++i) {
      const FrameBlock block{raw[i][0].get<int64_t>(), raw[i][1].get<int64_t>()};
      if (block.length < 1 || block.start < end || (i == 0 && block.start != 0)) {
        fail(where, "has a block " + raw[i].dump() + " out of order or overlapping");
      }
      end = block.start + block.length;
      total += block.length;
      out.push_back(block);
    }
    holds_the_bucket(total, b, where);
    return out;
  }

  // The static shape of a graph's input `name` as the build recorded it (`graphs.<g>.inputs`), or empty
  // when not recorded or not static; `first` takes the first input whatever its name.
  static std::vector<int64_t> input_shape(const json& graph, const std::string& name, bool first = false) {
    if (!graph.contains("inputs") || !graph.at("inputs").is_array()) return {};
    for (const json& input : graph.at("inputs")) {
      if (!input.is_object()) return {};
      if (!first && (!input.contains("name") || input.at("name") != name)) continue;
      if (!input.contains("shape") || !input.at("shape").is_array()) return {};
      std::vector<int64_t> shape;
      for (const json& d : input.at("shape")) {
        if (!d.is_number_integer()) return {};
        shape.push_back(d.get<int64_t>());
      }
      return shape;
    }
    return {};
  }

  // The prefill's DeepStack input [k, N, D] when its graph takes one (Qwen3-VL). A prefill that lists it
  // with another shape is a corrupt build.
  std::vector<int64_t> deepstack(const json& prefill, const Bucket& b, const std::string& where) const {
    bool listed = false;
    if (prefill.contains("inputs") && prefill.at("inputs").is_array()) {
      for (const json& input : prefill.at("inputs")) listed = listed || (input.is_object() && input.contains("name") &&
                                                                          input.at("name") == kDeepstack);
    }
    if (!listed) return {};
    const std::vector<int64_t> shape = input_shape(prefill, kDeepstack);
    if (shape.size() != 3 || shape[0] < 1 || shape[1] != b.visual_tokens || shape[2] < 1) {
      fail(where, std::string("takes ") + kDeepstack + " " + json(shape).dump() + "; expected [levels, " +
                      std::to_string(b.visual_tokens) + ", hidden size]");
    }
    return shape;
  }

  std::vector<ScheduleStage> stages(const json& raw, const Bucket& b, int64_t num_layers, const std::string& where) const {
    std::vector<ScheduleStage> out;
    int64_t left = b.visual_tokens;
    for (size_t i = 0; i < raw.size(); ++i) {
      const std::string w = where + "[" + std::to_string(i) + "]";
      ScheduleStage st{integer(raw[i], "layer", w), string(raw[i], "where", w), string(raw[i], "op", w),
                       integer(raw[i], "remove", w)};
      const int slot = st.where == "before_attention" ? 0 : st.where == "after_attention" ? 1 : -1;
      if (slot < 0 || (st.op != "merge" && st.op != "prune")) fail(w, "has an unknown where '" + st.where + "' or op '" + st.op + "'");
      if (st.layer < 0 || st.layer >= num_layers || st.remove < 0 || st.remove > left) {
        fail(w, "removes " + std::to_string(st.remove) + " of " + std::to_string(left) + " tokens at layer " +
                    std::to_string(st.layer) + " of " + std::to_string(num_layers));
      }
      if (!out.empty()) {
        const ScheduleStage& prev = out.back();
        const int prev_slot = prev.where == "before_attention" ? 0 : 1;
        if (std::make_pair(st.layer, slot) <= std::make_pair(prev.layer, prev_slot)) {
          fail(w, "is not after the stage before it (stages go in (layer, where) order)");
        }
      }
      left -= st.remove;
      out.push_back(st);
    }
    return out;
  }

  std::optional<StaticDecodeGraph> static_decode(const json& graphs, int64_t num_layers, const std::string& where) const {
    if (!graphs.contains("decode_static") || graphs.at("decode_static").is_null()) return std::nullopt;
    const std::string w = where + ".decode_static";
    const json& g = object(graphs, "decode_static", where);
    StaticDecodeGraph out;
    out.file = file(g, w);
    const json& capacities = array(g, "capacities", w);
    for (const json& c : capacities) {
      if (!c.is_number_integer() || c.get<int64_t>() < 1) fail(w + ".capacities", "is not a list of positive integers");
      out.capacities.push_back(c.get<int64_t>());
    }
    if (static_cast<int64_t>(out.capacities.size()) != num_layers) {
      fail(w + ".capacities", "has " + std::to_string(out.capacities.size()) + " entries for " +
                                  std::to_string(num_layers) + " layers");
    }
    return out;
  }

  Bucket bucket(const json& b, size_t index, int64_t num_layers) const {
    std::string where = "buckets[" + std::to_string(index) + "]";
    if (!b.is_object()) fail(where, "is not an object");
    Bucket out;
    out.name = string(b, "name", where);
    where = "bucket " + out.name;
    const json& resized = array(b, "resized", where);
    const json& grid = array(b, "grid_thw", where);
    bool ok = resized.size() == 2 && grid.size() == 3;
    for (const json* list : {&resized, &grid}) {
      for (const json& x : *list) ok = ok && x.is_number_integer() && x.get<int64_t>() > 0;
    }
    if (!ok) fail(where, "has a bad resized " + resized.dump() + " or grid_thw " + grid.dump());
    for (size_t i = 0; i < 3; ++i) out.grid_thw[i] = grid[i].get<int64_t>();
    const json& graphs = object(b, "graphs", where);
    out.vision = file(object(graphs, "vision", where + ".graphs"), where + ".graphs.vision");
    out.prefill = file(object(graphs, "prefill", where + ".graphs"), where + ".graphs.prefill");
    if (b.contains("parity") && b.at("parity").is_object() && b.at("parity").contains("passed") &&
        b.at("parity").at("passed").is_boolean()) {
      out.parity_passed = b.at("parity").at("passed").get<bool>();
    }
    out.usable = boolean(b, "usable", where);
    out.frames = positive(b, "frames", where);
    out.height = positive(b, "height", where);
    out.width = positive(b, "width", where);
    out.visual_tokens = positive(b, "visual_tokens", where);
    out.patches_per_frame = positive(b, "patches_per_frame", where);
    out.engines = engines(b, where);
    out.decode_static = static_decode(graphs, num_layers, where + ".graphs");
    out.pixel_shape = input_shape(graphs.at("vision"), "", /*first=*/true);
    out.deepstack_shape = deepstack(graphs.at("prefill"), out, where + ".graphs.prefill");
    schedule(b, out, num_layers, where);
    return out;
  }

  FileEntry file_entry(const json& entry, const std::string& name) const {
    const std::string where = "files['" + name + "']";
    FileEntry f;
    f.bytes = integer(entry, "bytes", where);
    f.sha256 = string(entry, "sha256", where);
    if (f.bytes < 0 || f.sha256.size() != 64) fail(where, "has a bad size or sha256");
    return f;
  }

 private:
  std::string source_;
};

}  // namespace

std::string Bucket::describe() const {
  std::string text = name + " (" + std::to_string(frames) + " frames, " + std::to_string(height) + "x" +
                     std::to_string(width) + ")";
  if (usable) return text;
  return text + (parity_passed == false ? " [not usable: failed its parity check]" : " [not usable: not validated]");
}

std::optional<int64_t> Bucket::removed_before(int64_t layer) const {
  if (!stages) return std::nullopt;
  int64_t removed = 0;
  for (const ScheduleStage& st : *stages) {
    if (st.layer < layer || (st.layer == layer && st.where == "before_attention")) removed += st.remove;
  }
  return removed;
}

std::string Manifest::path(const std::string& relative) const { return join_path(root, relative); }

std::string Manifest::describe_buckets() const {
  std::string text;
  for (const Bucket& b : buckets) text += (text.empty() ? "" : ", ") + b.describe();
  return text.empty() ? "none" : text;
}

const EngineRecord& Manifest::engine(const std::string& graph, const Bucket* bucket) const {
  const auto& records = bucket ? bucket->engines : engines;
  const auto it = records.find(graph);
  if (it == records.end()) {
    const std::string where = bucket ? "bucket " + bucket->name : "the build";
    throw InputError(root + ": " + where + " has no TensorRT engine for its " + graph +
                     " graph (it was built with --backend onnxruntime?); rebuild with "
                     "`ffexport build --backend tensorrt`");
  }
  return it->second;
}

Manifest parse_manifest(const std::string& text, const std::string& root, const std::string& source) {
  json raw;
  try {
    raw = json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(source + " is not valid JSON (" + one_line(e.what()) + "): " + kRebuild);
  }
  if (!raw.is_object()) throw InputError(source + " is not a JSON object: " + kRebuild);
  const std::string format = raw.contains("format") ? (raw.at("format").is_string()
                                                           ? "'" + raw.at("format").get<std::string>() + "'"
                                                           : raw.at("format").dump())
                                                    : "None";
  if (!raw.contains("format") || raw.at("format") != kManifestFormat) {
    throw InputError(source + " has format " + format + "; this runtime reads '" + kManifestFormat +
                     "': rebuild it with this version's `ffexport build`");
  }
  const Reader r(source);
  Manifest m;
  m.root = root;
  m.model = r.model(r.object(raw, "model", ""));
  m.precision = r.string(raw, "precision", "");
  m.max_text = r.positive(raw, "max_text", "");
  m.ops = raw.contains("ops") && raw.at("ops").is_string() ? raw.at("ops").get<std::string>() : "standard";
  const json& graphs = r.object(raw, "graphs", "");
  for (const char* name : {"embed", "decode"}) {
    m.graphs[name] = r.file(r.object(graphs, name, "graphs"), std::string("graphs.") + name);
  }
  const json& buckets = r.array(raw, "buckets", "");
  std::set<std::string> names;
  for (size_t i = 0; i < buckets.size(); ++i) {
    m.buckets.push_back(r.bucket(buckets[i], i, m.model.num_layers));
    if (!names.insert(m.buckets.back().name).second) r.fail("buckets", "repeat the name " + m.buckets.back().name);
  }
  m.engines = r.engines(raw, "");
  const json& files = r.object(raw, "files", "");
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string name = r.relative(it.key(), "files['" + it.key() + "']");
    m.files.emplace(name, r.file_entry(it.value(), name));
  }
  std::vector<std::string> needed = {m.graphs["embed"], m.graphs["decode"]};
  for (const Bucket& b : m.buckets) {
    needed.push_back(b.vision);
    needed.push_back(b.prefill);
    if (b.decode_static) needed.push_back(b.decode_static->file);
  }
  for (const std::string& name : needed) {
    if (!m.files.count(name)) r.fail("files", "does not list the graph " + name);
  }
  return m;
}

Manifest load_manifest(const std::string& build_dir) {
  if (!is_directory(build_dir)) {
    throw InputError(build_dir + " is not a build directory (no such directory); build one with `ffexport build`");
  }
  const std::string path = join_path(build_dir, "manifest.json");
  if (!is_file(path)) throw InputError(build_dir + " has no manifest.json: " + kRebuild);
  Manifest m = parse_manifest(read_file(path), build_dir, path);
  for (const auto& [name, entry] : m.files) {
    const std::string file = m.path(name);
    const int64_t size = file_size(file);
    if (size < 0 || !is_file(file)) throw InputError(file + " is missing: " + kRebuild);
    if (size != entry.bytes) {
      throw InputError(file + " is " + std::to_string(size) + " bytes, the manifest says " +
                       std::to_string(entry.bytes) + (size < entry.bytes ? " (truncated): " : " (larger than built): ") +
                       kRebuild);
    }
  }
  return m;
}

}  // namespace ffexport

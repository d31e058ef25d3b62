// ffexport-run: run an ffexport build's TensorRT engines on a folder of pre-processed inputs and print
// the generated token ids (space-separated, one line on stdout). Errors are one line on stderr.
//
//   ffexport-run BUILD_DIR INPUTS_DIR [--max-new-tokens N] [--plugins LIB.so]... [--device I]
//                [--static-decode in-place|two-sets|off] [--verbose]
//
// INPUTS_DIR: input_ids.npy, pixel_values_videos.npy, video_grid_thw.npy
// (`ffexport case --format npy --out INPUTS_DIR`).
#include <iostream>
#include <string>
#include <vector>

#include "ffexport/runtime.h"

namespace {

constexpr const char* kUsage =
    "usage: ffexport-run BUILD_DIR INPUTS_DIR [--max-new-tokens N] [--plugins LIB.so]... [--device I] "
    "[--static-decode in-place|two-sets|off] [--verbose]";
constexpr int64_t kDefaultMaxNewTokens = 64;

int64_t parse_count(const std::string& flag, const std::string& value) {
  if (value.empty() || value.size() > 9 || value.find_first_not_of("0123456789") != std::string::npos) {
    throw ffexport::InputError(flag + " takes a non-negative integer, got '" + value + "'");
  }
  return std::stoll(value);
}

int run(int argc, char** argv) {
  std::vector<std::string> positional;
  ffexport::RuntimeOptions options;
  int64_t max_new_tokens = kDefaultMaxNewTokens;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw ffexport::InputError(arg + " needs a value; " + kUsage);
      return argv[++i];
    };
    if (arg == "--max-new-tokens") {
      max_new_tokens = parse_count(arg, value());
    } else if (arg == "--plugins") {
      options.plugins.push_back(value());
    } else if (arg == "--device") {
      options.device = static_cast<int>(parse_count(arg, value()));
    } else if (arg == "--static-decode") {
      options.static_decode = ffexport::parse_static_decode_mode(value());
    } else if (arg == "--verbose") {
      options.verbose = true;
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage << "\n";
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      throw ffexport::InputError("unknown option " + arg + "; " + kUsage);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) throw ffexport::InputError(kUsage);
  const ffexport::Inputs inputs = ffexport::load_inputs(positional[1]);
  ffexport::Runtime runtime(positional[0], options);
  const ffexport::Generation g = runtime.run(inputs, max_new_tokens);
  for (size_t i = 0; i < g.tokens.size(); ++i) std::cout << (i ? " " : "") << g.tokens[i];
  std::cout << "\n";
  if (options.verbose) {
    std::cerr << "bucket " << g.bucket << ": prefill " << g.prefill_ms << " ms, " << g.tokens.size() << " tokens in "
              << g.decode_ms << " ms"
              << (g.decoder.empty() ? "" : " (" + g.decoder + ")") << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ffexport::guarded_main([&] { return run(argc, argv); });
}

// The pre-processed inputs of one prompt with one video: a folder of .npy files.
//
//   INPUTS_DIR/input_ids.npy            int64 [1, L] (or [L]): the prompt, one contiguous run of video tokens
//   INPUTS_DIR/pixel_values_videos.npy  float32 [t*h*w, C*temporal_patch*patch*patch] (float16/64 accepted)
//   INPUTS_DIR/video_grid_thw.npy       int64 [1, 3] (or [3]): the patch grid before merging
//
// The same arrays as ffexport's case.npz (ffexport/case.py); `ffexport case --format npy --out DIR`
// writes such a folder. M-RoPE position ids are computed from these (plan.h), not stored.
// No TensorRT, no CUDA.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ffexport {

inline constexpr const char* kInputFiles[] = {"input_ids.npy", "pixel_values_videos.npy", "video_grid_thw.npy"};

struct Inputs {
  std::vector<int64_t> input_ids;             // [L]
  std::vector<float> pixel_values_videos;     // [pixel_rows, pixel_cols], row-major
  int64_t pixel_rows = 0;
  int64_t pixel_cols = 0;
  std::array<int64_t, 3> video_grid_thw{};    // (t, h, w)
};

// Read INPUTS_DIR; a missing file, a wrong shape or dtype, or NaN/infinite pixels is one InputError.
Inputs load_inputs(const std::string& dir);

}  // namespace ffexport

// The pre-processed inputs of one prompt with one video: a folder of .npy files.
//
// A Qwen-grid case (M-RoPE builds):
//   INPUTS_DIR/input_ids.npy            int64 [1, L] (or [L]): the prompt, one contiguous run of video tokens
//   INPUTS_DIR/pixel_values_videos.npy  float32 [t*h*w, C*temporal_patch*patch*patch] (float16/64 accepted)
//   INPUTS_DIR/video_grid_thw.npy       int64 [1, 3] (or [3]): the patch grid before merging
// A fixed-size-tower case (LLaVA-NeXT-Video: builds whose positions are "1d"):
//   INPUTS_DIR/input_ids.npy            int64 [1, L]
//   INPUTS_DIR/pixel_values_videos.npy  float32 [1, frames, 3, S, S]: every frame at the tower's size
//   (INPUTS_DIR/attention_mask.npy      the processor's, all ones: not read)
// InternVL (frames through the image path, 1D positions):
//   INPUTS_DIR/input_ids.npy            int64 [1, L]: frame blocks of video tokens with text between them
//   INPUTS_DIR/pixel_values.npy         float32 [frames, 3, S, S] (read when pixel_values_videos.npy is absent)
//
// The same arrays as ffexport's case.npz (ffexport/case.py); `ffexport case --format npy --out DIR`
// writes such a folder. Position ids are computed from these (plan.h), not stored.
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
  std::vector<float> pixel_values_videos;     // row-major, pixel_shape
  int64_t pixel_rows = 0;                     // a Qwen-grid case: [pixel_rows, pixel_cols]
  int64_t pixel_cols = 0;
  std::array<int64_t, 3> video_grid_thw{};    // (t, h, w); zeros for a fixed-size-tower case
  // A fixed-size-tower case: pixel_values_videos is [1, frames, C, S, S] (InternVL's pixel_values
  // [frames, C, S, S]) and there is no grid.
  bool fixed_tower = false;
  std::vector<int64_t> frames_shape;          // [1, frames, C, S, S] or [frames, C, S, S] when fixed_tower

  // The shape of pixel_values_videos as the vision graph takes it.
  std::vector<int64_t> pixel_shape() const {
    return fixed_tower ? frames_shape : std::vector<int64_t>{pixel_rows, pixel_cols};
  }
};

// Read INPUTS_DIR; a missing file, a wrong shape or dtype, or NaN/infinite pixels is one InputError.
// 5-D pixel_values_videos (or 4-D pixel_values, InternVL) make a fixed-size-tower case (no
// video_grid_thw.npy needed); 2-D ones need video_grid_thw.npy.
Inputs load_inputs(const std::string& dir);

}  // namespace ffexport

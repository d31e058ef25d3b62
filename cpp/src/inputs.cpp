// INPUTS_DIR/*.npy -> ffexport::Inputs, with the checks of ffexport/case.py (case_from_arrays).
#include "ffexport/inputs.h"

#include <cmath>

#include "ffexport/errors.h"
#include "ffexport/npy.h"
#include "files.h"

namespace ffexport {

Inputs load_inputs(const std::string& dir) {
  if (!is_directory(dir)) {
    throw InputError(dir + " is not an inputs folder (no such directory); write one with "
                           "`ffexport case --format npy --out DIR`");
  }
  std::string listing;
  for (const char* name : kInputFiles) listing += (listing.empty() ? "" : ", ") + std::string(name);
  auto require = [&](const char* name) {
    if (!is_file(join_path(dir, name))) {
      throw InputError(dir + " lacks " + name + " (an inputs folder holds " + listing +
                       ", or for a fixed-size tower input_ids.npy and 5-D pixel_values_videos.npy or 4-D "
                       "pixel_values.npy; write one with "
                       "`ffexport case --format npy --out DIR`)");
    }
  };
  require("input_ids.npy");
  // InternVL's processor returns the frames as pixel_values [T, 3, S, S] (ffexport/case.py)
  const bool images = !is_file(join_path(dir, "pixel_values_videos.npy")) && is_file(join_path(dir, "pixel_values.npy"));
  if (!images) require("pixel_values_videos.npy");
  const std::string ids_path = join_path(dir, "input_ids.npy");
  const std::string pixels_path = join_path(dir, images ? "pixel_values.npy" : "pixel_values_videos.npy");
  const std::string grid_path = join_path(dir, "video_grid_thw.npy");
  const NpyArray ids = read_npy(ids_path);
  const NpyArray pixels = read_npy(pixels_path);

  Inputs in;
  const bool ids_shape = (ids.shape.size() == 1 && ids.shape[0] > 0) ||
                         (ids.shape.size() == 2 && ids.shape[0] == 1 && ids.shape[1] > 0);
  if (!ids_shape) throw InputError(ids_path + ": input_ids must have shape [1, L], got " + ids.describe());
  if (ids.kind != 'i' && ids.kind != 'u') throw InputError(ids_path + ": input_ids must be integers, got " + ids.describe());
  in.input_ids = ids.to_int64(ids_path);

  if (images && (pixels.shape.size() != 4 || pixels.kind != 'f')) {
    throw InputError(pixels_path + ": pixel_values must be a float array [frames, 3, S, S], got " + pixels.describe());
  }
  in.fixed_tower = images || pixels.shape.size() == 5;
  if ((pixels.shape.size() != 2 && !in.fixed_tower) || pixels.kind != 'f') {
    throw InputError(pixels_path + ": pixel_values_videos must be a 2-D float array (a Qwen grid's patches) or "
                     "[1, frames, 3, S, S] (a fixed-size tower's frames), got " + pixels.describe());
  }
  if (in.fixed_tower) {
    in.frames_shape = pixels.shape;
  } else {
    in.pixel_rows = pixels.shape[0];
    in.pixel_cols = pixels.shape[1];
  }
  in.pixel_values_videos = pixels.to_float32(pixels_path);
  for (float v : in.pixel_values_videos) {
    if (!std::isfinite(v)) throw InputError(pixels_path + ": pixel_values_videos contains NaN or infinite values");
  }
  if (in.fixed_tower) return in;  // its frame count picks the bucket (plan.cpp); a grid file is not read

  require("video_grid_thw.npy");
  const NpyArray grid = read_npy(grid_path);
  if (grid.size() != 3 || (grid.kind != 'i' && grid.kind != 'u')) {
    throw InputError(grid_path + ": video_grid_thw must hold one (t, h, w) integer row, got " + grid.describe());
  }
  const std::vector<int64_t> thw = grid.to_int64(grid_path);
  for (size_t i = 0; i < 3; ++i) in.video_grid_thw[i] = thw[i];
  return in;
}

}  // namespace ffexport

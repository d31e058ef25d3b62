// A small reader and writer for NumPy's .npy format (versions 1.0, 2.0 and 3.0).
//
// Reads little-endian booleans, integers and floats (float16/32/64) in C or Fortran order (Fortran
// order is rearranged to C order on load). Big-endian data, structured dtypes and object arrays
// are refused with an InputError naming the file. No TensorRT, no CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ffexport {

struct NpyArray {
  char kind = 0;                // 'b' bool, 'i' signed, 'u' unsigned, 'f' float (NumPy's dtype.kind)
  int itemsize = 0;             // bytes per element
  std::vector<int64_t> shape;   // empty for a 0-d array
  std::vector<uint8_t> data;    // C order, little-endian

  int64_t size() const;         // number of elements (1 for a 0-d array)
  std::string dtype() const;    // NumPy's name: "int64", "float32", ...
  std::string describe() const; // e.g. "int64 [1, 80]"

  // The values converted to int64 (integers and booleans only) or float32 (floats only); anything
  // else raises InputError. `what` names the array in messages.
  std::vector<int64_t> to_int64(const std::string& what) const;
  std::vector<float> to_float32(const std::string& what) const;
};

// Read `path`; any problem (missing, truncated, unsupported dtype) is one InputError line.
NpyArray read_npy(const std::string& path);

// Write a version 1.0 file atomically (a temporary file beside it, then a rename). Refuses to
// replace an existing file.
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<int64_t>& values);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& values);

// IEEE half <-> float (round to nearest even), for float16 arrays and fp16 engines.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

}  // namespace ffexport

// One TensorRT engine with its execution context, and the device memory around it (internal).
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ffexport::trt {

// TensorRT's messages: errors are kept for the exception that follows; the rest only when verbose.
class Logger : public nvinfer1::ILogger {
 public:
  explicit Logger(bool verbose) : verbose_(verbose) {}
  void log(Severity severity, const char* message) noexcept override;
  std::string take_error();  // the last error message (and forget it)

 private:
  bool verbose_;
  std::string last_error_;
};

// RunError "<what> failed: <CUDA's message>" unless `status` is cudaSuccess.
void check_cuda(cudaError_t status, const std::string& what);

size_t dtype_size(nvinfer1::DataType type);  // 0 for types this runtime does not move (sub-byte)
std::string dtype_name(nvinfer1::DataType type);
int64_t volume(const nvinfer1::Dims& dims);
std::string dims_text(const nvinfer1::Dims& dims);
nvinfer1::Dims make_dims(const std::vector<int64_t>& sizes);

// Grow-only device memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;

  void reserve(size_t bytes);  // at least `bytes` (contents are not kept when it grows)
  void* get() const { return ptr_; }
  size_t capacity() const { return capacity_; }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

// One input of a run: device memory, and host memory for inputs TensorRT reads on the host
// (shape-inference inputs).
struct Input {
  std::string name;
  nvinfer1::Dims dims;
  const void* device = nullptr;
  const void* host = nullptr;
};

class Engine {
 public:
  // Deserialize `path` (RunError with TensorRT's message when it refuses) and check that its inputs
  // and outputs include `inputs` and `outputs` (RunError naming what is missing).
  Engine(nvinfer1::IRuntime& runtime, Logger& logger, const std::string& path, const std::vector<std::string>& inputs,
         const std::vector<std::string>& outputs);
  ~Engine();

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const;
  const std::vector<std::string>& input_names() const { return inputs_; }
  nvinfer1::Dims shape(const std::string& name) const;  // as built (-1 for a dimension set at run time)
  nvinfer1::DataType dtype(const std::string& name) const;
  nvinfer1::Dims profile_max(const std::string& name) const;

  // Run once on `stream` and wait for it. Every input of the engine must be given once (inside the
  // optimization profile); every output is written to outputs[name] (grown as needed; outputs not in
  // the map are an error). Returns the outputs' shapes.
  std::map<std::string, nvinfer1::Dims> run(const std::vector<Input>& inputs,
                                            const std::map<std::string, DeviceBuffer*>& outputs, cudaStream_t stream);

 private:
  class Allocator;
  nvinfer1::Dims profile(const std::string& name, nvinfer1::OptProfileSelector which) const;

  Logger& logger_;
  std::string path_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::vector<std::string> inputs_, outputs_;  // all of the engine's, in its order
  std::map<std::string, std::unique_ptr<Allocator>> allocators_;  // outputs whose shape depends on data
};

}  // namespace ffexport::trt

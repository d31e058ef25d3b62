// TensorRT engine wrapper: deserialize, check I/O, bind device memory, enqueueV3 (TensorRT 10/11 API).
#include "trt_engine.h"

#include <algorithm>
#include <iostream>

#include "ffexport/errors.h"
#include "files.h"

namespace ffexport::trt {

void Logger::log(Severity severity, const char* message) noexcept {
  if (severity <= Severity::kERROR) {
    last_error_ = message ? message : "";
    for (char& c : last_error_) {
      if (c == '\n' || c == '\r') c = ' ';
    }
  }
  if (verbose_ && severity <= Severity::kINFO) std::cerr << "tensorrt: " << (message ? message : "") << "\n";
}

std::string Logger::take_error() {
  std::string error = last_error_.empty() ? "no message from TensorRT" : last_error_;
  last_error_.clear();
  return error;
}

void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) {
    throw RunError(what + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

size_t dtype_size(nvinfer1::DataType type) {
  using T = nvinfer1::DataType;
  switch (type) {
    case T::kFLOAT: case T::kINT32: return 4;
    case T::kHALF: case T::kBF16: return 2;
    case T::kINT8: case T::kUINT8: case T::kBOOL: case T::kFP8: return 1;
    case T::kINT64: return 8;
    default: return 0;
  }
}

std::string dtype_name(nvinfer1::DataType type) {
  using T = nvinfer1::DataType;
  switch (type) {
    case T::kFLOAT: return "float32";
    case T::kHALF: return "float16";
    case T::kBF16: return "bfloat16";
    case T::kINT32: return "int32";
    case T::kINT64: return "int64";
    case T::kINT8: return "int8";
    case T::kUINT8: return "uint8";
    case T::kBOOL: return "bool";
    default: return "type " + std::to_string(static_cast<int>(type));
  }
}

int64_t volume(const nvinfer1::Dims& dims) {
  int64_t n = 1;
  for (int32_t i = 0; i < dims.nbDims; ++i) n *= dims.d[i];
  return n;
}

std::string dims_text(const nvinfer1::Dims& dims) {
  std::string text = "[";
  for (int32_t i = 0; i < dims.nbDims; ++i) text += (i ? ", " : "") + std::to_string(dims.d[i]);
  return text + "]";
}

nvinfer1::Dims make_dims(const std::vector<int64_t>& sizes) {
  nvinfer1::Dims dims{};
  if (sizes.size() > static_cast<size_t>(nvinfer1::Dims::MAX_DIMS)) throw RunError("tensor rank above TensorRT's limit");
  dims.nbDims = static_cast<int32_t>(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) dims.d[i] = sizes[i];
  return dims;
}

// ---------------------------------------------------------------- DeviceBuffer
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), capacity_(other.capacity_) {
  other.ptr_ = nullptr;
  other.capacity_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = other.ptr_;
    capacity_ = other.capacity_;
    other.ptr_ = nullptr;
    other.capacity_ = 0;
  }
  return *this;
}

void DeviceBuffer::reserve(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  if (bytes <= capacity_) return;
  if (ptr_) {
    cudaFree(ptr_);
    ptr_ = nullptr;
    capacity_ = 0;
  }
  check_cuda(cudaMalloc(&ptr_, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
  capacity_ = bytes;
}

// ---------------------------------------------------------------- outputs of data-dependent shape
class Engine::Allocator : public nvinfer1::IOutputAllocator {
 public:
  DeviceBuffer* buffer = nullptr;
  nvinfer1::Dims dims{};
  bool failed = false;

  void* reallocateOutputAsync(const char* /*name*/, void* /*current*/, uint64_t size, uint64_t /*alignment*/,
                              cudaStream_t /*stream*/) noexcept override {
    try {
      buffer->reserve(static_cast<size_t>(size));  // cudaMalloc: 256-byte aligned
      return buffer->get();
    } catch (const std::exception&) {
      failed = true;
      return nullptr;
    }
  }
  void notifyShape(const char* /*name*/, const nvinfer1::Dims& shape) noexcept override { dims = shape; }
};

// ---------------------------------------------------------------- Engine
Engine::Engine(nvinfer1::IRuntime& runtime, Logger& logger, const std::string& path,
               const std::vector<std::string>& inputs, const std::vector<std::string>& outputs)
    : logger_(logger), path_(path) {
  const std::string blob = read_file(path);
  engine_.reset(runtime.deserializeCudaEngine(blob.data(), blob.size()));
  if (!engine_) throw RunError("TensorRT cannot load " + path + " (" + logger_.take_error() + "): " + kRebuild);
  for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
    const char* name = engine_->getIOTensorName(i);
    (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_).push_back(name);
  }
  std::string missing;
  for (const auto* wanted : {&inputs, &outputs}) {
    const auto& have = wanted == &inputs ? inputs_ : outputs_;
    for (const std::string& name : *wanted) {
      if (std::find(have.begin(), have.end(), name) == have.end()) missing += (missing.empty() ? "" : ", ") + name;
    }
  }
  if (!missing.empty()) throw RunError(path + " lacks the tensors " + missing + ": " + kRebuild);
  for (const std::string& name : outputs_) {
    if (dtype_size(engine_->getTensorDataType(name.c_str())) == 0) {
      throw RunError(path + ": output " + name + " has " + dtype_name(engine_->getTensorDataType(name.c_str())) +
                     ", which this runtime cannot hold");
    }
  }
  context_.reset(engine_->createExecutionContext());
  if (!context_) throw RunError("TensorRT cannot create an execution context for " + path + " (" + logger_.take_error() + ")");
}

Engine::~Engine() = default;

bool Engine::has(const std::string& name) const {
  return std::find(inputs_.begin(), inputs_.end(), name) != inputs_.end() ||
         std::find(outputs_.begin(), outputs_.end(), name) != outputs_.end();
}

nvinfer1::Dims Engine::shape(const std::string& name) const { return engine_->getTensorShape(name.c_str()); }

nvinfer1::DataType Engine::dtype(const std::string& name) const { return engine_->getTensorDataType(name.c_str()); }

nvinfer1::Dims Engine::profile(const std::string& name, nvinfer1::OptProfileSelector which) const {
  return engine_->getProfileShape(name.c_str(), 0, which);
}

nvinfer1::Dims Engine::profile_max(const std::string& name) const {
  return profile(name, nvinfer1::OptProfileSelector::kMAX);
}

std::map<std::string, nvinfer1::Dims> Engine::run(const std::vector<Input>& inputs,
                                                  const std::map<std::string, DeviceBuffer*>& outputs,
                                                  cudaStream_t stream) {
  std::string given;
  for (const Input& in : inputs) given += (given.empty() ? "" : ", ") + in.name;
  std::string wanted;
  for (const std::string& name : inputs_) wanted += (wanted.empty() ? "" : ", ") + name;
  if (inputs.size() != inputs_.size()) {
    throw RunError(path_ + " takes inputs " + wanted + "; the runtime feeds " + given + ": " + kRebuild);
  }
  for (const Input& in : inputs) {
    const char* name = in.name.c_str();
    if (std::find(inputs_.begin(), inputs_.end(), in.name) == inputs_.end()) {
      throw RunError(path_ + " takes inputs " + wanted + "; the runtime feeds " + given + ": " + kRebuild);
    }
    const nvinfer1::Dims low = profile(in.name, nvinfer1::OptProfileSelector::kMIN);
    const nvinfer1::Dims high = profile(in.name, nvinfer1::OptProfileSelector::kMAX);
    bool inside = low.nbDims == in.dims.nbDims;
    for (int32_t d = 0; inside && d < in.dims.nbDims; ++d) inside = low.d[d] <= in.dims.d[d] && in.dims.d[d] <= high.d[d];
    if (low.nbDims >= 0 && !inside) {
      throw InputError(path_ + " takes " + in.name + " from " + dims_text(low) + " to " + dims_text(high) + ", got " +
                       dims_text(in.dims));
    }
    if (!context_->setInputShape(name, in.dims)) {
      throw RunError(path_ + " refuses " + in.name + " of shape " + dims_text(in.dims) + " (" + logger_.take_error() + ")");
    }
    const bool on_host = engine_->isShapeInferenceIO(name);
    const void* address = on_host ? in.host : in.device;
    if (!address) throw RunError(path_ + ": " + in.name + " is a shape input; the runtime has it only on the GPU");
    if (!context_->setTensorAddress(name, const_cast<void*>(address))) {
      throw RunError(path_ + " refuses the address of " + in.name + " (" + logger_.take_error() + ")");
    }
  }
  std::map<std::string, nvinfer1::Dims> shapes;
  for (const std::string& name : outputs_) {
    const auto it = outputs.find(name);
    if (it == outputs.end() || !it->second) throw RunError(path_ + " has an output " + name + " the runtime does not expect");
    const nvinfer1::Dims dims = context_->getTensorShape(name.c_str());
    bool known = dims.nbDims >= 0;
    for (int32_t d = 0; known && d < dims.nbDims; ++d) known = dims.d[d] >= 0;
    if (known) {
      it->second->reserve(static_cast<size_t>(volume(dims)) * dtype_size(dtype(name)));
      if (!context_->setTensorAddress(name.c_str(), it->second->get())) {
        throw RunError(path_ + " refuses the address of " + name + " (" + logger_.take_error() + ")");
      }
      shapes[name] = dims;
    } else {
      auto& allocator = allocators_[name];
      if (!allocator) allocator = std::make_unique<Allocator>();
      allocator->buffer = it->second;
      allocator->failed = false;
      if (!context_->setOutputAllocator(name.c_str(), allocator.get())) {
        throw RunError(path_ + " refuses an allocator for " + name + " (" + logger_.take_error() + ")");
      }
    }
  }
  if (!context_->enqueueV3(stream)) throw RunError("TensorRT failed running " + path_ + " (" + logger_.take_error() + ")");
  check_cuda(cudaStreamSynchronize(stream), "running " + path_);
  for (const auto& [name, allocator] : allocators_) {
    if (allocator->failed) throw RunError("out of GPU memory for the output " + name + " of " + path_);
    shapes[name] = allocator->dims;
  }
  return shapes;
}

}  // namespace ffexport::trt

// The CUDA backend. So far it owns device memory and answers the device query;
// its compute ops report kUnsupported and Supports() says so, so the engine
// refuses cleanly ("... unsupported on backend cuda") until kernels land.

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "../backend_factories.h"
#include "common.cuh"
#include "moe/engine/backend.h"

namespace moe::engine {
namespace {

class CudaBuffer final : public BackendBuffer {
 public:
  CudaBuffer(void* data, size_t size) : data_(data), size_(size) {}
  ~CudaBuffer() override { cudaFree(data_); }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  void* data() override { return data_; }
  size_t size_bytes() const override { return size_; }

 private:
  void* data_;
  size_t size_;
};

Status NotYet(const char* op) {
  return Status::Unsupported(std::string(op) +
                             " unsupported on backend cuda (not implemented yet)");
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string description)
      : device_(device), description_(std::move(description)) {}

  std::string_view name() const override { return "cuda"; }
  std::string description() const override { return description_; }
  bool Supports(Feature feature) const override { return false; }

  Result<std::unique_ptr<BackendBuffer>> Allocate(size_t num_bytes) override {
    void* data = nullptr;
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_CUDA_CHECK(cudaMalloc(&data, num_bytes == 0 ? 1 : num_bytes));
    return std::unique_ptr<BackendBuffer>(new CudaBuffer(data, num_bytes));
  }
  Status Upload(const void* host, size_t num_bytes, void* dst) override {
    MOE_CUDA_CHECK(cudaMemcpy(dst, host, num_bytes, cudaMemcpyHostToDevice));
    return Status::Ok();
  }
  Status Download(const void* src, size_t num_bytes, void* host) override {
    MOE_CUDA_CHECK(cudaMemcpy(host, src, num_bytes, cudaMemcpyDeviceToHost));
    return Status::Ok();
  }
  Status Fill(float value, size_t num_floats, float* dst) override { return NotYet("Fill"); }
  Status Synchronize() override {
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    return Status::Ok();
  }
  Status RmsNorm(const float*, const float*, int, int, float, float*) override {
    return NotYet("RmsNorm");
  }
  Status Gemm(const float*, const float*, float*, int, int, int, float) override {
    return NotYet("Gemm");
  }
  Status Score(const float*, int, int, ScoreFunction, float*) override { return NotYet("Score"); }
  Status TopK(const float*, int, int, int, int32_t*) override { return NotYet("TopK"); }
  Status Gather(const float*, const int32_t*, int, int, float*) override {
    return NotYet("Gather");
  }
  Status ExpertFfn(const ExpertGroups&) override { return NotYet("ExpertFfn"); }
  Status ScatterAddWeighted(const float*, const int32_t*, const float*, int, int, float*) override {
    return NotYet("ScatterAddWeighted");
  }
  Status Add(const float*, const float*, size_t, float*) override { return NotYet("Add"); }

 private:
  int device_;
  std::string description_;
};

// Counts devices; a driver or runtime failure means "no device" for callers.
Status QueryDevice(int device, std::string* description) {
  int num_devices = 0;
  cudaError_t err = cudaGetDeviceCount(&num_devices);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return Status::Unavailable(std::string("no CUDA device: ") + cudaGetErrorString(err));
  }
  if (num_devices == 0) return Status::Unavailable("no CUDA device: device count is 0");
  if (device < 0 || device >= num_devices) {
    return Status::Unavailable("no CUDA device: ordinal " + std::to_string(device) + " of " +
                               std::to_string(num_devices));
  }
  cudaDeviceProp prop{};
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  *description = std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                 std::to_string(prop.minor) + ", " + std::to_string(prop.totalGlobalMem >> 20) +
                 " MiB)";
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options) {
  std::string description;
  MOE_RETURN_IF_ERROR(QueryDevice(options.device, &description));
  return std::unique_ptr<Backend>(new CudaBackend(options.device, std::move(description)));
}

}  // namespace moe::engine

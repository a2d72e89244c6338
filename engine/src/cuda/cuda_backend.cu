// The CUDA backend: device memory from a caching pool, one stream and one
// cuBLAS handle per backend, and the op families in their own files (norm,
// scoring, permute, ffn, gemm, elementwise, routing, memory). Every op is
// enqueued on the backend's stream and returns without waiting; Download()
// and Synchronize() wait. Upload() (staged through pinned memory),
// DownloadAsync() into pinned memory and marks (CUDA events) do not.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../backend_factories.h"
#include "common.cuh"
#include "cuda_log.h"
#include "elementwise.cuh"
#include "ffn.cuh"
#include "gemm.cuh"
#include "memory.cuh"
#include "moe/engine/backend.h"
#include "moe/engine/cuda_backend.h"
#include "moe/engine/router.h"
#include "norm.cuh"
#include "permute.cuh"
#include "routing.cuh"
#include "scoring.cuh"

namespace moe::engine {
namespace {

// A block of the backend's pool; destroying the buffer gives the block back
// to the pool (no cudaFree, which would wait for the whole device).
class CudaBuffer final : public BackendBuffer {
 public:
  CudaBuffer(std::shared_ptr<cuda::DevicePool> pool, void* data, size_t block_bytes, size_t size)
      : pool_(std::move(pool)), data_(data), block_bytes_(block_bytes), size_(size) {}
  ~CudaBuffer() override { pool_->Release(data_, block_bytes_); }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  void* data() override { return data_; }
  size_t size_bytes() const override { return size_; }

 private:
  std::shared_ptr<cuda::DevicePool> pool_;
  void* data_;
  size_t block_bytes_;
  size_t size_;
};

// Pinned host memory (AllocateHost): copies to and from it need no staging.
class PinnedBuffer final : public BackendBuffer {
 public:
  PinnedBuffer(void* data, size_t size) : data_(data), size_(size) {}
  ~PinnedBuffer() override { cudaFreeHost(data_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() override { return data_; }
  size_t size_bytes() const override { return size_; }

 private:
  void* data_;
  size_t size_;
};

// A CUDA event with timing (default flags); `recorded` once RecordMark() ran.
class CudaMark final : public BackendMark {
 public:
  explicit CudaMark(cudaEvent_t event) : event_(event) {}
  ~CudaMark() override { cudaEventDestroy(event_); }
  CudaMark(const CudaMark&) = delete;
  CudaMark& operator=(const CudaMark&) = delete;
  cudaEvent_t event() const { return event_; }
  bool recorded() const { return recorded_; }
  void set_recorded() { recorded_ = true; }

 private:
  cudaEvent_t event_;
  bool recorded_ = false;
};

cublasComputeType_t ComputeType(GemmPrecision precision) {
  switch (precision) {
    case GemmPrecision::kFp32:
      return CUBLAS_COMPUTE_32F;
    case GemmPrecision::kTf32:
      return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmPrecision::kBf16:
      return CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  return CUBLAS_COMPUTE_32F;
}

const char* PrecisionName(GemmPrecision precision) {
  switch (precision) {
    case GemmPrecision::kFp32:
      return "fp32";
    case GemmPrecision::kTf32:
      return "tf32";
    case GemmPrecision::kBf16:
      return "bf16";
  }
  return "fp32";
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(const BackendOptions& options, std::string description)
      : device_(options.device),
        precision_(options.gemm_precision),
        compute_(ComputeType(options.gemm_precision)),
        grouped_fallback_allowed_(options.grouped_gemm_fallback),
        description_(std::move(description)),
        pool_(std::make_shared<cuda::DevicePool>(options.device)),
        staging_(pool_->mutable_counters()) {
    for (cuda::DeviceScratch* scratch :
         {&act_scratch_, &ptr_scratch_, &sort_scratch_, &route_scratch_})
      scratch->set_pool(pool_);
  }

  ~CudaBackend() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status Init() {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_CUDA_CHECK(cudaStreamCreate(&stream_));
    MOE_CUBLAS_CHECK(cublasCreate(&cublas_));
    MOE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    MOE_CUBLAS_CHECK(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
    // Tensor-core math only where the compute type asks for it.
    MOE_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
    return Status::Ok();
  }

  std::string_view name() const override { return "cuda"; }
  std::string description() const override {
    return grouped_refusal_.empty()
               ? description_
               : description_ + ", one GEMM per expert (" + grouped_refusal_ + ")";
  }

  CudaBackendCounters Counters() const {
    CudaBackendCounters c = counters_;
    const cuda::MemoryCounters& m = pool_->counters();
    c.device_mallocs = m.device_mallocs;
    c.device_frees = m.device_frees;
    c.pool_hits = m.pool_hits;
    c.pinned_mallocs = m.pinned_mallocs;
    c.staged_bytes = m.staged_bytes;
    c.staging_waits = m.staging_waits;
    return c;
  }

  bool Supports(Feature feature) const override {
    switch (feature) {
      case Feature::kSoftmaxScoring:
      case Feature::kSigmoidScoring:
      case Feature::kGroupedExpertFfn:
      case Feature::kHostRouting:    // Download() waits, so scores reach the host
      case Feature::kDeviceRouting:  // RouteOnDevice(): the engine routes on the device
        return true;
      case Feature::kHostMemory:  // device memory: the host reaches it only by copies
        return false;
    }
    return false;
  }

  Result<std::unique_ptr<BackendBuffer>> Allocate(size_t num_bytes) override {
    size_t block_bytes = 0;
    MOE_ASSIGN_OR_RETURN(void* data, pool_->Acquire(num_bytes, &block_bytes));
    return std::unique_ptr<BackendBuffer>(new CudaBuffer(pool_, data, block_bytes, num_bytes));
  }

  // Through pinned staging in pieces of at most half the staging area: the
  // copies are asynchronous, and `host` may be reused when this returns.
  Status Upload(const void* host, size_t num_bytes, void* dst) override {
    if (num_bytes == 0) return Status::Ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    const char* src = static_cast<const char*>(host);
    char* out = static_cast<char*>(dst);
    while (num_bytes > 0) {
      const size_t piece = std::min(num_bytes, cuda::PinnedStaging::kMaxBytes / 2);
      MOE_ASSIGN_OR_RETURN(void* staged, staging_.Take(piece));
      std::memcpy(staged, src, piece);
      MOE_CUDA_CHECK(cudaMemcpyAsync(out, staged, piece, cudaMemcpyHostToDevice, stream_));
      MOE_RETURN_IF_ERROR(staging_.Enqueued(stream_));
      src += piece;
      out += piece;
      num_bytes -= piece;
    }
    return Status::Ok();
  }

  Status Download(const void* src, size_t num_bytes, void* host) override {
    if (num_bytes == 0) return Status::Ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_CUDA_CHECK(cudaMemcpyAsync(host, src, num_bytes, cudaMemcpyDeviceToHost, stream_));
    return WaitForStream();
  }

  Status Copy(const void* src, size_t num_bytes, void* dst) override {
    if (num_bytes == 0) return Status::Ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, num_bytes, cudaMemcpyDeviceToDevice, stream_));
    return Status::Ok();
  }

  Status Fill(float value, size_t num_floats, float* dst) override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return cuda::LaunchFill(value, num_floats, dst, stream_);
  }

  Status Synchronize() override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return WaitForStream();
  }

  Result<std::unique_ptr<BackendBuffer>> AllocateHost(size_t num_bytes) override {
    void* data = nullptr;
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    const cudaError_t err = cudaMallocHost(&data, num_bytes == 0 ? 1 : num_bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return Status::Unavailable("cuda backend: out of pinned host memory allocating " +
                                 std::to_string(num_bytes) + " bytes");
    }
    MOE_CUDA_CHECK(err);
    return std::unique_ptr<BackendBuffer>(new PinnedBuffer(data, num_bytes));
  }

  Status DownloadAsync(const void* src, size_t num_bytes, void* host) override {
    if (num_bytes == 0) return Status::Ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_CUDA_CHECK(cudaMemcpyAsync(host, src, num_bytes, cudaMemcpyDeviceToHost, stream_));
    return Status::Ok();
  }

  Result<std::unique_ptr<BackendMark>> CreateMark() override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    cudaEvent_t event = nullptr;
    MOE_CUDA_CHECK(cudaEventCreate(&event));
    return std::unique_ptr<BackendMark>(new CudaMark(event));
  }

  Status RecordMark(BackendMark* mark) override {
    auto* cuda_mark = dynamic_cast<CudaMark*>(mark);
    if (cuda_mark == nullptr) return Status::InvalidArgument("RecordMark: not a cuda backend mark");
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_CUDA_CHECK(cudaEventRecord(cuda_mark->event(), stream_));
    cuda_mark->set_recorded();
    return Status::Ok();
  }

  Result<double> MicrosBetween(const BackendMark& from, const BackendMark& to) override {
    const auto* a = dynamic_cast<const CudaMark*>(&from);
    const auto* b = dynamic_cast<const CudaMark*>(&to);
    if (a == nullptr || b == nullptr) {
      return Status::InvalidArgument("MicrosBetween: not a cuda backend mark");
    }
    if (!a->recorded() || !b->recorded()) {
      return Status::FailedPrecondition("MicrosBetween: mark never recorded");
    }
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    float ms = 0;
    const cudaError_t err = cudaEventElapsedTime(&ms, a->event(), b->event());
    if (err == cudaErrorNotReady) {
      cudaGetLastError();  // keep the next check clean
      return Status::FailedPrecondition("MicrosBetween: the backend has not reached a mark yet");
    }
    MOE_CUDA_CHECK(err);
    return static_cast<double>(ms) * 1000.0;
  }

  Status RmsNorm(const float* x, const float* weight, int num_tokens, int hidden, float eps,
                 float* out) override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return cuda::LaunchRmsNorm(x, weight, num_tokens, hidden, eps, out, stream_);
  }

  Status Gemm(const float* a, const float* b, float* c, int m, int n, int k, float beta) override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return cuda::RowMajorGemm(cublas_, compute_, a, k, b, n, c, n, m, n, k, beta);
  }

  Status Score(const float* logits, int num_tokens, int num_experts, ScoreFunction fn,
               float* scores) override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (fn == ScoreFunction::kSigmoid) {
      return cuda::LaunchSigmoid(logits, num_tokens, num_experts, scores, stream_);
    }
    return cuda::LaunchSoftmax(logits, num_tokens, num_experts, scores, stream_);
  }

  Status TopK(const float* selection, int num_tokens, int num_experts, int k,
              int32_t* indices) override {
    if (k < 0 || k > num_experts) {
      return Status::InvalidArgument("TopK: k=" + std::to_string(k) + " outside [0, " +
                                     std::to_string(num_experts) + "]");
    }
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return cuda::LaunchTopK(selection, num_tokens, num_experts, k, indices, stream_);
  }

  Status Gather(const float* x, const int32_t* rows, int num_rows, int hidden,
                float* out) override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return cuda::LaunchGather(x, rows, num_rows, hidden, out, stream_);
  }

  Status ExpertFfn(const ExpertGroups& groups) override;

  Status ScatterAddWeighted(const float* y, const int32_t* rows, const float* weights, int num_rows,
                            int hidden, float* out) override {
    if (num_rows <= 0 || hidden <= 0) return Status::Ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    MOE_ASSIGN_OR_RETURN(const size_t bytes, cuda::ScatterScratchBytes(num_rows));
    MOE_RETURN_IF_ERROR(sort_scratch_.Reserve(bytes));
    return cuda::LaunchScatterAddWeighted(y, rows, weights, num_rows, hidden, out,
                                          sort_scratch_.data(), sort_scratch_.size(), stream_);
  }

  Status Add(const float* a, const float* b, size_t n, float* out) override {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    return cuda::LaunchAdd(a, b, n, out, stream_);
  }

  Status RouteOnDevice(const DeviceRoutingArgs& args) override;

 private:
  // The one place the backend waits for its stream; every staged copy has
  // run afterwards.
  Status WaitForStream() {
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    ++counters_.stream_waits;
    staging_.Drained();
    return Status::Ok();
  }

  Status RunGrouped(const std::vector<cuda::FfnGroup>& work, int hidden);

  int device_;
  GemmPrecision precision_;
  cublasComputeType_t compute_;
  bool grouped_fallback_allowed_;
  std::string description_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  // Declared before everything that gives memory back to it.
  std::shared_ptr<cuda::DevicePool> pool_;
  cuda::PinnedStaging staging_;
  cuda::DeviceScratch act_scratch_;    // grouped FFN activations
  cuda::DeviceScratch ptr_scratch_;    // grouped GEMM pointer arrays
  cuda::DeviceScratch sort_scratch_;   // ScatterAddWeighted's sort
  cuda::DeviceScratch route_scratch_;  // RouteOnDevice's sort and tables
  CudaBackendCounters counters_;       // the pool's and staging's are merged in Counters()
  std::string grouped_refusal_;        // cuBLAS's answer once it refused (with fallback)
};

Status CudaBackend::RouteOnDevice(const DeviceRoutingArgs& args) {
  if (args.options == nullptr || args.knobs == nullptr || args.num_tokens < 0) {
    return Status::InvalidArgument("RouteOnDevice: options, knobs and num_tokens are required");
  }
  const Options& options = *args.options;
  const Knobs& knobs = *args.knobs;
  MOE_RETURN_IF_ERROR(CheckDeviceRoutingCovered(knobs));
  MOE_CUDA_CHECK(cudaSetDevice(device_));
  const int num_experts = static_cast<int>(options.model.num_experts);
  const int top_k = static_cast<int>(knobs.top_k);
  const int num_slots = static_cast<int>(NumReplicas(options));
  const uint32_t capacity = ExpertCapacity(knobs.capacity_factor, args.num_tokens, knobs.top_k,
                                           options.model.num_experts);
  if (args.capacity_layout && capacity == 0) {
    return Status::InvalidArgument("RouteOnDevice: the capacity layout needs a capacity > 0");
  }
  // The select kernel writes per-token statistics into the scratch that the
  // capacity launcher sums, so reserve it first.
  MOE_ASSIGN_OR_RETURN(const size_t bytes,
                       cuda::RoutingScratchBytes(args.num_tokens, top_k, num_experts, num_slots));
  MOE_RETURN_IF_ERROR(route_scratch_.Reserve(bytes));
  const cuda::RoutingTokenStats token_stats =
      cuda::TokenStatsOf(route_scratch_.data(), args.num_tokens);

  cuda::RouteSelectArgs select;
  select.scores = args.scores;
  select.expert_bias = knobs.expert_bias.empty() ? nullptr : args.expert_bias;
  select.num_tokens = args.num_tokens;
  select.num_experts = num_experts;
  select.top_k = top_k;
  select.num_groups = static_cast<int>(options.model.num_groups);
  select.topk_groups = static_cast<int>(options.model.topk_groups);
  select.noise_std = knobs.noise_std;
  select.seed = args.seed;
  select.normalize_gates = options.model.normalize_gates;
  select.routed_scaling = options.model.routed_scaling;
  select.chosen = args.chosen;
  select.weight = args.weight;
  select.token_entropy = token_stats.entropy;
  select.token_gate_mass = token_stats.gate_mass;
  MOE_RETURN_IF_ERROR(cuda::LaunchRouteSelect(select, stream_));

  cuda::CapacityPermuteArgs place;
  place.chosen = args.chosen;
  place.weight = args.weight;
  place.phy2log = args.phy2log;
  place.num_tokens = args.num_tokens;
  place.num_experts = num_experts;
  place.num_slots = num_slots;
  place.num_devices = static_cast<int>(options.parallel.num_devices);
  place.top_k = top_k;
  place.capacity = capacity;
  place.slot_capacity = knobs.capacity_scope == CapacityScope::kSlot;
  place.overflow_drop = knobs.overflow_policy == OverflowPolicy::kDrop;
  place.capacity_layout = args.capacity_layout;
  place.slot = args.slot;
  place.rows = args.rows;
  place.row_weights = args.row_weights;
  place.counters = args.counters;
  return cuda::LaunchCapacityAndPermute(place, route_scratch_.data(), route_scratch_.size(),
                                        stream_);
}

Status CudaBackend::ExpertFfn(const ExpertGroups& groups) {
  const size_t num_experts = groups.experts.size();
  if (groups.offsets.size() != num_experts + 1 || groups.offsets[0] != 0) {
    return Status::InvalidArgument("ExpertFfn: offsets must have experts + 1 entries from 0");
  }
  if (groups.hidden <= 0) return Status::InvalidArgument("ExpertFfn: hidden must be positive");
  std::vector<cuda::FfnGroup> work;
  work.reserve(num_experts);
  for (size_t g = 0; g < num_experts; ++g) {
    const int begin = groups.offsets[g];
    const int rows = groups.offsets[g + 1] - begin;
    if (rows < 0) return Status::InvalidArgument("ExpertFfn: offsets must be non-decreasing");
    if (rows == 0) continue;
    const ExpertWeights& w = groups.experts[g];
    if (w.ffn <= 0) return Status::InvalidArgument("ExpertFfn: expert ffn must be positive");
    const size_t row0 = static_cast<size_t>(begin) * groups.hidden;
    work.push_back({groups.input + row0, w.gate_up, w.down, groups.output + row0, rows, w.ffn});
  }
  if (work.empty()) return Status::Ok();
  MOE_CUDA_CHECK(cudaSetDevice(device_));
  if (work.size() >= 2) {
    // Tensor-core grouped GEMMs need aligned matrices (see GroupedFfnAligned).
    const bool aligned =
        compute_ == CUBLAS_COMPUTE_32F || cuda::GroupedFfnAligned(work, groups.hidden);
    if (!aligned) {
      ++counters_.unaligned_ffn_calls;
    } else if (!grouped_refusal_.empty()) {
      ++counters_.grouped_fallbacks;  // refused before; fallback allowed
    } else {
      const Status st = RunGrouped(work, groups.hidden);
      if (st.ok()) {
        ++counters_.grouped_ffn_calls;
        return st;
      }
      if (st.code() != StatusCode::kUnsupported) return st;
      const std::string what = st.message() + " (" + PrecisionName(precision_) + ", " +
                               std::to_string(work.size()) + " groups)";
      if (!grouped_fallback_allowed_) {
        return Status::Unsupported(
            "ExpertFfn: " + what +
            "; set BackendOptions::grouped_gemm_fallback (moe-engine: [engine] "
            "grouped_gemm_fallback = true) to run one GEMM per expert instead");
      }
      grouped_refusal_ = what;
      ++counters_.grouped_fallbacks;
      cuda::LogGroupedGemmFallback(what);
    }
  } else {
    ++counters_.single_group_ffn_calls;
  }
  if (groups.workspace == nullptr) return Status::InvalidArgument("ExpertFfn: null workspace");
  return cuda::RunExpertFfnLoop(cublas_, stream_, compute_, work, groups.hidden, groups.workspace);
}

Status CudaBackend::RunGrouped(const std::vector<cuda::FfnGroup>& work, int hidden) {
  const size_t num_ptrs = 6 * work.size();
  MOE_RETURN_IF_ERROR(act_scratch_.Reserve(sizeof(float) * cuda::GroupedActFloats(work)));
  MOE_RETURN_IF_ERROR(ptr_scratch_.Reserve(sizeof(void*) * num_ptrs));
  MOE_ASSIGN_OR_RETURN(void* pinned, staging_.Take(sizeof(void*) * num_ptrs));
  const Status st = cuda::RunExpertFfnGrouped(
      cublas_, stream_, compute_, work, hidden, static_cast<float*>(act_scratch_.data()),
      static_cast<void**>(ptr_scratch_.data()), static_cast<const void**>(pinned));
  // The pointer copies may be enqueued even when a GEMM was refused.
  MOE_RETURN_IF_ERROR(staging_.Enqueued(stream_));
  return st;
}

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
  description += ", cuBLAS " + std::to_string(CUBLAS_VER_MAJOR) + "." +
                 std::to_string(CUBLAS_VER_MINOR) + ", " + PrecisionName(options.gemm_precision) +
                 " GEMMs";
  auto backend = std::make_unique<CudaBackend>(options, std::move(description));
  MOE_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

Result<CudaBackendCounters> GetCudaBackendCounters(const Backend& backend) {
  const auto* cuda_backend = dynamic_cast<const CudaBackend*>(&backend);
  if (cuda_backend == nullptr) {
    return Status::InvalidArgument("GetCudaBackendCounters: backend " +
                                   std::string(backend.name()) + " is not a CUDA backend");
  }
  return cuda_backend->Counters();
}

}  // namespace moe::engine

// Backend: the compute device behind the MoE engine (ggml style).
//
// A Backend owns memory on its device and runs the few ops an MoE layer needs.
// The engine asks `Supports(feature)` before it plans a step and refuses with
// kUnsupported ("<feature> unsupported on backend <name>") rather than
// computing something else. Backends are created only through CreateBackend()
// (backend_registry.cc is the one file that knows them all).
//
// Memory: every `float*` / `int32_t*` an op takes is backend memory, obtained
// from Allocate() on the same backend (host memory for the CPU backend, device
// memory for CUDA). Upload()/Download() move data between host and backend.
// Shapes are row-major; counts are named num_*; sizes are in elements.
//
// Ops are enqueued in order; Synchronize() waits for all enqueued work (the CPU
// backend runs every op synchronously). An op returns a non-OK Status only for a
// device/library failure or a violated precondition it can detect cheaply.
// Timing needs no waiting either: RecordMark() enqueues a mark that takes the
// time at which the backend reaches it, read with MicrosBetween() once the
// backend has passed it (after Synchronize()).
//
// Thread safety: a Backend and its buffers belong to one thread at a time.

#ifndef MOE_ENGINE_BACKEND_H_
#define MOE_ENGINE_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"

namespace moe::engine {

struct DeviceRoutingArgs;  // router.h

// Optional capabilities a backend may lack.
enum class Feature {
  kSoftmaxScoring,    // Score() with ScoreFunction::kSoftmax
  kSigmoidScoring,    // Score() with ScoreFunction::kSigmoid
  kGroupedExpertFfn,  // ExpertFfn() over several expert groups in one call
  kHostRouting,       // routing decisions run on the host from downloaded scores
  kDeviceRouting,     // RouteOnDevice(): the routing pipeline runs on the device
  kHostMemory,        // backend memory is host memory: downloads cost nothing
};

// Lowercase name, e.g. "sigmoid_scoring".
std::string_view FeatureName(Feature feature);

enum class ScoreFunction {
  kSoftmax,  // scores = softmax(logits) over the experts of a token
  kSigmoid,  // scores = 1 / (1 + exp(-logits)), element-wise
};

// A block of backend memory. Freed when destroyed. Not copyable.
class BackendBuffer {
 public:
  virtual ~BackendBuffer() = default;
  // Backend address of the first byte; valid for the buffer's lifetime.
  virtual void* data() = 0;
  virtual size_t size_bytes() const = 0;

  float* floats() { return static_cast<float*>(data()); }
  int32_t* ints() { return static_cast<int32_t*>(data()); }
};

// One expert's weights for a SwiGLU FFN, in backend memory:
//   y = (silu(x W_gate) * (x W_up)) W_down
// `gate_up` is [hidden, 2 * ffn] row-major: columns [0, ffn) are W_gate,
// columns [ffn, 2 ffn) are W_up. `down` is [ffn, hidden].
// `packed` (optional): the same expert in the backend's own layout, written by
// Backend::PackExpert(); when set, ExpertFfn() reads it instead of gate_up and
// down (which must still describe the same weights).
struct ExpertWeights {
  const float* gate_up = nullptr;
  const float* down = nullptr;
  int ffn = 0;                    // intermediate size F
  const float* packed = nullptr;  // Backend::PackedExpertFloats(hidden, ffn) floats, or null
};

// A point in a backend's queue of work (see Backend::RecordMark). Created by
// the backend that records it; not copyable.
class BackendMark {
 public:
  virtual ~BackendMark() = default;
};

// A grouped expert FFN call: group g runs expert `experts[g]` over the rows
// [offsets[g], offsets[g + 1]) of `input` and writes the same rows of `output`.
// `offsets` has experts.size() + 1 host entries, non-decreasing, offsets[0] = 0.
struct ExpertGroups {
  const float* input = nullptr;  // [offsets.back(), hidden]
  float* output = nullptr;       // [offsets.back(), hidden]
  int hidden = 0;
  std::vector<ExpertWeights> experts;
  std::vector<int> offsets;
  float* workspace = nullptr;  // >= ExpertWorkspaceFloats(max rows, max ffn, hidden) floats
};

// Floats of workspace ExpertFfn() needs for groups of at most `max_rows` rows
// and an intermediate size of at most `max_ffn`.
size_t ExpertWorkspaceFloats(int max_rows, int max_ffn, int hidden);

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu", "cuda".
  virtual std::string_view name() const = 0;
  // One line for logs, e.g. "OpenBLAS 0.3.21 (1 thread)".
  virtual std::string description() const = 0;
  virtual bool Supports(Feature feature) const = 0;

  // Memory.
  virtual Result<std::unique_ptr<BackendBuffer>> Allocate(size_t num_bytes) = 0;
  // Enqueues dst[0, num_bytes) = host[0, num_bytes); `host` may be reused
  // when it returns (CUDA copies it into pinned staging and does not wait).
  virtual Status Upload(const void* host, size_t num_bytes, void* dst) = 0;
  // host[0, num_bytes) = src[0, num_bytes) after all enqueued work: waits.
  virtual Status Download(const void* src, size_t num_bytes, void* host) = 0;
  // dst[0, num_bytes) = src[0, num_bytes), both backend memory that must not
  // overlap; enqueued like every op (CUDA: device-to-device on the stream).
  virtual Status Copy(const void* src, size_t num_bytes, void* dst) = 0;
  virtual Status Fill(float value, size_t num_floats, float* dst) = 0;
  virtual Status Synchronize() = 0;

  // Host memory the backend copies to and from without waiting (pinned on
  // CUDA, plain on the CPU); data() is a host address.
  virtual Result<std::unique_ptr<BackendBuffer>> AllocateHost(size_t num_bytes) = 0;
  // Enqueues host[0, num_bytes) = src[0, num_bytes) and returns; `host` holds
  // the data after the next Synchronize(). With `host` from AllocateHost() the
  // call never waits; with other host memory it may (CUDA).
  virtual Status DownloadAsync(const void* src, size_t num_bytes, void* host) = 0;

  // Timing without waiting. A mark is created once and recorded any number of
  // times; each RecordMark() is enqueued like an op and replaces the mark's
  // time with the time the backend reaches it. MicrosBetween() reads
  // `to` - `from` once the backend has passed both (after Synchronize());
  // errors: kFailedPrecondition when a mark was never recorded.
  virtual Result<std::unique_ptr<BackendMark>> CreateMark() = 0;
  virtual Status RecordMark(BackendMark* mark) = 0;
  virtual Result<double> MicrosBetween(const BackendMark& from, const BackendMark& to) = 0;

  // out[t, :] = x[t, :] * weight[:] / sqrt(mean(x[t, :]^2) + eps).
  virtual Status RmsNorm(const float* x, const float* weight, int num_tokens, int hidden, float eps,
                         float* out) = 0;

  // c[m, n] = a[m, k] b[k, n] + beta * c[m, n] (row-major). Used for the gate
  // (router) GEMM: logits[T, E] = x[T, H] W_g[H, E].
  virtual Status Gemm(const float* a, const float* b, float* c, int m, int n, int k,
                      float beta) = 0;

  // scores[t, e] from logits[t, e] by `fn` (see ScoreFunction).
  virtual Status Score(const float* logits, int num_tokens, int num_experts, ScoreFunction fn,
                       float* scores) = 0;

  // indices[t, 0..k) = the k largest selection[t, :] in descending order (ties:
  // lower expert id first).
  virtual Status TopK(const float* selection, int num_tokens, int num_experts, int k,
                      int32_t* indices) = 0;

  // out[i, :] = x[rows[i], :] for i in [0, num_rows); a row of -1 gives
  // out[i, :] = 0 (padding of the capacity layout, see router.h).
  virtual Status Gather(const float* x, const int32_t* rows, int num_rows, int hidden,
                        float* out) = 0;

  // SwiGLU expert FFN on tokens grouped by expert (see ExpertGroups).
  virtual Status ExpertFfn(const ExpertGroups& groups) = 0;

  // Floats of backend memory that PackExpert() writes for an expert of this
  // shape; 0 (the default) when the backend reads the row-major weights as
  // they are and packs nothing.
  virtual size_t PackedExpertFloats(int hidden, int ffn) const;
  // Writes `weights` (gate_up, down, ffn) in the backend's packed layout into
  // `packed` (PackedExpertFloats(hidden, weights.ffn) floats of backend
  // memory). Repack whenever gate_up or down change. Errors: kUnsupported when
  // PackedExpertFloats() is 0.
  virtual Status PackExpert(const ExpertWeights& weights, int hidden, float* packed);

  // out[rows[i], :] += weights[i] * y[i, :] for i in [0, num_rows), in order;
  // rows of -1 are skipped.
  virtual Status ScatterAddWeighted(const float* y, const int32_t* rows, const float* weights,
                                    int num_rows, int hidden, float* out) = 0;

  // out[i] = a[i] + b[i] for i in [0, n). `out` may alias `a` or `b`.
  virtual Status Add(const float* a, const float* b, size_t n, float* out) = 0;

  // Route() on the device, enqueued like every op (see DeviceRoutingArgs in
  // router.h for the contract and what it covers). Only backends that report
  // Feature::kDeviceRouting implement it; the default returns kUnsupported.
  virtual Status RouteOnDevice(const DeviceRoutingArgs& args);
};

// Arithmetic of a backend's GEMMs (router and expert FFNs). Inputs, outputs
// and sums stay fp32 either way; the CPU backend always computes exact fp32.
enum class GemmPrecision {
  kFp32,  // fp32 products: parity with the CPU backend to fp32 rounding
  kTf32,  // CUDA: TF32 tensor cores (inputs rounded to 10-bit mantissas), ~1e-3 relative
  kBf16,  // CUDA: inputs rounded to bf16 on the fly for tensor cores, ~1e-2 relative
};

struct BackendOptions {
  // CPU: BLAS threads (0 = leave OpenBLAS's default). Default 1: the engine is
  // meant to share a machine politely and time expert work per virtual device.
  int num_threads = 1;
  // CUDA: device ordinal.
  int device = 0;
  // CUDA: GEMM arithmetic. The CPU backend ignores it (always kFp32).
  GemmPrecision gemm_precision = GemmPrecision::kFp32;
  // CUDA: when cuBLAS refuses a grouped GEMM (cublasGemmGroupedBatchedEx
  // answers NOT_SUPPORTED or INVALID_VALUE), false (the default) makes
  // ExpertFfn() fail with kUnsupported naming cuBLAS's answer; true logs a
  // warning once, runs that call and every later one as one GEMM per expert,
  // and counts each (CudaBackendCounters::grouped_fallbacks, cuda_backend.h).
  bool grouped_gemm_fallback = false;
};

// Creates backend `name` ("cpu" or "cuda"). Errors: kNotFound for an unknown
// name; kUnsupported "built without CUDA" when CUDA was not compiled in;
// kUnavailable "no CUDA device: ..." when it was but no device is usable.
Result<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                               const BackendOptions& options = {});

// Names CreateBackend() knows in this build (even if unusable on this machine).
std::vector<std::string> BackendNames();

// kUnsupported "<feature> unsupported on backend <name>" unless supported.
Status RequireFeature(const Backend& backend, Feature feature);

}  // namespace moe::engine

#endif  // MOE_ENGINE_BACKEND_H_

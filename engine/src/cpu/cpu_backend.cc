// The CPU backend: OpenBLAS GEMMs plus plain loops. Always built; the
// reference every other backend is compared against.

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>

#include "../backend_factories.h"
#include "expert_kernels.h"
#include "moe/engine/backend.h"
#include "moe/engine/router.h"

namespace moe::engine {
namespace {

constexpr size_t kAlignment = 64;

// exp(x) in fp32 by Cephes' range reduction and degree-6 polynomial (relative
// error < 1e-7 for |x| <= 87; |x| is clamped to 87, so no overflow or
// subnormals). Written with adds, multiplies and integer selects only, so a
// fixed-length loop of it vectorises at -O2 (std::exp is a scalar call).
inline float ExpClamped(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);
  constexpr int32_t kMaxMagnitude = 0x42ae0000;  // 87.0f
  int32_t magnitude = bits & 0x7fffffff;
  magnitude = magnitude > kMaxMagnitude ? kMaxMagnitude : magnitude;
  x = std::bit_cast<float>(magnitude | (bits & INT32_MIN));
  // n = round(x / ln 2) (adding 1.5 * 2^23 rounds to an integer), r = x - n ln 2.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  return y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

// gate[j] = silu(gate[j]) * up[j] for j in [0, n), in place. Blocks of a fixed
// length let GCC's -O2 cost model vectorise the body.
void SwiGluInPlace(float* __restrict gate, const float* __restrict up, int n) {
  constexpr int kBlock = 16;
  int j = 0;
  for (; j + kBlock <= n; j += kBlock) {
    for (int i = 0; i < kBlock; ++i) {
      const float g = gate[j + i];
      gate[j + i] = g / (1.0f + ExpClamped(-g)) * up[j + i];
    }
  }
  for (; j < n; ++j) {
    const float g = gate[j];
    gate[j] = g / (1.0f + ExpClamped(-g)) * up[j];
  }
}

class HostBuffer final : public BackendBuffer {
 public:
  HostBuffer(void* data, size_t size) : data_(data), size_(size) {}
  ~HostBuffer() override { std::free(data_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() override { return data_; }
  size_t size_bytes() const override { return size_; }

 private:
  void* data_;
  size_t size_;
};

struct HostMark final : BackendMark {
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options) : num_threads_(options.num_threads) {
    if (num_threads_ > 0) openblas_set_num_threads(num_threads_);
  }

  std::string_view name() const override { return "cpu"; }

  std::string description() const override {
    std::string config = openblas_get_config();
    return config + " (" +
           (num_threads_ > 0 ? std::to_string(num_threads_) + " BLAS thread(s)"
                             : std::string("default BLAS threads")) +
           ")";
  }

  bool Supports(Feature feature) const override {
    switch (feature) {
      case Feature::kSoftmaxScoring:
      case Feature::kSigmoidScoring:
      case Feature::kGroupedExpertFfn:
      case Feature::kHostRouting:
      case Feature::kDeviceRouting:  // RouteIntoDeviceLayout(): the device contract on the host
      case Feature::kHostMemory:
        return true;
    }
    return false;
  }

  Result<std::unique_ptr<BackendBuffer>> Allocate(size_t num_bytes) override {
    size_t rounded =
        std::max<size_t>(kAlignment, (num_bytes + kAlignment - 1) / kAlignment * kAlignment);
    void* data = std::aligned_alloc(kAlignment, rounded);
    if (data == nullptr) {
      return Status::Unavailable("cpu backend: out of memory allocating " +
                                 std::to_string(num_bytes) + " bytes");
    }
    return std::unique_ptr<BackendBuffer>(new HostBuffer(data, num_bytes));
  }

  Status Upload(const void* host, size_t num_bytes, void* dst) override {
    if (num_bytes > 0) std::memcpy(dst, host, num_bytes);
    return Status::Ok();
  }

  Status Download(const void* src, size_t num_bytes, void* host) override {
    if (num_bytes > 0) std::memcpy(host, src, num_bytes);
    return Status::Ok();
  }

  Status Copy(const void* src, size_t num_bytes, void* dst) override {
    if (num_bytes > 0) std::memcpy(dst, src, num_bytes);
    return Status::Ok();
  }

  Status Fill(float value, size_t num_floats, float* dst) override {
    std::fill(dst, dst + num_floats, value);
    return Status::Ok();
  }

  Status Synchronize() override { return Status::Ok(); }

  Result<std::unique_ptr<BackendBuffer>> AllocateHost(size_t num_bytes) override {
    return Allocate(num_bytes);
  }

  Status DownloadAsync(const void* src, size_t num_bytes, void* host) override {
    return Download(src, num_bytes, host);
  }

  // Ops run synchronously, so a mark takes the wall time at which it is recorded.
  Result<std::unique_ptr<BackendMark>> CreateMark() override {
    return std::unique_ptr<BackendMark>(new HostMark());
  }

  Status RecordMark(BackendMark* mark) override {
    auto* host = dynamic_cast<HostMark*>(mark);
    if (host == nullptr) return Status::InvalidArgument("RecordMark: not a cpu backend mark");
    host->time = std::chrono::steady_clock::now();
    host->recorded = true;
    return Status::Ok();
  }

  Result<double> MicrosBetween(const BackendMark& from, const BackendMark& to) override {
    const auto* a = dynamic_cast<const HostMark*>(&from);
    const auto* b = dynamic_cast<const HostMark*>(&to);
    if (a == nullptr || b == nullptr) {
      return Status::InvalidArgument("MicrosBetween: not a cpu backend mark");
    }
    if (!a->recorded || !b->recorded) {
      return Status::FailedPrecondition("MicrosBetween: mark never recorded");
    }
    return std::chrono::duration<double, std::micro>(b->time - a->time).count();
  }

  Status RouteOnDevice(const DeviceRoutingArgs& args) override {
    return RouteIntoDeviceLayout(args);
  }

  Status RmsNorm(const float* x, const float* weight, int num_tokens, int hidden, float eps,
                 float* out) override {
    for (int t = 0; t < num_tokens; ++t) {
      const float* row = x + static_cast<size_t>(t) * hidden;
      float* dst = out + static_cast<size_t>(t) * hidden;
      double sum_sq = 0;
      for (int h = 0; h < hidden; ++h)
        sum_sq += static_cast<double>(row[h]) * row[h];
      float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / hidden + eps));
      for (int h = 0; h < hidden; ++h)
        dst[h] = row[h] * inv * weight[h];
    }
    return Status::Ok();
  }

  Status Gemm(const float* a, const float* b, float* c, int m, int n, int k, float beta) override {
    if (m == 0 || n == 0) return Status::Ok();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, beta, c, n);
    return Status::Ok();
  }

  Status Score(const float* logits, int num_tokens, int num_experts, ScoreFunction fn,
               float* scores) override {
    for (int t = 0; t < num_tokens; ++t) {
      const float* row = logits + static_cast<size_t>(t) * num_experts;
      float* dst = scores + static_cast<size_t>(t) * num_experts;
      if (fn == ScoreFunction::kSigmoid) {
        for (int e = 0; e < num_experts; ++e)
          dst[e] = 1.0f / (1.0f + std::exp(-row[e]));
        continue;
      }
      float max_logit = *std::max_element(row, row + num_experts);
      float sum = 0;
      for (int e = 0; e < num_experts; ++e) {
        dst[e] = std::exp(row[e] - max_logit);
        sum += dst[e];
      }
      for (int e = 0; e < num_experts; ++e)
        dst[e] /= sum;
    }
    return Status::Ok();
  }

  Status TopK(const float* selection, int num_tokens, int num_experts, int k,
              int32_t* indices) override {
    if (k < 0 || k > num_experts) {
      return Status::InvalidArgument("TopK: k=" + std::to_string(k) + " outside [0, " +
                                     std::to_string(num_experts) + "]");
    }
    std::vector<int32_t> order(num_experts);
    for (int t = 0; t < num_tokens; ++t) {
      const float* row = selection + static_cast<size_t>(t) * num_experts;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [row](int32_t a, int32_t b) {
        return row[a] > row[b] || (row[a] == row[b] && a < b);
      });
      std::copy(order.begin(), order.begin() + k, indices + static_cast<size_t>(t) * k);
    }
    return Status::Ok();
  }

  Status Gather(const float* x, const int32_t* rows, int num_rows, int hidden,
                float* out) override {
    const size_t row_bytes = sizeof(float) * static_cast<size_t>(hidden);
    for (int i = 0; i < num_rows; ++i) {
      float* dst = out + static_cast<size_t>(i) * hidden;
      if (rows[i] < 0) {
        std::fill(dst, dst + hidden, 0.0f);
      } else {
        std::memcpy(dst, x + static_cast<size_t>(rows[i]) * hidden, row_bytes);
      }
    }
    return Status::Ok();
  }

  size_t PackedExpertFloats(int hidden, int ffn) const override {
    if (!cpu::PackedKernelsAvailable() || hidden <= 0 || ffn <= 0) return 0;
    return cpu::PackedGateUpFloats(hidden, ffn) + cpu::PackedDownFloats(ffn, hidden);
  }

  Status PackExpert(const ExpertWeights& weights, int hidden, float* packed) override {
    if (PackedExpertFloats(hidden, weights.ffn) == 0) {
      return Status::Unsupported("PackExpert: no packed kernels on this CPU (needs AVX-512F)");
    }
    cpu::PackGateUp(weights.gate_up, hidden, weights.ffn, packed);
    cpu::PackDown(weights.down, weights.ffn, hidden,
                  packed + cpu::PackedGateUpFloats(hidden, weights.ffn));
    return Status::Ok();
  }

  // Packed experts run the AVX-512 kernels (expert_kernels.h: SwiGLU fused
  // into the gate/up GEMM, no weight repacking per call, the next expert's
  // weights prefetched); others the OpenBLAS pair with SwiGLU between.
  Status ExpertFfn(const ExpertGroups& groups) override {
    const int hidden = groups.hidden;
    const size_t num_groups = groups.experts.size();
    for (size_t g = 0; g < num_groups; ++g) {
      const int begin = groups.offsets[g];
      const int rows = groups.offsets[g + 1] - begin;
      if (rows <= 0) continue;
      const ExpertWeights& w = groups.experts[g];
      const int ffn = w.ffn;
      const float* x = groups.input + static_cast<size_t>(begin) * hidden;
      float* y = groups.output + static_cast<size_t>(begin) * hidden;
      float* act = groups.workspace;  // [rows, 2F]
      if (w.packed != nullptr && cpu::PackedKernelsAvailable()) {
        float* rows_ws = act + static_cast<size_t>(rows) * 2 * ffn;
        const float* down = w.packed + cpu::PackedGateUpFloats(hidden, ffn);
        const float* next = nullptr;  // the next packed expert that has rows
        for (size_t n = g + 1; n < num_groups && next == nullptr; ++n) {
          if (groups.offsets[n + 1] > groups.offsets[n]) next = groups.experts[n].packed;
        }
        // Prefetched ahead: the first panel of what runs next.
        cpu::GateUpSwiGlu(x, rows, hidden, ffn, w.packed, down, cpu::FirstPanelFloats(ffn), rows_ws,
                          act);
        cpu::Down(act, rows, ffn, hidden, down, next, cpu::FirstPanelFloats(hidden), rows_ws, y);
        continue;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, 2 * ffn, hidden, 1.0f, x, hidden,
                  w.gate_up, 2 * ffn, 0.0f, act, 2 * ffn);
      for (int r = 0; r < rows; ++r) {
        float* a = act + static_cast<size_t>(r) * 2 * ffn;
        SwiGluInPlace(a, a + ffn, ffn);
      }
      // act[:, :F] (leading dimension 2F) times W_down [F, H].
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hidden, ffn, 1.0f, act, 2 * ffn,
                  w.down, hidden, 0.0f, y, hidden);
    }
    return Status::Ok();
  }

  Status ScatterAddWeighted(const float* y, const int32_t* rows, const float* weights, int num_rows,
                            int hidden, float* out) override {
    for (int i = 0; i < num_rows; ++i) {
      if (rows[i] < 0) continue;
      const float w = weights[i];
      const float* src = y + static_cast<size_t>(i) * hidden;
      float* dst = out + static_cast<size_t>(rows[i]) * hidden;
      for (int h = 0; h < hidden; ++h)
        dst[h] += w * src[h];
    }
    return Status::Ok();
  }

  Status Add(const float* a, const float* b, size_t n, float* out) override {
    for (size_t i = 0; i < n; ++i)
      out[i] = a[i] + b[i];
    return Status::Ok();
  }

 private:
  int num_threads_;
};

}  // namespace

Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options) {
  if (options.num_threads < 0) {
    return Status::InvalidArgument("cpu backend: num_threads must be >= 0, got " +
                                   std::to_string(options.num_threads));
  }
  return std::unique_ptr<Backend>(new CpuBackend(options));
}

}  // namespace moe::engine

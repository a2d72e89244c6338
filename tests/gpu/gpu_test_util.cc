#include "gpu_test_util.h"

#include <algorithm>
#include <cmath>

#include "moe/engine/model.h"

namespace moe::engine::gpu_testing {

std::unique_ptr<Backend> MakeBackend(const char* name, const BackendOptions& options) {
  auto backend = CreateBackend(name, options);
  INFO(name << ": " << backend.status().ToString());
  REQUIRE(backend.ok());
  return std::move(backend).value();
}

BackendPair MakePair(const BackendOptions& options) {
  BackendPair pair;
  pair.cpu = MakeBackend("cpu");
  pair.gpu = MakeBackend("cuda", options);
  return pair;
}

std::vector<float> RandomFloats(size_t n, uint64_t seed, double scale) {
  NormalStream rng(seed);
  std::vector<float> out(n);
  for (float& v : out)
    v = static_cast<float>(rng.Next() * scale);
  return out;
}

std::vector<int32_t> RandomInts(size_t n, int32_t bound, uint64_t seed) {
  NormalStream rng(seed);
  std::vector<int32_t> out(n);
  for (int32_t& v : out)
    v = std::min<int32_t>(bound - 1, static_cast<int32_t>(rng.Uniform() * bound));
  return out;
}

double ScaledMaxError(const std::vector<float>& got, const std::vector<float>& ref) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - ref[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
  }
  if (max_ref == 0) return max_diff;
  return max_diff / max_ref;
}

void CheckClose(const std::vector<float>& got, const std::vector<float>& ref, double tol) {
  REQUIRE(got.size() == ref.size());
  size_t num_bad = 0;
  for (float v : got)
    num_bad += std::isfinite(v) ? 0 : 1;
  CHECK(num_bad == 0);
  const double err = ScaledMaxError(got, ref);
  INFO("scaled max error " << err << " (tolerance " << tol << ", " << ref.size() << " values)");
  CHECK(err <= tol);
}

}  // namespace moe::engine::gpu_testing

// The CPU backend's packed expert FFN (engine/src/cpu/expert_kernels.h)
// against a double-precision reference and against its OpenBLAS path.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "moe/engine/backend.h"
#include "moe/engine/model.h"
#include "test_util.h"

namespace moe::engine {
namespace {

struct Expert {
  std::unique_ptr<BackendBuffer> gate_up, down, packed;
  int ffn = 0;
  ExpertWeights Weights(bool use_packed) const {
    return {gate_up->floats(), down->floats(), ffn,
            use_packed && packed ? packed->floats() : nullptr};
  }
};

std::vector<float> Normal(size_t n, double scale, uint64_t seed) {
  NormalStream rng(seed);
  std::vector<float> v(n);
  for (float& x : v)
    x = static_cast<float>(rng.Next() * scale);
  return v;
}

std::unique_ptr<BackendBuffer> Upload(Backend& b, const std::vector<float>& v) {
  auto buffer = b.Allocate(v.size() * sizeof(float));
  REQUIRE(buffer.ok());
  REQUIRE(b.Upload(v.data(), v.size() * sizeof(float), (*buffer)->data()).ok());
  return std::move(buffer).value();
}

// y = (silu(x Wg) * (x Wu)) Wd in double.
std::vector<double> Reference(const float* x, int rows, int hidden, int ffn, const float* gate_up,
                              const float* down) {
  std::vector<double> y(static_cast<size_t>(rows) * hidden, 0.0), act(ffn);
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < ffn; ++j) {
      double g = 0, u = 0;
      for (int p = 0; p < hidden; ++p) {
        g += static_cast<double>(x[r * hidden + p]) * gate_up[p * 2 * ffn + j];
        u += static_cast<double>(x[r * hidden + p]) * gate_up[p * 2 * ffn + ffn + j];
      }
      act[j] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int h = 0; h < hidden; ++h) {
      double s = 0;
      for (int j = 0; j < ffn; ++j)
        s += act[j] * down[j * hidden + h];
      y[static_cast<size_t>(r) * hidden + h] = s;
    }
  }
  return y;
}

double RelativeError(const std::vector<float>& got, const std::vector<double>& want, size_t begin,
                     size_t end) {
  double num = 0, den = 0;
  for (size_t i = begin; i < end; ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

TEST_CASE("CPU packed expert FFN matches a double reference on ragged shapes", "[backend][ffn]") {
  auto created = CreateBackend("cpu");
  REQUIRE(created.ok());
  Backend& b = **created;
  // Shapes that are not multiples of the kernel's tiles (6 rows, 32 / 64
  // columns), empty groups, and an expert of another intermediate size.
  for (const int hidden : {70, 128}) {
    const std::vector<int> ffns = {45, 64, 100, 33};
    const std::vector<int> rows = {5, 0, 13, 1, 6, 7};
    std::vector<Expert> experts(rows.size());
    std::vector<int> offsets = {0};
    for (size_t g = 0; g < rows.size(); ++g) {
      Expert& e = experts[g];
      e.ffn = ffns[g % ffns.size()];
      const uint64_t seed = MixSeed(hidden, g);
      e.gate_up =
          Upload(b, Normal(static_cast<size_t>(hidden) * 2 * e.ffn, 1.0 / std::sqrt(hidden), seed));
      e.down =
          Upload(b, Normal(static_cast<size_t>(e.ffn) * hidden, 1.0 / std::sqrt(e.ffn), seed + 1));
      const size_t packed = b.PackedExpertFloats(hidden, e.ffn);
      if (packed > 0) {
        auto buffer = b.Allocate(packed * sizeof(float));
        REQUIRE(buffer.ok());
        e.packed = std::move(buffer).value();
        REQUIRE(b.PackExpert(e.Weights(false), hidden, e.packed->floats()).ok());
      } else {
        // Without AVX-512 the backend packs nothing and says so.
        CHECK(b.PackExpert(e.Weights(false), hidden, nullptr).code() == StatusCode::kUnsupported);
      }
      offsets.push_back(offsets.back() + rows[g]);
    }
    const int total = offsets.back();
    const std::vector<float> x = Normal(static_cast<size_t>(total) * hidden, 1.0, 99 + hidden);
    auto in = Upload(b, x);
    auto ws = b.Allocate(ExpertWorkspaceFloats(13, 100, hidden) * sizeof(float));
    REQUIRE(ws.ok());
    std::vector<std::vector<float>> results;
    for (const bool use_packed : {true, false}) {
      auto out = b.Allocate(static_cast<size_t>(total) * hidden * sizeof(float));
      REQUIRE(out.ok());
      ExpertGroups groups;
      groups.input = in->floats();
      groups.output = (*out)->floats();
      groups.hidden = hidden;
      groups.offsets = offsets;
      groups.workspace = (*ws)->floats();
      for (const Expert& e : experts)
        groups.experts.push_back(e.Weights(use_packed));
      REQUIRE(b.ExpertFfn(groups).ok());
      results.emplace_back((*out)->floats(),
                           (*out)->floats() + static_cast<size_t>(total) * hidden);
    }
    for (size_t g = 0; g < rows.size(); ++g) {
      if (rows[g] == 0) continue;
      const size_t begin = static_cast<size_t>(offsets[g]) * hidden;
      const std::vector<double> want =
          Reference(x.data() + begin, rows[g], hidden, experts[g].ffn, experts[g].gate_up->floats(),
                    experts[g].down->floats());
      std::vector<double> shifted(begin, 0.0);
      shifted.insert(shifted.end(), want.begin(), want.end());
      const size_t end = begin + want.size();
      INFO("hidden " << hidden << ", group " << g << ", rows " << rows[g] << ", ffn "
                     << experts[g].ffn);
      // fp32 products summed in fp32 over <= 128 terms, three GEMMs deep:
      // a few 1e-7 relative; 1e-5 leaves room for ordering, none for a bug.
      CHECK(RelativeError(results[0], shifted, begin, end) < 1e-5);
      CHECK(RelativeError(results[1], shifted, begin, end) < 1e-5);
    }
  }
}

}  // namespace
}  // namespace moe::engine

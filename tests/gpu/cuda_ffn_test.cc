// The grouped SwiGLU expert FFN on CUDA against the CPU backend: one group
// (the per-group path), uneven and empty groups, mixed intermediate sizes,
// the DeepSeek-like 256 experts x top-8, tensor-core precisions.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "moe/engine/backend.h"
#include "moe/engine/cuda_backend.h"

namespace moe::engine {
namespace {

using gpu_testing::CheckClose;
using gpu_testing::MakeBackend;
using gpu_testing::RandomFloats;
using gpu_testing::RandomInts;
using gpu_testing::ToBackend;
using gpu_testing::ToHost;

// Host description of a grouped FFN call: group g uses weight set
// set_of_group[g] (sets are shared between groups to keep big cases small).
struct FfnCase {
  int hidden = 0;
  std::vector<int> set_ffn;       // intermediate size of each weight set
  std::vector<int> set_of_group;  // [groups]
  std::vector<int> rows;          // [groups]
};

// Runs `c` on `backend` and returns the output rows.
std::vector<float> RunFfn(Backend& backend, const FfnCase& c, uint64_t seed) {
  const int hidden = c.hidden;
  int total_rows = 0, max_rows = 0;
  for (int r : c.rows) {
    total_rows += r;
    max_rows = std::max(max_rows, r);
  }
  const int max_ffn = *std::max_element(c.set_ffn.begin(), c.set_ffn.end());
  std::vector<std::unique_ptr<BackendBuffer>> keep;
  std::vector<ExpertWeights> sets;
  for (size_t s = 0; s < c.set_ffn.size(); ++s) {
    const int f = c.set_ffn[s];
    const double scale_up = 1.0 / std::sqrt(static_cast<double>(hidden));
    const double scale_down = 1.0 / std::sqrt(static_cast<double>(f));
    keep.push_back(ToBackend(
        backend, RandomFloats(static_cast<size_t>(hidden) * 2 * f, seed + 2 * s, scale_up)));
    keep.push_back(ToBackend(
        backend, RandomFloats(static_cast<size_t>(f) * hidden, seed + 2 * s + 1, scale_down)));
    sets.push_back({keep[keep.size() - 2]->floats(), keep.back()->floats(), f});
  }
  const size_t n = static_cast<size_t>(std::max(1, total_rows)) * hidden;
  auto input = ToBackend(backend, RandomFloats(n, seed + 1000));
  auto output = ToBackend(backend, std::vector<float>(n, -7.0f));
  auto workspace = backend.Allocate(
      sizeof(float) * std::max<size_t>(1, ExpertWorkspaceFloats(max_rows, max_ffn, hidden)));
  REQUIRE(workspace.ok());
  ExpertGroups groups;
  groups.input = input->floats();
  groups.output = output->floats();
  groups.hidden = hidden;
  groups.workspace = (*workspace)->floats();
  groups.offsets.push_back(0);
  for (size_t g = 0; g < c.rows.size(); ++g) {
    groups.experts.push_back(sets[c.set_of_group[g]]);
    groups.offsets.push_back(groups.offsets.back() + c.rows[g]);
  }
  const Status st = backend.ExpertFfn(groups);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return ToHost<float>(backend, *output, static_cast<size_t>(total_rows) * hidden);
}

// `num_groups` groups over `num_sets` weight sets of size `ffn`, rows drawn
// as `num_tokens` tokens each picking `top_k` distinct groups.
FfnCase RoutedCase(int hidden, int ffn, int num_groups, int num_sets, int num_tokens, int top_k,
                   uint64_t seed) {
  FfnCase c;
  c.hidden = hidden;
  c.set_ffn.assign(num_sets, ffn);
  c.rows.assign(num_groups, 0);
  for (int g = 0; g < num_groups; ++g)
    c.set_of_group.push_back(g % num_sets);
  const auto picks = RandomInts(static_cast<size_t>(num_tokens) * top_k * 4, num_groups, seed);
  size_t next = 0;
  for (int t = 0; t < num_tokens; ++t) {
    std::vector<int> chosen;
    while (static_cast<int>(chosen.size()) < top_k && next < picks.size()) {
      const int g = picks[next++];
      if (std::find(chosen.begin(), chosen.end(), g) == chosen.end()) chosen.push_back(g);
    }
    for (int g : chosen)
      c.rows[g]++;
  }
  return c;
}

// The path a call must take (CudaBackendCounters).
enum class Path {
  kNone,       // no non-empty group: nothing runs
  kSingle,     // one non-empty group
  kGrouped,    // two grouped GEMMs
  kUnaligned,  // one GEMM per group: tensor-core grouped GEMMs need alignment
};

void CompareFfn(const FfnCase& c, const BackendOptions& gpu_options, double tol, Path path) {
  auto cpu = MakeBackend("cpu");
  auto gpu = MakeBackend("cuda", gpu_options);
  const auto ref = RunFfn(*cpu, c, 77);
  const auto got = RunFfn(*gpu, c, 77);
  INFO(gpu->description());
  CheckClose(got, ref, tol);
  // The grouped path must not have fallen back to one GEMM per expert: with
  // the default options a refusal fails RunFfn, and nothing may be counted.
  const auto counters = GetCudaBackendCounters(*gpu);
  REQUIRE(counters.ok());
  CHECK(counters->grouped_fallbacks == 0);
  CHECK(counters->grouped_ffn_calls == (path == Path::kGrouped ? 1u : 0u));
  CHECK(counters->single_group_ffn_calls == (path == Path::kSingle ? 1u : 0u));
  CHECK(counters->unaligned_ffn_calls == (path == Path::kUnaligned ? 1u : 0u));
}

TEST_CASE("CUDA ExpertFfn: one group (per-group path)", "[cuda][ffn]") {
  FfnCase c;
  c.hidden = 16;
  c.set_ffn = {8};
  c.set_of_group = {0};
  c.rows = {7};
  CompareFfn(c, {}, 5e-6, Path::kSingle);
  c.hidden = 1024;
  c.set_ffn = {1024};
  c.rows = {512};  // a fused 2 x 512 shared expert over 512 tokens
  CompareFfn(c, {}, 5e-5, Path::kSingle);
  // Empty groups around one non-empty one: still the single-group path.
  c.set_of_group = {0, 0, 0};
  c.rows = {0, 9, 0};
  CompareFfn(c, {}, 5e-5, Path::kSingle);
}

TEST_CASE("CUDA ExpertFfn: uneven, empty and one-row groups at odd sizes", "[cuda][ffn]") {
  FfnCase c;
  c.hidden = 129;
  c.set_ffn = {83, 83, 83};
  c.set_of_group = {0, 1, 2, 0, 1, 2, 0, 1, 2};
  c.rows = {0, 5, 1, 0, 17, 3, 0, 40, 2};
  CompareFfn(c, {}, 2e-5, Path::kGrouped);  // fp32 grouped GEMMs need no alignment
  c.rows = {1, 1, 1, 1, 1, 1, 1, 1, 1};     // like the quality probe's calls
  CompareFfn(c, {}, 2e-5, Path::kGrouped);
  c.rows = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  CompareFfn(c, {}, 0, Path::kNone);
}

TEST_CASE("CUDA ExpertFfn: groups with different intermediate sizes", "[cuda][ffn]") {
  FfnCase c;
  c.hidden = 64;
  c.set_ffn = {32, 48, 96};
  c.set_of_group = {0, 1, 2, 1, 0};
  c.rows = {9, 4, 13, 0, 30};
  CompareFfn(c, {}, 2e-5, Path::kGrouped);
}

TEST_CASE("CUDA ExpertFfn: DeepSeek-like 256 experts top-8, hidden 1024, ffn 512", "[cuda][ffn]") {
  const FfnCase c = RoutedCase(1024, 512, 256, 32, 128, 8, 5);
  CompareFfn(c, {}, 5e-5, Path::kGrouped);
}

TEST_CASE("CUDA ExpertFfn with tensor-core precisions stays within their error",
          "[cuda][ffn][precision]") {
  const FfnCase c = RoutedCase(1024, 512, 64, 16, 96, 6, 9);
  BackendOptions tf32;
  tf32.gemm_precision = GemmPrecision::kTf32;
  CompareFfn(c, tf32, 1e-2, Path::kGrouped);
  BackendOptions bf16;
  bf16.gemm_precision = GemmPrecision::kBf16;
  CompareFfn(c, bf16, 5e-2, Path::kGrouped);
  // Odd sizes leave matrices off 16-byte boundaries: the per-group path runs.
  FfnCase odd;
  odd.hidden = 129;
  odd.set_ffn = {83, 83};
  odd.set_of_group = {0, 1, 0};
  odd.rows = {5, 0, 17};
  CompareFfn(odd, tf32, 1e-2, Path::kUnaligned);
}

TEST_CASE("CUDA ExpertFfn is deterministic run to run", "[cuda][ffn]") {
  const FfnCase c = RoutedCase(256, 128, 32, 8, 64, 4, 13);
  auto gpu = MakeBackend("cuda");
  const auto first = RunFfn(*gpu, c, 3);
  const auto second = RunFfn(*gpu, c, 3);
  CHECK(first == second);
}

TEST_CASE("CUDA ExpertFfn allowed to fall back still takes the grouped path", "[cuda][ffn]") {
  // grouped_gemm_fallback only permits the fallback; with a cuBLAS that runs
  // grouped GEMMs nothing falls back and the description says nothing of it.
  BackendOptions options;
  options.grouped_gemm_fallback = true;
  const FfnCase c = RoutedCase(256, 128, 16, 4, 32, 4, 17);
  CompareFfn(c, options, 2e-5, Path::kGrouped);
  auto gpu = MakeBackend("cuda", options);
  CHECK(gpu->description().find("one GEMM per expert") == std::string::npos);
}

TEST_CASE("CUDA backend counters exist only for CUDA backends", "[cuda]") {
  auto cpu = MakeBackend("cpu");
  CHECK(GetCudaBackendCounters(*cpu).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("CUDA ExpertFfn refuses malformed offsets", "[cuda][ffn]") {
  auto gpu = MakeBackend("cuda");
  ExpertGroups groups;
  groups.hidden = 4;
  groups.experts.resize(2);
  groups.offsets = {0, 3};  // one entry short
  CHECK(gpu->ExpertFfn(groups).code() == StatusCode::kInvalidArgument);
  groups.offsets = {0, 3, 2};  // decreasing
  groups.experts[0].ffn = groups.experts[1].ffn = 2;
  CHECK(gpu->ExpertFfn(groups).code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::engine

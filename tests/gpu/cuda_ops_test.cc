// Each CUDA backend op against the CPU backend on seeded inputs, per shape
// with a per-case tolerance (ggml's test-backend-ops style). Shapes: tiny, odd
// sizes, and the DeepSeek-like router (256 experts, top-8, hidden 1024). Also
// pinned host memory, asynchronous downloads and marks (CUDA events).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "moe/engine/backend.h"

namespace moe::engine {
namespace {

using gpu_testing::BackendPair;
using gpu_testing::CheckClose;
using gpu_testing::MakePair;
using gpu_testing::RandomFloats;
using gpu_testing::RandomInts;
using gpu_testing::ToBackend;
using gpu_testing::ToHost;

TEST_CASE("CUDA backend answers Supports() truthfully", "[cuda]") {
  auto pair = MakePair();
  Backend& gpu = *pair.gpu;
  INFO(gpu.description());
  CHECK(gpu.name() == "cuda");
  CHECK(gpu.Supports(Feature::kSoftmaxScoring));
  CHECK(gpu.Supports(Feature::kSigmoidScoring));
  CHECK(gpu.Supports(Feature::kGroupedExpertFfn));
  CHECK(gpu.Supports(Feature::kHostRouting));
  CHECK(gpu.Supports(Feature::kDeviceRouting));
  CHECK_FALSE(gpu.Supports(Feature::kHostMemory));  // device memory
}

TEST_CASE("CUDA pinned host memory and asynchronous downloads", "[cuda]") {
  auto pair = MakePair();
  Backend& gpu = *pair.gpu;
  for (size_t n : {size_t{1}, size_t{4099}, size_t{1} << 20}) {
    INFO("n=" << n);
    const std::vector<float> host = RandomFloats(n, 41 + n);
    auto buffer = ToBackend(gpu, host);
    auto pinned = gpu.AllocateHost(n * sizeof(float));
    REQUIRE(pinned.ok());
    CHECK((*pinned)->size_bytes() == n * sizeof(float));
    float* dst = (*pinned)->floats();
    std::fill(dst, dst + n, -1.0f);
    // Work before the copy is ordered before it on the stream.
    REQUIRE(gpu.Fill(3.0f, n / 2, buffer->floats()).ok());
    REQUIRE(gpu.DownloadAsync(buffer->data(), n * sizeof(float), dst).ok());
    REQUIRE(gpu.Synchronize().ok());
    std::vector<float> want = host;
    std::fill(want.begin(), want.begin() + n / 2, 3.0f);
    CHECK(std::vector<float>(dst, dst + n) == want);
    // Pageable memory works too (the copy may wait).
    std::vector<float> pageable(n, -1.0f);
    REQUIRE(gpu.DownloadAsync(buffer->data(), n * sizeof(float), pageable.data()).ok());
    REQUIRE(gpu.Synchronize().ok());
    CHECK(pageable == want);
  }
  auto empty = gpu.AllocateHost(0);
  REQUIRE(empty.ok());
  CHECK(gpu.DownloadAsync(nullptr, 0, (*empty)->data()).ok());
}

TEST_CASE("CUDA marks time enqueued work without waiting", "[cuda]") {
  auto pair = MakePair();
  Backend& gpu = *pair.gpu;
  auto start = gpu.CreateMark();
  auto stop = gpu.CreateMark();
  REQUIRE(start.ok());
  REQUIRE(stop.ok());
  // Never recorded: a precondition failure, not a device error.
  CHECK(gpu.MicrosBetween(**start, **stop).status().code() == StatusCode::kFailedPrecondition);

  const int m = 512, n = 512, k = 512;
  auto a = ToBackend(gpu, RandomFloats(static_cast<size_t>(m) * k, 61));
  auto b = ToBackend(gpu, RandomFloats(static_cast<size_t>(k) * n, 62));
  auto c = ToBackend(gpu, std::vector<float>(static_cast<size_t>(m) * n));
  REQUIRE(gpu.RecordMark(start->get()).ok());
  CHECK(gpu.MicrosBetween(**start, **stop).status().code() == StatusCode::kFailedPrecondition);
  for (int i = 0; i < 4; ++i)
    REQUIRE(gpu.Gemm(a->floats(), b->floats(), c->floats(), m, n, k, 0.0f).ok());
  REQUIRE(gpu.RecordMark(stop->get()).ok());
  REQUIRE(gpu.Synchronize().ok());
  auto us = gpu.MicrosBetween(**start, **stop);
  INFO(us.status().ToString());
  REQUIRE(us.ok());
  CHECK(*us >= 0.0);
  CHECK(*us < 10e6);  // 4 small GEMMs: well under 10 s
  auto same = gpu.MicrosBetween(**start, **start);
  REQUIRE(same.ok());
  CHECK(*same == 0.0);

  // Re-recording replaces the time; marks of another backend are refused.
  REQUIRE(gpu.RecordMark(start->get()).ok());
  REQUIRE(gpu.RecordMark(stop->get()).ok());
  REQUIRE(gpu.Synchronize().ok());
  auto again = gpu.MicrosBetween(**start, **stop);
  REQUIRE(again.ok());
  CHECK(*again >= 0.0);
  auto cpu_mark = pair.cpu->CreateMark();
  REQUIRE(cpu_mark.ok());
  CHECK(gpu.RecordMark(cpu_mark->get()).code() == StatusCode::kInvalidArgument);
  CHECK(gpu.MicrosBetween(**start, **cpu_mark).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("CUDA memory: upload, download, fill, empty buffers", "[cuda]") {
  auto pair = MakePair();
  Backend& gpu = *pair.gpu;
  for (size_t n : {size_t{1}, size_t{7}, size_t{4099}, size_t{1} << 20}) {
    INFO("n=" << n);
    const std::vector<float> host = RandomFloats(n, 11 + n);
    auto buffer = ToBackend(gpu, host);
    CHECK(buffer->size_bytes() == n * sizeof(float));
    CHECK(ToHost<float>(gpu, *buffer, n) == host);
    for (float value : {0.0f, -2.5f, 1e-30f}) {
      REQUIRE(gpu.Fill(value, n, buffer->floats()).ok());
      CHECK(ToHost<float>(gpu, *buffer, n) == std::vector<float>(n, value));
    }
  }
  auto empty = gpu.Allocate(0);
  REQUIRE(empty.ok());
  CHECK(gpu.Upload(nullptr, 0, (*empty)->data()).ok());
  CHECK(gpu.Fill(1.0f, 0, (*empty)->floats()).ok());
  CHECK(gpu.Synchronize().ok());
}

TEST_CASE("CUDA RmsNorm matches the CPU backend", "[cuda][norm]") {
  auto pair = MakePair();
  struct Case {
    int tokens, hidden;
  };
  for (Case c : {Case{1, 1}, Case{5, 16}, Case{37, 129}, Case{128, 1024}, Case{16, 7168}}) {
    INFO("tokens=" << c.tokens << " hidden=" << c.hidden);
    const size_t n = static_cast<size_t>(c.tokens) * c.hidden;
    const std::vector<float> x = RandomFloats(n, 100 + c.hidden, 3.0);
    std::vector<float> w = RandomFloats(c.hidden, 200 + c.hidden, 0.1);
    for (float& v : w)
      v += 1.0f;
    std::vector<std::vector<float>> outs;
    for (Backend* b : {pair.cpu.get(), pair.gpu.get()}) {
      auto dx = ToBackend(*b, x);
      auto dw = ToBackend(*b, w);
      auto out = ToBackend(*b, std::vector<float>(n));
      REQUIRE(
          b->RmsNorm(dx->floats(), dw->floats(), c.tokens, c.hidden, 1e-6f, out->floats()).ok());
      outs.push_back(ToHost<float>(*b, *out, n));
    }
    CheckClose(outs[1], outs[0], 1e-6);
  }
}

TEST_CASE("CUDA Gemm matches the CPU backend (row-major, beta)", "[cuda][gemm]") {
  auto pair = MakePair();
  struct Case {
    int m, n, k;
    float beta;
    double tol;
  };
  const Case cases[] = {
      {1, 1, 1, 0.0f, 1e-6},        {5, 3, 4, 1.0f, 1e-6},        {37, 67, 129, 0.5f, 1e-5},
      {128, 256, 1024, 0.0f, 2e-5},  // DeepSeek-like router
      {512, 64, 1024, 0.0f, 2e-5},  {33, 1536, 1024, 0.0f, 2e-5}, {64, 1024, 512, 1.0f, 2e-5},
  };
  for (const Case& c : cases) {
    INFO("m=" << c.m << " n=" << c.n << " k=" << c.k << " beta=" << c.beta);
    const auto a = RandomFloats(static_cast<size_t>(c.m) * c.k, 1 + c.m * 7 + c.k);
    const auto w = RandomFloats(static_cast<size_t>(c.k) * c.n, 2 + c.n * 5 + c.k);
    const auto c0 = RandomFloats(static_cast<size_t>(c.m) * c.n, 3 + c.m + c.n);
    std::vector<std::vector<float>> outs;
    for (Backend* b : {pair.cpu.get(), pair.gpu.get()}) {
      auto da = ToBackend(*b, a);
      auto dw = ToBackend(*b, w);
      auto dc = ToBackend(*b, c0);
      REQUIRE(b->Gemm(da->floats(), dw->floats(), dc->floats(), c.m, c.n, c.k, c.beta).ok());
      outs.push_back(ToHost<float>(*b, *dc, c0.size()));
    }
    CheckClose(outs[1], outs[0], c.tol);
  }
}

TEST_CASE("CUDA Score matches the CPU backend (softmax, sigmoid)", "[cuda][scoring]") {
  auto pair = MakePair();
  struct Case {
    int tokens, experts;
  };
  for (Case c : {Case{1, 1}, Case{5, 8}, Case{37, 67}, Case{128, 256}, Case{64, 512}}) {
    for (ScoreFunction fn : {ScoreFunction::kSoftmax, ScoreFunction::kSigmoid}) {
      INFO("tokens=" << c.tokens << " experts=" << c.experts
                     << " sigmoid=" << (fn == ScoreFunction::kSigmoid));
      const size_t n = static_cast<size_t>(c.tokens) * c.experts;
      const auto logits = RandomFloats(n, 7 + n, 4.0);
      std::vector<std::vector<float>> outs;
      for (Backend* b : {pair.cpu.get(), pair.gpu.get()}) {
        auto dl = ToBackend(*b, logits);
        auto ds = ToBackend(*b, std::vector<float>(n));
        REQUIRE(b->Score(dl->floats(), c.tokens, c.experts, fn, ds->floats()).ok());
        outs.push_back(ToHost<float>(*b, *ds, n));
      }
      CheckClose(outs[1], outs[0], 2e-6);
      // Element-wise too: small probabilities must not be lost to the scale.
      for (size_t i = 0; i < n; ++i) {
        if (std::fabs(outs[1][i] - outs[0][i]) > 3e-5 * std::fabs(outs[0][i]) + 1e-30) {
          FAIL_CHECK("score " << i << ": cuda " << outs[1][i] << " cpu " << outs[0][i]);
          break;
        }
      }
    }
  }
}

TEST_CASE("CUDA TopK matches the CPU backend exactly, ties to the lower id", "[cuda][scoring]") {
  auto pair = MakePair();
  struct Case {
    int tokens, experts, k;
    bool ties;
  };
  const Case cases[] = {{1, 1, 1, false},    {5, 8, 2, false},    {3, 16, 16, false},
                        {37, 67, 5, false},  {37, 67, 5, true},   {128, 256, 8, false},
                        {128, 256, 8, true}, {64, 512, 16, true}, {9, 40, 0, false},
                        {4, 2000, 16, true}};
  for (const Case& c : cases) {
    INFO("tokens=" << c.tokens << " experts=" << c.experts << " k=" << c.k << " ties=" << c.ties);
    const size_t n = static_cast<size_t>(c.tokens) * c.experts;
    auto sel = RandomFloats(n, 5 + n + c.k);
    if (c.ties) {
      for (float& v : sel)
        v = std::round(v * 2.0f) / 2.0f;  // few distinct values: many ties
      sel[0] = -INFINITY;
    }
    std::vector<std::vector<int32_t>> outs;
    for (Backend* b : {pair.cpu.get(), pair.gpu.get()}) {
      auto ds = ToBackend(*b, sel);
      auto di = ToBackend(*b, std::vector<int32_t>(static_cast<size_t>(c.tokens) * c.k + 1));
      REQUIRE(b->TopK(ds->floats(), c.tokens, c.experts, c.k, di->ints()).ok());
      outs.push_back(ToHost<int32_t>(*b, *di, static_cast<size_t>(c.tokens) * c.k));
    }
    CHECK(outs[1] == outs[0]);
  }
  auto ds = ToBackend(*pair.gpu, std::vector<float>(8));
  auto di = ToBackend(*pair.gpu, std::vector<int32_t>(16));
  CHECK(pair.gpu->TopK(ds->floats(), 1, 8, 9, di->ints()).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("CUDA Gather matches the CPU backend exactly", "[cuda][permute]") {
  auto pair = MakePair();
  struct Case {
    int rows, src_rows, hidden;
    int offset;  // floats into the buffers: exercises the unaligned path
  };
  for (Case c : {Case{1, 1, 1, 0}, Case{10, 3, 5, 0}, Case{100, 37, 129, 0}, Case{64, 20, 16, 1},
                 Case{4096, 512, 1024, 0}}) {
    INFO("rows=" << c.rows << " hidden=" << c.hidden << " offset=" << c.offset);
    const auto x = RandomFloats(static_cast<size_t>(c.src_rows) * c.hidden + c.offset, 9);
    const auto rows = RandomInts(c.rows, c.src_rows, 10 + c.rows);
    const size_t n = static_cast<size_t>(c.rows) * c.hidden;
    std::vector<std::vector<float>> outs;
    for (Backend* b : {pair.cpu.get(), pair.gpu.get()}) {
      auto dx = ToBackend(*b, x);
      auto dr = ToBackend(*b, rows);
      auto out = ToBackend(*b, std::vector<float>(n + c.offset));
      REQUIRE(
          b->Gather(dx->floats() + c.offset, dr->ints(), c.rows, c.hidden, out->floats() + c.offset)
              .ok());
      outs.push_back(ToHost<float>(*b, *out, n + c.offset));
    }
    CHECK(outs[1] == outs[0]);
  }
}

TEST_CASE("CUDA Gather writes zeros for padding rows (-1)", "[cuda][permute]") {
  auto pair = MakePair();
  struct Case {
    int rows, src_rows, hidden;
    int offset;
  };
  for (Case c : {Case{1, 1, 1, 0}, Case{10, 3, 5, 0}, Case{100, 37, 128, 0}, Case{64, 20, 16, 1},
                 Case{4096, 512, 1024, 0}}) {
    INFO("rows=" << c.rows << " hidden=" << c.hidden << " offset=" << c.offset);
    const auto x = RandomFloats(static_cast<size_t>(c.src_rows) * c.hidden + c.offset, 19);
    auto rows = RandomInts(c.rows, c.src_rows, 20 + c.rows);
    for (int i = 0; i < c.rows; ++i) {
      if (i % 3 == 0 || i == c.rows - 1) rows[i] = -1;
    }
    const size_t n = static_cast<size_t>(c.rows) * c.hidden;
    std::vector<std::vector<float>> outs;
    for (Backend* b : {pair.cpu.get(), pair.gpu.get()}) {
      auto dx = ToBackend(*b, x);
      auto dr = ToBackend(*b, rows);
      auto out = ToBackend(*b, std::vector<float>(n + c.offset, 9.0f));  // stale values
      REQUIRE(
          b->Gather(dx->floats() + c.offset, dr->ints(), c.rows, c.hidden, out->floats() + c.offset)
              .ok());
      outs.push_back(ToHost<float>(*b, *out, n + c.offset));
    }
    CHECK(outs[1] == outs[0]);
    size_t num_bad = 0;
    for (int i = 0; i < c.rows; ++i) {
      for (int h = 0; h < c.hidden; ++h) {
        const float got = outs[1][c.offset + static_cast<size_t>(i) * c.hidden + h];
        const float want =
            rows[i] < 0 ? 0.0f : x[c.offset + static_cast<size_t>(rows[i]) * c.hidden + h];
        num_bad += got == want ? 0 : 1;
      }
    }
    CHECK(num_bad == 0);
  }
}

// ScatterAddWeighted of the same inputs on the CPU, then twice on the GPU:
// the three outputs, in that order.
std::vector<std::vector<float>> ScatterOnEach(BackendPair& pair, const std::vector<float>& y,
                                              const std::vector<int32_t>& rows,
                                              const std::vector<float>& weights,
                                              const std::vector<float>& out0, int num_rows,
                                              int hidden) {
  std::vector<std::vector<float>> outs;
  for (Backend* b : {pair.cpu.get(), pair.gpu.get(), pair.gpu.get()}) {
    auto dy = ToBackend(*b, y);
    auto dr = ToBackend(*b, rows);
    auto dw = ToBackend(*b, weights);
    auto out = ToBackend(*b, out0);
    REQUIRE(b->ScatterAddWeighted(dy->floats(), dr->ints(), dw->floats(), num_rows, hidden,
                                  out->floats())
                .ok());
    outs.push_back(ToHost<float>(*b, *out, out0.size()));
  }
  return outs;
}

TEST_CASE("CUDA ScatterAddWeighted matches the in-order CPU sum, deterministically",
          "[cuda][permute]") {
  auto pair = MakePair();
  struct Case {
    int rows, out_rows, hidden;
  };
  for (Case c : {Case{1, 1, 1}, Case{10, 3, 5}, Case{1000, 37, 129}, Case{4096, 512, 1024},
                 Case{3000, 1, 64}}) {
    INFO("rows=" << c.rows << " out_rows=" << c.out_rows << " hidden=" << c.hidden);
    const auto y = RandomFloats(static_cast<size_t>(c.rows) * c.hidden, 21 + c.rows);
    const auto rows = RandomInts(c.rows, c.out_rows, 22 + c.rows);
    const auto weights = RandomFloats(c.rows, 23 + c.rows, 0.5);
    const auto out0 = RandomFloats(static_cast<size_t>(c.out_rows) * c.hidden, 24);
    const std::vector<std::vector<float>> outs =
        ScatterOnEach(pair, y, rows, weights, out0, c.rows, c.hidden);
    // Same products and additions in the same order as the CPU loop.
    CheckClose(outs[1], outs[0], 1e-6);
    CHECK(outs[1] == outs[2]);  // run to run: bitwise
  }
}

TEST_CASE("CUDA ScatterAddWeighted skips padding rows (-1)", "[cuda][permute]") {
  auto pair = MakePair();
  struct Case {
    int rows, out_rows, hidden;
    int pad_every;  // every pad_every-th row is padding (1: all of them)
  };
  for (Case c : {Case{1, 1, 1, 1}, Case{10, 3, 5, 2}, Case{1000, 37, 129, 3},
                 Case{4096, 512, 1024, 4}, Case{300, 7, 64, 1}}) {
    INFO("rows=" << c.rows << " out_rows=" << c.out_rows << " hidden=" << c.hidden
                 << " pad_every=" << c.pad_every);
    const auto y = RandomFloats(static_cast<size_t>(c.rows) * c.hidden, 71 + c.rows);
    auto rows = RandomInts(c.rows, c.out_rows, 72 + c.rows);
    for (int i = 0; i < c.rows; i += c.pad_every)
      rows[i] = -1;
    const auto weights = RandomFloats(c.rows, 73 + c.rows, 0.5);
    const auto out0 = RandomFloats(static_cast<size_t>(c.out_rows) * c.hidden, 74);
    const std::vector<std::vector<float>> outs =
        ScatterOnEach(pair, y, rows, weights, out0, c.rows, c.hidden);
    // The in-order sum over the rows that are not padding.
    std::vector<float> ref = out0;
    for (int i = 0; i < c.rows; ++i) {
      if (rows[i] < 0) continue;
      for (int h = 0; h < c.hidden; ++h) {
        ref[static_cast<size_t>(rows[i]) * c.hidden + h] +=
            weights[i] * y[static_cast<size_t>(i) * c.hidden + h];
      }
    }
    CheckClose(outs[1], outs[0], 1e-6);
    CheckClose(outs[1], ref, 1e-6);
    CHECK(outs[1] == outs[2]);  // run to run: bitwise
    if (c.pad_every == 1) CHECK(outs[1] == out0);
  }
}

TEST_CASE("CUDA Add matches the CPU backend, also in place", "[cuda]") {
  auto pair = MakePair();
  for (size_t n : {size_t{1}, size_t{1000003}}) {
    const auto a = RandomFloats(n, 31);
    const auto b = RandomFloats(n, 32);
    auto da = ToBackend(*pair.gpu, a);
    auto db = ToBackend(*pair.gpu, b);
    auto out = ToBackend(*pair.gpu, std::vector<float>(n));
    REQUIRE(pair.gpu->Add(da->floats(), db->floats(), n, out->floats()).ok());
    REQUIRE(pair.gpu->Add(da->floats(), db->floats(), n, da->floats()).ok());  // out aliases a
    std::vector<float> ref(n);
    for (size_t i = 0; i < n; ++i)
      ref[i] = a[i] + b[i];
    CHECK(ToHost<float>(*pair.gpu, *out, n) == ref);
    CHECK(ToHost<float>(*pair.gpu, *da, n) == ref);
  }
}

}  // namespace
}  // namespace moe::engine

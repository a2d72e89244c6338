// Backend creation and the CPU backend's ops against plain loops.

#include <cmath>
#include <string>
#include <vector>

#include "moe/engine/backend.h"
#include "moe/engine/engine.h"
#include "test_util.h"

namespace moe::engine {
namespace {

TEST_CASE("Unknown backends are refused by name", "[backend]") {
  auto b = CreateBackend("tpu");
  CHECK(b.status().code() == StatusCode::kNotFound);
  CHECK(b.status().message().find("cpu") != std::string::npos);
}

TEST_CASE("CUDA backend creation fails cleanly without a device", "[backend][cuda]") {
  auto b = CreateBackend("cuda");
  if (b.ok()) {
    // A GPU machine: the CUDA backend is complete; tests/gpu checks its parity
    // with the CPU backend. Here it must at least carry an engine.
    INFO((*b)->description());
    auto engine = Engine::Create(testing::SmallOptions(), std::move(b).value());
    CHECK(engine.ok());
    return;
  }
  const Status st = b.status();
  INFO(st.ToString());
  const bool no_device =
      st.code() == StatusCode::kUnavailable && st.message().rfind("no CUDA device", 0) == 0;
  const bool not_built =
      st.code() == StatusCode::kUnsupported && st.message().rfind("built without CUDA", 0) == 0;
  CHECK((no_device || not_built));
}

TEST_CASE("CPU backend ops match plain loops", "[backend]") {
  auto created = CreateBackend("cpu");
  REQUIRE(created.ok());
  Backend& b = **created;
  CHECK(b.Supports(Feature::kSigmoidScoring));
  CHECK(RequireFeature(b, Feature::kGroupedExpertFfn).ok());

  const int m = 5, n = 3, k = 4;
  std::vector<float> a(m * k), w(k * n), c(m * n, 1.0f);
  for (int i = 0; i < m * k; ++i)
    a[i] = 0.1f * i - 0.7f;
  for (int i = 0; i < k * n; ++i)
    w[i] = 0.05f * i + 0.2f;
  REQUIRE(b.Gemm(a.data(), w.data(), c.data(), m, n, k, 1.0f).ok());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double ref = 1.0;
      for (int p = 0; p < k; ++p)
        ref += a[i * k + p] * w[p * n + j];
      CHECK(c[i * n + j] == Approx(ref).epsilon(1e-5));
    }
  }

  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f}, scores(4);
  REQUIRE(b.Score(logits.data(), 1, 4, ScoreFunction::kSigmoid, scores.data()).ok());
  CHECK(scores[0] == Approx(1.0 / (1.0 + std::exp(-1.0))));
  REQUIRE(b.Score(logits.data(), 1, 4, ScoreFunction::kSoftmax, scores.data()).ok());
  CHECK(scores[0] + scores[1] + scores[2] + scores[3] == Approx(1.0));
  std::vector<int32_t> top(2);
  REQUIRE(b.TopK(logits.data(), 1, 4, 2, top.data()).ok());
  CHECK(top == std::vector<int32_t>{1, 3});  // tie: lower id first

  std::vector<float> y = {1, 2, 3, 4}, out(4, 0.0f);
  std::vector<int32_t> rows = {1, 0};
  std::vector<float> weights = {0.5f, 2.0f};
  REQUIRE(b.ScatterAddWeighted(y.data(), rows.data(), weights.data(), 2, 2, out.data()).ok());
  CHECK(out == std::vector<float>{6, 8, 0.5f, 1});

  auto src = b.Allocate(4 * sizeof(float));
  auto dst = b.Allocate(4 * sizeof(float));
  REQUIRE((src.ok() && dst.ok()));
  REQUIRE(b.Upload(y.data(), 4 * sizeof(float), (*src)->data()).ok());
  REQUIRE(b.Copy((*src)->data(), 4 * sizeof(float), (*dst)->data()).ok());
  REQUIRE(b.Synchronize().ok());
  std::vector<float> copied(4);
  REQUIRE(b.Download((*dst)->data(), 4 * sizeof(float), copied.data()).ok());
  CHECK(copied == y);
}

TEST_CASE("CPU backend: padding rows, host buffers and marks", "[backend]") {
  auto created = CreateBackend("cpu");
  REQUIRE(created.ok());
  Backend& b = **created;
  CHECK(b.Supports(Feature::kHostMemory));
  CHECK(b.Supports(Feature::kDeviceRouting));

  // Gather: a row of -1 is padding and reads as zeros; scatter skips it.
  const int hidden = 3;
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> rows = {1, -1, 0};
  std::vector<float> gathered(9, 42.0f);
  REQUIRE(b.Gather(x.data(), rows.data(), 3, hidden, gathered.data()).ok());
  CHECK(gathered == std::vector<float>{4, 5, 6, 0, 0, 0, 1, 2, 3});
  const std::vector<float> weights = {2.0f, 100.0f, 0.5f};
  std::vector<float> out(6, 1.0f);
  REQUIRE(b.ScatterAddWeighted(gathered.data(), rows.data(), weights.data(), 3, hidden, out.data())
              .ok());
  CHECK(out == std::vector<float>{1.5f, 2.0f, 2.5f, 9, 11, 13});

  auto host = b.AllocateHost(sizeof(float) * 6);
  REQUIRE(host.ok());
  REQUIRE(b.DownloadAsync(out.data(), sizeof(float) * 6, (*host)->data()).ok());
  REQUIRE(b.Synchronize().ok());
  CHECK(std::vector<float>((*host)->floats(), (*host)->floats() + 6) == out);

  auto from = b.CreateMark();
  auto to = b.CreateMark();
  REQUIRE(from.ok());
  REQUIRE(to.ok());
  CHECK(b.MicrosBetween(**from, **to).status().code() == StatusCode::kFailedPrecondition);
  REQUIRE(b.RecordMark(from->get()).ok());
  REQUIRE(b.Gemm(x.data(), x.data(), out.data(), 2, 1, 3, 0.0f).ok());
  REQUIRE(b.RecordMark(to->get()).ok());
  auto us = b.MicrosBetween(**from, **to);
  REQUIRE(us.ok());
  CHECK(*us >= 0);
}

}  // namespace
}  // namespace moe::engine

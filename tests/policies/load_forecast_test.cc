// Tests of the load forecast (policies/include/moe/policies/load_forecast.h)
// on series whose answer is known: a stationary one, a step change, a ramp,
// a prefill step beside decode steps, and the bad inputs.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "moe/policies/load_forecast.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;
using testing::ValidateMessage;
using Series = std::vector<std::vector<double>>;

size_t ArgMax(const std::vector<double>& v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

ForecastOptions Method(ForecastMethod m) {
  ForecastOptions o;
  o.method = m;
  return o;
}

// `n` steps alternating between two noisy versions of one shape, total 10.
Series Alternating(size_t n, std::vector<double> a, std::vector<double> b) {
  Series s;
  for (size_t t = 0; t < n; ++t)
    s.push_back(t % 2 == 0 ? a : b);
  return s;
}

TEST_CASE("Forecast of a stationary series is its mean and sees no change", "[forecast]") {
  const Series s = Alternating(16, {5, 3, 1, 1}, {3, 5, 1, 1});
  for (ForecastMethod m : {ForecastMethod::kWindowMean, ForecastMethod::kRecent}) {
    CAPTURE(ForecastMethodName(m));
    auto f = ForecastLoad(s, Method(m));
    REQUIRE(f.ok());
    CHECK(f->change_step == -1);
    CHECK(f->num_steps == 16);
    REQUIRE(f->load.size() == 4);
    CHECK(f->load[0] == Approx(4.0));
    CHECK(f->load[1] == Approx(4.0));
    CHECK(f->load[2] == Approx(1.0));
    CHECK(f->load[3] == Approx(1.0));
  }
  // The trend of a flat series is flat.
  auto trend = ForecastLoad(s, Method(ForecastMethod::kTrend));
  REQUIRE(trend.ok());
  CHECK(trend->change_step == -1);
  // The fit of an alternating series has a small slope (half a step's
  // swing over the window), so the forecast stays near the mean.
  CHECK(trend->load[0] == Approx(4.0).margin(0.5));
  CHECK(trend->load[2] == Approx(1.0).margin(1e-9));
}

TEST_CASE("Forecast after a step change keeps only the new regime", "[forecast]") {
  // 12 steps with expert 0 hot, then 6 with expert 4 hot, each with noise.
  Series s = Alternating(12, {8, 1, 1, 1, 1}, {7, 2, 1, 1, 1});
  for (const auto& row : Alternating(6, {1, 1, 1, 1, 8}, {1, 1, 1, 2, 7}))
    s.push_back(row);
  auto recent = ForecastLoad(s, Method(ForecastMethod::kRecent));
  REQUIRE(recent.ok());
  CHECK(recent->change_step == 12);
  CHECK(recent->change_score >= ForecastOptions{}.change_threshold);
  CHECK(recent->num_steps == 6);
  CHECK(ArgMax(recent->load) == 4);
  CHECK(recent->load[4] == Approx(7.5));
  CHECK(recent->load[0] == Approx(1.0));

  // The window mean still sees the old regime first.
  auto mean = ForecastLoad(s, Method(ForecastMethod::kWindowMean));
  REQUIRE(mean.ok());
  CHECK(mean->change_step == -1);
  CHECK(ArgMax(mean->load) == 0);
  CHECK(mean->load[0] == Approx((6 * 8 + 6 * 7 + 6 * 1) / 18.0));

  // Without change detection the recent forecast is the share mean.
  ForecastOptions off = Method(ForecastMethod::kRecent);
  off.change_threshold = 0;
  auto plain = ForecastLoad(s, off);
  REQUIRE(plain.ok());
  CHECK(plain->change_step == -1);
  CHECK(plain->load[0] == Approx(mean->load[0]));  // equal totals: same as the mean
  // A threshold above the split's score leaves the series whole.
  ForecastOptions high = Method(ForecastMethod::kRecent);
  high.change_threshold = recent->change_score * 1.01;
  auto whole = ForecastLoad(s, high);
  REQUIRE(whole.ok());
  CHECK(whole->change_step == -1);
}

TEST_CASE("Forecast of a ramp extrapolates the trend to the next window", "[forecast]") {
  // Expert 0 rises by one token-slot a step, expert 1 falls; total 30.
  Series s;
  for (int t = 0; t < 10; ++t)
    s.push_back({static_cast<double>(t), 20.0 - t, 5, 5});
  ForecastOptions trend = Method(ForecastMethod::kTrend);
  trend.change_threshold = 0;
  trend.horizon_steps = 10;
  trend.trend_damping = 0.5;
  auto f = ForecastLoad(s, trend);
  REQUIRE(f.ok());
  // Exact on a line: at step 9 + 0.5 * (10 + 1) / 2 = 11.75.
  CHECK(f->load[0] == Approx(11.75));
  CHECK(f->load[1] == Approx(8.25));
  CHECK(f->load[2] == Approx(5.0));
  // No damping: the value at the newest step.
  trend.trend_damping = 0;
  auto last = ForecastLoad(s, trend);
  REQUIRE(last.ok());
  CHECK(last->load[0] == Approx(9.0));
  // A trend never goes below zero: expert 1 would reach 20 - 40.
  trend.trend_damping = 1;
  trend.horizon_steps = 60;
  auto far = ForecastLoad(s, trend);
  REQUIRE(far.ok());
  CHECK(far->load[1] == 0.0);
  double total = 0;
  for (double x : far->load)
    total += x;
  CHECK(total == Approx(30.0));  // renormalised to the steps' mean total

  // The recent forecast sees the ramp as a change and keeps the later steps:
  // above the window mean (4.5) for the rising expert.
  auto recent = ForecastLoad(s, Method(ForecastMethod::kRecent));
  REQUIRE(recent.ok());
  CHECK(recent->change_step > 0);
  CHECK(recent->load[0] > 4.5 + 1);
  // Recency weights pull towards the newest steps too.
  ForecastOptions weighted = Method(ForecastMethod::kRecent);
  weighted.change_threshold = 0;
  weighted.half_life_steps = 2;
  auto w = ForecastLoad(s, weighted);
  REQUIRE(w.ok());
  CHECK(w->load[0] > 4.5 + 2);
  CHECK(w->load[0] < 9.0);
}

TEST_CASE("Forecast weighs every step alike, not every token", "[forecast]") {
  // A 1000-token prefill on expert 0, then 9 decode steps of 10 on expert 1.
  Series s = {{900, 100, 0}};
  for (int t = 0; t < 9; ++t)
    s.push_back({1, 8, 1});
  auto mean = ForecastLoad(s, Method(ForecastMethod::kWindowMean));
  ForecastOptions shares = Method(ForecastMethod::kRecent);
  shares.change_threshold = 0;
  auto recent = ForecastLoad(s, shares);
  REQUIRE(mean.ok());
  REQUIRE(recent.ok());
  CHECK(ArgMax(mean->load) == 0);
  CHECK(ArgMax(recent->load) == 1);
  // Scaled to the mean total per step, (1000 + 9 * 10) / 10.
  double total = 0;
  for (double x : recent->load)
    total += x;
  CHECK(total == Approx(109.0));
}

TEST_CASE("Forecast skips steps without tokens and reports indices of the series", "[forecast]") {
  Series s = Alternating(6, {8, 1, 1}, {7, 2, 1});
  s.push_back({0, 0, 0});  // a step without tokens
  for (const auto& row : Alternating(4, {1, 1, 8}, {1, 2, 7}))
    s.push_back(row);
  auto f = ForecastLoad(s, Method(ForecastMethod::kRecent));
  REQUIRE(f.ok());
  CHECK(f->change_step == 7);  // the first step after the empty one
  CHECK(f->num_steps == 4);
  CHECK(ArgMax(f->load) == 2);
}

TEST_CASE("Forecast refuses bad series and options", "[forecast]") {
  const ForecastOptions o;
  CHECK_FALSE(ForecastLoad(Series{}, o).ok());
  CHECK_FALSE(ForecastLoad(Series{{}}, o).ok());
  auto ragged = ForecastLoad(Series{{1, 2}, {1, 2, 3}}, o);
  REQUIRE_FALSE(ragged.ok());
  CHECK(Contains(ragged.status().message(), "step 1 has 3 experts"));
  auto negative = ForecastLoad(Series{{1, -2}}, o);
  REQUIRE_FALSE(negative.ok());
  CHECK(Contains(negative.status().message(), "expert 1"));
  CHECK_FALSE(ForecastLoad(Series{{1, std::nan("")}}, o).ok());
  CHECK_FALSE(ForecastLoad(Series{{1, std::numeric_limits<double>::infinity()}}, o).ok());
  for (ForecastMethod m :
       {ForecastMethod::kWindowMean, ForecastMethod::kRecent, ForecastMethod::kTrend}) {
    auto zero = ForecastLoad(Series{{0, 0}, {0, 0}}, Method(m));
    REQUIRE_FALSE(zero.ok());
    CHECK(Contains(zero.status().message(), "zero demand"));
  }
  std::vector<const std::vector<double>*> null_row = {nullptr};
  CHECK_FALSE(ForecastLoad(null_row, o).ok());

  ForecastOptions bad;
  bad.half_life_steps = -1;
  CHECK(Contains(ValidateMessage(bad), "half_life_steps"));
  bad = {};
  bad.change_threshold = std::nan("");
  CHECK(Contains(ValidateMessage(bad), "change_threshold"));
  bad = {};
  bad.min_segment_steps = 0;
  CHECK(Contains(ValidateMessage(bad), "min_segment_steps"));
  bad = {};
  bad.horizon_steps = 0;
  CHECK(Contains(ValidateMessage(bad), "horizon_steps"));
  bad = {};
  bad.trend_damping = 1.5;
  CHECK(Contains(ValidateMessage(bad), "trend_damping"));
  bad.trend_damping = 0.5;
  CHECK(Validate(bad).ok());
  CHECK_FALSE(ForecastLoad(Series{{1, 2}}, ForecastOptions{.half_life_steps = -1}).ok());

  for (ForecastMethod m :
       {ForecastMethod::kWindowMean, ForecastMethod::kRecent, ForecastMethod::kTrend}) {
    auto parsed = ParseForecastMethod(ForecastMethodName(m));
    REQUIRE(parsed.ok());
    CHECK(*parsed == m);
  }
  auto unknown = ParseForecastMethod("ewma");
  REQUIRE_FALSE(unknown.ok());
  CHECK(Contains(unknown.status().message(), "window_mean, recent, trend"));
}

}  // namespace
}  // namespace moe::policies

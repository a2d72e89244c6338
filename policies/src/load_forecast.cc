#include "moe/policies/load_forecast.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

namespace moe::policies {
namespace {

double SquaredDistance(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t e = 0; e < a.size(); ++e)
    d += (a[e] - b[e]) * (a[e] - b[e]);
  return d;
}

// The best split of `shares` (the index of the first step after it) and its
// score: the squared distance of the before/after means over what it would be
// without a change, sigma2 * (1/k + 1/(n-k)), where sigma2 is the per-step
// noise (half the mean squared step-to-step difference, which a single change
// barely inflates). Score 0 when the series is too short or has no noise.
struct Split {
  int at = -1;
  double score = 0;
};

Split BestSplit(const std::vector<std::vector<double>>& shares, uint32_t min_segment) {
  Split best;
  const size_t n = shares.size();
  if (n < 2 * static_cast<size_t>(min_segment)) return best;
  const size_t num_experts = shares[0].size();
  double sigma2 = 0;
  for (size_t t = 1; t < n; ++t)
    sigma2 += SquaredDistance(shares[t], shares[t - 1]);
  sigma2 /= 2.0 * static_cast<double>(n - 1);
  if (!(sigma2 > 0)) {
    // No noise at all: any difference is a change; score it by its size.
    sigma2 = 1e-300;
  }
  // Prefix sums make every split O(num_experts).
  std::vector<std::vector<double>> prefix(n + 1, std::vector<double>(num_experts, 0.0));
  for (size_t t = 0; t < n; ++t)
    for (size_t e = 0; e < num_experts; ++e)
      prefix[t + 1][e] = prefix[t][e] + shares[t][e];
  std::vector<double> before(num_experts);
  std::vector<double> after(num_experts);
  for (size_t k = min_segment; k + min_segment <= n; ++k) {
    for (size_t e = 0; e < num_experts; ++e) {
      before[e] = prefix[k][e] / static_cast<double>(k);
      after[e] = (prefix[n][e] - prefix[k][e]) / static_cast<double>(n - k);
    }
    const double expected =
        sigma2 * (1.0 / static_cast<double>(k) + 1.0 / static_cast<double>(n - k));
    const double score = SquaredDistance(before, after) / expected;
    // Ties go to the later split: the newer regime is the one to keep.
    if (score >= best.score) {
      best.score = score;
      best.at = static_cast<int>(k);
    }
  }
  return best;
}

}  // namespace

std::string_view ForecastMethodName(ForecastMethod method) {
  switch (method) {
    case ForecastMethod::kWindowMean:
      return "window_mean";
    case ForecastMethod::kRecent:
      return "recent";
    case ForecastMethod::kTrend:
      return "trend";
  }
  return "?";
}

Result<ForecastMethod> ParseForecastMethod(std::string_view name) {
  for (ForecastMethod m :
       {ForecastMethod::kWindowMean, ForecastMethod::kRecent, ForecastMethod::kTrend}) {
    if (name == ForecastMethodName(m)) return m;
  }
  return Status::InvalidArgument(
      fmt::format("forecast method must be one of window_mean, recent, trend, got '{}'", name));
}

Status Validate(const ForecastOptions& o) {
  if (!(o.half_life_steps >= 0) || !std::isfinite(o.half_life_steps)) {
    return Status::InvalidArgument(
        fmt::format("forecast: half_life_steps must be >= 0, got {}", o.half_life_steps));
  }
  if (!(o.change_threshold >= 0) || !std::isfinite(o.change_threshold)) {
    return Status::InvalidArgument(
        fmt::format("forecast: change_threshold must be >= 0, got {}", o.change_threshold));
  }
  if (o.min_segment_steps < 1) {
    return Status::InvalidArgument("forecast: min_segment_steps must be >= 1, got 0");
  }
  if (o.horizon_steps < 1) {
    return Status::InvalidArgument("forecast: horizon_steps must be >= 1, got 0");
  }
  if (!(o.trend_damping >= 0 && o.trend_damping <= 1)) {
    return Status::InvalidArgument(
        fmt::format("forecast: trend_damping must be in [0, 1], got {}", o.trend_damping));
  }
  return Status::Ok();
}

Result<LoadForecast> ForecastLoad(const std::vector<const std::vector<double>*>& series,
                                  const ForecastOptions& options) {
  if (Status s = Validate(options); !s.ok()) return s;
  if (series.empty()) return Status::InvalidArgument("forecast: no steps");
  for (const std::vector<double>* row : series) {
    if (row == nullptr) return Status::InvalidArgument("forecast: null row");
  }
  const size_t num_experts = series[0]->size();
  if (num_experts == 0) return Status::InvalidArgument("forecast: rows are empty");
  std::vector<double> totals(series.size(), 0.0);
  for (size_t t = 0; t < series.size(); ++t) {
    const std::vector<double>& row = *series[t];
    if (row.size() != num_experts) {
      return Status::InvalidArgument(fmt::format("forecast: step {} has {} experts, step 0 has {}",
                                                 t, row.size(), num_experts));
    }
    for (size_t e = 0; e < num_experts; ++e) {
      if (!(row[e] >= 0) || !std::isfinite(row[e])) {
        return Status::InvalidArgument(
            fmt::format("forecast: step {} expert {} has demand {}", t, e, row[e]));
      }
      totals[t] += row[e];
    }
  }

  LoadForecast out;
  out.load.assign(num_experts, 0.0);
  if (options.method == ForecastMethod::kWindowMean) {
    bool any = false;
    for (size_t t = 0; t < series.size(); ++t) {
      any = any || totals[t] > 0;
      for (size_t e = 0; e < num_experts; ++e)
        out.load[e] += (*series[t])[e];
    }
    if (!any) return Status::InvalidArgument("forecast: every step has zero demand");
    for (double& x : out.load)
      x /= static_cast<double>(series.size());
    out.num_steps = static_cast<uint32_t>(series.size());
    return out;
  }

  // Shares of the steps with tokens, oldest first.
  std::vector<std::vector<double>> shares;
  std::vector<double> scale;
  shares.reserve(series.size());
  for (size_t t = 0; t < series.size(); ++t) {
    if (!(totals[t] > 0)) continue;
    std::vector<double> p(num_experts);
    for (size_t e = 0; e < num_experts; ++e)
      p[e] = (*series[t])[e] / totals[t];
    shares.push_back(std::move(p));
    scale.push_back(totals[t]);
  }
  if (shares.empty()) return Status::InvalidArgument("forecast: every step has zero demand");

  size_t first = 0;
  if (options.change_threshold > 0) {
    const Split split = BestSplit(shares, options.min_segment_steps);
    out.change_score = split.score;
    if (split.at >= 0 && split.score >= options.change_threshold) {
      first = static_cast<size_t>(split.at);
      // Report the index in the caller's series (zero rows included).
      size_t seen = 0;
      for (size_t t = 0; t < series.size(); ++t) {
        if (!(totals[t] > 0)) continue;
        if (seen == first) {
          out.change_step = static_cast<int>(t);
          break;
        }
        ++seen;
      }
    }
  }
  const size_t n = shares.size() - first;
  out.num_steps = static_cast<uint32_t>(n);

  double mean_total = 0;
  for (size_t t = first; t < shares.size(); ++t)
    mean_total += scale[t];
  mean_total /= static_cast<double>(n);

  std::vector<double> share(num_experts, 0.0);
  if (options.method == ForecastMethod::kRecent) {
    double sum_w = 0;
    for (size_t t = first; t < shares.size(); ++t) {
      const double age = static_cast<double>(shares.size() - 1 - t);
      const double w =
          options.half_life_steps > 0 ? std::exp2(-age / options.half_life_steps) : 1.0;
      sum_w += w;
      for (size_t e = 0; e < num_experts; ++e)
        share[e] += w * shares[t][e];
    }
    for (double& x : share)
      x /= sum_w;
  } else {
    // kTrend: least squares per expert on x = 0 .. n-1, evaluated at the
    // newest step plus trend_damping x half the horizon.
    const double x_mean = (static_cast<double>(n) - 1.0) / 2.0;
    double sxx = 0;
    for (size_t i = 0; i < n; ++i)
      sxx += (static_cast<double>(i) - x_mean) * (static_cast<double>(i) - x_mean);
    const double x_target =
        static_cast<double>(n - 1) + options.trend_damping * (options.horizon_steps + 1) / 2.0;
    double sum = 0;
    for (size_t e = 0; e < num_experts; ++e) {
      double y_mean = 0;
      for (size_t i = 0; i < n; ++i)
        y_mean += shares[first + i][e];
      y_mean /= static_cast<double>(n);
      double sxy = 0;
      for (size_t i = 0; i < n; ++i)
        sxy += (static_cast<double>(i) - x_mean) * (shares[first + i][e] - y_mean);
      const double slope = sxx > 0 ? sxy / sxx : 0.0;
      share[e] = std::max(0.0, y_mean + slope * (x_target - x_mean));
      sum += share[e];
    }
    if (!(sum > 0)) {
      // Every expert extrapolated to zero: fall back to the kept steps' mean.
      for (size_t e = 0; e < num_experts; ++e) {
        share[e] = 0;
        for (size_t i = 0; i < n; ++i)
          share[e] += shares[first + i][e] / static_cast<double>(n);
      }
      sum = 1.0;
    }
    for (double& x : share)
      x /= sum;
  }
  for (size_t e = 0; e < num_experts; ++e)
    out.load[e] = share[e] * mean_total;
  return out;
}

Result<LoadForecast> ForecastLoad(const std::vector<std::vector<double>>& series,
                                  const ForecastOptions& options) {
  std::vector<const std::vector<double>*> rows;
  rows.reserve(series.size());
  for (const std::vector<double>& row : series)
    rows.push_back(&row);
  return ForecastLoad(rows, options);
}

}  // namespace moe::policies

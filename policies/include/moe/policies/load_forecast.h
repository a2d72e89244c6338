// Load forecast: each expert's demand over the next window, from the demand
// of the window's steps (EngineSnapshot::recent), for the replication policy.
//
// A placement chosen now governs the steps that come after it, so the load it
// should be planned on is the next window's, not the last window's mean. The
// forecasts here are pure functions of a per-step demand series (oldest step
// first), deterministic, with no clock.
//
// Methods (docs/replication.md, "Forecast"):
//   - kWindowMean: the plain mean of the rows (what the snapshot's
//     LayerEstimate::expert_demand holds; the old behaviour, EPLB's input in
//     vLLM).
//   - kRecent: each step normalised to its shares (so that a 1400-token
//     prefill does not outweigh a hundred decode steps: the judge scores every
//     step's max/mean alike), then change detection (the split of the window
//     whose before/after share means differ most, against the step-to-step
//     noise; when it clears `change_threshold`, only the steps after it are
//     kept), then a recency-weighted mean (half-life `half_life_steps`) of the
//     steps kept.
//   - kTrend: the shares of the kept steps (after the same change detection)
//     fitted per expert by least squares against the step index and
//     extrapolated `trend_damping` x half the horizon past the last step,
//     clamped at 0 and renormalised.
// Shares are scaled back to token-slots per step by the (equally weighted)
// mean of the kept steps' totals, so a forecast is in the same unit as the
// window mean.

#ifndef MOE_POLICIES_LOAD_FORECAST_H_
#define MOE_POLICIES_LOAD_FORECAST_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "moe/common/status.h"

namespace moe::policies {

enum class ForecastMethod {
  kWindowMean,  // plain mean of the window's rows (the old behaviour)
  kRecent,      // shares, change detection, recency-weighted mean
  kTrend,       // shares, change detection, damped per-expert linear trend
};

// "window_mean", "recent", "trend".
std::string_view ForecastMethodName(ForecastMethod method);
// Parses a ForecastMethodName; InvalidArgument names the accepted values.
Result<ForecastMethod> ParseForecastMethod(std::string_view name);

struct ForecastOptions {
  ForecastMethod method = ForecastMethod::kRecent;
  // Half-life in steps of the recency weights (a step `a` steps older than
  // the newest weighs 2^(-a / half_life_steps)); 0 = equal weights; >= 0.
  double half_life_steps = 0.0;
  // A split is a change when its before/after share means differ by at
  // least this many times what step-to-step noise explains (the squared
  // distance of the means over its expectation without a change); 0 = no
  // change detection; >= 0.
  double change_threshold = 4.0;
  // Fewest steps on each side of a split; >= 1.
  uint32_t min_segment_steps = 2;
  // Steps the forecast is for (the next window); kTrend aims at its middle;
  // >= 1.
  uint32_t horizon_steps = 16;
  // Share of the fitted slope kTrend extrapolates (0 = the fit's value at
  // the newest step); in [0, 1].
  double trend_damping = 0.5;
};

// Checks the options' ranges; the message names the field.
Status Validate(const ForecastOptions& options);

struct LoadForecast {
  // [num_experts] forecast token-slots per step of each expert.
  std::vector<double> load;
  // Index in the series of the first step after a detected change (the
  // steps before it were left out); -1 when none was detected.
  int change_step = -1;
  // The detection statistic of the best split (0 when none was tried).
  double change_score = 0.0;
  // Steps the forecast used (rows with a positive total).
  uint32_t num_steps = 0;
};

// The forecast of `series` ([num_steps][num_experts] demand per step, oldest
// first; null rows are not allowed). Every row must have the same size, be
// finite and >= 0; rows that sum to 0 (a step without tokens) are skipped,
// and at least one row must have a positive sum. InvalidArgument otherwise.
// kWindowMean averages every row, zero rows included, as the snapshot does.
Result<LoadForecast> ForecastLoad(const std::vector<const std::vector<double>*>& series,
                                  const ForecastOptions& options);
// The same on rows held by value.
Result<LoadForecast> ForecastLoad(const std::vector<std::vector<double>>& series,
                                  const ForecastOptions& options);

}  // namespace moe::policies

#endif  // MOE_POLICIES_LOAD_FORECAST_H_

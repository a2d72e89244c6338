// Cost model of the engine's work: how long a layer takes as a function of
// the rows each device runs, so a step's critical path can be computed from
// its routing alone, free of the machine's timing noise.
//
// One layer of one step on an expert-parallel group of D devices costs
//
//   overhead(tokens) + max over devices d of factor_d * device(rows_d) + all_to_all_us
//
// where `device` is an affine fit of one device's routed-expert time
// (grouped expert GEMMs) in the rows it runs, and `overhead` an affine fit of
// router + dispatch + combine in the layer's tokens. The all-to-all is the
// engine's own model (bytes over bandwidth), taken as reported. A device with
// no rows costs nothing. factor_d (CostModel::device_factor) is how much
// slower device d runs than the fit (a straggler: a throttled or shared GPU);
// 1 for every device unless one was measured.
//
// The fits come from measurements: AffineFitter accumulates (x, y) pairs, e.g.
// (rows on a device, that device's measured expert time) from telemetry, and
// fits y = fixed + per_row * x by least squares. Pure values and functions;
// an AffineFitter belongs to one thread.

#ifndef MOE_POLICIES_COST_MODEL_H_
#define MOE_POLICIES_COST_MODEL_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "moe/common/status.h"

namespace moe::policies {

// y = fixed_us + per_row_us * x for x > 0; 0 for x <= 0.
struct AffineCost {
  double fixed_us = 0;
  double per_row_us = 0;
  double At(double x) const { return x > 0 ? fixed_us + per_row_us * x : 0.0; }
  bool operator==(const AffineCost&) const = default;
};

struct CostModel {
  AffineCost device;    // one device's routed-expert time by its rows
  AffineCost overhead;  // router + dispatch + combine of one layer by its tokens
  // [num_devices] each device's time over `device`'s (> 0), or empty: all 1.
  // A device past the end counts 1.
  std::vector<double> device_factor;
  double FactorOf(size_t d) const { return d < device_factor.size() ? device_factor[d] : 1.0; }
  // False until fitted: then the figures fall back to measured times.
  bool calibrated = false;
};

// A robust affine fit of y on x from the newest `max_points` pairs: the
// points are sorted by x and cut into up to 16 bins of equal count; each bin
// is summarised by its median x and median y, and the line is the least
// squares fit of those medians (weighted by bin size). Medians make the fit
// immune to the outliers a shared machine produces (a descheduled process
// can make one measurement 100x too long). Fit() returns kFailedPrecondition
// with fewer than `min_points` pairs or when x does not vary; the slope is
// clamped at >= 0 (more rows never cost less) and the intercept at >= 0,
// refitting the other coefficient when one is clamped.
class AffineFitter {
 public:
  explicit AffineFitter(size_t max_points = 4096) : max_points_(max_points) {}
  void Add(double x, double y);
  size_t count() const { return points_.size(); }
  Result<AffineCost> Fit(size_t min_points = 8) const;
  // The median of y as a constant cost (for x that does not vary); 0 when empty.
  AffineCost Flat() const;

 private:
  size_t max_points_;
  size_t next_ = 0;  // ring position once full
  std::vector<std::pair<double, double>> points_;
};
// Each device's speed against the fit: how much longer its routed-expert
// time runs than `device` predicts for its rows, learnt from measurements.
// A step's measurements of a device (one per layer) are pooled into one
// ratio, its time over its predicted time, so the window is in steps
// whatever the model's depth. Keeps the newest `window` steps' ratios per
// device; a device's factor is their median over the median device's (so
// the usual device counts 1), and factors within `deadband` of 1 count 1. A
// device that slows down is therefore seen window / 2 + 1 steps after it
// did. Factors() is empty while no device is that far off, or before every
// device has window / 2 ratios. Belongs to one thread.
class DeviceSpeedEstimator {
 public:
  explicit DeviceSpeedEstimator(size_t window = 16, double deadband = 0.15)
      : window_(window), deadband_(deadband) {}
  // One measurement of the step being gathered: device `d` ran `rows` in
  // `us`; `fit` prices the rows. Ignored for no rows, a fit that prices them
  // at 0, or a bad time.
  void Add(size_t d, double rows, double us, const AffineCost& fit);
  // Ends the step: each device measured in it gets one ratio.
  void EndStep();
  // Recomputes the factors from the ratios held (O(devices x window)).
  void Update();
  const std::vector<double>& Factors() const { return factors_; }
  // The factor Factors() gives device `d` (1 when empty or past the end).
  double FactorOf(size_t d) const { return d < factors_.size() ? factors_[d] : 1.0; }

 private:
  size_t window_;
  double deadband_;
  struct Ring {
    std::vector<double> ratios;
    size_t next = 0;
    double step_us = 0;         // the step being gathered: measured ...
    double step_predicted = 0;  // ... and predicted time
  };
  std::vector<Ring> devices_;
  std::vector<double> factors_;
};

// Replicas of each of `num_experts` experts under `phy2log` [num_replicas]
// (empty, or not num_replicas long: slot s holds expert s % num_experts);
// num_replicas 0 means num_experts.
std::vector<uint32_t> ReplicaCounts(const std::vector<uint32_t>& phy2log, uint32_t num_replicas,
                                    uint32_t num_experts);

// Rows each device runs in a layer, given the rows served per logical expert
// [num_experts] and the placement `phy2log` [num_replicas] (empty: slot s holds
// expert s % num_experts). An expert's rows are split evenly over its replicas;
// slot s sits on device s / (num_replicas / num_devices).
std::vector<double> DeviceRows(const std::vector<double>& expert_rows,
                               const std::vector<uint32_t>& phy2log, uint32_t num_replicas,
                               uint32_t num_devices);

// The layer's critical path under the model.
double LayerPathUs(const CostModel& model, double tokens, const std::vector<double>& device_rows,
                   double all_to_all_us);

// The same layer with `total_rows` spread over `num_devices` devices so that
// they all finish together (evenly when every factor is 1; a device too slow
// to help gets none): the reference a perfectly balanced group would reach.
double BalancedLayerPathUs(const CostModel& model, double tokens, double total_rows,
                           uint32_t num_devices, double all_to_all_us);

// A step's layers reduced to what prices them under a model whose devices
// all run at the usual speed: there both the layer's path and its balanced
// reference are affine in the layer's tokens and its busiest device's rows,
// so their sums over the layers are affine in these sums. A step is reduced
// once, when it arrives, and priced under any later fit in O(1), where a
// sum over layers would read every layer of every step again.
struct PathSums {
  double token_layers = 0;   // layers added with tokens
  double tokens = 0;         // their tokens, summed
  double all_to_all_us = 0;  // their modelled all-to-all, summed
  double busy_layers = 0;    // layers added whose busiest device has rows
  double max_rows = 0;       // the busiest device's rows, summed

  void AddLayer(double layer_tokens, double max_device_rows, double layer_all_to_all_us) {
    if (layer_tokens > 0) {
      token_layers += 1;
      tokens += layer_tokens;
    }
    all_to_all_us += layer_all_to_all_us;
    if (max_device_rows > 0) {
      busy_layers += 1;
      max_rows += max_device_rows;
    }
  }
};

// The sum over the layers of `sums` of LayerPathUs, up to rounding, for a
// model under which PricesCapacityReplays holds (counterfactual_policy.h):
// every device at the usual speed and a device cost that never falls with
// rows, so that the busiest device is the slowest.
double PathUs(const CostModel& model, const PathSums& sums);

// The sum over the layers of BalancedLayerPathUs(model, tokens_l, tokens_l *
// top_k, num_devices, all_to_all_l), up to rounding, for a model with no
// device factors (device_factor empty).
double BalancedPathUs(const CostModel& model, const PathSums& sums, double top_k,
                      uint32_t num_devices);

}  // namespace moe::policies

#endif  // MOE_POLICIES_COST_MODEL_H_

#include "moe/policies/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe::policies {

void AffineFitter::Add(double x, double y) {
  if (!std::isfinite(x) || !std::isfinite(y) || max_points_ == 0) return;
  if (points_.size() < max_points_) {
    points_.emplace_back(x, y);
    return;
  }
  points_[next_] = {x, y};
  next_ = (next_ + 1) % max_points_;
}

namespace {

double Median(std::vector<double>* v) {
  if (v->empty()) return 0;
  const size_t mid = v->size() / 2;
  std::nth_element(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(mid), v->end());
  double m = (*v)[mid];
  if (v->size() % 2 == 0) {
    m = (m + *std::max_element(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(mid))) / 2;
  }
  return m;
}

}  // namespace

AffineCost AffineFitter::Flat() const {
  std::vector<double> ys;
  ys.reserve(points_.size());
  for (const auto& [x, y] : points_)
    ys.push_back(y);
  return {Median(&ys), 0.0};
}

Result<AffineCost> AffineFitter::Fit(size_t min_points) const {
  const size_t need = std::max<size_t>(2, min_points);
  if (points_.size() < need) {
    return Status::FailedPrecondition(
        fmt::format("cost model: {} points, need at least {}", points_.size(), need));
  }
  std::vector<std::pair<double, double>> sorted = points_;
  std::sort(sorted.begin(), sorted.end());
  constexpr size_t kBins = 16;
  const size_t num_bins = std::min(kBins, sorted.size() / 2);
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  std::vector<double> xs, ys;
  for (size_t b = 0; b < num_bins; ++b) {
    const size_t lo = b * sorted.size() / num_bins, hi = (b + 1) * sorted.size() / num_bins;
    xs.clear();
    ys.clear();
    for (size_t i = lo; i < hi; ++i) {
      xs.push_back(sorted[i].first);
      ys.push_back(sorted[i].second);
    }
    const double w = static_cast<double>(hi - lo);
    const double x = Median(&xs), y = Median(&ys);
    sw += w;
    sx += w * x;
    sy += w * y;
    sxx += w * x * x;
    sxy += w * x * y;
  }
  const double var = sxx - sx * sx / sw;
  if (!(var > 1e-9 * std::max(1.0, sxx))) {
    return Status::FailedPrecondition(
        "cost model: the rows do not vary, so no slope can be fitted");
  }
  AffineCost c;
  c.per_row_us = (sxy - sx * sy / sw) / var;
  c.fixed_us = (sy - c.per_row_us * sx) / sw;
  if (c.per_row_us < 0) {  // flat: the mean of the bin medians
    c.per_row_us = 0;
    c.fixed_us = sy / sw;
  }
  if (c.fixed_us < 0) {  // through the origin
    c.fixed_us = 0;
    c.per_row_us = sxx > 0 ? std::max(0.0, sxy / sxx) : 0;
  }
  return c;
}

void DeviceSpeedEstimator::Add(size_t d, double rows, double us, const AffineCost& fit) {
  const double predicted = fit.At(rows);
  if (!(rows > 0) || !(predicted > 0) || !std::isfinite(us) || !(us >= 0)) return;
  // A device id past any sane group is refused, not allocated.
  if (d >= 65536) return;
  if (devices_.size() <= d) devices_.resize(d + 1);
  devices_[d].step_us += us;
  devices_[d].step_predicted += predicted;
}

void DeviceSpeedEstimator::EndStep() {
  for (Ring& r : devices_) {
    if (!(r.step_predicted > 0)) continue;
    const double ratio = r.step_us / r.step_predicted;
    r.step_us = r.step_predicted = 0;
    if (r.ratios.size() < window_) {
      r.ratios.push_back(ratio);
    } else {
      r.ratios[r.next] = ratio;
      r.next = (r.next + 1) % window_;
    }
  }
}

void DeviceSpeedEstimator::Update() {
  factors_.clear();
  if (devices_.empty()) return;
  std::vector<double> medians;
  medians.reserve(devices_.size());
  for (const Ring& r : devices_) {
    if (r.ratios.size() < std::max<size_t>(1, window_ / 2)) return;
    std::vector<double> v = r.ratios;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    medians.push_back(v[v.size() / 2]);
  }
  std::vector<double> sorted = medians;
  std::sort(sorted.begin(), sorted.end());
  const double typical = sorted[(sorted.size() - 1) / 2];
  if (!(typical > 0)) return;
  bool any = false;
  std::vector<double> f(medians.size(), 1.0);
  for (size_t d = 0; d < medians.size(); ++d) {
    const double x = medians[d] / typical;
    if (std::abs(x - 1.0) > deadband_) {
      f[d] = std::clamp(x, 0.01, 100.0);
      any = true;
    }
  }
  if (any) factors_ = std::move(f);
}

std::vector<uint32_t> ReplicaCounts(const std::vector<uint32_t>& phy2log, uint32_t num_replicas,
                                    uint32_t num_experts) {
  if (num_replicas == 0) num_replicas = num_experts;
  std::vector<uint32_t> replicas(num_experts, 0);
  if (num_experts == 0) return replicas;
  for (uint32_t s = 0; s < num_replicas; ++s) {
    const bool given = phy2log.size() == num_replicas && phy2log[s] < num_experts;
    ++replicas[given ? phy2log[s] : s % num_experts];
  }
  return replicas;
}

std::vector<double> DeviceRows(const std::vector<double>& expert_rows,
                               const std::vector<uint32_t>& phy2log, uint32_t num_replicas,
                               uint32_t num_devices) {
  const uint32_t num_experts = static_cast<uint32_t>(expert_rows.size());
  num_devices = std::max<uint32_t>(1, num_devices);
  if (num_replicas == 0) num_replicas = num_experts;
  std::vector<double> rows(num_devices, 0.0);
  if (num_experts == 0) return rows;
  auto expert_of = [&](uint32_t s) -> uint32_t {
    if (phy2log.size() == num_replicas && phy2log[s] < num_experts) return phy2log[s];
    return s % num_experts;
  };
  std::vector<uint32_t> replicas(num_experts, 0);
  for (uint32_t s = 0; s < num_replicas; ++s)
    ++replicas[expert_of(s)];
  const uint32_t per_device = std::max<uint32_t>(1, num_replicas / num_devices);
  for (uint32_t s = 0; s < num_replicas; ++s) {
    const uint32_t e = expert_of(s);
    const uint32_t d = std::min(num_devices - 1, s / per_device);
    rows[d] += expert_rows[e] / replicas[e];
  }
  return rows;
}

double LayerPathUs(const CostModel& model, double tokens, const std::vector<double>& device_rows,
                   double all_to_all_us) {
  double slowest = 0;
  for (size_t d = 0; d < device_rows.size(); ++d)
    slowest = std::max(slowest, model.FactorOf(d) * model.device.At(device_rows[d]));
  return model.overhead.At(tokens) + slowest + all_to_all_us;
}

double BalancedLayerPathUs(const CostModel& model, double tokens, double total_rows,
                           uint32_t num_devices, double all_to_all_us) {
  num_devices = std::max<uint32_t>(1, num_devices);
  const double overhead = model.overhead.At(tokens) + all_to_all_us;
  if (model.device_factor.empty()) {
    return overhead + model.device.At(total_rows / num_devices);
  }
  if (!(total_rows > 0)) return overhead;
  // Every device d that gets rows finishes at T: f_d * (a + b * r_d) = T, so
  // r_d = T / (f_d b) - a / b, and the rows sum to total_rows. A device whose
  // r_d would be negative is dropped, slowest first, and T found again.
  std::vector<double> f(num_devices);
  for (uint32_t d = 0; d < num_devices; ++d)
    f[d] = model.FactorOf(d);
  std::sort(f.begin(), f.end());
  const double a = model.device.fixed_us, b = model.device.per_row_us;
  if (!(b > 0)) return overhead + f.front() * a;
  double t = 0;
  for (size_t n = f.size(); n >= 1; --n) {
    double inverse = 0;
    for (size_t d = 0; d < n; ++d)
      inverse += 1.0 / f[d];
    t = (total_rows * b + static_cast<double>(n) * a) / inverse;
    if (t / (f[n - 1] * b) - a / b >= 0) break;
  }
  return overhead + t;
}

double PathUs(const CostModel& model, const PathSums& sums) {
  // Per layer: overhead.At(tokens) + max(0, At(max_rows)) + all_to_all, with
  // At(x) = x > 0 ? fixed + per_row * x : 0 and fixed, per_row >= 0.
  return (sums.token_layers * model.overhead.fixed_us + model.overhead.per_row_us * sums.tokens) +
         sums.all_to_all_us +
         (sums.busy_layers * model.device.fixed_us + model.device.per_row_us * sums.max_rows);
}

double BalancedPathUs(const CostModel& model, const PathSums& sums, double top_k,
                      uint32_t num_devices) {
  // Per layer: overhead.At(tokens) + all_to_all + device.At(tokens * top_k /
  // num_devices), the last > 0 exactly where the tokens are.
  const double per_device = top_k / static_cast<double>(std::max<uint32_t>(1, num_devices));
  const double busy = top_k > 0 ? sums.token_layers : 0;
  return (sums.token_layers * model.overhead.fixed_us + model.overhead.per_row_us * sums.tokens) +
         sums.all_to_all_us +
         (busy * model.device.fixed_us + model.device.per_row_us * per_device * sums.tokens);
}

}  // namespace moe::policies

#include "moe/policies/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe::policies {

void AffineFitter::Add(double x, double y) {
  if (!std::isfinite(x) || !std::isfinite(y)) return;
  ++n_;
  sx_ += x;
  sy_ += y;
  sxx_ += x * x;
  sxy_ += x * y;
}

Result<AffineCost> AffineFitter::Fit(size_t min_points) const {
  if (n_ < std::max<size_t>(2, min_points)) {
    return Status::FailedPrecondition(fmt::format("cost model: {} points, need at least {}", n_,
                                                  std::max<size_t>(2, min_points)));
  }
  const double n = static_cast<double>(n_);
  const double var = sxx_ - sx_ * sx_ / n;
  if (!(var > 1e-9 * std::max(1.0, sxx_))) {
    return Status::FailedPrecondition(
        "cost model: the rows do not vary, so no slope can be fitted");
  }
  AffineCost c;
  c.per_row_us = (sxy_ - sx_ * sy_ / n) / var;
  c.fixed_us = (sy_ - c.per_row_us * sx_) / n;
  if (c.per_row_us < 0) {  // flat: the mean
    c.per_row_us = 0;
    c.fixed_us = sy_ / n;
  }
  if (c.fixed_us < 0) {  // through the origin
    c.fixed_us = 0;
    c.per_row_us = sxx_ > 0 ? std::max(0.0, sxy_ / sxx_) : 0;
  }
  return c;
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
  for (double r : device_rows)
    slowest = std::max(slowest, model.device.At(r));
  return model.overhead.At(tokens) + slowest + all_to_all_us;
}

double BalancedLayerPathUs(const CostModel& model, double tokens, double total_rows,
                           uint32_t num_devices, double all_to_all_us) {
  const double per_device = total_rows / std::max<uint32_t>(1, num_devices);
  return model.overhead.At(tokens) + model.device.At(per_device) + all_to_all_us;
}

}  // namespace moe::policies

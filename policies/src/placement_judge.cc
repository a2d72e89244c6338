#include "moe/policies/placement_judge.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>

namespace moe::policies {

std::string_view CapacityScopeName(CapacityScope scope) {
  return scope == CapacityScope::kExpert ? "expert" : "slot";
}

double CapacityOf(double capacity_factor, double tokens, uint32_t top_k, uint32_t divisor) {
  if (!(capacity_factor > 0) || divisor == 0) return 0;
  const double raw = capacity_factor * tokens * top_k / divisor;
  // The same guard against 1.0000000001 as the engine's ExpertCapacity.
  return std::max(1.0, std::ceil(raw - 1e-9));
}

Result<std::vector<uint32_t>> ValidatedReplicaCounts(const std::vector<uint32_t>& phy2log,
                                                     uint32_t num_experts) {
  std::vector<uint32_t> counts(num_experts, 0);
  for (size_t s = 0; s < phy2log.size(); ++s) {
    if (phy2log[s] >= num_experts) {
      return Status::InvalidArgument(fmt::format(
          "placement: slot {} holds expert {}, only {} experts", s, phy2log[s], num_experts));
    }
    ++counts[phy2log[s]];
  }
  for (uint32_t e = 0; e < num_experts; ++e) {
    if (counts[e] == 0) {
      return Status::InvalidArgument(fmt::format("placement: expert {} has no replica", e));
    }
  }
  return counts;
}

Result<double> DeviceMaxOverMean(const std::vector<double>& demand,
                                 const std::vector<uint32_t>& phy2log, uint32_t num_devices) {
  if (num_devices == 0 || phy2log.size() % num_devices != 0) {
    return Status::InvalidArgument(fmt::format("placement: {} slots do not divide over {} devices",
                                               phy2log.size(), num_devices));
  }
  Result<std::vector<uint32_t>> replicas =
      ValidatedReplicaCounts(phy2log, static_cast<uint32_t>(demand.size()));
  if (!replicas.ok()) return replicas.status();
  const size_t per_device = phy2log.size() / num_devices;
  std::vector<double> device(num_devices, 0.0);
  double total = 0;
  for (size_t s = 0; s < phy2log.size(); ++s) {
    const uint32_t e = phy2log[s];
    const double share = demand[e] / (*replicas)[e];
    device[s / per_device] += share;
    total += share;
  }
  if (!(total > 0)) return 1.0;
  const double mean = total / num_devices;
  return *std::max_element(device.begin(), device.end()) / mean;
}

double DroppedTokenSlots(const std::vector<double>& demand, const std::vector<uint32_t>& replicas,
                         CapacityScope scope, double capacity) {
  assert(demand.size() == replicas.size());
  if (!(capacity > 0)) return 0;
  double dropped = 0;
  for (size_t e = 0; e < demand.size(); ++e) {
    const double room = scope == CapacityScope::kExpert ? capacity : capacity * replicas[e];
    dropped += std::max(0.0, demand[e] - room);
  }
  return dropped;
}

}  // namespace moe::policies

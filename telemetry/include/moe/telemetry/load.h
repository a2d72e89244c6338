// Figures derived from a layer's load vector, computed the same way wherever
// telemetry is summarised (controller state estimate, database rows).

#ifndef MOE_TELEMETRY_LOAD_H_
#define MOE_TELEMETRY_LOAD_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace moe::telemetry {

// Largest load over the mean load (1 = perfectly balanced); 0 when there is no
// load at all.
inline double MaxOverMean(const std::vector<uint32_t>& loads) {
  uint64_t total = 0;
  uint32_t max = 0;
  for (uint32_t v : loads) {
    total += v;
    max = std::max(max, v);
  }
  if (total == 0) return 0;
  return static_cast<double>(max) * static_cast<double>(loads.size()) / static_cast<double>(total);
}

}  // namespace moe::telemetry

#endif  // MOE_TELEMETRY_LOAD_H_

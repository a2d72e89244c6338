// Seeded synthetic planner cases (planner_cases.h).

#include "moe/policies/planner_cases.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>
#include <string>

namespace moe::policies {
namespace {

// Draws from std::mt19937_64 and transforms the bits here, so that the
// sequence does not depend on the standard library's distributions.
class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}

  // Uniform in (0, 1).
  double Uniform() { return (static_cast<double>(rng_() >> 11) + 0.5) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Integer uniform in [lo, hi].
  int Int(int lo, int hi) {
    return lo + static_cast<int>(Uniform() * (hi - lo + 1)) % (hi - lo + 1);
  }
  // Standard normal by Box-Muller (one of the pair).
  double Normal() {
    const double u = Uniform(), v = Uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * std::numbers::pi * v);
  }
  // Pareto with minimum 1 and tail index alpha.
  double Pareto(double alpha) { return std::pow(Uniform(), -1.0 / alpha); }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

Result<PlannerCase> GeneratePlannerCase(const PlannerShape& shape, int num_layers, uint64_t seed,
                                        const PlannerCaseOptions& options) {
  MOE_RETURN_IF_ERROR(ValidateShape(shape, PlanMode::kHierarchical));
  if (num_layers < 1) {
    return Status::InvalidArgument("num_layers is " + std::to_string(num_layers) +
                                   "; it must be at least 1");
  }
  if (!(options.tokens_per_expert >= 1)) {
    return Status::InvalidArgument("tokens_per_expert must be >= 1");
  }
  if (!(options.group_sigma >= 0)) return Status::InvalidArgument("group_sigma must be >= 0");
  if (options.min_hot_groups < 0 || options.max_hot_groups < options.min_hot_groups ||
      options.max_hot_groups > shape.num_groups) {
    return Status::InvalidArgument(
        "hot groups must satisfy 0 <= min_hot_groups <= max_hot_groups <= groups");
  }
  if (!(options.max_hot_factor >= 1.5)) {
    return Status::InvalidArgument("max_hot_factor must be >= 1.5");
  }
  if (!(options.pareto_alpha > 1)) return Status::InvalidArgument("pareto_alpha must be > 1");
  if (!(options.max_expert_weight >= 1)) {
    return Status::InvalidArgument("max_expert_weight must be >= 1");
  }
  if (options.min_hot_experts < 0 || options.max_hot_experts < options.min_hot_experts ||
      options.max_hot_experts > shape.num_experts) {
    return Status::InvalidArgument(
        "hot experts must satisfy 0 <= min_hot_experts <= max_hot_experts <= experts");
  }
  if (!(options.min_hot_expert_factor > 0) ||
      !(options.max_hot_expert_factor >= options.min_hot_expert_factor)) {
    return Status::InvalidArgument(
        "hot expert factors must satisfy 0 < min_hot_expert_factor <= max_hot_expert_factor");
  }

  const int num_groups = shape.num_groups;
  const int group_size = shape.num_experts / num_groups;
  Draw draw(seed);
  PlannerCase result;
  result.shape = shape;
  for (int layer = 0; layer < num_layers; ++layer) {
    std::vector<double> group_weight(num_groups);
    for (double& w : group_weight)
      w = std::exp(options.group_sigma * draw.Normal());
    // Hot groups: distinct, by a partial Fisher-Yates shuffle.
    std::vector<int> order(num_groups);
    for (int g = 0; g < num_groups; ++g)
      order[g] = g;
    const int num_hot = draw.Int(options.min_hot_groups, options.max_hot_groups);
    for (int k = 0; k < num_hot; ++k) {
      std::swap(order[k], order[draw.Int(k, num_groups - 1)]);
      group_weight[order[k]] *= draw.Uniform(1.5, options.max_hot_factor);
    }
    double group_total = 0.0;
    for (double w : group_weight)
      group_total += w;
    std::vector<double> loads(shape.num_experts);
    const double total_tokens = options.tokens_per_expert * shape.num_experts;
    for (int g = 0; g < num_groups; ++g) {
      std::vector<double> w(group_size);
      double sum = 0.0;
      for (double& x : w) {
        x = std::min(draw.Pareto(options.pareto_alpha), options.max_expert_weight);
        sum += x;
      }
      const double group_tokens = total_tokens * group_weight[g] / group_total;
      for (int i = 0; i < group_size; ++i) {
        loads[g * group_size + i] = std::max(1.0, std::round(group_tokens * w[i] / sum));
      }
    }
    const int num_hot_experts = draw.Int(options.min_hot_experts, options.max_hot_experts);
    const double log_lo = std::log(options.min_hot_expert_factor);
    const double log_hi = std::log(options.max_hot_expert_factor);
    for (int k = 0; k < num_hot_experts; ++k) {
      double pick = draw.Uniform() * group_total;
      int g = 0;
      while (g + 1 < num_groups && pick >= group_weight[g]) {
        pick -= group_weight[g];
        ++g;
      }
      const int e = g * group_size + draw.Int(0, group_size - 1);
      loads[e] += std::round(options.tokens_per_expert * std::exp(draw.Uniform(log_lo, log_hi)));
    }
    result.loads.push_back(std::move(loads));
  }
  return result;
}

}  // namespace moe::policies

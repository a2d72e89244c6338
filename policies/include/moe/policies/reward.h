// Reward: how well the steps under one setting served, as one number (higher
// is better, 0 is perfect). One formula for the controller (judging every
// decision, the guard's rollback, the learner) and the closed-loop benchmark
// (`moectl bench closed-loop`), so both speak the same terms:
//
//   reward = - latency_weight   * (latency_us / balanced_us - 1)
//            - slo_weight       * max(0, latency_us / slo_us - 1)
//            - drop_weight      * drop_rate
//            - quality_weight   * quality_error
//            - migration_weight * migration_us / balanced_us
//            - capacity_weight  * capacity_factor
//
// latency_us is the step's critical path under the cost model (cost_model.h:
// per layer, router + dispatch + combine by tokens, the slowest device by the
// rows it ran, the modelled all-to-all; summed over layers), and balanced_us
// the same tokens at the model's configured K spread evenly over the devices.
// Their ratio is >= 1 whenever the devices are imbalanced, so imbalance always
// costs; it falls below 1 only when work is not done (drops, a lower K), which
// the drop and quality terms charge. migration_us is the mean per step of the
// modelled time of placement moves. slo_us is an absolute budget (default far
// above any step: a guard rail, not the objective).
//
// Without a calibrated cost model (balanced_us == 0) the latency term is 0
// and the slo term uses the measured critical path (or the step's wall time).

#ifndef MOE_POLICIES_REWARD_H_
#define MOE_POLICIES_REWARD_H_

#include <cstdint>
#include <optional>

#include "moe/common/status.h"

namespace moe::policies {

struct RewardParams {
  double latency_weight = 1.0;    // per unit of latency over the balanced reference
  double slo_us = 200'000;        // absolute step latency budget, microseconds; > 0
  double slo_weight = 1.0;        // per unit of latency over slo_us
  double drop_weight = 10.0;      // per unit of drop rate
  double quality_weight = 5.0;    // per unit of quality-probe error
  double migration_weight = 1.0;  // per balanced step of placement-move time
  double capacity_weight = 0.0;   // per unit of capacity factor (memory/padding)
};

// kInvalidArgument unless slo_us > 0 and every weight >= 0; the message names
// the field.
Status Validate(const RewardParams& params);

// Mean figures of the steps that ran under one setting.
struct OutcomeFigures {
  uint64_t steps = 0;
  double drop_rate = 0;
  double step_us = 0;  // measured wall time of a step
  double critical_path_us =
      0;  // measured: sum over layers of the layer's critical path (0: unknown)
  double model_latency_us = 0;      // cost model: the step's critical path (0: no model)
  double balanced_latency_us = 0;   // cost model: the same tokens on balanced devices (0: no model)
  double migration_us = 0;          // modelled placement-move time per step
  double max_over_mean = 0;         // expert load imbalance, mean over layers
  double device_max_over_mean = 0;  // device load imbalance, mean over layers
  std::optional<double> quality_error;
  double capacity_factor = 0;
};

double Reward(const OutcomeFigures& figures, const RewardParams& params);

// The reward's terms one by one (each <= 0 except latency, which is > 0 only
// when work was skipped), in the order of the formula; they sum to Reward().
struct RewardTerms {
  double latency = 0;
  double slo = 0;
  double drops = 0;
  double quality = 0;
  double migration = 0;
  double capacity = 0;
};
RewardTerms Terms(const OutcomeFigures& figures, const RewardParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_REWARD_H_

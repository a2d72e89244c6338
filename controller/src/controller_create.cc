// Controller::Create and the checks of ControllerOptions (the rest of the
// Controller is in controller.cc and controller_levers.cc).

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "controller_impl.h"
#include "message_checks.h"
#include "moe/controller/controller.h"
#include "moe/policies/adaptive_k_policy.h"
#include "moe/policies/baseline_policies.h"
#include "moe/policies/bias_policy.h"
#include "moe/policies/capacity_policy.h"
#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/guard.h"
#include "moe/policies/learning_policy.h"
#include "moe/policies/noise_policy.h"
#include "moe/policies/replication_policy.h"
#include "moe/policies/reward.h"
#include "moe/storage/store.h"
#include "moe/telemetry/transport.h"

namespace moe::controller {

std::string_view ControlModeName(ControlMode mode) {
  return mode == ControlMode::kAdvisory ? "advisory" : "active";
}

Status Validate(const ControllerOptions& o) {
  auto bad = [](std::string_view field, std::string_view rule) {
    return Status::InvalidArgument(fmt::format("{}: {}", field, rule));
  };
  if (o.telemetry_endpoint.empty()) return bad("telemetry_endpoint", "must not be empty");
  if (o.command_endpoint.empty()) return bad("command_endpoint", "must not be empty");
  if (o.telemetry_endpoint == o.command_endpoint && !o.telemetry_endpoint.ends_with(":*")) {
    return bad("command_endpoint", "must differ from telemetry_endpoint");
  }
  if (o.db_path.empty()) return bad("db_path", "must not be empty");
  if (o.cadence_ms <= 0) return bad("cadence_ms", "must be > 0");
  if (!(o.react_drop_rate >= 0 && o.react_drop_rate <= 1)) {
    return bad("react_drop_rate", "must be in [0, 1]");
  }
  if (o.react_min_interval_ms < 0) return bad("react_min_interval_ms", "must be >= 0");
  if (o.step_clock_ms < 0) return bad("step_clock_ms", "must be >= 0");
  if (o.ack_timeout_ms <= 0) return bad("ack_timeout_ms", "must be > 0");
  if (o.outcome_steps == 0) return bad("outcome_steps", "must be > 0");
  if (o.window_steps < o.outcome_steps) return bad("window_steps", "must be >= outcome_steps");
  if (o.stale_after_ms <= 0) return bad("stale_after", "must be > 0");
  if (o.engine_expiry_ms <= o.stale_after_ms) {
    return bad("engine_expiry", "must be longer than stale_after");
  }
  if (o.max_engines <= 0) return bad("max_engines", "must be > 0");
  if (!o.curve_secret_key.empty() && o.engine_keys.empty()) {
    return bad("engines", "CURVE is on but no engine key is allowed");
  }
  const std::vector<std::string> known = {
      "capacity", "bias",           "adaptive_k",       "noise", "replication",
      "learning", "counterfactual", "dynamic_capacity", "eplb"};
  for (size_t i = 0; i < o.policy_order.size(); ++i) {
    const std::string& name = o.policy_order[i];
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return bad("order",
                 fmt::format("unknown policy '{}' (known: {})", name, fmt::join(known, ", ")));
    }
    if (std::find(o.policy_order.begin(), o.policy_order.begin() + i, name) !=
        o.policy_order.begin() + i) {
      return bad("order", fmt::format("policy '{}' listed twice", name));
    }
  }
  MOE_RETURN_IF_ERROR(policies::Validate(o.capacity));
  MOE_RETURN_IF_ERROR(policies::Validate(o.bias));
  MOE_RETURN_IF_ERROR(policies::Validate(o.adaptive_k));
  MOE_RETURN_IF_ERROR(policies::Validate(o.noise));
  MOE_RETURN_IF_ERROR(policies::Validate(o.replication));
  MOE_RETURN_IF_ERROR(policies::Validate(o.learning));
  MOE_RETURN_IF_ERROR(policies::Validate(o.counterfactual));
  MOE_RETURN_IF_ERROR(policies::Validate(o.dynamic_capacity));
  MOE_RETURN_IF_ERROR(policies::Validate(o.eplb));
  if (o.eplb_enabled && o.eplb.period_steps > o.window_steps) {
    // The snapshot counts the steps of the epoch in force within the window.
    return bad("eplb.period_steps",
               fmt::format("{} can never be reached: it must be <= window_steps ({})",
                           o.eplb.period_steps, o.window_steps));
  }
  MOE_RETURN_IF_ERROR(policies::Validate(o.guard));
  const std::vector<double>& candidates = o.counterfactual.candidates;
  if (o.counterfactual_enabled &&
      std::find(candidates.begin(), candidates.end(), 0.0) != candidates.end()) {
    if (!o.guard.unlimited_capacity) {
      return bad("counterfactual.candidates",
                 "0 (unlimited capacity) is a candidate but [guard.capacity_factor] unlimited is "
                 "false, so the guard would reject it every time: allow it or drop the 0");
    }
    if (o.reward.capacity_weight > 0) {
      return bad("counterfactual.candidates",
                 "0 (unlimited capacity) has no finite capacity factor for reward.capacity_weight "
                 "to price: set capacity_weight = 0 or drop the 0");
    }
  }
  MOE_RETURN_IF_ERROR(policies::Validate(o.reward));
  const CostModelOptions& cm = o.cost_model;
  for (const auto& [field, value] :
       {std::pair{"cost_model.device_fixed_us", cm.device.fixed_us},
        std::pair{"cost_model.device_per_row_us", cm.device.per_row_us},
        std::pair{"cost_model.overhead_fixed_us", cm.overhead.fixed_us},
        std::pair{"cost_model.overhead_per_token_us", cm.overhead.per_row_us}}) {
    if (!(value >= 0 && std::isfinite(value))) return bad(field, "must be a finite number >= 0");
  }
  if (cm.fixed && !(cm.device.per_row_us > 0)) {
    // A device whose time does not grow with its rows makes imbalance free.
    return bad("cost_model.device_per_row_us",
               "must be > 0 with a fixed cost model (the time a device takes per row it runs)");
  }
  MOE_RETURN_IF_ERROR(Validate(o.limits));
  if (o.db_max_queue_rows <= 0) return bad("db_max_queue_rows", "must be > 0");
  if (o.db_max_queue_bytes <= 0) return bad("db_max_queue_bytes", "must be > 0");
  return Status::Ok();
}

Result<std::unique_ptr<Controller>> Controller::Create(const ControllerOptions& options,
                                                       Clock* clock) {
  MOE_RETURN_IF_ERROR(Validate(options));
  telemetry::ControllerLinkOptions link_options;
  link_options.telemetry_endpoint = options.telemetry_endpoint;
  link_options.command_endpoint = options.command_endpoint;
  if (!options.curve_secret_key.empty()) {
    link_options.curve = telemetry::CurveKeys{options.curve_public_key, options.curve_secret_key};
    link_options.engine_keys = options.engine_keys;
  }
  link_options.insecure = options.insecure;
  storage::StoreOptions store_options;
  store_options.path = options.db_path;
  store_options.batch_rows = static_cast<size_t>(options.db_batch_rows);
  store_options.max_queue = static_cast<size_t>(options.db_max_queue_rows);
  store_options.max_queue_bytes = static_cast<size_t>(options.db_max_queue_bytes);
  store_options.flush_interval = std::chrono::milliseconds(options.db_flush_interval_ms);
  store_options.raw_retention = std::chrono::seconds(options.raw_retention_s);
  store_options.rollup_retention = std::chrono::seconds(options.rollup_retention_s);
  store_options.decision_retention = std::chrono::seconds(options.decision_retention_s);
  Result<std::unique_ptr<storage::Store>> store = storage::Store::Open(store_options, clock);
  if (!store.ok()) return store.status().WithContext("opening the database " + options.db_path);
  Result<std::unique_ptr<telemetry::ControllerLink>> link =
      telemetry::ControllerLink::Bind(link_options);
  if (!link.ok()) return link.status().WithContext("binding the controller sockets");
  auto controller =
      std::make_unique<ControllerImpl>(options, clock, std::move(*link), std::move(*store));
  MOE_RETURN_IF_ERROR(controller->RestoreLearning(options.db_path)
                          .WithContext("reading what was learnt from " + options.db_path));
  MOE_RETURN_IF_ERROR(controller->RestoreFromDatabase(options.db_path)
                          .WithContext("reading levers and epochs from " + options.db_path));
  return std::unique_ptr<Controller>(std::move(controller));
}

}  // namespace moe::controller

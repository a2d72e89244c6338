#include "controller_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>

#include "moe/config/toml_reader.h"
#include "moe/controller/controller.h"

namespace moe::controller {
namespace {

using config::Range;
using config::TableReader;

void ReadLimits(TableReader table, policies::KnobLimits* limits) {
  table.Read("min", &limits->min);
  table.Read("max", &limits->max);
  table.Read("max_change", &limits->max_change, Range<double>{0, 1e9});
  table.Read("min_change", &limits->min_change, Range<double>{0, 1e9});
}

// The learner's arms: `knob` and `values` (one knob), or [learning.grid]
// (one list of values per knob, every combination an arm).
void ReadLearningArms(TableReader& learning, policies::LearningPolicyParams* p) {
  std::vector<std::string> learnable;
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    if (policies::LearnableKnob(spec.name)) learnable.emplace_back(spec.name);
  }
  if (learning.Has("grid")) {
    for (const char* key : {"knob", "values"}) {
      if (learning.Has(key)) {
        learning.Fail(key,
                      "give either knob and values (one knob) or [learning.grid] (joint "
                      "settings), not both");
      }
    }
    TableReader grid = learning.Table("grid");
    std::vector<std::string> knobs;
    std::vector<std::vector<double>> values;
    for (const std::string& name : grid.Keys()) {
      if (std::find(learnable.begin(), learnable.end(), name) == learnable.end()) {
        grid.Fail(name, fmt::format("cannot be learnt; use one of {}", fmt::join(learnable, ", ")));
        continue;
      }
      std::vector<double> v;
      grid.Read(name, &v, Range<double>{0, 1e6});
      if (v.empty()) grid.Fail(name, "needs at least one value");
      knobs.push_back(name);
      values.push_back(std::move(v));
    }
    if (knobs.empty()) {
      learning.Fail("grid", "name at least one knob, e.g. capacity_factor = [1.5, 2, 3]");
      return;
    }
    p->knobs = std::move(knobs);
    p->arms = policies::GridOf(values);
    return;
  }
  std::string knob = p->knobs.empty() ? std::string() : p->knobs.front();
  learning.ReadChoice("knob", &knob, learnable);
  std::vector<double> values;
  for (const policies::Setting& arm : p->arms)
    values.push_back(arm.empty() ? 0.0 : arm.front());
  learning.Read("values", &values, Range<double>{0, 1e6});
  p->knobs = {knob};
  p->arms.clear();
  for (double v : values)
    p->arms.push_back({v});
}

uint64_t ReadMinSteps(TableReader& table, uint64_t value) {
  int64_t steps = static_cast<int64_t>(value);
  table.Read("min_steps", &steps, Range<int64_t>{1, 1'000'000});
  return static_cast<uint64_t>(steps);
}

void ReadMetrics(TableReader table, MetricsOptions* m) {
  table.Read("listen", &m->listen);
  if (!m->listen.empty()) {
    if (Status s = CheckListenAddress(m->listen); !s.ok()) table.Fail("listen", s.message());
  }
  table.Read("per_layer", &m->per_layer);
  table.ReadDurationMs("loop_timeout", &m->loop_timeout_ms, {100, 3'600'000});
}

// [limits]: what one engine may make the daemon hold (LimitsOptions).
void ReadEngineLimits(TableReader table, LimitsOptions* l) {
  table.Read("max_layers", &l->max_layers, Range<int64_t>{1, 1 << 20});
  table.Read("max_experts", &l->max_experts, Range<int64_t>{1, 1 << 20});
  table.Read("max_replicas", &l->max_replicas, Range<int64_t>{1, 1 << 20});
  table.Read("max_devices", &l->max_devices, Range<int64_t>{1, 1 << 20});
  int64_t layer_experts = static_cast<int64_t>(l->max_layer_experts);
  table.Read("max_layer_experts", &layer_experts, Range<int64_t>{1, int64_t{1} << 26});
  l->max_layer_experts = static_cast<uint64_t>(layer_experts);
  int64_t layer_replicas = static_cast<int64_t>(l->max_layer_replicas);
  table.Read("max_layer_replicas", &layer_replicas, Range<int64_t>{1, int64_t{1} << 26});
  l->max_layer_replicas = static_cast<uint64_t>(layer_replicas);
  int64_t window_mib = static_cast<int64_t>(l->window_bytes >> 20);
  table.Read("window_mib", &window_mib, Range<int64_t>{1, 1 << 20});
  l->window_bytes = static_cast<uint64_t>(window_mib) << 20;
}

// [cost_model]: a fixed model instead of the online fit, and stragglers.
void ReadCostModel(TableReader table, CostModelOptions* c) {
  std::string source = c->fixed ? "fixed" : "measured";
  table.ReadChoice("source", &source, {"measured", "fixed"});
  c->fixed = source == "fixed";
  const std::pair<const char*, double*> figures[] = {
      {"device_fixed_us", &c->device.fixed_us},
      {"device_per_row_us", &c->device.per_row_us},
      {"overhead_fixed_us", &c->overhead.fixed_us},
      {"overhead_per_token_us", &c->overhead.per_row_us}};
  for (const auto& [key, value] : figures) {
    if (!c->fixed && table.Has(key)) {
      table.Fail(key, "is read only with source = \"fixed\" (the measured fit finds its own)");
      continue;
    }
    table.Read(key, value, Range<double>{0, 1e9});
  }
  if (c->fixed) table.Require("device_per_row_us");
  table.Read("stragglers", &c->stragglers);
}

void ReadControl(TableReader table, ControlOptions* c) {
  table.Read("socket", &c->socket);
  if (!c->socket.empty() && c->socket.size() >= 108) {
    // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
    table.Fail("socket", "a Unix socket path must be shorter than 108 bytes");
  }
  table.Read("group", &c->group);
  std::string mode = fmt::format("{:04o}", c->socket_mode);
  table.Read("mode", &mode);
  const bool octal =
      !mode.empty() && mode.size() <= 4 && mode.find_first_not_of("01234567") == std::string::npos;
  if (!octal) {
    table.Fail("mode", "file permission bits in octal, e.g. \"0660\" (owner and group)");
  } else {
    c->socket_mode = static_cast<uint32_t>(std::stoul(mode, nullptr, 8));
    if ((c->socket_mode & 0002) != 0) {
      table.Fail("mode", "must not let every user write (o+w): the group decides who may");
    }
  }
}

// The policy sections, found in controller.toml or in its policies file.
void ReadPolicies(TableReader root, ControllerOptions* o) {
  root.Read("joint_changes", &o->joint_changes);
  if (root.Has("order")) {
    root.Read("order", &o->policy_order);
    const std::vector<std::string> known = {
        "capacity", "bias",           "adaptive_k",       "noise", "replication",
        "learning", "counterfactual", "dynamic_capacity", "eplb"};
    for (size_t i = 0; i < o->policy_order.size(); ++i) {
      const std::string& name = o->policy_order[i];
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        root.Fail("order", "unknown policy \"" + name +
                               "\"; use capacity, bias, adaptive_k, noise, replication, learning, "
                               "counterfactual, dynamic_capacity or eplb");
      } else if (std::find(o->policy_order.begin(), o->policy_order.begin() + i, name) !=
                 o->policy_order.begin() + i) {
        root.Fail("order", "policy \"" + name + "\" is listed twice");
      }
    }
  }
  TableReader capacity = root.Table("capacity");
  capacity.Read("enabled", &o->capacity_enabled);
  capacity.Read("target_low", &o->capacity.target_low, Range<double>{0, 1});
  capacity.Read("target_high", &o->capacity.target_high, Range<double>{0, 1});
  capacity.Read("gain", &o->capacity.gain, Range<double>{0, 1000});
  capacity.Read("min_increase", &o->capacity.min_increase, Range<double>{0, 10});
  capacity.Read("decrease_step", &o->capacity.decrease_step, Range<double>{0, 10});
  int64_t min_steps = static_cast<int64_t>(o->capacity.min_steps);
  capacity.Read("min_steps", &min_steps, Range<int64_t>{1, 1'000'000});
  o->capacity.min_steps = static_cast<uint64_t>(min_steps);

  TableReader guard = root.Table("guard");
  guard.Read("rollback", &o->rollback_enabled);
  guard.ReadDurationMs("cooldown", &o->guard.cooldown_ms, {0, 86'400'000});
  guard.Read("urgent_drop_rate", &o->guard.urgent_drop_rate, Range<double>{0, 1});
  guard.Read("hysteresis", &o->guard.hysteresis, Range<double>{0, 10});
  guard.ReadDurationMs("stale_after", &o->guard.stale_after_ms, {1, 86'400'000});
  int64_t min_steps_in_epoch = static_cast<int64_t>(o->guard.min_steps_in_epoch);
  guard.Read("min_steps_in_epoch", &min_steps_in_epoch, Range<int64_t>{0, 1'000'000});
  o->guard.min_steps_in_epoch = static_cast<uint64_t>(min_steps_in_epoch);
  guard.Read("rollback_threshold", &o->guard.rollback_threshold, Range<double>{0, 100});
  guard.Read("rollback_min_delta", &o->guard.rollback_min_delta, Range<double>{0, 1e9});
  // [guard.KNOB] for every knob of the knob table that has limits.
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    if (spec.limits != nullptr) {
      ReadLimits(guard.Table(spec.name), &(o->guard.*spec.limits));
    }
  }
  guard.Table(policies::knob::kCapacityFactor).Read("unlimited", &o->guard.unlimited_capacity);
  int64_t max_slot_moves = o->guard.max_slot_moves;
  guard.Read("max_slot_moves", &max_slot_moves, Range<int64_t>{1, 1'000'000});
  o->guard.max_slot_moves = static_cast<int>(max_slot_moves);
  guard.ReadDurationMs("placement_cooldown", &o->guard.placement_cooldown_ms, {0, 86'400'000});

  TableReader replication = root.Table("replication");
  replication.Read("enabled", &o->replication_enabled);
  replication.Read("num_nodes", &o->replication.num_nodes, Range<int64_t>{1, 4096});
  replication.Read("num_groups", &o->replication.num_groups, Range<int64_t>{1, 4096});
  replication.Read("min_gain", &o->replication.min_gain, Range<double>{0, 1});
  int64_t max_moves = o->replication.max_moves;
  replication.Read("max_moves", &max_moves, Range<int64_t>{-1, 1'000'000});
  o->replication.max_moves = static_cast<int>(max_moves);
  replication.Read("move_weight", &o->replication.move_weight, Range<double>{0, 1e6});
  replication.Read("time_budget_ms", &o->replication.time_budget_ms, Range<double>{0.01, 60'000});
  std::string forecast(policies::ForecastMethodName(o->replication.forecast.method));
  replication.ReadChoice("forecast", &forecast, {"window_mean", "recent", "trend"});
  if (auto method = policies::ParseForecastMethod(forecast); method.ok()) {
    o->replication.forecast.method = *method;
  }
  replication.Read("forecast_half_life", &o->replication.forecast.half_life_steps,
                   Range<double>{0, 1e6});
  replication.Read("forecast_change_threshold", &o->replication.forecast.change_threshold,
                   Range<double>{0, 1e6});
  std::string counts(policies::ReplicaCountRuleName(o->replication.replica_counts));
  replication.ReadChoice("replica_counts", &counts, {"auto", "demand", "balance"});
  o->replication.replica_counts = counts == "balance"  ? policies::ReplicaCountRule::kBalance
                                  : counts == "demand" ? policies::ReplicaCountRule::kDemand
                                                       : policies::ReplicaCountRule::kAuto;
  o->replication.min_steps = ReadMinSteps(replication, o->replication.min_steps);

  TableReader learning = root.Table("learning");
  learning.Read("enabled", &o->learning_enabled);
  ReadLearningArms(learning, &o->learning);
  learning.Read("imbalance_edges", &o->learning.imbalance_edges, Range<double>{0, 1e9});
  learning.Read("tokens_edges", &o->learning.tokens_edges, Range<double>{0, 1e12});
  learning.Read("exploration", &o->learning.exploration, Range<double>{0, 1e6});
  learning.Read("min_samples", &o->learning.min_samples, Range<int64_t>{1, 1'000'000});
  learning.Read("min_gain", &o->learning.min_gain, Range<double>{0, 1e6});
  learning.Read("explore_max_drop_rate", &o->learning.explore_max_drop_rate, Range<double>{0, 1});
  learning.Read("explore_quantile", &o->learning.explore_quantile, Range<double>{0, 1});
  int64_t explore_lookback = static_cast<int64_t>(o->learning.explore_lookback_steps);
  learning.Read("explore_lookback_steps", &explore_lookback, Range<int64_t>{1, 1'000'000});
  o->learning.explore_lookback_steps = static_cast<uint64_t>(explore_lookback);
  o->learning.min_steps = ReadMinSteps(learning, o->learning.min_steps);

  TableReader bias = root.Table("bias");
  bias.Read("enabled", &o->bias_enabled);
  bias.Read("update_rate", &o->bias.update_rate, Range<double>{0, 10});
  bias.Read("max_step", &o->bias.max_step, Range<double>{0, 10});
  bias.Read("deadband", &o->bias.deadband, Range<double>{0, 10});
  bias.Read("min_imbalance", &o->bias.min_imbalance, Range<double>{1, 1e6});
  bias.Read("max_bias", &o->bias.max_bias, Range<double>{0, 10});
  bias.Read("sign_update", &o->bias.sign_update);
  o->bias.min_steps = ReadMinSteps(bias, o->bias.min_steps);

  TableReader adaptive_k = root.Table("adaptive_k");
  adaptive_k.Read("enabled", &o->adaptive_k_enabled);
  adaptive_k.Read("slo_us", &o->adaptive_k.slo_us, Range<double>{1, 1e9});
  adaptive_k.Read("quality_budget", &o->adaptive_k.quality_budget, Range<double>{0, 10});
  adaptive_k.Read("headroom", &o->adaptive_k.headroom, Range<double>{0, 1});
  adaptive_k.Read("min_k", &o->adaptive_k.min_k, Range<int64_t>{1, 1024});
  adaptive_k.Read("max_k", &o->adaptive_k.max_k, Range<int64_t>{1, 1024});
  o->adaptive_k.min_steps = ReadMinSteps(adaptive_k, o->adaptive_k.min_steps);

  TableReader noise = root.Table("noise");
  noise.Read("enabled", &o->noise_enabled);
  noise.Read("imbalance_high", &o->noise.imbalance_high, Range<double>{0, 1e6});
  noise.Read("imbalance_low", &o->noise.imbalance_low, Range<double>{0, 1e6});
  noise.Read("quality_budget", &o->noise.quality_budget, Range<double>{0, 10});
  noise.Read("step", &o->noise.step, Range<double>{0, 10});
  noise.Read("max_noise", &o->noise.max_noise, Range<double>{0, 10});
  o->noise.min_steps = ReadMinSteps(noise, o->noise.min_steps);

  TableReader reward = root.Table("reward");
  reward.Read("slo_us", &o->reward.slo_us, Range<double>{1, 1e9});
  reward.Read("latency_weight", &o->reward.latency_weight, Range<double>{0, 1e6});
  reward.Read("drop_weight", &o->reward.drop_weight, Range<double>{0, 1e6});
  reward.Read("quality_weight", &o->reward.quality_weight, Range<double>{0, 1e6});
  reward.Read("capacity_weight", &o->reward.capacity_weight, Range<double>{0, 1e6});
  reward.Read("slo_weight", &o->reward.slo_weight, Range<double>{0, 1e6});
  reward.Read("migration_weight", &o->reward.migration_weight, Range<double>{0, 1e6});

  TableReader counterfactual = root.Table("counterfactual");
  counterfactual.Read("enabled", &o->counterfactual_enabled);
  // 0 is unlimited capacity; a finite factor is at least 0.01.
  counterfactual.Read("candidates", &o->counterfactual.candidates, Range<double>{0, 1e3});
  for (double c : o->counterfactual.candidates) {
    if (c > 0 && c < 0.01) {
      counterfactual.Fail("candidates",
                          fmt::format("{} is below 0.01 (0 means unlimited capacity)", c));
      break;
    }
  }
  counterfactual.Read("pessimism", &o->counterfactual.pessimism, Range<double>{0.001, 1});
  counterfactual.Read("quality_per_drop", &o->counterfactual.quality_per_drop,
                      Range<double>{0, 1e3});
  counterfactual.Read("min_gain", &o->counterfactual.min_gain, Range<double>{0, 1e6});
  o->counterfactual.min_steps = ReadMinSteps(counterfactual, o->counterfactual.min_steps);
  int64_t lookback = static_cast<int64_t>(o->counterfactual.lookback_steps);
  counterfactual.Read("lookback_steps", &lookback, Range<int64_t>{0, 1'000'000});
  o->counterfactual.lookback_steps = static_cast<uint64_t>(lookback);

  TableReader dynamic = root.Table("dynamic_capacity");
  dynamic.Read("enabled", &o->dynamic_capacity_enabled);
  int64_t dyn_lookback = static_cast<int64_t>(o->dynamic_capacity.lookback_steps);
  dynamic.Read("lookback_steps", &dyn_lookback, Range<int64_t>{1, 1'000'000});
  o->dynamic_capacity.lookback_steps = static_cast<uint64_t>(dyn_lookback);
  dynamic.Read("margin", &o->dynamic_capacity.margin, Range<double>{0, 100});
  dynamic.Read("step", &o->dynamic_capacity.step, Range<double>{0.001, 10});
  dynamic.Read("min_change", &o->dynamic_capacity.min_change, Range<double>{0, 10});

  TableReader eplb = root.Table("eplb");
  eplb.Read("enabled", &o->eplb_enabled);
  int64_t period = static_cast<int64_t>(o->eplb.period_steps);
  eplb.Read("period_steps", &period, Range<int64_t>{1, 1'000'000});
  o->eplb.period_steps = static_cast<uint64_t>(period);
}

}  // namespace

Status CheckListenAddress(std::string_view listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos) {
    return Status::InvalidArgument("expected host:port, e.g. \"127.0.0.1:9464\"");
  }
  std::string_view host = listen.substr(0, colon);
  std::string_view port = listen.substr(colon + 1);
  if (host.starts_with('[') != host.ends_with(']') ||
      (host.find(':') != std::string_view::npos && !host.starts_with('['))) {
    return Status::InvalidArgument("an IPv6 host goes in brackets, e.g. \"[::1]:9464\"");
  }
  if (host.empty() || host == "[]") return Status::InvalidArgument("the host is missing");
  int value = 0;
  auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || error != std::errc() || end != port.data() + port.size() || value < 1 ||
      value > 65535) {
    return Status::InvalidArgument("the port must be a number in [1, 65535]");
  }
  return Status::Ok();
}

Result<ControllerOptions> LoadControllerConfig(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(config::TomlDocument doc, config::TomlDocument::Load(path));
  ControllerOptions o;
  TableReader root = doc.Root();
  root.ReadChoice("log_level", &o.log_level,
                  {"trace", "debug", "info", "warn", "error", "critical", "off"});
  root.ReadDurationMs("cadence", &o.cadence_ms, {10, 3'600'000});
  root.Read("react_drop_rate", &o.react_drop_rate, Range<double>{0, 1});
  root.ReadDurationMs("react_min_interval", &o.react_min_interval_ms, {0, 3'600'000});
  std::string mode = std::string(ControlModeName(o.mode));
  root.ReadChoice("mode", &mode, {"active", "advisory"});
  o.mode = mode == "advisory" ? ControlMode::kAdvisory : ControlMode::kActive;
  // Per-engine overrides: [engines."engine-id"] mode = "advisory".
  TableReader engines = root.Table("engines");
  for (const std::string& id : engines.Keys()) {
    TableReader engine = engines.Table(id);
    std::string engine_mode;
    engine.Require("mode");
    engine.ReadChoice("mode", &engine_mode, {"active", "advisory"});
    if (!engine_mode.empty()) {
      o.engine_modes[id] =
          engine_mode == "advisory" ? ControlMode::kAdvisory : ControlMode::kActive;
    }
  }
  root.ReadDurationMs("step_clock", &o.step_clock_ms, {0, 3'600'000});
  root.ReadDurationMs("ack_timeout", &o.ack_timeout_ms, {10, 3'600'000});
  root.ReadDurationMs("progress_interval", &o.progress_interval_ms, {0, 86'400'000});
  root.ReadDurationMs("stale_after", &o.stale_after_ms, {100, 86'400'000});
  root.ReadDurationMs("engine_expiry", &o.engine_expiry_ms, {1000, 30LL * 86'400'000});
  root.Read("max_engines", &o.max_engines, Range<int64_t>{1, 1'000'000});
  int64_t outcome_steps = static_cast<int64_t>(o.outcome_steps);
  int64_t window_steps = static_cast<int64_t>(o.window_steps);
  root.Read("outcome_steps", &outcome_steps, Range<int64_t>{1, 100'000});
  root.Read("window_steps", &window_steps, Range<int64_t>{1, 100'000});
  o.outcome_steps = static_cast<uint64_t>(outcome_steps);
  o.window_steps = static_cast<uint64_t>(window_steps);

  TableReader transport = root.Table("transport");
  transport.Read("telemetry", &o.telemetry_endpoint);
  transport.Read("commands", &o.command_endpoint);
  transport.Read("insecure", &o.insecure);
  TableReader curve = transport.Table("curve");
  curve.Read("public_key", &o.curve_public_key);
  curve.Read("secret_key", &o.curve_secret_key);
  if (curve.Has("allowed_engine_keys")) {
    std::vector<std::string> old_list;
    curve.Read("allowed_engine_keys", &old_list);
    curve.Fail("allowed_engine_keys",
               "replaced by [transport.curve.engines]: list each engine as ID = \"PUBLIC_KEY\", "
               "so that a key speaks only for its own engines");
  }
  TableReader engine_keys = curve.Table("engines");
  for (const std::string& id : engine_keys.Keys()) {
    std::string key;
    engine_keys.Read(id, &key);
    o.engine_keys[id] = key;
  }
  if (curve.Has("secret_key") != curve.Has("public_key")) {
    curve.Fail("secret_key", "CURVE needs both public_key and secret_key");
  }

  TableReader storage = root.Table("storage");
  storage.Read("path", &o.db_path);
  storage.Read("batch_rows", &o.db_batch_rows, Range<int64_t>{1, 1'000'000});
  storage.ReadDurationMs("flush_interval", &o.db_flush_interval_ms, {1, 60'000});
  storage.Read("max_queue_rows", &o.db_max_queue_rows, Range<int64_t>{1, 100'000'000});
  int64_t queue_mib = o.db_max_queue_bytes >> 20;
  storage.Read("max_queue_mib", &queue_mib, Range<int64_t>{1, 1 << 20});
  o.db_max_queue_bytes = queue_mib << 20;
  int64_t retention_ms = o.raw_retention_s * 1000;
  storage.ReadDurationMs("raw_retention", &retention_ms, {0, INT64_MAX / 2});
  o.raw_retention_s = retention_ms / 1000;
  int64_t rollup_retention_ms = o.rollup_retention_s * 1000;
  storage.ReadDurationMs("rollup_retention", &rollup_retention_ms, {0, INT64_MAX / 2});
  o.rollup_retention_s = rollup_retention_ms / 1000;
  int64_t decision_retention_ms = o.decision_retention_s * 1000;
  storage.ReadDurationMs("decision_retention", &decision_retention_ms, {0, INT64_MAX / 2});
  o.decision_retention_s = decision_retention_ms / 1000;
  if (o.raw_retention_s > 0 && o.rollup_retention_s > 0 &&
      o.rollup_retention_s < o.raw_retention_s) {
    storage.Fail("rollup_retention",
                 "must not be shorter than raw_retention (rollups would be deleted as soon as "
                 "they are made); 0 keeps them forever");
  }

  ReadEngineLimits(root.Table("limits"), &o.limits);
  ReadMetrics(root.Table("metrics"), &o.metrics);
  ReadControl(root.Table("control"), &o.control);
  ReadCostModel(root.Table("cost_model"), &o.cost_model);

  ReadPolicies(root.Table("policies"), &o);
  std::string policies_file;
  root.Read("policies_file", &policies_file);
  MOE_RETURN_IF_ERROR(doc.Finish());

  if (!policies_file.empty()) {
    std::filesystem::path policies_path(policies_file);
    if (policies_path.is_relative()) {
      policies_path = std::filesystem::path(path).parent_path() / policies_path;
    }
    // Errors inside the policies file name that file; the prefix says which
    // file sent the daemon there.
    const std::string via = path + ": policies_file \"" + policies_file + "\"";
    Result<config::TomlDocument> policies_doc = config::TomlDocument::Load(policies_path.string());
    if (!policies_doc.ok()) return policies_doc.status().WithContext(via);
    ReadPolicies(policies_doc->Root(), &o);
    MOE_RETURN_IF_ERROR(policies_doc->Finish().WithContext(via));
  }
  Status valid = Validate(o);
  if (!valid.ok()) return Status::InvalidArgument(path + ": " + valid.message());
  return o;
}

}  // namespace moe::controller

#include "telemetry_glue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "moe/common/clock.h"
#include "moe/common/status.h"

namespace moe::engine_app {

telemetry::KnobSet ToKnobSet(const engine::Knobs& k) {
  telemetry::KnobSet s;
  s.top_k = k.top_k;
  s.top_p = k.top_p;
  s.k_min = k.k_min;
  s.capacity_factor = k.capacity_factor;
  switch (k.overflow_policy) {
    case engine::OverflowPolicy::kDrop:
      s.overflow_policy = telemetry::OverflowPolicy::kDrop;
      break;
    case engine::OverflowPolicy::kReroute:
      s.overflow_policy = telemetry::OverflowPolicy::kReroute;
      break;
    case engine::OverflowPolicy::kReplica:
      s.overflow_policy = telemetry::OverflowPolicy::kReplica;
      break;
  }
  s.noise_std = k.noise_std;
  s.shortlist = k.shortlist;
  s.availability_weight = k.availability_weight;
  s.expert_bias = k.expert_bias;
  s.phy2log = k.phy2log;
  s.capacity_scope = k.capacity_scope == engine::CapacityScope::kSlot
                         ? telemetry::CapacityScope::kSlot
                         : telemetry::CapacityScope::kExpert;
  return s;
}

engine::KnobPatch ToKnobPatch(const telemetry::KnobSet& s) {
  engine::KnobPatch p;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.k_min = s.k_min;
  p.capacity_factor = s.capacity_factor;
  if (s.overflow_policy) {
    switch (*s.overflow_policy) {
      case telemetry::OverflowPolicy::kDrop:
        p.overflow_policy = engine::OverflowPolicy::kDrop;
        break;
      case telemetry::OverflowPolicy::kReroute:
        p.overflow_policy = engine::OverflowPolicy::kReroute;
        break;
      case telemetry::OverflowPolicy::kReplica:
        p.overflow_policy = engine::OverflowPolicy::kReplica;
        break;
    }
  }
  p.noise_std = s.noise_std;
  p.shortlist = s.shortlist;
  p.availability_weight = s.availability_weight;
  p.expert_bias = s.expert_bias;
  p.phy2log = s.phy2log;
  if (s.capacity_scope) {
    p.capacity_scope = *s.capacity_scope == telemetry::CapacityScope::kSlot
                           ? engine::CapacityScope::kSlot
                           : engine::CapacityScope::kExpert;
  }
  return p;
}

engine::KnobUpdate ToKnobUpdate(const telemetry::Command& command) {
  engine::KnobUpdate update;
  update.epoch = command.epoch;
  update.all_layers = ToKnobPatch(command.knobs);
  for (const telemetry::LayerKnobs& lk : command.layer_knobs)
    update.layers.emplace_back(lk.layer, ToKnobPatch(lk.knobs));
  return update;
}

telemetry::Hello MakeHello(const engine::Engine& engine, const AppOptions& app, int64_t now_ns) {
  const engine::Options& o = engine.options();
  telemetry::Hello hello;
  hello.engine_id = app.engine_id;
  hello.backend = std::string(engine.backend().name());
  hello.num_layers = o.model.num_layers;
  hello.num_experts = o.model.num_experts;
  hello.num_shared_experts = o.model.num_shared_experts;
  hello.num_replicas = engine::NumReplicas(o);
  hello.num_devices = o.parallel.num_devices;
  hello.hidden = o.model.hidden;
  hello.epoch = engine.epoch();
  engine::Knobs knobs = engine.knobs(0);
  if (knobs.expert_bias.empty()) knobs.expert_bias.assign(o.model.num_experts, 0.0f);
  if (knobs.phy2log.empty()) knobs.phy2log = engine::DefaultPlacement(o);
  hello.knobs = ToKnobSet(knobs);
  hello.timestamp_ns = now_ns;
  // Layers that differ from layer 0 (a per-layer bias, placement or scalar).
  for (uint32_t l = 1; l < o.model.num_layers; ++l) {
    engine::Knobs layer = engine.knobs(l);
    if (layer.expert_bias.empty()) layer.expert_bias.assign(o.model.num_experts, 0.0f);
    if (layer.phy2log.empty()) layer.phy2log = engine::DefaultPlacement(o);
    // Every knob of the wire's KnobSet that differs from the engine-wide one.
    const telemetry::KnobSet mine = ToKnobSet(layer);
    telemetry::KnobSet diff;
    auto differ = [&](auto field) {
      if (mine.*field != hello.knobs.*field) diff.*field = mine.*field;
    };
    using K = telemetry::KnobSet;
    differ(&K::top_k);
    differ(&K::top_p);
    differ(&K::k_min);
    differ(&K::capacity_factor);
    differ(&K::overflow_policy);
    differ(&K::noise_std);
    differ(&K::shortlist);
    differ(&K::availability_weight);
    differ(&K::expert_bias);
    differ(&K::phy2log);
    differ(&K::capacity_scope);
    if (!diff.empty()) hello.layer_knobs.push_back({l, std::move(diff)});
  }
  return hello;
}

telemetry::StepRecord MakeStepRecord(const engine::StepStats& stats, const std::string& engine_id,
                                     int64_t now_ns) {
  telemetry::StepRecord r;
  r.engine_id = engine_id;
  r.step = stats.step;
  r.timestamp_ns = now_ns;
  r.epoch = stats.epoch;
  r.timing_on_device = stats.timing_on_device;
  r.step_us = stats.step_us;
  r.placement_moved_bytes = stats.placement_moved_bytes;
  r.placement_copy_us = stats.placement_copy_us;
  r.placement_move_us = stats.placement_move_us;
  r.layers.reserve(stats.layers.size());
  for (const engine::LayerStats& l : stats.layers) {
    telemetry::LayerRecord lr;
    lr.layer = l.layer;
    lr.num_tokens = l.num_tokens;
    lr.num_token_slots = l.num_token_slots;
    lr.expert_tokens = l.expert_tokens;
    lr.expert_demand = l.expert_demand;
    lr.capacity = l.capacity;
    lr.routed_on_device = l.routed_on_device;
    lr.expert_rows = l.expert_rows;
    lr.host_waits = l.host_waits;
    lr.slot_tokens = l.slot_tokens;
    lr.device_tokens = l.device_tokens;
    lr.overflowed = l.overflowed;
    lr.rerouted = l.rerouted;
    lr.dropped = l.dropped;
    lr.k_histogram = l.k_histogram;
    lr.router_entropy = l.router_entropy;
    lr.gate_mass = l.gate_mass;
    lr.quality_error = l.quality_error;
    lr.timing.router_us = l.router_us;
    lr.timing.dispatch_us = l.dispatch_us;
    lr.timing.expert_us = l.expert_us;
    lr.timing.combine_us = l.combine_us;
    lr.timing.all_to_all_us = l.all_to_all_us;
    lr.timing.total_us = l.total_us;
    lr.timing.device_expert_us = l.device_expert_us;
    r.layers.push_back(std::move(lr));
  }
  return r;
}

void CommandHandler::Poll(telemetry::EngineLink* link, int64_t now_ns) {
  auto received = link->PollCommands();
  if (!received.ok()) {
    spdlog::warn("poll commands: {}", received.status().ToString());
    return;
  }
  for (const telemetry::Command& cmd : *received) {
    const engine::KnobUpdate update = ToKnobUpdate(cmd);
    Status st = cmd.engine_id.empty() || cmd.engine_id == engine_id_
                    ? Status::Ok()
                    : Status::InvalidArgument("command for engine '" + cmd.engine_id + "'");
    Result<uint64_t> at = st.ok() ? engine_->Submit(update) : Result<uint64_t>(st);
    if (at.ok()) {
      spdlog::info("command epoch {} accepted ({}), applies at step {}", cmd.epoch,
                   cmd.reason.empty() ? "no reason" : cmd.reason, *at);
      accepted_.push_back(cmd.epoch);
      continue;
    }
    spdlog::warn("command epoch {} refused: {}", cmd.epoch, at.status().ToString());
    telemetry::Ack ack;
    ack.engine_id = engine_id_;
    ack.epoch = cmd.epoch;
    ack.applied = false;
    ack.error = at.status().ToString();
    ack.applied_at_step = 0;
    ack.timestamp_ns = now_ns;
    if (Status sent = link->SendAck(ack); !sent.ok()) spdlog::warn("ack: {}", sent.ToString());
  }
}

void CommandHandler::AckApplied(telemetry::EngineLink* link, const engine::StepStats& stats,
                                int64_t now_ns) {
  auto it = accepted_.begin();
  while (it != accepted_.end()) {
    if (*it > stats.epoch) {
      ++it;
      continue;
    }
    telemetry::Ack ack;
    ack.engine_id = engine_id_;
    ack.epoch = *it;
    ack.applied = true;
    ack.applied_at_step = stats.step;
    ack.timestamp_ns = now_ns;
    if (Status sent = link->SendAck(ack); !sent.ok()) spdlog::warn("ack: {}", sent.ToString());
    it = accepted_.erase(it);
  }
}

void ProgressMeter::Observe(const engine::StepStats& stats, int64_t now_ns,
                            uint64_t telemetry_dropped) {
  if (window_start_ns_ < 0) window_start_ns_ = now_ns;
  ++steps_;
  ++total_steps_;
  step_us_ += stats.step_us;
  epoch_ = stats.epoch;
  telemetry_dropped_ = telemetry_dropped;
  for (const engine::LayerStats& l : stats.layers) {
    slots_ += l.num_token_slots;
    dropped_ += l.dropped;
    uint64_t total = 0, hottest = 0;
    for (uint32_t t : l.expert_demand) {
      total += t;
      hottest = std::max<uint64_t>(hottest, t);
    }
    if (total > 0) {
      max_over_mean_ =
          std::max(max_over_mean_, static_cast<double>(hottest) * l.expert_demand.size() / total);
    }
  }
  if (now_ns - window_start_ns_ < interval_ns_) return;
  const double seconds = (now_ns - window_start_ns_) / 1e9;
  spdlog::info(
      "step {} epoch {}: {:.1f} steps/s, step {:.2f} ms, drop rate {:.2f}%, hottest expert "
      "demand {:.2f}x mean, telemetry dropped {}",
      stats.step, epoch_, steps_ / seconds, step_us_ / steps_ / 1000.0,
      slots_ > 0 ? 100.0 * dropped_ / slots_ : 0.0, max_over_mean_, telemetry_dropped_);
  window_start_ns_ = now_ns;
  steps_ = 0;
  slots_ = 0;
  dropped_ = 0;
  step_us_ = 0;
  max_over_mean_ = 0;
}

void ProgressMeter::Final() const {
  spdlog::info("{} steps run", total_steps_);
}

bool HelloTicker::Due(uint64_t epoch, int64_t now_ns) {
  if (epoch == epoch_ && now_ns - last_ns_ < interval_ns_) return false;
  epoch_ = epoch;
  last_ns_ = now_ns;
  return true;
}

bool SyncWaiter::PollUntil(telemetry::EngineLink* link, CommandHandler* commands,
                           const std::function<bool()>& done, const std::function<bool()>& stop,
                           std::chrono::milliseconds slice) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
  for (;;) {
    commands->Poll(link, SystemClock()->NowNanos());
    if (done()) return true;
    if (stop()) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (Status st = link->WaitForCommands(std::min(left, slice)); !st.ok()) {
      spdlog::warn("await the controller: {}", st.ToString());
      return false;
    }
  }
}

bool SyncWaiter::AwaitLink(telemetry::EngineLink* link, CommandHandler* commands,
                           const std::function<bool()>& stop) {
  if (PollUntil(
          link, commands, [&] { return link->command_channel_up(); }, stop,
          std::chrono::milliseconds(5))) {
    return true;
  }
  spdlog::warn("no controller on the command channel within {} ms; the first step runs anyway",
               timeout_ms_);
  return false;
}

bool SyncWaiter::Await(telemetry::EngineLink* link, CommandHandler* commands, uint64_t step,
                       const std::function<bool()>& stop) {
  if (lapsed_) {
    // Answers again? A Sync newer than the one that did not come says so.
    commands->Poll(link, SystemClock()->NowNanos());
    const std::optional<uint64_t> synced = link->synced_step();
    if (!synced || *synced <= lapsed_step_) return false;
    lapsed_ = false;
    spdlog::info("the controller answers again (Sync of step {}): lockstep resumes", *synced);
  }
  const auto synced = [&] { return link->synced_step() && *link->synced_step() >= step; };
  if (PollUntil(link, commands, synced, stop, std::chrono::milliseconds(20))) return true;
  if (stop()) return false;
  ++timeouts_;
  lapsed_ = true;
  lapsed_step_ = step;
  spdlog::warn(
      "the controller did not answer step {} within {} ms; running on without waiting for it "
      "until it answers again",
      step, timeout_ms_);
  return false;
}

}  // namespace moe::engine_app

// Sample telemetry messages with every field set to a distinct value, shared by
// the telemetry tests.

#ifndef MOE_TESTS_TELEMETRY_SAMPLE_MESSAGES_H_
#define MOE_TESTS_TELEMETRY_SAMPLE_MESSAGES_H_

#include <string>

#include "moe/telemetry/types.h"

namespace moe::telemetry::testing {

inline KnobSet FullKnobs() {
  KnobSet k;
  k.top_k = 8;
  k.top_p = 0.9;
  k.k_min = 2;
  k.capacity_factor = 1.25;
  k.overflow_policy = OverflowPolicy::kReroute;
  k.noise_std = 0.01;
  k.shortlist = 16;
  k.availability_weight = 0.3;
  k.expert_bias = std::vector<float>{0.5f, -0.25f, 0.0f, 1e-7f};
  k.phy2log = std::vector<uint32_t>{0, 1, 2, 3, 1};
  k.capacity_scope = CapacityScope::kSlot;
  return k;
}

inline StepRecord FullStep(const std::string& engine_id = "engine-a") {
  StepRecord s;
  s.engine_id = engine_id;
  s.seq = 41;
  s.step = 1000;
  s.timestamp_ns = 1'700'000'000'123'456'789;
  s.epoch = 7;
  s.timing_on_device = true;
  s.step_us = 1234.5;
  s.telemetry_dropped = 3;
  s.placement_moved_bytes = 3 * 786432;
  s.placement_copy_us = 41.25;
  s.placement_move_us = 47.1859;
  s.await_sync = true;
  for (uint32_t i = 0; i < 2; ++i) {
    LayerRecord l;
    l.layer = i;
    l.num_tokens = 512;
    l.num_token_slots = 4096;
    l.expert_tokens = {100, 200, 300, 400 + i};
    l.expert_demand = {90, 180, 330, 500 + i};
    l.capacity = 450;
    l.routed_on_device = i % 2 == 1;
    l.expert_rows = 1800;
    l.host_waits = 1;
    l.slot_tokens = {100, 200, 300, 200, 200};
    l.device_tokens = {600, 400};
    l.overflowed = 12;
    l.rerouted = 10;
    l.dropped = 2;
    l.k_histogram = {0, 5, 20, 487};
    l.router_entropy = 2.5;
    l.gate_mass = 0.875;
    if (i == 0) l.quality_error = 0.0125;  // layer 1 leaves it absent
    l.timing = {11.5, 22.25, 33.0, 4.5, 5.75, 77.0, {30.0, 33.0}};
    s.layers.push_back(l);
  }
  return s;
}

inline Hello FullHello(const std::string& engine_id = "engine-a") {
  Hello h;
  h.engine_id = engine_id;
  h.seq = 1;
  h.schema_version = kSchemaVersion;
  h.backend = "cuda";
  h.num_layers = 2;
  h.num_experts = 4;
  h.num_shared_experts = 1;
  h.num_replicas = 5;
  h.num_devices = 2;
  h.hidden = 1024;
  h.epoch = 7;
  h.knobs = FullKnobs();
  h.timestamp_ns = 1'700'000'000'000'000'001;
  KnobSet layer1;
  layer1.expert_bias = std::vector<float>{0.01f, -0.02f, 0.0f, 0.03f};
  h.layer_knobs.push_back({1, layer1});
  return h;
}

inline Heartbeat FullHeartbeat(const std::string& engine_id = "engine-a") {
  return Heartbeat{engine_id, 42, 1001, 7, 1'700'000'001'000'000'000};
}

inline Command FullCommand(const std::string& engine_id = "engine-a") {
  Command c;
  c.engine_id = engine_id;
  c.epoch = 8;
  c.issued_ns = 1'700'000'002'000'000'000;
  c.knobs = FullKnobs();
  LayerKnobs sparse;  // most fields absent
  sparse.layer = 1;
  sparse.knobs.capacity_factor = 2.0;
  sparse.knobs.expert_bias = std::vector<float>{};  // present but empty
  c.layer_knobs.push_back(sparse);
  c.layer_knobs.push_back(LayerKnobs{0, FullKnobs()});
  c.reason = "capacity: overflow 3.1% > 2% target";
  return c;
}

inline Ack FullAck(const std::string& engine_id = "engine-a") {
  return Ack{engine_id, 8, false, "top_k 99 exceeds num_experts", 1002, 1'700'000'003'000'000'000};
}

inline Sync FullSync(const std::string& engine_id = "engine-a") {
  return Sync{engine_id, 1000, 1'700'000'004'000'000'000};
}

}  // namespace moe::telemetry::testing

#endif  // MOE_TESTS_TELEMETRY_SAMPLE_MESSAGES_H_

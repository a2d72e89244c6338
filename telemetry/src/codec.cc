#include "moe/telemetry/codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <exception>
#include <type_traits>
#include <vector>

#include "moe_telemetry.pb.h"

namespace moe::telemetry {
namespace {

namespace pb = ::moe::telemetry::v1;

// ---------------------------------------------------------------------------
// Invariants, checked on the C++ values in both directions. `Check` collects
// the first violation as a message naming the field.

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    uint32_t code_point = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      code_point = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      code_point = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      code_point = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    static constexpr uint32_t kMinForLength[] = {0, 0x80, 0x800, 0x10000};
    if (code_point < kMinForLength[extra] || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

class Checker {
 public:
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  void Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
  }
  void EngineId(std::string_view field, const std::string& id) {
    if (id.empty()) Fail(fmt::format("{} is empty", field));
    if (id.size() > kMaxIdBytes) {
      Fail(fmt::format("{} is {} bytes, more than {}", field, id.size(), kMaxIdBytes));
    }
    if (!id.empty() && id[0] == '\0') Fail(fmt::format("{} starts with a zero byte", field));
    Text(field, id);
  }
  void Text(std::string_view field, const std::string& text) {
    if (text.size() > kMaxTextBytes) {
      Fail(fmt::format("{} is {} bytes, more than {}", field, text.size(), kMaxTextBytes));
    } else if (!IsValidUtf8(text)) {
      Fail(fmt::format("{} is not valid UTF-8", field));
    }
  }
  void Length(std::string_view field, size_t length) {
    if (length > kMaxArrayLength) {
      Fail(fmt::format("{} has {} elements, more than {}", field, length, kMaxArrayLength));
    }
  }
  void Count(std::string_view field, uint64_t count) {
    if (count > kMaxArrayLength) {
      Fail(fmt::format("{} is {}, more than {}", field, count, kMaxArrayLength));
    }
  }
  void Finite(std::string_view field, double v) {
    if (!std::isfinite(v)) Fail(fmt::format("{} is {}, not a finite number", field, v));
  }
  // A finite duration, size or rate: >= 0.
  void NonNegative(std::string_view field, double v) {
    Finite(field, v);
    if (v < 0) Fail(fmt::format("{} is {}, below 0", field, v));
  }
  void Timestamp(std::string_view field, int64_t ns) {
    if (ns < 0 || ns > kMaxTimestampNs) {
      Fail(fmt::format("{} is {} ns, outside [0, {}]", field, ns, kMaxTimestampNs));
    }
  }
  void Epoch(std::string_view field, uint64_t epoch) {
    if (epoch > kMaxEpoch) Fail(fmt::format("{} is {}, more than {}", field, epoch, kMaxEpoch));
  }

 private:
  std::string error_;
};

void CheckKnobs(Checker& c, const KnobSet& k, std::string_view where) {
  if (k.overflow_policy && static_cast<uint8_t>(*k.overflow_policy) > 2) {
    c.Fail(fmt::format("{}.overflow_policy has unknown value {}", where,
                       static_cast<int>(*k.overflow_policy)));
  }
  if (k.capacity_scope && static_cast<uint8_t>(*k.capacity_scope) > 1) {
    c.Fail(fmt::format("{}.capacity_scope has unknown value {}", where,
                       static_cast<int>(*k.capacity_scope)));
  }
  if (k.top_p) c.Finite(fmt::format("{}.top_p", where), *k.top_p);
  if (k.capacity_factor) c.Finite(fmt::format("{}.capacity_factor", where), *k.capacity_factor);
  if (k.noise_std) c.Finite(fmt::format("{}.noise_std", where), *k.noise_std);
  if (k.availability_weight) {
    c.Finite(fmt::format("{}.availability_weight", where), *k.availability_weight);
  }
  if (k.expert_bias) {
    for (size_t e = 0; e < k.expert_bias->size() && c.ok(); ++e)
      c.Finite(fmt::format("{}.expert_bias[{}]", where, e), (*k.expert_bias)[e]);
  }
  if (k.top_k) c.Count(fmt::format("{}.top_k", where), *k.top_k);
  if (k.k_min) c.Count(fmt::format("{}.k_min", where), *k.k_min);
  if (k.shortlist) c.Count(fmt::format("{}.shortlist", where), *k.shortlist);
  if (k.expert_bias) c.Length(fmt::format("{}.expert_bias", where), k.expert_bias->size());
  if (k.phy2log) c.Length(fmt::format("{}.phy2log", where), k.phy2log->size());
}

void CheckTiming(Checker& c, const LayerTiming& t, const std::string& where) {
  c.NonNegative(where + ".router_us", t.router_us);
  c.NonNegative(where + ".dispatch_us", t.dispatch_us);
  c.NonNegative(where + ".expert_us", t.expert_us);
  c.NonNegative(where + ".combine_us", t.combine_us);
  c.NonNegative(where + ".all_to_all_us", t.all_to_all_us);
  c.NonNegative(where + ".total_us", t.total_us);
  for (size_t d = 0; d < t.device_expert_us.size() && c.ok(); ++d)
    c.NonNegative(fmt::format("{}.device_expert_us[{}]", where, d), t.device_expert_us[d]);
}

void CheckMessage(Checker& c, const StepRecord& m) {
  c.EngineId("StepRecord.engine_id", m.engine_id);
  c.Timestamp("StepRecord.timestamp_ns", m.timestamp_ns);
  c.Epoch("StepRecord.epoch", m.epoch);
  c.NonNegative("StepRecord.step_us", m.step_us);
  c.NonNegative("StepRecord.placement_copy_us", m.placement_copy_us);
  c.NonNegative("StepRecord.placement_move_us", m.placement_move_us);
  c.Length("StepRecord.layers", m.layers.size());
  std::vector<uint32_t> seen;
  for (size_t i = 0; i < m.layers.size() && c.ok(); ++i) {
    const LayerRecord& l = m.layers[i];
    const std::string where = fmt::format("StepRecord.layers[{}]", i);
    c.Count(where + ".layer", l.layer);
    seen.push_back(l.layer);
    // Counts nest: a dropped or rerouted slot first overflowed, and only
    // requested slots can overflow.
    if (l.dropped > l.overflowed || l.rerouted > l.overflowed ||
        uint64_t{l.dropped} + l.rerouted > l.overflowed) {
      c.Fail(fmt::format("{}: dropped {} + rerouted {} exceed overflowed {}", where, l.dropped,
                         l.rerouted, l.overflowed));
    }
    if (l.overflowed > l.num_token_slots) {
      c.Fail(fmt::format("{}: overflowed {} exceeds num_token_slots {}", where, l.overflowed,
                         l.num_token_slots));
    }
    c.NonNegative(where + ".router_entropy", l.router_entropy);
    c.NonNegative(where + ".gate_mass", l.gate_mass);
    if (l.gate_mass > 1.0 + 1e-3) {
      c.Fail(fmt::format("{}.gate_mass is {}, more than 1", where, l.gate_mass));
    }
    if (l.quality_error) c.NonNegative(where + ".quality_error", *l.quality_error);
    CheckTiming(c, l.timing, where + ".timing");
    c.Length(where + ".expert_tokens", l.expert_tokens.size());
    c.Length(where + ".expert_demand", l.expert_demand.size());
    c.Length(where + ".slot_tokens", l.slot_tokens.size());
    c.Length(where + ".device_tokens", l.device_tokens.size());
    c.Length(where + ".k_histogram", l.k_histogram.size());
    c.Length(where + ".timing.device_expert_us", l.timing.device_expert_us.size());
  }
  std::sort(seen.begin(), seen.end());
  if (c.ok() && std::adjacent_find(seen.begin(), seen.end()) != seen.end()) {
    c.Fail(fmt::format("StepRecord.layers has layer {} twice",
                       *std::adjacent_find(seen.begin(), seen.end())));
  }
}

void CheckMessage(Checker& c, const Hello& m) {
  c.EngineId("Hello.engine_id", m.engine_id);
  c.Text("Hello.backend", m.backend);
  c.Count("Hello.num_layers", m.num_layers);
  c.Count("Hello.num_experts", m.num_experts);
  c.Count("Hello.num_shared_experts", m.num_shared_experts);
  c.Count("Hello.num_replicas", m.num_replicas);
  c.Count("Hello.num_devices", m.num_devices);
  c.Epoch("Hello.epoch", m.epoch);
  c.Timestamp("Hello.timestamp_ns", m.timestamp_ns);
  CheckKnobs(c, m.knobs, "Hello.knobs");
  c.Length("Hello.layer_knobs", m.layer_knobs.size());
  for (size_t i = 0; i < m.layer_knobs.size() && c.ok(); ++i) {
    const std::string where = fmt::format("Hello.layer_knobs[{}]", i);
    c.Count(where + ".layer", m.layer_knobs[i].layer);
    CheckKnobs(c, m.layer_knobs[i].knobs, where + ".knobs");
  }
}

void CheckMessage(Checker& c, const Heartbeat& m) {
  c.EngineId("Heartbeat.engine_id", m.engine_id);
  c.Epoch("Heartbeat.epoch", m.epoch);
  c.Timestamp("Heartbeat.timestamp_ns", m.timestamp_ns);
}

void CheckMessage(Checker& c, const Command& m) {
  c.EngineId("Command.engine_id", m.engine_id);
  c.Text("Command.reason", m.reason);
  c.Epoch("Command.epoch", m.epoch);
  c.Timestamp("Command.issued_ns", m.issued_ns);
  CheckKnobs(c, m.knobs, "Command.knobs");
  c.Length("Command.layer_knobs", m.layer_knobs.size());
  for (size_t i = 0; i < m.layer_knobs.size() && c.ok(); ++i) {
    const std::string where = fmt::format("Command.layer_knobs[{}]", i);
    c.Count(where + ".layer", m.layer_knobs[i].layer);
    CheckKnobs(c, m.layer_knobs[i].knobs, where + ".knobs");
  }
}

void CheckMessage(Checker& c, const Sync& m) {
  c.EngineId("Sync.engine_id", m.engine_id);
  c.Timestamp("Sync.timestamp_ns", m.timestamp_ns);
}

void CheckMessage(Checker& c, const Ack& m) {
  c.EngineId("Ack.engine_id", m.engine_id);
  c.Text("Ack.error", m.error);
  c.Epoch("Ack.epoch", m.epoch);
  c.Timestamp("Ack.timestamp_ns", m.timestamp_ns);
}

// ---------------------------------------------------------------------------
// C++ values -> protobuf.

template <typename Repeated, typename Vector>
void CopyToRepeated(const Vector& from, Repeated* to) {
  to->Reserve(static_cast<int>(from.size()));
  for (const auto& v : from)
    to->Add(v);
}

void ToProto(const KnobSet& k, pb::KnobSet* out) {
  if (k.top_k) out->set_top_k(*k.top_k);
  if (k.top_p) out->set_top_p(*k.top_p);
  if (k.k_min) out->set_k_min(*k.k_min);
  if (k.capacity_factor) out->set_capacity_factor(*k.capacity_factor);
  if (k.overflow_policy) {
    out->set_overflow_policy(static_cast<pb::OverflowPolicy>(*k.overflow_policy));
  }
  if (k.noise_std) out->set_noise_std(*k.noise_std);
  if (k.shortlist) out->set_shortlist(*k.shortlist);
  if (k.availability_weight) out->set_availability_weight(*k.availability_weight);
  if (k.expert_bias) CopyToRepeated(*k.expert_bias, out->mutable_expert_bias()->mutable_values());
  if (k.phy2log) CopyToRepeated(*k.phy2log, out->mutable_phy2log()->mutable_values());
  if (k.capacity_scope) {
    out->set_capacity_scope(static_cast<pb::CapacityScope>(*k.capacity_scope));
  }
}

void ToProto(const StepRecord& m, pb::StepRecord* out) {
  out->set_engine_id(m.engine_id);
  out->set_seq(m.seq);
  out->set_step(m.step);
  out->set_timestamp_ns(m.timestamp_ns);
  out->set_epoch(m.epoch);
  out->set_timing_on_device(m.timing_on_device);
  out->set_step_us(m.step_us);
  out->set_telemetry_dropped(m.telemetry_dropped);
  out->set_placement_moved_bytes(m.placement_moved_bytes);
  out->set_placement_copy_us(m.placement_copy_us);
  out->set_placement_move_us(m.placement_move_us);
  out->set_await_sync(m.await_sync);
  out->mutable_layers()->Reserve(static_cast<int>(m.layers.size()));
  for (const LayerRecord& l : m.layers) {
    pb::LayerRecord* p = out->add_layers();
    p->set_layer(l.layer);
    p->set_num_tokens(l.num_tokens);
    p->set_num_token_slots(l.num_token_slots);
    CopyToRepeated(l.expert_tokens, p->mutable_expert_tokens());
    CopyToRepeated(l.expert_demand, p->mutable_expert_demand());
    p->set_capacity(l.capacity);
    p->set_routed_on_device(l.routed_on_device);
    p->set_expert_rows(l.expert_rows);
    p->set_host_waits(l.host_waits);
    CopyToRepeated(l.slot_tokens, p->mutable_slot_tokens());
    CopyToRepeated(l.device_tokens, p->mutable_device_tokens());
    p->set_overflowed(l.overflowed);
    p->set_rerouted(l.rerouted);
    p->set_dropped(l.dropped);
    CopyToRepeated(l.k_histogram, p->mutable_k_histogram());
    p->set_router_entropy(l.router_entropy);
    p->set_gate_mass(l.gate_mass);
    if (l.quality_error) p->set_quality_error(*l.quality_error);
    pb::LayerTiming* t = p->mutable_timing();
    t->set_router_us(l.timing.router_us);
    t->set_dispatch_us(l.timing.dispatch_us);
    t->set_expert_us(l.timing.expert_us);
    t->set_combine_us(l.timing.combine_us);
    t->set_all_to_all_us(l.timing.all_to_all_us);
    t->set_total_us(l.timing.total_us);
    CopyToRepeated(l.timing.device_expert_us, t->mutable_device_expert_us());
  }
}

void ToProto(const Hello& m, pb::Hello* out) {
  out->set_engine_id(m.engine_id);
  out->set_seq(m.seq);
  out->set_schema_version(m.schema_version);
  out->set_backend(m.backend);
  out->set_num_layers(m.num_layers);
  out->set_num_experts(m.num_experts);
  out->set_num_shared_experts(m.num_shared_experts);
  out->set_num_replicas(m.num_replicas);
  out->set_num_devices(m.num_devices);
  out->set_hidden(m.hidden);
  out->set_epoch(m.epoch);
  ToProto(m.knobs, out->mutable_knobs());
  out->set_timestamp_ns(m.timestamp_ns);
  for (const LayerKnobs& lk : m.layer_knobs) {
    pb::LayerKnobs* p = out->add_layer_knobs();
    p->set_layer(lk.layer);
    ToProto(lk.knobs, p->mutable_knobs());
  }
}

void ToProto(const Heartbeat& m, pb::Heartbeat* out) {
  out->set_engine_id(m.engine_id);
  out->set_seq(m.seq);
  out->set_step(m.step);
  out->set_epoch(m.epoch);
  out->set_timestamp_ns(m.timestamp_ns);
}

void ToProto(const Command& m, pb::Command* out) {
  out->set_engine_id(m.engine_id);
  out->set_epoch(m.epoch);
  out->set_issued_ns(m.issued_ns);
  ToProto(m.knobs, out->mutable_knobs());
  for (const LayerKnobs& lk : m.layer_knobs) {
    pb::LayerKnobs* p = out->add_layer_knobs();
    p->set_layer(lk.layer);
    ToProto(lk.knobs, p->mutable_knobs());
  }
  out->set_reason(m.reason);
}

void ToProto(const Sync& m, pb::Sync* out) {
  out->set_engine_id(m.engine_id);
  out->set_step(m.step);
  out->set_timestamp_ns(m.timestamp_ns);
}

void ToProto(const Ack& m, pb::Ack* out) {
  out->set_engine_id(m.engine_id);
  out->set_epoch(m.epoch);
  out->set_applied(m.applied);
  out->set_error(m.error);
  out->set_applied_at_step(m.applied_at_step);
  out->set_timestamp_ns(m.timestamp_ns);
}

// ---------------------------------------------------------------------------
// protobuf -> C++ values. Array sizes were bounded by the parser (they cannot
// exceed the input size) and are checked against the limits afterwards.

template <typename T, typename Repeated>
std::vector<T> ToVector(const Repeated& from) {
  return std::vector<T>(from.begin(), from.end());
}

bool KnobsFromProto(const pb::KnobSet& p, KnobSet* out, Checker& c, std::string_view where) {
  if (p.has_top_k()) out->top_k = p.top_k();
  if (p.has_top_p()) out->top_p = p.top_p();
  if (p.has_k_min()) out->k_min = p.k_min();
  if (p.has_capacity_factor()) out->capacity_factor = p.capacity_factor();
  if (p.has_overflow_policy()) {
    // Proto3 enums are open: an unknown number survives parsing.
    if (!pb::OverflowPolicy_IsValid(p.overflow_policy())) {
      c.Fail(fmt::format("{}.overflow_policy has unknown value {}", where,
                         static_cast<int>(p.overflow_policy())));
      return false;
    }
    out->overflow_policy = static_cast<OverflowPolicy>(p.overflow_policy());
  }
  if (p.has_noise_std()) out->noise_std = p.noise_std();
  if (p.has_shortlist()) out->shortlist = p.shortlist();
  if (p.has_availability_weight()) out->availability_weight = p.availability_weight();
  if (p.has_expert_bias()) out->expert_bias = ToVector<float>(p.expert_bias().values());
  if (p.has_phy2log()) out->phy2log = ToVector<uint32_t>(p.phy2log().values());
  if (p.has_capacity_scope()) {
    if (!pb::CapacityScope_IsValid(p.capacity_scope())) {
      c.Fail(fmt::format("{}.capacity_scope has unknown value {}", where,
                         static_cast<int>(p.capacity_scope())));
      return false;
    }
    out->capacity_scope = static_cast<CapacityScope>(p.capacity_scope());
  }
  return true;
}

void FromProto(const pb::StepRecord& p, StepRecord* out, Checker& c) {
  out->engine_id = p.engine_id();
  out->seq = p.seq();
  out->step = p.step();
  out->timestamp_ns = p.timestamp_ns();
  out->epoch = p.epoch();
  out->timing_on_device = p.timing_on_device();
  out->step_us = p.step_us();
  out->telemetry_dropped = p.telemetry_dropped();
  out->placement_moved_bytes = p.placement_moved_bytes();
  out->placement_copy_us = p.placement_copy_us();
  out->placement_move_us = p.placement_move_us();
  out->await_sync = p.await_sync();
  out->layers.reserve(static_cast<size_t>(p.layers_size()));
  for (const pb::LayerRecord& l : p.layers()) {
    LayerRecord& r = out->layers.emplace_back();
    r.layer = l.layer();
    r.num_tokens = l.num_tokens();
    r.num_token_slots = l.num_token_slots();
    r.expert_tokens = ToVector<uint32_t>(l.expert_tokens());
    r.expert_demand = ToVector<uint32_t>(l.expert_demand());
    r.capacity = l.capacity();
    r.routed_on_device = l.routed_on_device();
    r.expert_rows = l.expert_rows();
    r.host_waits = l.host_waits();
    r.slot_tokens = ToVector<uint32_t>(l.slot_tokens());
    r.device_tokens = ToVector<uint32_t>(l.device_tokens());
    r.overflowed = l.overflowed();
    r.rerouted = l.rerouted();
    r.dropped = l.dropped();
    r.k_histogram = ToVector<uint32_t>(l.k_histogram());
    r.router_entropy = l.router_entropy();
    r.gate_mass = l.gate_mass();
    if (l.has_quality_error()) r.quality_error = l.quality_error();
    const pb::LayerTiming& t = l.timing();
    r.timing.router_us = t.router_us();
    r.timing.dispatch_us = t.dispatch_us();
    r.timing.expert_us = t.expert_us();
    r.timing.combine_us = t.combine_us();
    r.timing.all_to_all_us = t.all_to_all_us();
    r.timing.total_us = t.total_us();
    r.timing.device_expert_us = ToVector<double>(t.device_expert_us());
  }
}

void FromProto(const pb::Hello& p, Hello* out, Checker& c) {
  out->engine_id = p.engine_id();
  out->seq = p.seq();
  out->schema_version = p.schema_version();
  out->backend = p.backend();
  out->num_layers = p.num_layers();
  out->num_experts = p.num_experts();
  out->num_shared_experts = p.num_shared_experts();
  out->num_replicas = p.num_replicas();
  out->num_devices = p.num_devices();
  out->hidden = p.hidden();
  out->epoch = p.epoch();
  KnobsFromProto(p.knobs(), &out->knobs, c, "Hello.knobs");
  out->timestamp_ns = p.timestamp_ns();
  out->layer_knobs.reserve(static_cast<size_t>(p.layer_knobs_size()));
  for (int i = 0; i < p.layer_knobs_size() && c.ok(); ++i) {
    LayerKnobs& lk = out->layer_knobs.emplace_back();
    lk.layer = p.layer_knobs(i).layer();
    KnobsFromProto(p.layer_knobs(i).knobs(), &lk.knobs, c,
                   fmt::format("Hello.layer_knobs[{}].knobs", i));
  }
}

void FromProto(const pb::Heartbeat& p, Heartbeat* out, Checker& /*c*/) {
  out->engine_id = p.engine_id();
  out->seq = p.seq();
  out->step = p.step();
  out->epoch = p.epoch();
  out->timestamp_ns = p.timestamp_ns();
}

void FromProto(const pb::Command& p, Command* out, Checker& c) {
  out->engine_id = p.engine_id();
  out->epoch = p.epoch();
  out->issued_ns = p.issued_ns();
  KnobsFromProto(p.knobs(), &out->knobs, c, "Command.knobs");
  out->layer_knobs.reserve(static_cast<size_t>(p.layer_knobs_size()));
  for (int i = 0; i < p.layer_knobs_size() && c.ok(); ++i) {
    LayerKnobs& lk = out->layer_knobs.emplace_back();
    lk.layer = p.layer_knobs(i).layer();
    KnobsFromProto(p.layer_knobs(i).knobs(), &lk.knobs, c,
                   fmt::format("Command.layer_knobs[{}].knobs", i));
  }
  out->reason = p.reason();
}

void FromProto(const pb::Sync& p, Sync* out, Checker& /*c*/) {
  out->engine_id = p.engine_id();
  out->step = p.step();
  out->timestamp_ns = p.timestamp_ns();
}

void FromProto(const pb::Ack& p, Ack* out, Checker& /*c*/) {
  out->engine_id = p.engine_id();
  out->epoch = p.epoch();
  out->applied = p.applied();
  out->error = p.error();
  out->applied_at_step = p.applied_at_step();
  out->timestamp_ns = p.timestamp_ns();
}

template <typename T, typename P>
Result<Message> Convert(const P& p) {
  Checker c;
  T value;
  FromProto(p, &value, c);
  if (c.ok()) CheckMessage(c, value);
  if (!c.ok()) return Status::Corruption("telemetry decode: " + c.error());
  return Message(std::move(value));
}

Result<Message> DecodeImpl(std::string_view bytes) {
  if (bytes.empty()) return Status::Corruption("telemetry decode: empty message");
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return Status::Corruption(
        fmt::format("telemetry decode: message of {} bytes is too large", bytes.size()));
  }
  pb::Envelope envelope;
  if (!envelope.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::Corruption(fmt::format(
        "telemetry decode: {} bytes are not a valid moe.telemetry.v1.Envelope", bytes.size()));
  }
  if (envelope.schema_version() == 0) {
    return Status::Corruption("telemetry decode: envelope has no schema_version");
  }
  if (envelope.schema_version() != kSchemaVersion) {
    return Status::Unsupported(
        fmt::format("telemetry decode: schema major version {} is not supported (this build "
                    "speaks version {})",
                    envelope.schema_version(), kSchemaVersion));
  }
  switch (envelope.payload_case()) {
    case pb::Envelope::kStep:
      return Convert<StepRecord>(envelope.step());
    case pb::Envelope::kHello:
      return Convert<Hello>(envelope.hello());
    case pb::Envelope::kHeartbeat:
      return Convert<Heartbeat>(envelope.heartbeat());
    case pb::Envelope::kCommand:
      return Convert<Command>(envelope.command());
    case pb::Envelope::kAck:
      return Convert<Ack>(envelope.ack());
    case pb::Envelope::kSync:
      return Convert<Sync>(envelope.sync());
    case pb::Envelope::PAYLOAD_NOT_SET:
      break;
  }
  // A newer peer may send a payload type added after this build; it arrives
  // as an unknown field.
  if (!envelope.GetReflection()->GetUnknownFields(envelope).empty()) {
    return Status::Unsupported(
        "telemetry decode: envelope carries a payload type unknown to "
        "this build");
  }
  return Status::Corruption("telemetry decode: envelope has no payload");
}

}  // namespace

Result<std::string> Encode(const Message& message) {
  try {
    Checker c;
    std::visit([&c](const auto& m) { CheckMessage(c, m); }, message);
    if (!c.ok()) return Status::InvalidArgument("telemetry encode: " + c.error());

    pb::Envelope envelope;
    envelope.set_schema_version(kSchemaVersion);
    std::visit(
        [&envelope](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, StepRecord>) {
            ToProto(m, envelope.mutable_step());
          } else if constexpr (std::is_same_v<T, Hello>) {
            ToProto(m, envelope.mutable_hello());
          } else if constexpr (std::is_same_v<T, Heartbeat>) {
            ToProto(m, envelope.mutable_heartbeat());
          } else if constexpr (std::is_same_v<T, Command>) {
            ToProto(m, envelope.mutable_command());
          } else if constexpr (std::is_same_v<T, Ack>) {
            ToProto(m, envelope.mutable_ack());
          } else {
            static_assert(std::is_same_v<T, Sync>);
            ToProto(m, envelope.mutable_sync());
          }
        },
        message);
    std::string bytes;
    if (!envelope.SerializeToString(&bytes)) {
      return Status::Internal("telemetry encode: protobuf serialisation failed");
    }
    return bytes;
  } catch (const std::exception& e) {
    return Status::Internal(fmt::format("telemetry encode: {}", e.what()));
  }
}

Result<Message> Decode(std::string_view bytes) {
  try {
    return DecodeImpl(bytes);
  } catch (const std::exception& e) {
    // std::bad_alloc is the only exception protobuf can raise here.
    return Status::Internal(fmt::format("telemetry decode: {}", e.what()));
  }
}

}  // namespace moe::telemetry

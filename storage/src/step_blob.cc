#include "step_blob.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "moe/telemetry/load.h"

namespace moe::storage::internal {
namespace {

constexpr uint8_t kVersion = 1;
constexpr uint8_t kHasQuality = 1;
constexpr size_t kHeaderBytes = 1 + 4;
constexpr size_t kLayerBytes = 4 + 4 + 8 + 4 + 4 + 4 + 1 + 11 * 8;

static_assert(std::endian::native == std::endian::little,
              "step blobs are written in the host's byte order, which must be little-endian");

template <typename T>
void Put(T v, std::string* out) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out->append(bytes, sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Reads a varint at `*pos`; false when it runs off the end or past 64 bits.
bool GetVarint(std::string_view data, size_t* pos, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= data.size()) return false;
    auto byte = static_cast<uint8_t>(data[(*pos)++]);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

Status Corrupt(const StepRow& step, std::string_view blob, size_t size, std::string_view what) {
  return Status::Corruption(fmt::format("step {} of engine {}: {} blob of {} bytes: {}", step.step,
                                        step.engine_id, blob, size, what));
}

void PutLayer(const telemetry::LayerRecord& layer, std::string* out) {
  Put<uint32_t>(layer.layer, out);
  Put<uint32_t>(layer.num_tokens, out);
  Put<uint64_t>(layer.num_token_slots, out);
  Put<uint32_t>(layer.overflowed, out);
  Put<uint32_t>(layer.rerouted, out);
  Put<uint32_t>(layer.dropped, out);
  Put<uint8_t>(layer.quality_error ? kHasQuality : 0, out);
  const double drop_rate =
      layer.num_token_slots > 0
          ? static_cast<double>(layer.dropped) / static_cast<double>(layer.num_token_slots)
          : 0.0;
  Put<double>(drop_rate, out);
  Put<double>(telemetry::MaxOverMean(layer.expert_tokens), out);
  Put<double>(layer.router_entropy, out);
  Put<double>(layer.gate_mass, out);
  Put<double>(layer.quality_error.value_or(0.0), out);
  Put<double>(layer.timing.router_us, out);
  Put<double>(layer.timing.dispatch_us, out);
  Put<double>(layer.timing.expert_us, out);
  Put<double>(layer.timing.combine_us, out);
  Put<double>(layer.timing.all_to_all_us, out);
  Put<double>(layer.timing.total_us, out);
}

void GetLayer(const char* p, StepRow* row) {
  row->layer = Get<uint32_t>(p);
  row->num_tokens = Get<uint32_t>(p + 4);
  row->num_token_slots = Get<uint64_t>(p + 8);
  row->overflowed = Get<uint32_t>(p + 16);
  row->rerouted = Get<uint32_t>(p + 20);
  row->dropped = Get<uint32_t>(p + 24);
  const auto flags = Get<uint8_t>(p + 28);
  const char* r = p + 29;
  row->drop_rate = Get<double>(r);
  row->max_over_mean = Get<double>(r + 8);
  row->router_entropy = Get<double>(r + 16);
  row->gate_mass = Get<double>(r + 24);
  if ((flags & kHasQuality) != 0) {
    row->quality_error = Get<double>(r + 32);
  } else {
    row->quality_error.reset();
  }
  row->router_us = Get<double>(r + 40);
  row->dispatch_us = Get<double>(r + 48);
  row->expert_us = Get<double>(r + 56);
  row->combine_us = Get<double>(r + 64);
  row->all_to_all_us = Get<double>(r + 72);
  row->layer_us = Get<double>(r + 80);
}

}  // namespace

PackedStep PackStep(const telemetry::StepRecord& record) {
  PackedStep p;
  p.engine_id = record.engine_id;
  p.step = record.step;
  p.seq = record.seq;
  p.timestamp_ns = record.timestamp_ns;
  p.epoch = record.epoch;
  p.step_us = record.step_us;
  p.timing_on_device = record.timing_on_device;
  p.num_layers = static_cast<uint32_t>(record.layers.size());
  p.num_experts =
      record.layers.empty() ? 0 : static_cast<uint32_t>(record.layers[0].expert_tokens.size());
  p.layers.reserve(kHeaderBytes + record.layers.size() * kLayerBytes);
  Put<uint8_t>(kVersion, &p.layers);
  Put<uint32_t>(p.num_layers, &p.layers);
  size_t experts = 0;
  for (const telemetry::LayerRecord& layer : record.layers) {
    PutLayer(layer, &p.layers);
    experts += layer.expert_tokens.size();
  }
  p.loads.reserve(6 + record.layers.size() * 6 + experts * 3);
  Put<uint8_t>(kVersion, &p.loads);
  PutVarint(record.layers.size(), &p.loads);
  for (const telemetry::LayerRecord& layer : record.layers) {
    PutVarint(layer.layer, &p.loads);
    PutVarint(layer.expert_tokens.size(), &p.loads);
    for (uint32_t t : layer.expert_tokens)
      PutVarint(t, &p.loads);
  }
  return p;
}

Status UnpackLayers(std::string_view layers, const StepRow& step,
                    std::optional<uint32_t> only_layer,
                    const std::function<void(StepRow&)>& visit) {
  if (layers.size() < kHeaderBytes) return Corrupt(step, "layers", layers.size(), "truncated");
  if (static_cast<uint8_t>(layers[0]) != kVersion) {
    return Corrupt(step, "layers", layers.size(),
                   fmt::format("unknown format version {}", static_cast<uint8_t>(layers[0])));
  }
  const uint64_t num_layers = Get<uint32_t>(layers.data() + 1);
  if (layers.size() != kHeaderBytes + num_layers * kLayerBytes) {
    return Corrupt(step, "layers", layers.size(),
                   fmt::format("{} layers need {} bytes", num_layers,
                               kHeaderBytes + num_layers * kLayerBytes));
  }
  const char* first = layers.data() + kHeaderBytes;
  StepRow row = step;
  // Layers are normally stored in order, layer l at index l.
  if (only_layer && *only_layer < num_layers &&
      Get<uint32_t>(first + *only_layer * kLayerBytes) == *only_layer) {
    GetLayer(first + *only_layer * kLayerBytes, &row);
    visit(row);
    return Status::Ok();
  }
  for (uint64_t i = 0; i < num_layers; ++i) {
    const char* p = first + i * kLayerBytes;
    if (only_layer && Get<uint32_t>(p) != *only_layer) continue;
    GetLayer(p, &row);
    visit(row);
  }
  return Status::Ok();
}

Status UnpackLoads(std::string_view loads, const StepRow& step, std::optional<uint32_t> only_layer,
                   const std::function<void(uint32_t, const std::vector<uint64_t>&)>& visit) {
  auto corrupt = [&](std::string_view what) { return Corrupt(step, "loads", loads.size(), what); };
  if (loads.empty()) return corrupt("empty");
  if (static_cast<uint8_t>(loads[0]) != kVersion) {
    return corrupt(fmt::format("unknown format version {}", static_cast<uint8_t>(loads[0])));
  }
  size_t pos = 1;
  uint64_t num_layers = 0;
  if (!GetVarint(loads, &pos, &num_layers)) return corrupt("truncated layer count");
  std::vector<uint64_t> tokens;
  for (uint64_t i = 0; i < num_layers; ++i) {
    uint64_t layer = 0, num_experts = 0;
    if (!GetVarint(loads, &pos, &layer) || !GetVarint(loads, &pos, &num_experts) ||
        layer > UINT32_MAX || num_experts > loads.size() - pos) {
      return corrupt(fmt::format("truncated layer {}", i));
    }
    const bool wanted = !only_layer || *only_layer == layer;
    tokens.resize(wanted ? num_experts : 0);
    for (uint64_t e = 0; e < num_experts; ++e) {
      uint64_t v = 0;
      if (!GetVarint(loads, &pos, &v)) {
        return corrupt(fmt::format("truncated expert tokens of layer {}", layer));
      }
      if (wanted) tokens[e] = v;
    }
    if (wanted) visit(static_cast<uint32_t>(layer), tokens);
  }
  if (pos != loads.size()) return corrupt("trailing bytes");
  return Status::Ok();
}

}  // namespace moe::storage::internal

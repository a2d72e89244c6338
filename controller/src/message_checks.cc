#include "message_checks.h"

#include <fmt/format.h>

#include <fmt/ranges.h>

#include <vector>

#include "moe/controller/controller.h"
#include "moe/telemetry/codec.h"

namespace moe::controller {
namespace {

Refusal Refuse(std::string reason, std::string detail) {
  return Refusal{std::move(reason), std::move(detail)};
}

// An optional knob vector must be absent or `expected` long.
std::optional<Refusal> CheckKnobVectors(const telemetry::KnobSet& k, const telemetry::Hello& hello,
                                        uint32_t num_replicas, const std::string& where) {
  if (k.expert_bias && k.expert_bias->size() != hello.num_experts) {
    return Refuse("hello_mismatch",
                  fmt::format("{}.expert_bias has {} elements, not num_experts {}", where,
                              k.expert_bias->size(), hello.num_experts));
  }
  if (k.phy2log) {
    if (k.phy2log->size() != num_replicas) {
      return Refuse("hello_mismatch", fmt::format("{}.phy2log has {} slots, not num_replicas {}",
                                                  where, k.phy2log->size(), num_replicas));
    }
    for (size_t s = 0; s < k.phy2log->size(); ++s) {
      if ((*k.phy2log)[s] >= hello.num_experts) {
        return Refuse("hello_mismatch",
                      fmt::format("{}.phy2log[{}] = {} is not an expert below num_experts {}",
                                  where, s, (*k.phy2log)[s], hello.num_experts));
      }
    }
  }
  return std::nullopt;
}

}  // namespace

uint64_t MaxMessageEpoch() {
  return telemetry::kMaxEpoch - (uint64_t{1} << 32);
}

std::optional<Refusal> CheckHello(const telemetry::Hello& h, const LimitsOptions& limits) {
  auto over = [](const char* what, uint64_t value, uint64_t limit, const char* key) {
    return Refuse("shape_budget",
                  fmt::format("{} {} exceeds the limit {} ([limits] {})", what, value, limit, key));
  };
  const uint64_t layers = h.num_layers;
  if (h.num_layers > limits.max_layers) {
    return over("num_layers", h.num_layers, limits.max_layers, "max_layers");
  }
  if (h.num_experts > limits.max_experts) {
    return over("num_experts", h.num_experts, limits.max_experts, "max_experts");
  }
  if (layers * h.num_experts > limits.max_layer_experts) {
    return over("num_layers x num_experts", layers * h.num_experts, limits.max_layer_experts,
                "max_layer_experts");
  }
  if (h.num_replicas > limits.max_replicas) {
    return over("num_replicas", h.num_replicas, limits.max_replicas, "max_replicas");
  }
  if (layers * h.num_replicas > limits.max_layer_replicas) {
    return over("num_layers x num_replicas", layers * h.num_replicas, limits.max_layer_replicas,
                "max_layer_replicas");
  }
  if (h.num_devices > limits.max_devices) {
    return over("num_devices", h.num_devices, limits.max_devices, "max_devices");
  }
  if (h.epoch > MaxMessageEpoch()) {
    return Refuse("epoch_range", fmt::format("Hello.epoch {} is above {}, the highest that leaves "
                                             "room for the epochs to come",
                                             h.epoch, MaxMessageEpoch()));
  }
  const uint32_t num_replicas = h.num_replicas > 0 ? h.num_replicas : h.num_experts;
  if (auto r = CheckKnobVectors(h.knobs, h, num_replicas, "Hello.knobs")) return r;
  for (size_t i = 0; i < h.layer_knobs.size(); ++i) {
    const telemetry::LayerKnobs& lk = h.layer_knobs[i];
    if (lk.layer >= h.num_layers) {
      return Refuse("hello_mismatch", fmt::format("Hello.layer_knobs[{}].layer {} is not below "
                                                  "num_layers {}",
                                                  i, lk.layer, h.num_layers));
    }
    if (auto r = CheckKnobVectors(lk.knobs, h, num_replicas,
                                  fmt::format("Hello.layer_knobs[{}].knobs", i))) {
      return r;
    }
  }
  return std::nullopt;
}

std::optional<Refusal> CheckStep(const telemetry::StepRecord& step, const telemetry::Hello& h) {
  if (step.epoch > MaxMessageEpoch()) {
    return Refuse("epoch_range",
                  fmt::format("StepRecord.epoch {} is above {}", step.epoch, MaxMessageEpoch()));
  }
  const uint32_t num_replicas = h.num_replicas > 0 ? h.num_replicas : h.num_experts;
  auto length = [](const std::string& where, const char* field, size_t got, uint64_t want,
                   const char* declared, bool may_be_empty) -> std::optional<Refusal> {
    if (got == want || (may_be_empty && got == 0)) return std::nullopt;
    return Refuse("array_length", fmt::format("{}.{} has {} elements, not {} ({}{})", where, field,
                                              got, want, declared, may_be_empty ? " or none" : ""));
  };
  for (size_t i = 0; i < step.layers.size(); ++i) {
    const telemetry::LayerRecord& l = step.layers[i];
    const std::string where = fmt::format("StepRecord.layers[{}]", i);
    if (l.layer >= h.num_layers) {
      return Refuse("layer_index", fmt::format("{}.layer {} is not below the Hello's num_layers {}",
                                               where, l.layer, h.num_layers));
    }
    if (auto r = length(where, "expert_tokens", l.expert_tokens.size(), h.num_experts,
                        "num_experts", false)) {
      return r;
    }
    if (auto r = length(where, "expert_demand", l.expert_demand.size(), h.num_experts,
                        "num_experts", true)) {
      return r;
    }
    if (auto r = length(where, "slot_tokens", l.slot_tokens.size(), num_replicas, "num_replicas",
                        true)) {
      return r;
    }
    if (auto r = length(where, "device_tokens", l.device_tokens.size(), h.num_devices,
                        "num_devices", true)) {
      return r;
    }
    if (auto r = length(where, "timing.device_expert_us", l.timing.device_expert_us.size(),
                        h.num_devices, "num_devices", true)) {
      return r;
    }
    if (l.k_histogram.size() > uint64_t{h.num_experts} + 1) {
      return Refuse("array_length",
                    fmt::format("{}.k_histogram has {} elements, more than num_experts + 1 = {}",
                                where, l.k_histogram.size(), uint64_t{h.num_experts} + 1));
    }
  }
  return std::nullopt;
}

uint64_t RefusedTotal(const ControllerStats& stats) {
  uint64_t total = 0;
  for (const auto& [reason, n] : stats.refused_by_reason)
    total += n;
  return total;
}

std::string ReasonList(const std::map<std::string, uint64_t>& by_reason) {
  std::vector<std::string> parts;
  for (const auto& [reason, n] : by_reason) {
    if (n > 0) parts.push_back(fmt::format("{} {}", reason, n));
  }
  return parts.empty() ? std::string() : fmt::format(" ({})", fmt::join(parts, ", "));
}

Status Validate(const LimitsOptions& l) {
  auto bad = [](std::string_view field, std::string_view rule) {
    return Status::InvalidArgument(fmt::format("limits.{}: {}", field, rule));
  };
  if (l.max_layers == 0) return bad("max_layers", "must be > 0");
  if (l.max_experts == 0) return bad("max_experts", "must be > 0");
  if (l.max_replicas == 0) return bad("max_replicas", "must be > 0");
  if (l.max_devices == 0) return bad("max_devices", "must be > 0");
  if (l.max_layer_experts == 0) return bad("max_layer_experts", "must be > 0");
  if (l.max_layer_replicas == 0) return bad("max_layer_replicas", "must be > 0");
  // What one engine may declare stays far below what would exhaust memory:
  // a float per layer and expert is then at most 256 MiB.
  if (l.max_layer_experts > (uint64_t{1} << 26)) {
    return bad("max_layer_experts", "must be at most 67108864 (2^26)");
  }
  if (l.max_layer_replicas > (uint64_t{1} << 26)) {
    return bad("max_layer_replicas", "must be at most 67108864 (2^26)");
  }
  if (l.window_bytes < (uint64_t{1} << 20)) return bad("window_bytes", "must be at least 1 MiB");
  return Status::Ok();
}

}  // namespace moe::controller

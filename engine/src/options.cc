#include "moe/engine/options.h"

#include <cmath>
#include <sstream>
#include <string>

namespace moe::engine {

std::string_view OverflowPolicyName(OverflowPolicy policy) {
  switch (policy) {
    case OverflowPolicy::kDrop:
      return "drop";
    case OverflowPolicy::kReroute:
      return "reroute";
    case OverflowPolicy::kReplica:
      return "replica";
  }
  return "unknown";
}

std::string_view RoutingModeName(RoutingMode mode) {
  switch (mode) {
    case RoutingMode::kAuto:
      return "auto";
    case RoutingMode::kHost:
      return "host";
    case RoutingMode::kDevice:
      return "device";
  }
  return "unknown";
}

std::string_view CapacityScopeName(CapacityScope scope) {
  return scope == CapacityScope::kSlot ? "slot" : "expert";
}

std::string_view ScoreFunctionName(ScoreFunction fn) {
  return fn == ScoreFunction::kSigmoid ? "sigmoid" : "softmax";
}

void KnobPatch::ApplyTo(Knobs* knobs) const {
  if (top_k) knobs->top_k = *top_k;
  if (top_p) knobs->top_p = *top_p;
  if (k_min) knobs->k_min = *k_min;
  if (capacity_factor) knobs->capacity_factor = *capacity_factor;
  if (capacity_scope) knobs->capacity_scope = *capacity_scope;
  if (overflow_policy) knobs->overflow_policy = *overflow_policy;
  if (noise_std) knobs->noise_std = *noise_std;
  if (shortlist) knobs->shortlist = *shortlist;
  if (availability_weight) knobs->availability_weight = *availability_weight;
  if (expert_bias) knobs->expert_bias = *expert_bias;
  if (phy2log) knobs->phy2log = *phy2log;
}

uint32_t NumReplicas(const Options& options) {
  return options.parallel.num_replicas == 0 ? options.model.num_experts
                                            : options.parallel.num_replicas;
}

std::vector<uint32_t> DefaultPlacement(const Options& options) {
  std::vector<uint32_t> phy2log(NumReplicas(options));
  for (size_t s = 0; s < phy2log.size(); ++s)
    phy2log[s] = s % options.model.num_experts;
  return phy2log;
}

namespace {

Status Bad(const std::string& what) {
  return Status::InvalidArgument(what);
}

}  // namespace

Status ValidateOptions(const Options& options) {
  const ModelOptions& m = options.model;
  if (m.num_layers < 1) return Bad("model.num_layers must be >= 1");
  if (m.hidden < 1) return Bad("model.hidden must be >= 1");
  if (m.num_experts < 1) return Bad("model.num_experts must be >= 1");
  if (m.expert_ffn < 1) return Bad("model.expert_ffn must be >= 1");
  if (m.num_shared_experts > 0 && m.shared_ffn < 1) return Bad("model.shared_ffn must be >= 1");
  if (m.num_groups < 1 || m.num_experts % m.num_groups != 0) {
    return Bad("model.num_groups must divide num_experts (" + std::to_string(m.num_experts) +
               "), got " + std::to_string(m.num_groups));
  }
  if (m.topk_groups < 1 || m.topk_groups > m.num_groups) {
    return Bad("model.topk_groups must be in [1, num_groups], got " +
               std::to_string(m.topk_groups));
  }
  if (!(m.routed_scaling > 0)) return Bad("model.routed_scaling must be > 0");
  if (m.reference_top_k > m.num_experts) {
    return Bad("model.reference_top_k must be <= num_experts (" + std::to_string(m.num_experts) +
               "), got " + std::to_string(m.reference_top_k));
  }
  if (!(m.rms_eps > 0)) return Bad("model.rms_eps must be > 0");
  const ParallelOptions& p = options.parallel;
  if (p.num_devices < 1) return Bad("parallel.num_devices must be >= 1");
  const uint32_t num_replicas = NumReplicas(options);
  if (num_replicas < m.num_experts) {
    return Bad("parallel.num_replicas must be >= num_experts (" + std::to_string(m.num_experts) +
               "), got " + std::to_string(num_replicas));
  }
  if (num_replicas % p.num_devices != 0) {
    return Bad("parallel.num_replicas (" + std::to_string(num_replicas) +
               ") must be a multiple of num_devices (" + std::to_string(p.num_devices) + ")");
  }
  if (p.devices_per_node < 1) return Bad("parallel.devices_per_node must be >= 1");
  if (!(p.intra_node_gbps > 0) || !(p.inter_node_gbps > 0)) {
    return Bad("parallel bandwidths must be > 0");
  }
  if (options.quality_probe_every < 1) return Bad("quality_probe_every must be >= 1");
  if (!(options.max_capacity_padding >= 0)) return Bad("max_capacity_padding must be >= 0");
  return ValidateKnobs(options.knobs, options);
}

namespace {

template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace

Status CheckCommandBounds(const KnobPatch& patch, const Options& options) {
  const CommandBounds& b = options.command_bounds;
  auto out = [](const std::string& what) {
    return Status::OutOfRange(what + " (the engine's [command_bounds])");
  };
  if (const auto& cf = patch.capacity_factor; cf && *cf == 0) {
    if (!b.allow_unlimited_capacity) return out("capacity_factor 0 (unlimited) is not allowed");
  } else if (cf && !(*cf >= b.min_capacity_factor && *cf <= b.max_capacity_factor)) {
    return out(Cat("capacity_factor ", *cf, " outside [", b.min_capacity_factor, ", ",
                   b.max_capacity_factor, "]"));
  }
  const uint32_t max_top_k = b.max_top_k == 0 ? options.model.num_experts : b.max_top_k;
  if (patch.top_k && (*patch.top_k < b.min_top_k || *patch.top_k > max_top_k)) {
    return out(Cat("top_k ", *patch.top_k, " outside [", b.min_top_k, ", ", max_top_k, "]"));
  }
  if (patch.k_min && *patch.k_min < b.min_k_min) {
    return out(Cat("k_min ", *patch.k_min, " below ", b.min_k_min));
  }
  if (patch.top_p && *patch.top_p != 0 && !(*patch.top_p >= b.min_top_p)) {
    return out(
        Cat("top_p ", *patch.top_p, " below ", b.min_top_p, " (0, dynamic K off, is allowed)"));
  }
  if (patch.availability_weight && !(*patch.availability_weight <= b.max_availability_weight)) {
    return out(Cat("availability_weight ", *patch.availability_weight, " above ",
                   b.max_availability_weight));
  }
  if (patch.noise_std && !(*patch.noise_std <= b.max_noise_std)) {
    return out(Cat("noise_std ", *patch.noise_std, " above ", b.max_noise_std));
  }
  if (patch.expert_bias) {
    for (size_t e = 0; e < patch.expert_bias->size(); ++e) {
      const float v = (*patch.expert_bias)[e];
      if (!(std::abs(v) <= b.max_abs_expert_bias)) {
        return out(Cat("expert_bias[", e, "] = ", v, " beyond +-", b.max_abs_expert_bias));
      }
    }
  }
  return Status::Ok();
}

Status ValidateKnobs(const Knobs& k, const Options& options) {
  const uint32_t num_experts = options.model.num_experts;
  if (k.top_k < 1 || k.top_k > num_experts) {
    return Bad("top_k must be in [1, " + std::to_string(num_experts) + "], got " +
               std::to_string(k.top_k));
  }
  const ModelOptions& m = options.model;
  if (m.num_groups > 1 && k.top_k > m.topk_groups * (num_experts / m.num_groups)) {
    return Bad("top_k " + std::to_string(k.top_k) + " exceeds the experts of topk_groups groups");
  }
  if (!(k.top_p >= 0 && k.top_p <= 1)) {
    return Bad("top_p must be in [0, 1], got " + std::to_string(k.top_p));
  }
  if (k.k_min < 1 || k.k_min > k.top_k) {
    return Bad("k_min must be in [1, top_k=" + std::to_string(k.top_k) + "], got " +
               std::to_string(k.k_min));
  }
  if (!(k.capacity_factor >= 0 && k.capacity_factor <= 1000)) {
    return Bad("capacity_factor must be in [0, 1000], got " + std::to_string(k.capacity_factor));
  }
  if (!(k.noise_std >= 0 && k.noise_std <= 100)) {
    return Bad("noise_std must be in [0, 100], got " + std::to_string(k.noise_std));
  }
  if (k.shortlist != 0 && (k.shortlist < k.top_k || k.shortlist > num_experts)) {
    return Bad("shortlist must be 0 or in [top_k, " + std::to_string(num_experts) + "], got " +
               std::to_string(k.shortlist));
  }
  if (!(k.availability_weight >= 0 && k.availability_weight <= 1)) {
    return Bad("availability_weight must be in [0, 1], got " +
               std::to_string(k.availability_weight));
  }
  if (!k.expert_bias.empty() && k.expert_bias.size() != num_experts) {
    return Bad("expert_bias must have " + std::to_string(num_experts) + " entries, got " +
               std::to_string(k.expert_bias.size()));
  }
  for (float b : k.expert_bias) {
    if (!(b > -1e6f && b < 1e6f)) return Bad("expert_bias entries must be finite");
  }
  if (!k.phy2log.empty()) {
    const uint32_t num_replicas = NumReplicas(options);
    if (k.phy2log.size() != num_replicas) {
      return Bad("placement must have " + std::to_string(num_replicas) + " slots, got " +
                 std::to_string(k.phy2log.size()));
    }
    std::vector<bool> seen(num_experts, false);
    for (uint32_t e : k.phy2log) {
      if (e >= num_experts) {
        return Bad("placement names expert " + std::to_string(e) + " of " +
                   std::to_string(num_experts));
      }
      seen[e] = true;
    }
    for (uint32_t e = 0; e < num_experts; ++e) {
      if (!seen[e]) return Bad("placement has no replica of expert " + std::to_string(e));
    }
  }
  return Status::Ok();
}

}  // namespace moe::engine

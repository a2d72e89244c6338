#include "moe/engine/router.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "counter_rng.h"

namespace moe::engine {

uint32_t ExpertCapacity(double capacity_factor, int num_tokens, uint32_t top_k,
                        uint32_t num_experts) {
  if (capacity_factor <= 0) return 0;
  const double raw = capacity_factor * num_tokens * top_k / num_experts;
  return std::max<uint32_t>(1, static_cast<uint32_t>(std::ceil(raw - 1e-9)));
}

namespace {

// Capacity bookkeeping over physical slots.
class CapacityBook {
 public:
  CapacityBook(const std::vector<uint32_t>& phy2log, uint32_t num_experts, uint32_t capacity,
               CapacityScope scope)
      : capacity_(capacity),
        expert_cap_(num_experts, capacity),
        replicas_(num_experts),
        next_(num_experts, 0),
        expert_used_(num_experts, 0),
        slot_used_(phy2log.size(), 0),
        slot_cap_(phy2log.size(), 0) {
    for (size_t s = 0; s < phy2log.size(); ++s)
      replicas_[phy2log[s]].push_back(s);
    for (uint32_t e = 0; e < num_experts; ++e) {
      const auto& reps = replicas_[e];
      const uint32_t r = reps.size();
      uint64_t total = 0;
      for (uint32_t i = 0; i < r; ++i) {
        slot_cap_[reps[i]] = capacity == 0 ? 0 : ReplicaCapacity(capacity, scope, r, i);
        total += slot_cap_[reps[i]];
      }
      if (r > 0) expert_cap_[e] = static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX));
    }
  }

  // Claims the next round-robin replica of `e`; -1 when it is full.
  int32_t TryPrimary(int32_t e) {
    const auto& reps = replicas_[e];
    const int32_t s = reps[next_[e] % reps.size()];
    if (capacity_ != 0 && slot_used_[s] >= slot_cap_[s]) return -1;
    ++next_[e];
    Claim(e, s);
    return s;
  }

  // Claims the replica of `e` on `device` with the most room if it has one
  // there (else the next round-robin replica); -1 when the local ones are full.
  int32_t TryLocal(int32_t e, uint32_t device, uint32_t slots_per_device) {
    int32_t best = -1;
    int64_t best_room = -1;
    for (int32_t s : replicas_[e]) {
      if (static_cast<uint32_t>(s) / slots_per_device != device) continue;
      const int64_t room =
          capacity_ == 0 ? INT64_MAX - slot_used_[s] : int64_t{slot_cap_[s]} - slot_used_[s];
      if (room > best_room) {
        best = s;
        best_room = room;
      }
    }
    if (best < 0) return TryPrimary(e);
    if (best_room <= 0) return -1;
    Claim(e, best);
    return best;
  }

  // Claims the replica of `e` with the most room; -1 when all are full.
  int32_t TryAnyReplica(int32_t e) {
    int32_t best = -1;
    int64_t best_room = 0;
    for (int32_t s : replicas_[e]) {
      const int64_t room = static_cast<int64_t>(slot_cap_[s]) - slot_used_[s];
      if (room > best_room) {
        best = s;
        best_room = room;
      }
    }
    if (best >= 0) Claim(e, best);
    return best;
  }

  // Remaining fraction of `e`'s capacity, 1 when unlimited.
  double Availability(int32_t e) const {
    if (capacity_ == 0 || expert_cap_[e] == 0) return capacity_ == 0 ? 1.0 : 0.0;
    return std::max(0.0, 1.0 - static_cast<double>(expert_used_[e]) / expert_cap_[e]);
  }

  const std::vector<uint32_t>& slot_used() const { return slot_used_; }
  const std::vector<uint32_t>& expert_used() const { return expert_used_; }

 private:
  void Claim(int32_t e, int32_t s) {
    ++slot_used_[s];
    ++expert_used_[e];
  }

  uint32_t capacity_;
  std::vector<uint32_t> expert_cap_;  // room of each expert over all its replicas
  std::vector<std::vector<int32_t>> replicas_;
  std::vector<uint32_t> next_;
  std::vector<uint32_t> expert_used_;
  std::vector<uint32_t> slot_used_;
  std::vector<uint32_t> slot_cap_;
};

// Experts allowed by group-limited routing: the topk_groups groups with the
// best sum of their two best selection scores.
void LimitGroups(const std::vector<float>& selection, uint32_t num_groups, uint32_t topk_groups,
                 std::vector<char>* allowed) {
  const size_t num_experts = selection.size();
  std::fill(allowed->begin(), allowed->end(), 1);
  if (num_groups <= 1) return;
  const size_t group_size = num_experts / num_groups;
  std::vector<std::pair<float, uint32_t>> group_scores(num_groups);
  for (uint32_t g = 0; g < num_groups; ++g) {
    float best = -std::numeric_limits<float>::infinity();
    float second = -std::numeric_limits<float>::infinity();
    for (size_t e = g * group_size; e < (g + 1) * group_size; ++e) {
      if (selection[e] > best) {
        second = best;
        best = selection[e];
      } else if (selection[e] > second) {
        second = selection[e];
      }
    }
    group_scores[g] = {group_size >= 2 ? best + second : best, g};
  }
  std::sort(group_scores.begin(), group_scores.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::fill(allowed->begin(), allowed->end(), 0);
  for (uint32_t i = 0; i < topk_groups; ++i) {
    const uint32_t g = group_scores[i].second;
    std::fill(allowed->begin() + g * group_size, allowed->begin() + (g + 1) * group_size, 1);
  }
}

}  // namespace

Status ValidateSelection(const ExpertSelection& selection, int num_tokens, uint32_t num_experts) {
  if (selection.num_tokens() != num_tokens) {
    return Status::InvalidArgument("routing selection has " +
                                   std::to_string(selection.num_tokens()) + " tokens, the step " +
                                   std::to_string(num_tokens));
  }
  if (selection.offsets[0] != 0 || selection.offsets.back() != selection.experts.size()) {
    return Status::InvalidArgument("routing selection: offsets must run from 0 to experts.size()");
  }
  std::vector<char> seen(num_experts, 0);
  for (int t = 0; t < num_tokens; ++t) {
    const uint32_t begin = selection.offsets[t], end = selection.offsets[t + 1];
    const std::string where = "routing selection, token " + std::to_string(t) + ": ";
    if (end <= begin) return Status::InvalidArgument(where + "needs at least one expert");
    for (uint32_t i = begin; i < end; ++i) {
      const int32_t e = selection.experts[i];
      if (e < 0 || static_cast<uint32_t>(e) >= num_experts) {
        return Status::InvalidArgument(where + "expert " + std::to_string(e) +
                                       " out of range [0, " + std::to_string(num_experts) + ")");
      }
      if (seen[e]) return Status::InvalidArgument(where + "expert " + std::to_string(e) + " twice");
      seen[e] = 1;
    }
    for (uint32_t i = begin; i < end; ++i)
      seen[selection.experts[i]] = 0;
  }
  return Status::Ok();
}

ExpertSelection SelectionOf(const RoutingPlan& plan) {
  ExpertSelection out;
  out.offsets.reserve(plan.num_tokens + 1);
  out.offsets.push_back(0);
  for (int t = 0; t < plan.num_tokens; ++t) {
    for (int j = 0; j < plan.max_k; ++j) {
      const int32_t e = plan.chosen[static_cast<size_t>(t) * plan.max_k + j];
      if (e >= 0) out.experts.push_back(e);
    }
    out.offsets.push_back(static_cast<uint32_t>(out.experts.size()));
  }
  return out;
}

RoutingPlan Route(const float* scores, int num_tokens, const Options& options, const Knobs& knobs,
                  uint64_t seed, const ExpertSelection* forced) {
  const ModelOptions& model = options.model;
  const uint32_t num_experts = model.num_experts;
  const int max_k = static_cast<int>(knobs.top_k);
  const std::vector<uint32_t> phy2log =
      knobs.phy2log.empty() ? DefaultPlacement(options) : knobs.phy2log;

  RoutingPlan plan;
  plan.num_tokens = num_tokens;
  plan.max_k = max_k;
  const size_t num_slots = static_cast<size_t>(num_tokens) * max_k;
  plan.expert.assign(num_slots, -1);
  plan.chosen.assign(num_slots, -1);
  plan.slot.assign(num_slots, -1);
  plan.weight.assign(num_slots, 0.0f);
  plan.outcome.assign(num_slots, SlotOutcome::kUnused);
  plan.k_histogram.assign(max_k + 1, 0);
  plan.capacity = ExpertCapacity(knobs.capacity_factor, num_tokens, knobs.top_k, num_experts);

  CapacityBook book(phy2log, num_experts, plan.capacity, knobs.capacity_scope);
  const uint32_t num_devices = options.parallel.num_devices;
  const uint32_t slots_per_device = static_cast<uint32_t>(phy2log.size()) / num_devices;
  std::vector<float> selection(num_experts);
  std::vector<char> allowed(num_experts);
  std::vector<int32_t> candidates;
  std::vector<double> mixed(num_experts);
  std::vector<char> used_by_token(num_experts);
  double entropy_sum = 0;
  double gate_mass_sum = 0;

  for (int t = 0; t < num_tokens; ++t) {
    const float* s = scores + static_cast<size_t>(t) * num_experts;
    double total = 0;
    for (uint32_t e = 0; e < num_experts; ++e)
      total += s[e];
    if (!(total > 0)) total = 1;
    double entropy = 0;
    for (uint32_t e = 0; e < num_experts; ++e) {
      const double p = s[e] / total;
      if (p > 0) entropy -= p * std::log(p);
    }
    entropy_sum += entropy;

    // 1. Selection scores: bias and noise pick experts, never weigh them.
    // Noise is counter-based (counter_rng.h): the CUDA routing kernels draw
    // the same value for (seed, token, expert).
    for (uint32_t e = 0; e < num_experts; ++e) {
      float v = s[e];
      if (!knobs.expert_bias.empty()) v += knobs.expert_bias[e];
      if (knobs.noise_std > 0) {
        v += static_cast<float>(knobs.noise_std * CounterNormal(seed, static_cast<uint64_t>(t), e));
      }
      selection[e] = v;
    }
    int num_recorded = 0;  // replay: the token's recorded experts lead the candidates
    candidates.clear();
    if (forced != nullptr) {
      std::fill(allowed.begin(), allowed.end(), 1);
      for (uint32_t i = forced->offsets[t]; i < forced->offsets[t + 1]; ++i) {
        candidates.push_back(forced->experts[i]);
        allowed[forced->experts[i]] = 0;
      }
      num_recorded = static_cast<int>(candidates.size());
    } else {
      // 2. Group-limited routing.
      LimitGroups(selection, model.num_groups, model.topk_groups, &allowed);
    }
    // 3. Candidates by selection; shortlist and availability mixing. In
    // replay the rest, ranked by selection, are the reroute fallbacks.
    for (uint32_t e = 0; e < num_experts; ++e) {
      if (allowed[e]) candidates.push_back(static_cast<int32_t>(e));
    }
    std::stable_sort(candidates.begin() + num_recorded, candidates.end(),
                     [&](int32_t a, int32_t b) { return selection[a] > selection[b]; });
    if (forced == nullptr && knobs.shortlist > 0 && candidates.size() > knobs.shortlist) {
      candidates.resize(knobs.shortlist);
    }
    if (forced == nullptr && knobs.shortlist > 0 && knobs.availability_weight > 0) {
      const float hi = selection[candidates.front()];
      const float lo = selection[candidates.back()];
      const double span = hi - lo > 1e-12f ? hi - lo : 1.0;
      const double alpha = knobs.availability_weight;
      for (int32_t e : candidates) {
        mixed[e] = (1 - alpha) * (selection[e] - lo) / span + alpha * book.Availability(e);
      }
      std::stable_sort(candidates.begin(), candidates.end(),
                       [&](int32_t a, int32_t b) { return mixed[a] > mixed[b]; });
    }
    // 4. How many experts.
    int k = std::min<int>(max_k,
                          forced != nullptr ? num_recorded : static_cast<int>(candidates.size()));
    if (knobs.top_p > 0) {
      double mass = 0;
      int prefix = 0;
      while (prefix < k && mass < knobs.top_p - 1e-12)
        mass += s[candidates[prefix++]] / total;
      k = std::clamp<int>(prefix, std::min<int>(static_cast<int>(knobs.k_min), k), k);
    }
    plan.k_histogram[k]++;
    plan.num_token_slots += k;
    // 5. Gate weights.
    double denom = 1.0;
    if (model.normalize_gates) {
      denom = 0;
      for (int j = 0; j < k; ++j)
        denom += s[candidates[j]];
      if (!(denom > 0)) denom = 1.0;
    }
    const double scale = model.routed_scaling / denom;
    double mass = 0;
    for (int j = 0; j < k; ++j)
      mass += s[candidates[j]] / total;
    gate_mass_sum += mass;
    // 6. Capacity and overflow, in rank order.
    std::fill(used_by_token.begin(), used_by_token.end(), 0);
    for (int j = 0; j < k; ++j)
      used_by_token[candidates[j]] = 1;
    size_t next_candidate = k;
    for (int j = 0; j < k; ++j) {
      const size_t idx = static_cast<size_t>(t) * max_k + j;
      const int32_t e = candidates[j];
      plan.chosen[idx] = e;
      int32_t served_by = e;
      int32_t slot =
          knobs.overflow_policy == OverflowPolicy::kReplica
              ? book.TryLocal(e, static_cast<uint32_t>(t) % num_devices, slots_per_device)
              : book.TryPrimary(e);
      SlotOutcome outcome = SlotOutcome::kRouted;
      if (slot < 0) {
        plan.overflowed++;
        outcome = SlotOutcome::kDropped;
        if (knobs.overflow_policy == OverflowPolicy::kReplica) {
          slot = book.TryAnyReplica(e);
        } else if (knobs.overflow_policy == OverflowPolicy::kReroute) {
          while (slot < 0 && next_candidate < candidates.size()) {
            const int32_t alt = candidates[next_candidate++];
            if (used_by_token[alt]) continue;
            slot = book.TryPrimary(alt);
            if (slot >= 0) {
              served_by = alt;
              used_by_token[alt] = 1;
            }
          }
        }
        if (slot >= 0) outcome = SlotOutcome::kRerouted;
      }
      plan.outcome[idx] = outcome;
      if (outcome == SlotOutcome::kDropped) {
        plan.dropped++;
        continue;
      }
      if (outcome == SlotOutcome::kRerouted) plan.rerouted++;
      plan.expert[idx] = served_by;
      plan.slot[idx] = slot;
      plan.weight[idx] = static_cast<float>(s[served_by] * scale);
    }
  }
  plan.expert_tokens = book.expert_used();
  plan.expert_demand.assign(num_experts, 0);
  for (int32_t e : plan.chosen) {
    if (e >= 0) plan.expert_demand[e]++;
  }
  plan.slot_tokens = book.slot_used();
  if (num_tokens > 0) {
    plan.router_entropy = entropy_sum / num_tokens;
    plan.gate_mass = gate_mass_sum / num_tokens;
  }
  assert(plan.overflowed == plan.rerouted + plan.dropped);
  return plan;
}

DeviceRoutingCounterLayout DeviceRoutingCounters(uint32_t num_experts, uint32_t num_slots,
                                                 uint32_t num_devices, uint32_t top_k) {
  DeviceRoutingCounterLayout layout;
  layout.expert_tokens = DeviceRoutingCounterLayout::kHeader;
  layout.expert_demand = layout.expert_tokens + num_experts;
  layout.slot_tokens = layout.expert_demand + num_experts;
  layout.device_tokens = layout.slot_tokens + num_slots;
  layout.k_histogram = layout.device_tokens + num_devices;
  layout.transfer_rows = layout.k_histogram + top_k + 1;
  layout.total = layout.transfer_rows + static_cast<size_t>(num_devices) * num_devices;
  return layout;
}

void ApplyDeviceRoutingCounters(const uint32_t* counters, const DeviceRoutingCounterLayout& layout,
                                RoutingPlan* plan) {
  using L = DeviceRoutingCounterLayout;
  plan->num_token_slots = counters[L::kNumTokenSlots];
  plan->overflowed = counters[L::kOverflowed];
  plan->rerouted = counters[L::kRerouted];
  plan->dropped = counters[L::kDropped];
  plan->capacity = counters[L::kCapacity];
  plan->expert_tokens.assign(counters + layout.expert_tokens, counters + layout.expert_demand);
  plan->expert_demand.assign(counters + layout.expert_demand, counters + layout.slot_tokens);
  plan->slot_tokens.assign(counters + layout.slot_tokens, counters + layout.device_tokens);
  plan->k_histogram.assign(counters + layout.k_histogram, counters + layout.transfer_rows);
  if (plan->num_tokens > 0) {
    plan->router_entropy = std::bit_cast<float>(counters[L::kEntropySum]) / plan->num_tokens;
    plan->gate_mass = std::bit_cast<float>(counters[L::kGateMassSum]) / plan->num_tokens;
  }
}

std::vector<uint32_t> TransferRows(const RoutingPlan& plan, uint32_t num_slots,
                                   uint32_t num_devices) {
  std::vector<uint32_t> rows(static_cast<size_t>(num_devices) * num_devices, 0);
  const uint32_t slots_per_device = num_slots / num_devices;
  std::vector<char> seen(num_devices);
  for (int t = 0; t < plan.num_tokens; ++t) {
    const uint32_t src = static_cast<uint32_t>(t) % num_devices;
    std::fill(seen.begin(), seen.end(), 0);
    for (int j = 0; j < plan.max_k; ++j) {
      const int32_t s = plan.slot[static_cast<size_t>(t) * plan.max_k + j];
      if (s < 0) continue;
      const uint32_t dst = static_cast<uint32_t>(s) / slots_per_device;
      if (dst == src || seen[dst]) continue;
      seen[dst] = 1;
      rows[static_cast<size_t>(src) * num_devices + dst]++;
    }
  }
  return rows;
}

double ModelAllToAllUs(const std::vector<uint32_t>& transfer_rows, double row_bytes,
                       const ParallelOptions& parallel) {
  const uint32_t num_devices = parallel.num_devices;
  const uint32_t per_node = parallel.devices_per_node;
  std::vector<double> send_intra(num_devices, 0), send_inter(num_devices, 0);
  std::vector<double> recv_intra(num_devices, 0), recv_inter(num_devices, 0);
  for (uint32_t src = 0; src < num_devices; ++src) {
    for (uint32_t dst = 0; dst < num_devices; ++dst) {
      if (src == dst) continue;
      const double bytes = row_bytes * transfer_rows[static_cast<size_t>(src) * num_devices + dst];
      const bool same_node = src / per_node == dst / per_node;
      (same_node ? send_intra : send_inter)[src] += bytes;
      (same_node ? recv_intra : recv_inter)[dst] += bytes;
    }
  }
  double us = 0;
  for (uint32_t d = 0; d < num_devices; ++d) {
    const double intra = std::max(send_intra[d], recv_intra[d]);
    const double inter = std::max(send_inter[d], recv_inter[d]);
    us = std::max(
        us, intra / (parallel.intra_node_gbps * 1e3) + inter / (parallel.inter_node_gbps * 1e3));
  }
  return us;
}

Status CheckDeviceRoutingCovered(const Knobs& knobs) {
  if (knobs.shortlist > 0) return Status::Unsupported("device routing: shortlist (two-stage)");
  if (knobs.top_p > 0) return Status::Unsupported("device routing: top_p (dynamic K)");
  if (knobs.overflow_policy != OverflowPolicy::kDrop) {
    return Status::Unsupported("device routing: overflow policy " +
                               std::string(OverflowPolicyName(knobs.overflow_policy)));
  }
  return Status::Ok();
}

std::vector<int> CapacityLayoutOffsets(const std::vector<uint32_t>& phy2log, uint32_t num_experts,
                                       uint32_t capacity, int num_tokens, CapacityScope scope) {
  const uint32_t per_expert = std::min<uint32_t>(capacity, static_cast<uint32_t>(num_tokens));
  std::vector<uint32_t> replicas(num_experts, 0);
  for (uint32_t e : phy2log)
    replicas[e]++;
  std::vector<uint32_t> index(num_experts, 0);  // replicas of each expert seen so far
  std::vector<int> offsets(phy2log.size() + 1, 0);
  for (size_t s = 0; s < phy2log.size(); ++s) {
    const uint32_t e = phy2log[s];
    const uint32_t r = replicas[e];
    const uint32_t i = index[e]++;
    offsets[s + 1] = offsets[s] + static_cast<int>(ReplicaCapacity(per_expert, scope, r, i));
  }
  return offsets;
}

Status RouteIntoDeviceLayout(const DeviceRoutingArgs& args) {
  if (args.options == nullptr || args.knobs == nullptr || args.num_tokens < 0) {
    return Status::InvalidArgument("RouteOnDevice: options, knobs and num_tokens are required");
  }
  const Options& options = *args.options;
  MOE_RETURN_IF_ERROR(CheckDeviceRoutingCovered(*args.knobs));
  const uint32_t num_experts = options.model.num_experts;
  const uint32_t num_slots = NumReplicas(options);
  const uint32_t num_devices = options.parallel.num_devices;
  // Route exactly what the device would see: the placement and bias arrays.
  Knobs knobs = *args.knobs;
  knobs.phy2log.assign(args.phy2log, args.phy2log + num_slots);
  if (args.expert_bias != nullptr && !args.knobs->expert_bias.empty()) {
    knobs.expert_bias.assign(args.expert_bias, args.expert_bias + num_experts);
  } else {
    knobs.expert_bias.clear();
  }
  const uint32_t capacity =
      ExpertCapacity(knobs.capacity_factor, args.num_tokens, knobs.top_k, num_experts);
  if (args.capacity_layout && capacity == 0) {
    return Status::InvalidArgument("RouteOnDevice: the capacity layout needs a capacity > 0");
  }
  const RoutingPlan plan = Route(args.scores, args.num_tokens, options, knobs, args.seed);
  const size_t num_pairs = plan.slot.size();
  std::copy(plan.chosen.begin(), plan.chosen.end(), args.chosen);
  std::copy(plan.slot.begin(), plan.slot.end(), args.slot);
  std::copy(plan.weight.begin(), plan.weight.end(), args.weight);

  // The permutation: a counting sort of served token-slots by physical slot.
  std::vector<int> offsets(num_slots + 1, 0);
  if (args.capacity_layout) {
    offsets = CapacityLayoutOffsets(knobs.phy2log, num_experts, capacity, args.num_tokens,
                                    knobs.capacity_scope);
    std::fill(args.rows, args.rows + offsets.back(), -1);
    std::fill(args.row_weights, args.row_weights + offsets.back(), 0.0f);
  } else {
    for (uint32_t s = 0; s < num_slots; ++s)
      offsets[s + 1] = offsets[s] + static_cast<int>(plan.slot_tokens[s]);
  }
  std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
  uint32_t num_rows = 0;
  for (size_t i = 0; i < num_pairs; ++i) {
    const int32_t s = plan.slot[i];
    if (s < 0) continue;
    const int row = cursor[s]++;
    assert(row < offsets[s + 1]);
    args.rows[row] = static_cast<int32_t>(i / plan.max_k);
    args.row_weights[row] = plan.weight[i];
    ++num_rows;
  }

  using L = DeviceRoutingCounterLayout;
  const DeviceRoutingCounterLayout layout =
      DeviceRoutingCounters(num_experts, num_slots, num_devices, knobs.top_k);
  uint32_t* c = args.counters;
  std::fill(c, c + layout.total, 0u);
  c[L::kNumTokenSlots] = static_cast<uint32_t>(plan.num_token_slots);
  c[L::kOverflowed] = plan.overflowed;
  c[L::kRerouted] = plan.rerouted;
  c[L::kDropped] = plan.dropped;
  c[L::kCapacity] = plan.capacity;
  c[L::kNumRows] = num_rows;
  c[L::kEntropySum] =
      std::bit_cast<uint32_t>(static_cast<float>(plan.router_entropy * plan.num_tokens));
  c[L::kGateMassSum] =
      std::bit_cast<uint32_t>(static_cast<float>(plan.gate_mass * plan.num_tokens));
  std::copy(plan.expert_tokens.begin(), plan.expert_tokens.end(), c + layout.expert_tokens);
  std::copy(plan.expert_demand.begin(), plan.expert_demand.end(), c + layout.expert_demand);
  std::copy(plan.slot_tokens.begin(), plan.slot_tokens.end(), c + layout.slot_tokens);
  const uint32_t slots_per_device = num_slots / num_devices;
  for (uint32_t s = 0; s < num_slots; ++s)
    c[layout.device_tokens + s / slots_per_device] += plan.slot_tokens[s];
  std::copy(plan.k_histogram.begin(), plan.k_histogram.end(), c + layout.k_histogram);
  const std::vector<uint32_t> transfers = TransferRows(plan, num_slots, num_devices);
  std::copy(transfers.begin(), transfers.end(), c + layout.transfer_rows);
  return Status::Ok();
}

}  // namespace moe::engine

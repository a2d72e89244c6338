// The routing pipeline's features, one property each: every test would fail
// if its feature were missing.

#include <algorithm>
#include <bit>
#include <cmath>
#include <set>
#include <vector>

#include "moe/engine/model.h"
#include "moe/engine/router.h"
#include "test_util.h"

namespace moe::engine {
namespace {

// Softmax scores of random logits, [num_tokens, E].
std::vector<float> RandomScores(int num_tokens, int num_experts, uint64_t seed, double skew = 0.0) {
  NormalStream rng(seed);
  std::vector<float> scores(static_cast<size_t>(num_tokens) * num_experts);
  for (int t = 0; t < num_tokens; ++t) {
    float* row = scores.data() + static_cast<size_t>(t) * num_experts;
    double total = 0;
    for (int e = 0; e < num_experts; ++e) {
      // skew > 0 makes low expert ids hot.
      row[e] = static_cast<float>(std::exp(rng.Next() - skew * e / num_experts));
      total += row[e];
    }
    for (int e = 0; e < num_experts; ++e)
      row[e] = static_cast<float>(row[e] / total);
  }
  return scores;
}

Options RouterOptions(uint32_t num_experts = 16) {
  Options o = testing::SmallOptions();
  o.model.num_experts = num_experts;
  return o;
}

// Every requested token-slot has exactly one outcome and the counters agree.
void CheckConservation(const RoutingPlan& plan, CapacityScope scope = CapacityScope::kExpert) {
  uint64_t routed = 0, rerouted = 0, dropped = 0, unused = 0;
  for (SlotOutcome o : plan.outcome) {
    routed += o == SlotOutcome::kRouted;
    rerouted += o == SlotOutcome::kRerouted;
    dropped += o == SlotOutcome::kDropped;
    unused += o == SlotOutcome::kUnused;
  }
  CHECK(routed + rerouted + dropped == plan.num_token_slots);
  CHECK(routed + rerouted + dropped + unused == plan.outcome.size());
  CHECK(rerouted == plan.rerouted);
  CHECK(dropped == plan.dropped);
  CHECK(plan.overflowed == plan.rerouted + plan.dropped);
  uint64_t served = 0;
  for (uint32_t n : plan.expert_tokens)
    served += n;
  CHECK(served == routed + rerouted);
  if (plan.capacity > 0) {
    for (uint32_t n : plan.slot_tokens)
      CHECK(n <= plan.capacity);
    if (scope == CapacityScope::kExpert) {
      for (uint32_t n : plan.expert_tokens)
        CHECK(n <= plan.capacity);
    }
  }
}

TEST_CASE("Capacity formula", "[router]") {
  CHECK(ExpertCapacity(1.0, 256, 2, 16) == 32);
  CHECK(ExpertCapacity(1.25, 100, 2, 16) == 16);  // ceil(15.625)
  CHECK(ExpertCapacity(0.0, 100, 2, 16) == 0);
}

TEST_CASE("Gate weights: normalisation and routed scaling", "[router]") {
  Options o = RouterOptions();
  Knobs k;
  k.top_k = 4;
  k.capacity_factor = 0;
  const std::vector<float> scores = RandomScores(20, 16, 1);
  RoutingPlan plain = Route(scores.data(), 20, o, k, 0);
  o.model.normalize_gates = true;
  o.model.routed_scaling = 2.5;
  RoutingPlan norm = Route(scores.data(), 20, o, k, 0);
  for (int t = 0; t < 20; ++t) {
    double sum_plain = 0, sum_norm = 0;
    for (int j = 0; j < 4; ++j) {
      sum_plain += plain.weight[t * 4 + j];
      sum_norm += norm.weight[t * 4 + j];
    }
    CHECK(sum_plain < 0.999);
    CHECK(sum_norm == Approx(2.5).epsilon(1e-5));
  }
  CHECK(norm.expert == plain.expert);
}

TEST_CASE("Noisy top-k changes selection, never gate weights, and is seeded", "[router]") {
  Options o = RouterOptions();
  Knobs k;
  k.top_k = 2;
  k.capacity_factor = 0;
  const std::vector<float> scores = RandomScores(200, 16, 2);
  RoutingPlan clean = Route(scores.data(), 200, o, k, 7);
  k.noise_std = 0.05;
  RoutingPlan noisy = Route(scores.data(), 200, o, k, 7);
  RoutingPlan again = Route(scores.data(), 200, o, k, 7);
  RoutingPlan other = Route(scores.data(), 200, o, k, 8);
  CHECK(noisy.expert != clean.expert);
  CHECK(noisy.expert == again.expert);
  CHECK(noisy.expert != other.expert);
  for (size_t i = 0; i < noisy.expert.size(); ++i) {
    const int t = static_cast<int>(i / 2);
    CHECK(noisy.weight[i] == scores[t * 16 + noisy.expert[i]]);
  }
}

TEST_CASE("Expert bias changes selection, never gate weights", "[router]") {
  Options o = RouterOptions();
  Knobs k;
  k.top_k = 2;
  k.capacity_factor = 0;
  const std::vector<float> scores = RandomScores(100, 16, 3);
  k.expert_bias.assign(16, 0.0f);
  k.expert_bias[5] = 10.0f;  // everyone picks expert 5
  RoutingPlan plan = Route(scores.data(), 100, o, k, 0);
  CHECK(plan.expert_tokens[5] == 100);
  for (size_t i = 0; i < plan.expert.size(); ++i) {
    const int t = static_cast<int>(i / 2);
    CHECK(plan.weight[i] == scores[t * 16 + plan.expert[i]]);  // unbiased score
  }
}

TEST_CASE("Sigmoid scoring is supported end to end", "[router]") {
  Options o = testing::SmallOptions();
  o.model.score_function = ScoreFunction::kSigmoid;
  o.model.normalize_gates = true;
  auto engine = testing::MakeEngine(o);
  const std::vector<float> x = testing::RandomTokens(30, o.model.hidden, 2);
  auto stats = engine->Step({x.data(), 30, {}});
  REQUIRE(stats.ok());
  CHECK(stats->layers[0].num_token_slots == 60);
}

TEST_CASE("Group-limited routing keeps every token within topk_groups groups", "[router]") {
  Options o = RouterOptions(16);
  o.model.num_groups = 4;
  o.model.topk_groups = 2;
  Knobs k;
  k.top_k = 4;
  k.capacity_factor = 0;
  const std::vector<float> scores = RandomScores(300, 16, 4);
  RoutingPlan plan = Route(scores.data(), 300, o, k, 0);
  int tokens_over_two_groups_without_limit = 0;
  o.model.num_groups = 1;
  o.model.topk_groups = 1;
  RoutingPlan free_plan = Route(scores.data(), 300, o, k, 0);
  for (int t = 0; t < 300; ++t) {
    std::set<int> groups, free_groups;
    for (int j = 0; j < 4; ++j) {
      groups.insert(plan.expert[t * 4 + j] / 4);
      free_groups.insert(free_plan.expert[t * 4 + j] / 4);
    }
    CHECK(groups.size() <= 2);
    tokens_over_two_groups_without_limit += free_groups.size() > 2;
  }
  CHECK(tokens_over_two_groups_without_limit > 0);
}

TEST_CASE("Dynamic K: shortest prefix reaching top_p, within [k_min, top_k]", "[router]") {
  Options o = RouterOptions();
  Knobs k;
  k.top_k = 6;
  k.k_min = 2;
  k.top_p = 0.5;
  k.capacity_factor = 0;
  const std::vector<float> scores = RandomScores(400, 16, 5);
  RoutingPlan plan = Route(scores.data(), 400, o, k, 0);
  CheckConservation(plan);
  int distinct_k = 0;
  for (size_t kk = 0; kk < plan.k_histogram.size(); ++kk) {
    if (kk < 2) CHECK(plan.k_histogram[kk] == 0);
    distinct_k += plan.k_histogram[kk] > 0;
  }
  CHECK(distinct_k >= 2);
  CHECK(plan.num_token_slots < 400u * 6);
  for (int t = 0; t < 400; ++t) {
    double mass = 0;
    int used = 0;
    for (int j = 0; j < 6; ++j) {
      const int32_t e = plan.expert[t * 6 + j];
      if (e < 0) continue;
      mass += scores[t * 16 + e];
      ++used;
    }
    // Either the mass target is met, or K hit its upper bound.
    CHECK((mass >= 0.5 - 1e-6 || used == 6));
  }
}

TEST_CASE("Overflow policy reroute serves overflowed slots elsewhere", "[router]") {
  Options o = RouterOptions();
  Knobs k;
  k.top_k = 2;
  k.capacity_factor = 1.0;
  const std::vector<float> scores = RandomScores(256, 16, 6, /*skew=*/3.0);
  RoutingPlan drop = Route(scores.data(), 256, o, k, 0);
  CheckConservation(drop);
  REQUIRE(drop.dropped > 0);
  CHECK(drop.rerouted == 0);
  k.overflow_policy = OverflowPolicy::kReroute;
  RoutingPlan reroute = Route(scores.data(), 256, o, k, 0);
  CheckConservation(reroute);
  CHECK(reroute.rerouted > 0);
  CHECK(reroute.dropped < drop.dropped);
  for (size_t i = 0; i < reroute.outcome.size(); ++i) {
    if (reroute.outcome[i] == SlotOutcome::kRerouted) CHECK(reroute.expert[i] != reroute.chosen[i]);
  }
  // A token never gets the same expert twice.
  for (int t = 0; t < 256; ++t) {
    if (reroute.expert[t * 2] >= 0) CHECK(reroute.expert[t * 2] != reroute.expert[t * 2 + 1]);
  }
}

TEST_CASE("Replicas split an expert's tokens evenly; replica policy uses spare room", "[router]") {
  Options o = RouterOptions(4);
  o.parallel.num_replicas = 8;
  o.parallel.num_devices = 2;
  Knobs k;
  k.top_k = 1;
  k.capacity_factor = 0;
  k.phy2log = {0, 0, 1, 2, 0, 3, 1, 1};  // expert 0 x3, expert 1 x3
  const std::vector<float> scores = RandomScores(301, 4, 7, 2.0);
  RoutingPlan plan = Route(scores.data(), 301, o, k, 0);
  CheckConservation(plan);
  auto spread = [&](std::vector<int> slots) {
    uint32_t lo = UINT32_MAX, hi = 0;
    for (int s : slots) {
      lo = std::min(lo, plan.slot_tokens[s]);
      hi = std::max(hi, plan.slot_tokens[s]);
    }
    return hi - lo;
  };
  CHECK(plan.expert_tokens[0] > 2);
  CHECK(spread({0, 1, 4}) <= 1);
  CHECK(spread({2, 6, 7}) <= 1);

  // Capacity 5 per expert split 2/2/1 over expert 0's replicas (slots 0, 1
  // on device 0, slot 4 on device 1). The replica policy prefers the token's
  // local replica and spills to a sibling with room when it is full.
  k.capacity_factor = 5.0 * 4 / 20;  // capacity 5 for 20 tokens, K 1, E 4
  std::vector<float> hot(20 * 4, 0.0f);
  for (int t = 0; t < 20; ++t)
    hot[t * 4] = 1.0f;  // all want expert 0
  k.overflow_policy = OverflowPolicy::kDrop;
  RoutingPlan dropped = Route(hot.data(), 20, o, k, 0);
  CheckConservation(dropped);
  k.overflow_policy = OverflowPolicy::kReplica;
  RoutingPlan replica = Route(hot.data(), 20, o, k, 0);
  CheckConservation(replica);
  CHECK(replica.capacity == 5);
  CHECK(replica.expert_tokens[0] == 5);
  CHECK(dropped.expert_tokens[0] == 5);
  CHECK(replica.rerouted >= 1);
  CHECK(replica.dropped == dropped.dropped);
  for (int t = 0; t < 20; ++t) {
    // Odd tokens live on device 1, whose only replica of expert 0 is slot 4.
    if (replica.outcome[t] == SlotOutcome::kRouted) CHECK((replica.slot[t] == 4) == (t % 2 == 1));
  }
}

TEST_CASE("Two-stage routing trades affinity for availability", "[router]") {
  Options o = RouterOptions();
  Knobs k;
  k.top_k = 2;
  k.capacity_factor = 1.0;
  const std::vector<float> scores = RandomScores(256, 16, 8, 3.0);
  RoutingPlan base = Route(scores.data(), 256, o, k, 0);
  k.shortlist = 6;
  k.availability_weight = 0.0;
  RoutingPlan shortlist_only = Route(scores.data(), 256, o, k, 0);
  CHECK(shortlist_only.expert == base.expert);  // shortlist alone changes nothing
  k.availability_weight = 0.7;
  RoutingPlan mixed = Route(scores.data(), 256, o, k, 0);
  CheckConservation(mixed);
  CHECK(mixed.dropped < base.dropped);
  CHECK(mixed.gate_mass < base.gate_mass);  // paid for in affinity
}

TEST_CASE("Router statistics: entropy and gate mass", "[router]") {
  Options o = RouterOptions(4);
  Knobs k;
  k.top_k = 1;
  k.capacity_factor = 0;
  std::vector<float> uniform(4 * 10, 0.25f);
  RoutingPlan plan = Route(uniform.data(), 10, o, k, 0);
  CHECK(plan.router_entropy == Approx(std::log(4.0)));
  CHECK(plan.gate_mass == Approx(0.25));
  CHECK(plan.k_histogram[1] == 10);
}

// The rule the CUDA routing kernels implement instead of the sequential claim
// loop (engine/src/cuda/routing.cuh): with the drop policy, the m-th slot (in
// token order, then rank order) that chose expert e is kept iff m < capacity
// (or capacity is 0) and is served by e's replica number m % r (replicas in
// slot order).
TEST_CASE("Drop policy: arrival rank at the expert decides keep and replica", "[router]") {
  Options o = RouterOptions(8);
  o.parallel.num_replicas = 12;
  o.parallel.num_devices = 4;
  Knobs k;
  k.top_k = 2;
  k.noise_std = 0.05;
  k.phy2log = {3, 0, 1, 2, 0, 4, 5, 6, 7, 0, 3, 1};  // expert 0 x3, experts 1 and 3 x2
  for (CapacityScope scope : {CapacityScope::kExpert, CapacityScope::kSlot}) {
    for (double cf : {0.0, 0.5, 1.0, 1.5}) {
      INFO("capacity_factor=" << cf << " scope=" << CapacityScopeName(scope));
      k.capacity_factor = cf;
      k.capacity_scope = scope;
      const std::vector<float> scores = RandomScores(257, 8, 11, 1.5);
      const RoutingPlan plan = Route(scores.data(), 257, o, k, 3);
      CheckConservation(plan, scope);
      std::vector<std::vector<int32_t>> replicas(8);
      for (size_t s = 0; s < k.phy2log.size(); ++s)
        replicas[k.phy2log[s]].push_back(static_cast<int32_t>(s));
      std::vector<uint32_t> arrivals(8, 0);
      for (size_t i = 0; i < plan.chosen.size(); ++i) {
        const int32_t e = plan.chosen[i];
        REQUIRE(e >= 0);
        const uint32_t m = arrivals[e]++;
        const auto& reps = replicas[e];
        // Under the slot scope each of the r replicas holds the capacity.
        const uint32_t room =
            plan.capacity *
            (scope == CapacityScope::kSlot ? static_cast<uint32_t>(reps.size()) : 1);
        const bool kept = plan.capacity == 0 || m < room;
        CHECK(plan.slot[i] == (kept ? reps[m % reps.size()] : -1));
      }
    }
  }
}

TEST_CASE("Capacity scope slot: each replica of an expert adds its own room", "[router]") {
  Options o = RouterOptions(4);
  o.parallel.num_replicas = 8;
  o.parallel.num_devices = 2;
  Knobs k;
  k.top_k = 1;
  k.capacity_factor = 5.0 * 4 / 20;      // capacity 5 for 20 tokens, K 1, E 4
  k.phy2log = {0, 0, 1, 2, 0, 3, 1, 2};  // expert 0 has three replicas, expert 3 one
  std::vector<float> hot(20 * 4, 0.0f);
  for (int t = 0; t < 20; ++t)
    hot[t * 4 + (t < 18 ? 0 : 3)] = 1.0f;  // 18 want expert 0, 2 want expert 3

  const RoutingPlan expert = Route(hot.data(), 20, o, k, 0);
  CheckConservation(expert);
  CHECK(expert.capacity == 5);
  CHECK(expert.expert_tokens[0] == 5);  // 5 split 2/2/1 over the replicas
  CHECK(expert.dropped == 13);

  k.capacity_scope = CapacityScope::kSlot;
  const RoutingPlan slot = Route(hot.data(), 20, o, k, 0);
  CheckConservation(slot, CapacityScope::kSlot);
  CHECK(slot.capacity == 5);
  CHECK(slot.expert_tokens[0] == 15);  // 5 in each of the three replicas
  CHECK(slot.slot_tokens[0] == 5);
  CHECK(slot.slot_tokens[1] == 5);
  CHECK(slot.slot_tokens[4] == 5);
  CHECK(slot.expert_tokens[3] == 2);  // one replica, under its room
  CHECK(slot.dropped == 3);

  // Without replicas the two scopes are the same capacity.
  Knobs plain = k;
  plain.phy2log = {0, 1, 2, 3, 0, 1, 2, 3};  // every expert twice
  const RoutingPlan even_slot = Route(hot.data(), 20, o, plain, 0);
  plain.capacity_scope = CapacityScope::kExpert;
  const RoutingPlan even_expert = Route(hot.data(), 20, o, plain, 0);
  CHECK(even_slot.expert_tokens[0] == 10);
  CHECK(even_expert.expert_tokens[0] == 5);

  // The capacity layout reserves the room the scope gives.
  const std::vector<int> slot_rows =
      CapacityLayoutOffsets(k.phy2log, 4, 5, 20, CapacityScope::kSlot);
  const std::vector<int> expert_rows =
      CapacityLayoutOffsets(k.phy2log, 4, 5, 20, CapacityScope::kExpert);
  CHECK(slot_rows.back() == 8 * 5);
  CHECK(expert_rows.back() == 4 * 5);
  CHECK(ReplicaCapacity(5, CapacityScope::kExpert, 3, 0) == 2);
  CHECK(ReplicaCapacity(5, CapacityScope::kExpert, 3, 2) == 1);
  CHECK(ReplicaCapacity(5, CapacityScope::kSlot, 3, 2) == 5);
}

TEST_CASE("Device routing: counter layout and coverage", "[router]") {
  const DeviceRoutingCounterLayout layout = DeviceRoutingCounters(8, 12, 4, 2);
  CHECK(layout.expert_tokens == DeviceRoutingCounterLayout::kHeader);
  CHECK(layout.expert_demand == layout.expert_tokens + 8);
  CHECK(layout.slot_tokens == layout.expert_demand + 8);
  CHECK(layout.device_tokens == layout.slot_tokens + 12);
  CHECK(layout.k_histogram == layout.device_tokens + 4);
  CHECK(layout.transfer_rows == layout.k_histogram + 3);
  CHECK(layout.total == layout.transfer_rows + 16);

  std::vector<uint32_t> counters(layout.total);
  for (size_t i = 0; i < counters.size(); ++i)
    counters[i] = static_cast<uint32_t>(100 + i);
  counters[DeviceRoutingCounterLayout::kEntropySum] = std::bit_cast<uint32_t>(30.0f);
  counters[DeviceRoutingCounterLayout::kGateMassSum] = std::bit_cast<uint32_t>(15.0f);
  RoutingPlan plan;
  plan.num_tokens = 20;
  ApplyDeviceRoutingCounters(counters.data(), layout, &plan);
  CHECK(plan.router_entropy == 1.5);
  CHECK(plan.gate_mass == 0.75);
  CHECK(plan.num_token_slots == 100);
  CHECK(plan.overflowed == 101);
  CHECK(plan.rerouted == 102);
  CHECK(plan.dropped == 103);
  CHECK(plan.capacity == 104);
  CHECK(plan.expert_tokens.size() == 8);
  CHECK(plan.expert_tokens[0] == 100 + layout.expert_tokens);
  CHECK(plan.expert_demand[7] == 100 + layout.expert_demand + 7);
  CHECK(plan.slot_tokens.size() == 12);
  const uint32_t h = static_cast<uint32_t>(100 + layout.k_histogram);
  CHECK(plan.k_histogram == std::vector<uint32_t>{h, h + 1, h + 2});

  Knobs k;
  CHECK(CheckDeviceRoutingCovered(k).ok());
  k.shortlist = 4;
  CHECK(CheckDeviceRoutingCovered(k).code() == StatusCode::kUnsupported);
  k.shortlist = 0;
  k.top_p = 0.5;
  CHECK(CheckDeviceRoutingCovered(k).code() == StatusCode::kUnsupported);
  k.top_p = 0;
  k.overflow_policy = OverflowPolicy::kReplica;
  CHECK(CheckDeviceRoutingCovered(k).code() == StatusCode::kUnsupported);
  CHECK(FeatureName(Feature::kDeviceRouting) == "device_routing");
}

}  // namespace
}  // namespace moe::engine

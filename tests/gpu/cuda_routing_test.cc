// Device routing (Backend::RouteOnDevice) against the CPU routing pipeline
// on the same scores, knobs and seed: Route() itself (choices, slots, gate
// weights, counters, the engine's host counting sort, TransferRows()) and the
// CPU backend's RouteOnDevice (RouteIntoDeviceLayout, the reference of the
// device contract) in both permutation layouts, compact and capacity.
// Shapes: DeepSeek-like (256 experts, top-8, 8 groups / top-4 groups,
// sigmoid, bias, noise, routed scaling 2.5) and Mixtral-like (8 experts,
// top-2, softmax), capacity off and on (also tight, and larger than the token
// count), default placement and extra replicas (2 and 3 per expert, permuted
// placements) over 1 to 8 devices.
//
// Both sides see bitwise the same scores, so selection, group scores and gate
// weights are the same float/double arithmetic; only the noise's log/cos may
// differ in the last bit of a double, which survives the cast to float almost
// never. The contract is therefore exact equality of choices, slots, drops,
// the permutation and the counters; gate weights are held to 1e-6 relative,
// the entropy and gate-mass sums (float bits, summed in another order on the
// device) to 1e-5 relative.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gpu_test_util.h"
#include "moe/engine/backend.h"
#include "moe/engine/options.h"
#include "moe/engine/router.h"

namespace moe::engine {
namespace {

using gpu_testing::MakeBackend;
using gpu_testing::RandomFloats;
using gpu_testing::ToBackend;
using gpu_testing::ToHost;

// Scores [num_tokens, E] after `fn` from seeded logits (softmax in double).
std::vector<float> Scores(int num_tokens, int num_experts, ScoreFunction fn, uint64_t seed) {
  std::vector<float> scores = RandomFloats(static_cast<size_t>(num_tokens) * num_experts, seed);
  for (int t = 0; t < num_tokens; ++t) {
    float* row = scores.data() + static_cast<size_t>(t) * num_experts;
    if (fn == ScoreFunction::kSigmoid) {
      for (int e = 0; e < num_experts; ++e)
        row[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(row[e]))));
      continue;
    }
    const double max_logit = *std::max_element(row, row + num_experts);
    double total = 0;
    for (int e = 0; e < num_experts; ++e)
      total += std::exp(row[e] - max_logit);
    for (int e = 0; e < num_experts; ++e)
      row[e] = static_cast<float>(std::exp(row[e] - max_logit) / total);
  }
  return scores;
}

// RouteOnDevice()'s outputs, copied to the host.
struct DeviceResult {
  std::vector<int32_t> chosen, slot, rows;
  std::vector<float> weight, row_weights;
  std::vector<uint32_t> counters;
};

std::vector<uint32_t> Placement(const Options& options, const Knobs& knobs) {
  return knobs.phy2log.empty() ? DefaultPlacement(options) : knobs.phy2log;
}

// Rows of the capacity layout (0 without a capacity).
int CapacityLayoutRows(const Options& options, const Knobs& knobs, int num_tokens) {
  const uint32_t capacity =
      ExpertCapacity(knobs.capacity_factor, num_tokens, knobs.top_k, options.model.num_experts);
  if (capacity == 0) return 0;
  return CapacityLayoutOffsets(Placement(options, knobs), options.model.num_experts, capacity,
                               num_tokens, knobs.capacity_scope)
      .back();
}

DeviceRoutingCounterLayout CounterLayout(const Options& options, const Knobs& knobs) {
  return DeviceRoutingCounters(options.model.num_experts, NumReplicas(options),
                               options.parallel.num_devices, knobs.top_k);
}

// Runs `backend`'s RouteOnDevice() on buffers of that backend (the CPU
// backend's is the host reference). Returns its status; `out` is filled only
// when it is OK: the compact layout's first kNumRows rows, or every row of the
// capacity layout.
Status RouteOnBackend(Backend& backend, const std::vector<float>& scores, int num_tokens,
                      const Options& options, const Knobs& knobs, uint64_t seed,
                      bool capacity_layout, DeviceResult* out) {
  const std::vector<uint32_t> placement = Placement(options, knobs);
  const std::vector<int32_t> phy2log(placement.begin(), placement.end());
  const size_t num_slots = static_cast<size_t>(num_tokens) * knobs.top_k;
  const size_t layout_rows = static_cast<size_t>(CapacityLayoutRows(options, knobs, num_tokens));
  const size_t row_room = std::max(num_slots, layout_rows) + 1;
  const DeviceRoutingCounterLayout layout = CounterLayout(options, knobs);
  auto d_scores = ToBackend(backend, scores);
  auto d_bias = ToBackend(
      backend, knobs.expert_bias.empty() ? std::vector<float>(1, 0.0f) : knobs.expert_bias);
  auto d_phy2log = ToBackend(backend, phy2log);
  // Filled with garbage so that anything left unwritten shows.
  auto d_chosen = ToBackend(backend, std::vector<int32_t>(num_slots, 12345));
  auto d_slot = ToBackend(backend, std::vector<int32_t>(num_slots, 12345));
  auto d_weight = ToBackend(backend, std::vector<float>(num_slots, -7.0f));
  auto d_rows = ToBackend(backend, std::vector<int32_t>(row_room, -5));
  auto d_row_weights = ToBackend(backend, std::vector<float>(row_room, -7.0f));
  auto d_counters = ToBackend(backend, std::vector<uint32_t>(layout.total, 0xdeadbeefu));

  DeviceRoutingArgs args;
  args.options = &options;
  args.knobs = &knobs;
  args.seed = seed;
  args.num_tokens = num_tokens;
  args.scores = d_scores->floats();
  args.expert_bias = knobs.expert_bias.empty() ? nullptr : d_bias->floats();
  args.phy2log = d_phy2log->ints();
  args.chosen = d_chosen->ints();
  args.slot = d_slot->ints();
  args.weight = d_weight->floats();
  args.capacity_layout = capacity_layout;
  args.rows = d_rows->ints();
  args.row_weights = d_row_weights->floats();
  args.counters = static_cast<uint32_t*>(d_counters->data());
  const Status status = backend.RouteOnDevice(args);
  if (!status.ok()) return status;

  out->counters =
      ToHost<uint32_t>(backend, *d_counters, layout.total);  // the one copy a step needs
  out->chosen = ToHost<int32_t>(backend, *d_chosen, num_slots);
  out->slot = ToHost<int32_t>(backend, *d_slot, num_slots);
  out->weight = ToHost<float>(backend, *d_weight, num_slots);
  const uint32_t num_rows = out->counters[DeviceRoutingCounterLayout::kNumRows];
  REQUIRE(num_rows <= num_slots);
  const size_t rows = capacity_layout ? layout_rows : num_rows;
  out->rows = ToHost<int32_t>(backend, *d_rows, row_room);
  out->row_weights = ToHost<float>(backend, *d_row_weights, row_room);
  // Nothing past the layout is touched.
  CHECK(out->rows[rows] == -5);
  CHECK(out->row_weights[rows] == -7.0f);
  out->rows.resize(rows);
  out->row_weights.resize(rows);
  return Status::Ok();
}

DeviceResult MustRoute(Backend& backend, const std::vector<float>& scores, int num_tokens,
                       const Options& options, const Knobs& knobs, uint64_t seed,
                       bool capacity_layout) {
  DeviceResult out;
  const Status status =
      RouteOnBackend(backend, scores, num_tokens, options, knobs, seed, capacity_layout, &out);
  INFO(backend.name() << ": " << status.ToString());
  REQUIRE(status.ok());
  return out;
}

void CheckWeights(const std::vector<float>& got, const std::vector<float>& ref) {
  REQUIRE(got.size() == ref.size());
  size_t num_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = 1e-6 * std::max(1.0, std::fabs(static_cast<double>(ref[i])));
    if (!(std::fabs(static_cast<double>(got[i]) - ref[i]) <= tol)) ++num_bad;
  }
  CHECK(num_bad == 0);
}

float FloatBits(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

void CheckSum(uint32_t got_bits, double ref, const char* what) {
  const double got = FloatBits(got_bits);
  INFO(what << ": got " << got << ", reference " << ref);
  CHECK(std::isfinite(got));
  CHECK(std::fabs(got - ref) <= 1e-5 * std::max(1.0, std::fabs(ref)));
}

// The permutation the engine builds on the host from a plan: served
// token-slots sorted by physical slot, in token-slot order within a slot,
// slot s starting at offsets[s]; rows up to offsets[s + 1] are padding.
void HostPermutation(const RoutingPlan& plan, const std::vector<int>& offsets,
                     std::vector<int32_t>* rows, std::vector<float>* row_weights) {
  rows->assign(offsets.back(), -1);
  row_weights->assign(offsets.back(), 0.0f);
  std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
  for (size_t i = 0; i < plan.slot.size(); ++i) {
    if (plan.slot[i] < 0) continue;
    const int pos = cursor[plan.slot[i]]++;
    REQUIRE(pos < offsets[plan.slot[i] + 1]);
    (*rows)[pos] = static_cast<int32_t>(i / plan.max_k);
    (*row_weights)[pos] = plan.weight[i];
  }
}

// Route(), the CPU backend's RouteOnDevice() and the CUDA one agree on
// everything device routing produces, in `capacity_layout`'s layout.
void CompareLayout(Backend& cpu, Backend& gpu, const std::vector<float>& scores,
                   const RoutingPlan& plan, const Options& options, const Knobs& knobs,
                   int num_tokens, uint64_t seed, bool capacity_layout) {
  INFO((capacity_layout ? "capacity layout" : "compact layout"));
  const DeviceResult dev =
      MustRoute(gpu, scores, num_tokens, options, knobs, seed, capacity_layout);
  const DeviceResult ref =
      MustRoute(cpu, scores, num_tokens, options, knobs, seed, capacity_layout);

  CHECK(dev.chosen == plan.chosen);
  CHECK(dev.slot == plan.slot);
  CheckWeights(dev.weight, plan.weight);
  CHECK(ref.chosen == plan.chosen);  // the reference is Route() itself
  CHECK(ref.slot == plan.slot);

  // The permutation: the engine's host counting sort, and the reference.
  const uint32_t num_phys = NumReplicas(options);
  std::vector<int> offsets(num_phys + 1, 0);
  if (capacity_layout) {
    offsets = CapacityLayoutOffsets(Placement(options, knobs), options.model.num_experts,
                                    plan.capacity, num_tokens);
    REQUIRE(offsets.size() == num_phys + 1);
  } else {
    for (uint32_t s = 0; s < num_phys; ++s)
      offsets[s + 1] = offsets[s] + static_cast<int>(plan.slot_tokens[s]);
  }
  std::vector<int32_t> rows;
  std::vector<float> row_weights;
  HostPermutation(plan, offsets, &rows, &row_weights);
  CHECK(dev.rows == rows);
  CheckWeights(dev.row_weights, row_weights);
  CHECK(dev.rows == ref.rows);
  CheckWeights(dev.row_weights, ref.row_weights);
  if (capacity_layout) {  // padding: token -1 with weight exactly 0
    size_t num_bad = 0;
    for (uint32_t s = 0; s < num_phys; ++s) {
      for (int row = offsets[s]; row < offsets[s + 1]; ++row) {
        const bool padding = row >= offsets[s] + static_cast<int>(plan.slot_tokens[s]);
        if (padding && (dev.rows[row] != -1 || dev.row_weights[row] != 0.0f)) ++num_bad;
        if (!padding && dev.rows[row] < 0) ++num_bad;
      }
    }
    CHECK(num_bad == 0);
  }

  // Counters: every entry but the two float sums exactly, as the reference.
  using L = DeviceRoutingCounterLayout;
  const DeviceRoutingCounterLayout layout = CounterLayout(options, knobs);
  REQUIRE(dev.counters.size() == layout.total);
  REQUIRE(ref.counters.size() == layout.total);
  for (size_t i = 0; i < layout.total; ++i) {
    if (i == L::kEntropySum || i == L::kGateMassSum) continue;
    INFO("counter " << i << " of " << layout.total << " (transfer rows from "
                    << layout.transfer_rows << ")");
    CHECK(dev.counters[i] == ref.counters[i]);
  }
  RoutingPlan got;
  got.num_tokens = num_tokens;
  ApplyDeviceRoutingCounters(dev.counters.data(), layout, &got);
  CHECK(got.capacity == plan.capacity);
  CHECK(got.num_token_slots == plan.num_token_slots);
  CHECK(got.overflowed == plan.overflowed);
  CHECK(got.rerouted == plan.rerouted);
  CHECK(got.dropped == plan.dropped);
  CHECK(got.expert_tokens == plan.expert_tokens);
  CHECK(got.expert_demand == plan.expert_demand);
  CHECK(got.slot_tokens == plan.slot_tokens);
  CHECK(got.k_histogram == plan.k_histogram);
  const uint32_t num_devices = options.parallel.num_devices;
  const uint32_t per_device = num_phys / num_devices;
  uint32_t num_served = 0;
  for (uint32_t d = 0; d < num_devices; ++d) {
    uint32_t served = 0;
    for (uint32_t s = d * per_device; s < (d + 1) * per_device; ++s)
      served += plan.slot_tokens[s];
    CHECK(dev.counters[layout.device_tokens + d] == served);
    num_served += served;
  }
  CHECK(dev.counters[L::kNumRows] == num_served);
  const std::vector<uint32_t> transfers = TransferRows(plan, num_phys, num_devices);
  CHECK(std::vector<uint32_t>(dev.counters.begin() + layout.transfer_rows,
                              dev.counters.begin() + layout.transfer_rows + transfers.size()) ==
        transfers);
  CheckSum(dev.counters[L::kEntropySum], plan.router_entropy * num_tokens, "entropy sum");
  CheckSum(dev.counters[L::kGateMassSum], plan.gate_mass * num_tokens, "gate mass sum");
  CheckSum(dev.counters[L::kEntropySum], FloatBits(ref.counters[L::kEntropySum]),
           "entropy sum vs the CPU backend");
  CheckSum(dev.counters[L::kGateMassSum], FloatBits(ref.counters[L::kGateMassSum]),
           "gate mass sum vs the CPU backend");
  CHECK(std::fabs(got.router_entropy - plan.router_entropy) <=
        1e-5 * std::max(1.0, plan.router_entropy));
  CHECK(std::fabs(got.gate_mass - plan.gate_mass) <= 1e-5);

  // Deterministic: a second run is bitwise the first.
  const DeviceResult again =
      MustRoute(gpu, scores, num_tokens, options, knobs, seed, capacity_layout);
  CHECK(again.chosen == dev.chosen);
  CHECK(again.slot == dev.slot);
  CHECK(again.weight == dev.weight);
  CHECK(again.rows == dev.rows);
  CHECK(again.row_weights == dev.row_weights);
  CHECK(again.counters == dev.counters);
}

// Both layouts (the capacity one when there is a capacity; without one both
// backends refuse it with kInvalidArgument).
void CompareWithCpu(const Options& options, const Knobs& knobs, int num_tokens, uint64_t seed) {
  INFO("tokens=" << num_tokens << " seed=" << seed << " capacity_factor=" << knobs.capacity_factor
                 << " noise=" << knobs.noise_std << " devices=" << options.parallel.num_devices
                 << " slots=" << NumReplicas(options));
  REQUIRE(ValidateOptions(options).ok());
  REQUIRE(ValidateKnobs(knobs, options).ok());
  const auto cpu = MakeBackend("cpu");
  const auto gpu = MakeBackend("cuda");
  REQUIRE(gpu->Supports(Feature::kDeviceRouting));
  const std::vector<float> scores = Scores(num_tokens, static_cast<int>(options.model.num_experts),
                                           options.model.score_function, seed);
  const RoutingPlan plan = Route(scores.data(), num_tokens, options, knobs, seed);
  CompareLayout(*cpu, *gpu, scores, plan, options, knobs, num_tokens, seed, false);
  if (plan.capacity > 0) {
    CompareLayout(*cpu, *gpu, scores, plan, options, knobs, num_tokens, seed, true);
  } else {
    DeviceResult unused;
    for (Backend* b : {cpu.get(), gpu.get()}) {
      INFO(b->name());
      CHECK(RouteOnBackend(*b, scores, num_tokens, options, knobs, seed, true, &unused).code() ==
            StatusCode::kInvalidArgument);
    }
  }
}

Options DeepSeekLike() {
  Options o;
  o.model.num_experts = 256;
  o.model.score_function = ScoreFunction::kSigmoid;
  o.model.normalize_gates = true;
  o.model.routed_scaling = 2.5;
  o.model.num_groups = 8;
  o.model.topk_groups = 4;
  o.parallel.num_devices = 8;
  return o;
}

Knobs DeepSeekKnobs() {
  Knobs k;
  k.top_k = 8;
  k.noise_std = 0.01;
  k.expert_bias = RandomFloats(256, 77, 0.02);
  return k;
}

TEST_CASE("Device routing matches Route(): DeepSeek-like", "[cuda][routing]") {
  for (double cf : {0.0, 1.0, 1.25}) {
    INFO("capacity_factor=" << cf);
    Options o = DeepSeekLike();
    Knobs k = DeepSeekKnobs();
    k.capacity_factor = cf;
    CompareWithCpu(o, k, 512, 31);
    CompareWithCpu(o, k, 37, 32);  // odd token count
  }
}

TEST_CASE("Device routing matches Route(): DeepSeek-like with replicas", "[cuda][routing]") {
  Options o = DeepSeekLike();
  o.parallel.num_replicas = 288;  // 32 extra slots: experts 0..15 get two more each
  Knobs k = DeepSeekKnobs();
  k.phy2log.resize(288);
  for (uint32_t s = 0; s < 288; ++s)
    k.phy2log[s] = s < 256 ? (s * 37) % 256 : (s - 256) % 16;
  for (double cf : {0.0, 0.8, 1.0}) {
    INFO("capacity_factor=" << cf);
    k.capacity_factor = cf;
    CompareWithCpu(o, k, 700, 41);
  }
}

TEST_CASE("Device routing matches Route(): Mixtral-like", "[cuda][routing]") {
  Options o;
  o.model.num_experts = 8;
  o.model.score_function = ScoreFunction::kSoftmax;
  o.parallel.num_devices = 4;
  Knobs k;
  k.top_k = 2;
  for (double noise : {0.0, 0.02}) {
    for (double cf : {0.0, 1.0, 1.25}) {
      INFO("noise=" << noise << " capacity_factor=" << cf);
      k.noise_std = noise;
      k.capacity_factor = cf;
      k.phy2log.clear();
      o.parallel.num_replicas = 0;
      CompareWithCpu(o, k, 1000, 51);
      // 12 slots over 4 devices: experts 0..3 have two replicas.
      o.parallel.num_replicas = 12;
      k.phy2log = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3};
      CompareWithCpu(o, k, 1000, 52);
      o.model.normalize_gates = !o.model.normalize_gates;
      CompareWithCpu(o, k, 333, 53);
    }
  }
}

TEST_CASE("Device routing matches Route(): tight and loose capacity, three replicas per expert",
          "[cuda][routing]") {
  // 24 slots over 3 devices: each of the 8 experts has three replicas, spread
  // by a permuted placement; K = 3 of 8, so tokens often span devices.
  Options o;
  o.model.num_experts = 8;
  o.model.score_function = ScoreFunction::kSoftmax;
  o.parallel.num_devices = 3;
  o.parallel.num_replicas = 24;
  Knobs k;
  k.top_k = 3;
  k.expert_bias = RandomFloats(8, 5, 0.05);
  k.phy2log.resize(24);
  for (uint32_t s = 0; s < 24; ++s)
    k.phy2log[s] = (s * 5) % 8;
  for (uint64_t seed : {61, 62, 63}) {
    // 0.3: most slots dropped; 8: capacity above the token count (c = T).
    for (double cf : {0.3, 1.0, 2.0, 8.0}) {
      k.capacity_factor = cf;
      k.noise_std = seed == 62 ? 0.05 : 0.0;
      // Capacity per slot: a replica adds room (seed 63 only, to keep it short).
      k.capacity_scope = seed == 63 ? CapacityScope::kSlot : CapacityScope::kExpert;
      for (int num_tokens : {1, 5, 97}) {
        CompareWithCpu(o, k, num_tokens, seed);
      }
    }
  }
}

TEST_CASE("Device routing matches Route(): groups, extra replicas, 1 and 2 devices",
          "[cuda][routing]") {
  Options o;
  o.model.num_experts = 64;
  o.model.score_function = ScoreFunction::kSigmoid;
  o.model.normalize_gates = true;
  o.model.routed_scaling = 2.5;
  o.model.num_groups = 8;
  o.model.topk_groups = 3;
  Knobs k;
  k.top_k = 6;
  k.noise_std = 0.02;
  k.expert_bias = RandomFloats(64, 9, 0.03);
  for (uint32_t devices : {1u, 2u}) {
    o.parallel.num_devices = devices;
    o.parallel.num_replicas = 80;  // 16 extra slots: experts 48..63 get a second replica
    k.phy2log.resize(80);
    for (uint32_t s = 0; s < 80; ++s)
      k.phy2log[s] = s < 64 ? (s * 13 + 7) % 64 : 48 + (s - 64);
    for (double cf : {0.0, 0.5, 1.0, 1.5}) {
      k.capacity_factor = cf;
      CompareWithCpu(o, k, 256, 71 + devices);
      CompareWithCpu(o, k, 33, 73 + devices);
    }
  }
}

TEST_CASE("Device routing refuses what it does not cover", "[cuda][routing]") {
  const auto gpu = MakeBackend("cuda");
  Options o = DeepSeekLike();
  DeviceRoutingArgs args;
  args.options = &o;
  for (int which = 0; which < 3; ++which) {
    Knobs k = DeepSeekKnobs();
    if (which == 0) k.shortlist = 16;
    if (which == 1) k.top_p = 0.5;
    if (which == 2) k.overflow_policy = OverflowPolicy::kReroute;
    args.knobs = &k;
    CHECK(gpu->RouteOnDevice(args).code() == StatusCode::kUnsupported);
  }
}

}  // namespace
}  // namespace moe::engine

// Device routing (Backend::RouteOnDevice) against the CPU routing pipeline
// Route() on the same scores, knobs and seed: DeepSeek-like (256 experts, top-8,
// 8 groups / top-4 groups, sigmoid, bias, noise, routed scaling 2.5) and
// Mixtral-like (8 experts, top-2, softmax), capacity off and on, default
// placement and extra replicas over several devices.
//
// Both sides see bitwise the same scores, so selection, group scores and gate
// weights are the same float/double arithmetic; only the noise's log/cos may
// differ in the last bit of a double, which survives the cast to float almost
// never. The contract is therefore exact equality of choices, slots, drops,
// the permutation and the counters; gate weights are held to 1e-6 relative.

#include <algorithm>
#include <cmath>
#include <cstdint>
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

struct DeviceResult {
  std::vector<int32_t> chosen, slot, rows;
  std::vector<float> weight, row_weights;
  std::vector<uint32_t> counters;
};

DeviceResult RouteOnGpu(Backend& gpu, const std::vector<float>& scores, int num_tokens,
                        const Options& options, const Knobs& knobs, uint64_t seed) {
  const std::vector<uint32_t> placement =
      knobs.phy2log.empty() ? DefaultPlacement(options) : knobs.phy2log;
  const std::vector<int32_t> phy2log(placement.begin(), placement.end());
  const size_t num_slots = static_cast<size_t>(num_tokens) * knobs.top_k;
  const DeviceRoutingCounterLayout layout = DeviceRoutingCounters(
      options.model.num_experts, NumReplicas(options), options.parallel.num_devices, knobs.top_k);
  auto d_scores = ToBackend(gpu, scores);
  auto d_bias =
      ToBackend(gpu, knobs.expert_bias.empty() ? std::vector<float>(1, 0.0f) : knobs.expert_bias);
  auto d_phy2log = ToBackend(gpu, phy2log);
  // Filled with garbage so that anything left unwritten shows.
  auto d_chosen = ToBackend(gpu, std::vector<int32_t>(num_slots, 12345));
  auto d_slot = ToBackend(gpu, std::vector<int32_t>(num_slots, 12345));
  auto d_weight = ToBackend(gpu, std::vector<float>(num_slots, -7.0f));
  auto d_rows = ToBackend(gpu, std::vector<int32_t>(num_slots, -5));
  auto d_row_weights = ToBackend(gpu, std::vector<float>(num_slots, -7.0f));
  auto d_counters = ToBackend(gpu, std::vector<uint32_t>(layout.total, 0xdeadbeefu));

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
  args.rows = d_rows->ints();
  args.row_weights = d_row_weights->floats();
  args.counters = static_cast<uint32_t*>(d_counters->data());
  const Status status = gpu.RouteOnDevice(args);
  INFO(status.ToString());
  REQUIRE(status.ok());

  DeviceResult out;
  out.counters = ToHost<uint32_t>(gpu, *d_counters, layout.total);  // the one copy a step needs
  out.chosen = ToHost<int32_t>(gpu, *d_chosen, num_slots);
  out.slot = ToHost<int32_t>(gpu, *d_slot, num_slots);
  out.weight = ToHost<float>(gpu, *d_weight, num_slots);
  const uint32_t num_rows = out.counters[DeviceRoutingCounterLayout::kNumRows];
  REQUIRE(num_rows <= num_slots);
  out.rows = ToHost<int32_t>(gpu, *d_rows, num_rows);
  out.row_weights = ToHost<float>(gpu, *d_row_weights, num_rows);
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

// Route() and RouteOnDevice() agree on everything device routing produces.
void CompareWithCpu(const Options& options, const Knobs& knobs, int num_tokens, uint64_t seed) {
  REQUIRE(ValidateOptions(options).ok());
  REQUIRE(ValidateKnobs(knobs, options).ok());
  const auto gpu = MakeBackend("cuda");
  REQUIRE(gpu->Supports(Feature::kDeviceRouting));
  const std::vector<float> scores = Scores(num_tokens, static_cast<int>(options.model.num_experts),
                                           options.model.score_function, seed);
  const RoutingPlan plan = Route(scores.data(), num_tokens, options, knobs, seed);
  const DeviceResult dev = RouteOnGpu(*gpu, scores, num_tokens, options, knobs, seed);

  CHECK(dev.chosen == plan.chosen);
  CHECK(dev.slot == plan.slot);
  CheckWeights(dev.weight, plan.weight);

  // The permutation the engine builds on the host (moe_layer.cc): a counting
  // sort of served token-slots by physical slot, in token-slot order.
  const uint32_t num_phys = NumReplicas(options);
  std::vector<int> offsets(num_phys + 1, 0);
  for (int32_t s : plan.slot) {
    if (s >= 0) offsets[s + 1]++;
  }
  for (uint32_t s = 0; s < num_phys; ++s)
    offsets[s + 1] += offsets[s];
  std::vector<int32_t> rows(offsets[num_phys]);
  std::vector<float> row_weights(rows.size());
  std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
  for (size_t i = 0; i < plan.slot.size(); ++i) {
    if (plan.slot[i] < 0) continue;
    const int pos = cursor[plan.slot[i]]++;
    rows[pos] = static_cast<int32_t>(i / plan.max_k);
    row_weights[pos] = plan.weight[i];
  }
  CHECK(dev.rows == rows);
  CheckWeights(dev.row_weights, row_weights);

  // Counters.
  const DeviceRoutingCounterLayout layout = DeviceRoutingCounters(
      options.model.num_experts, num_phys, options.parallel.num_devices, knobs.top_k);
  RoutingPlan got;
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
  for (uint32_t d = 0; d < num_devices; ++d) {
    CHECK(dev.counters[layout.device_tokens + d] ==
          static_cast<uint32_t>(offsets[(d + 1) * per_device] - offsets[d * per_device]));
  }
  CHECK(dev.counters[DeviceRoutingCounterLayout::kNumRows] == rows.size());

  // Deterministic: a second run is bitwise the first.
  const DeviceResult again = RouteOnGpu(*gpu, scores, num_tokens, options, knobs, seed);
  CHECK(again.chosen == dev.chosen);
  CHECK(again.weight == dev.weight);
  CHECK(again.rows == dev.rows);
  CHECK(again.counters == dev.counters);
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

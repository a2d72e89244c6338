// Workloads are deterministic by seed, and the load really shifts.

#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/engine/engine.h"
#include "moe/engine/workload.h"
#include "test_util.h"

namespace moe::engine {
namespace {

ScenarioOptions ShiftScenario() {
  ScenarioOptions s;
  s.seed = 3;
  s.num_domains = 4;
  s.tokens_per_step = 128;
  s.noise_scale = 0.3;
  s.keyframes = {{0, {1, 0, 0, 0}, 0, {}}, {20, {1, 0, 0, 0}, 0, {}}, {40, {0, 0, 1, 0}, 0, {}}};
  return s;
}

TEST_CASE("Workload is deterministic by seed", "[workload]") {
  auto a = Workload::Create(ShiftScenario(), 32);
  auto b = Workload::Create(ShiftScenario(), 32);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK((*a)->Generate(17).hidden == (*b)->Generate(17).hidden);
  CHECK((*a)->Generate(17).hidden != (*a)->Generate(18).hidden);
  ScenarioOptions other = ShiftScenario();
  other.seed = 4;
  auto c = Workload::Create(other, 32);
  REQUIRE(c.ok());
  CHECK((*a)->Generate(17).hidden != (*c)->Generate(17).hidden);
}

TEST_CASE("Mix interpolates keyframes; tokens and slowdown are step functions", "[workload]") {
  ScenarioOptions s = ShiftScenario();
  s.keyframes[1].tokens_per_step = 300;
  s.keyframes[2].device_slowdown = {1.0, 3.0};
  auto w = Workload::Create(s, 8);
  REQUIRE(w.ok());
  CHECK((*w)->Mix(30)[0] == Approx(0.5));
  CHECK((*w)->Mix(30)[2] == Approx(0.5));
  CHECK((*w)->Mix(99)[2] == Approx(1.0));
  CHECK((*w)->Generate(19).num_tokens == 128);
  CHECK((*w)->Generate(20).num_tokens == 300);
  CHECK((*w)->Generate(39).device_slowdown.empty());
  CHECK((*w)->Generate(40).device_slowdown == std::vector<double>{1.0, 3.0});
  CHECK((*w)->Generate(0).domain_tokens[0] == 128);
}

TEST_CASE("Invalid scenarios are refused", "[workload]") {
  ScenarioOptions s = ShiftScenario();
  s.keyframes[1].mix = {1, 0};
  CHECK(Workload::Create(s, 8).status().code() == StatusCode::kInvalidArgument);
  s = ShiftScenario();
  s.keyframes[2].step = 10;
  CHECK(Workload::Create(s, 8).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Expert load shifts over the schedule", "[workload]") {
  Options o = testing::SmallOptions();
  o.model.num_experts = 16;
  auto engine = testing::MakeEngine(o);
  auto w = Workload::Create(ShiftScenario(), o.model.hidden);
  REQUIRE(w.ok());
  auto load_at = [&](uint64_t step) {
    WorkloadStep in = (*w)->Generate(step);
    auto stats = engine->Step({in.hidden.data(), in.num_tokens, {}});
    REQUIRE(stats.ok());
    std::vector<double> load(o.model.num_experts);
    double total = 0;
    for (size_t e = 0; e < load.size(); ++e)
      total += load[e] = stats->layers[0].expert_tokens[e];
    for (double& l : load)
      l /= total;
    return load;
  };
  const std::vector<double> before = load_at(0);
  const std::vector<double> before_again = load_at(10);
  const std::vector<double> after = load_at(50);
  auto distance = [](const std::vector<double>& p, const std::vector<double>& q) {
    double d = 0;
    for (size_t i = 0; i < p.size(); ++i)
      d += std::abs(p[i] - q[i]);
    return d / 2;  // total variation
  };
  INFO("tv(before, before') " << distance(before, before_again) << " tv(before, after) "
                              << distance(before, after));
  CHECK(distance(before, before_again) < 0.2);
  CHECK(distance(before, after) > 0.4);
  // The load is concentrated: the hottest expert well above the mean.
  CHECK(*std::max_element(before.begin(), before.end()) > 2.0 / o.model.num_experts);
}

}  // namespace
}  // namespace moe::engine

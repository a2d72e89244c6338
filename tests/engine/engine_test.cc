// Knobs change only at step boundaries, under an epoch.

#include <atomic>
#include <thread>
#include <vector>

#include "moe/engine/engine.h"
#include "test_util.h"

namespace moe::engine {
namespace {

using testing::MakeEngine;
using testing::RandomTokens;
using testing::SmallOptions;

TEST_CASE("Submitted knobs apply at the next step boundary under their epoch", "[engine]") {
  Options o = SmallOptions();
  o.model.num_layers = 2;
  auto engine = MakeEngine(o);
  const int num_tokens = 40;
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 3);

  auto s0 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s0.ok());
  CHECK(s0->step == 0);
  CHECK(s0->epoch == 0);
  CHECK(s0->layers[0].num_token_slots == 2u * num_tokens);

  KnobUpdate update;
  update.epoch = 5;
  update.all_layers.top_k = 3;
  update.layers.push_back({1, KnobPatch{}});
  update.layers.back().second.top_k = 1;
  auto at = engine->Submit(update);
  REQUIRE(at.ok());
  CHECK(*at == 1);
  // Nothing changes before the boundary.
  CHECK(engine->epoch() == 0);
  CHECK(engine->knobs(0).top_k == 2);

  auto s1 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s1.ok());
  CHECK(s1->step == 1);
  CHECK(s1->epoch == 5);
  CHECK(s1->layers[0].num_token_slots == 3u * num_tokens);
  CHECK(s1->layers[1].num_token_slots == 1u * num_tokens);
  CHECK(engine->knobs(0).top_k == 3);
}

TEST_CASE("Stale epochs and bad knobs are refused without changing anything", "[engine]") {
  Options o = SmallOptions();
  auto engine = MakeEngine(o);
  KnobUpdate good;
  good.epoch = 2;
  good.all_layers.capacity_factor = 1.5;
  REQUIRE(engine->Submit(good).ok());

  KnobUpdate stale = good;
  stale.epoch = 2;
  CHECK(engine->Submit(stale).status().code() == StatusCode::kFailedPrecondition);

  KnobUpdate bad;
  bad.epoch = 3;
  bad.all_layers.top_k = 99;
  CHECK(engine->Submit(bad).status().code() == StatusCode::kInvalidArgument);
  bad.all_layers.top_k.reset();
  bad.all_layers.expert_bias = std::vector<float>(3, 0.0f);  // wrong size
  CHECK(engine->Submit(bad).status().code() == StatusCode::kInvalidArgument);
  bad.all_layers.expert_bias.reset();
  bad.layers.push_back({7, KnobPatch{}});  // no such layer
  CHECK(engine->Submit(bad).status().code() == StatusCode::kInvalidArgument);

  const std::vector<float> x = RandomTokens(16, o.model.hidden, 1);
  auto s = engine->Step({x.data(), 16, {}});
  REQUIRE(s.ok());
  CHECK(s->epoch == 2);
  CHECK(engine->knobs(0).capacity_factor == 1.5);
}

TEST_CASE("Commands outside the engine's own bounds are refused, whoever sends them", "[engine]") {
  Options o = SmallOptions();
  o.command_bounds.min_capacity_factor = 0.5;
  o.command_bounds.max_capacity_factor = 4.0;
  o.command_bounds.allow_unlimited_capacity = false;
  o.command_bounds.max_top_k = 4;
  o.command_bounds.max_noise_std = 0.2;
  o.command_bounds.max_abs_expert_bias = 0.5f;
  o.command_bounds.max_epoch_step = 100;
  o.command_bounds.min_k_min = 2;
  o.command_bounds.min_top_p = 0.5;
  o.command_bounds.max_availability_weight = 0.3;
  auto engine = MakeEngine(o);
  auto refused = [&](KnobUpdate u, const std::string& what) {
    INFO(what);
    auto at = engine->Submit(u);
    REQUIRE_FALSE(at.ok());
    CHECK(at.status().code() == StatusCode::kOutOfRange);
    CHECK_THAT(at.status().message(), Catch::Contains(what));
  };
  KnobUpdate u;
  u.epoch = 1;
  u.all_layers.capacity_factor = 0.01;  // a rogue controller's starvation
  refused(u, "capacity_factor 0.01 outside [0.5, 4]");
  u.all_layers.capacity_factor = 0.0;
  refused(u, "unlimited");
  u.all_layers.capacity_factor.reset();
  u.all_layers.top_k = 5;
  refused(u, "top_k 5 outside [1, 4]");
  u.all_layers.top_k.reset();
  u.all_layers.noise_std = 0.3;
  refused(u, "noise_std");
  u.all_layers.noise_std.reset();
  u.all_layers.k_min = 1;  // dynamic K down to one expert a token
  refused(u, "k_min 1 below 2");
  u.all_layers.k_min.reset();
  u.all_layers.top_p = 0.2;
  refused(u, "top_p 0.2 below 0.5");
  u.all_layers.top_p.reset();
  u.all_layers.availability_weight = 0.9;
  refused(u, "availability_weight 0.9 above 0.3");
  u.all_layers.availability_weight.reset();
  u.layers.push_back({0, KnobPatch{}});
  u.layers[0].second.expert_bias = std::vector<float>{0, 0, 0.6f, 0, 0, 0, 0, 0};
  refused(u, "expert_bias[2]");
  u.layers.clear();
  u.epoch = 101;  // one step past the allowed jump
  u.all_layers.capacity_factor = 2.0;
  refused(u, "jumps more than 100");
  // Nothing was applied; a command within bounds still is.
  u.epoch = 100;
  u.all_layers.top_p = 0.0;  // dynamic K off is always allowed
  u.all_layers.availability_weight = 0.3;
  REQUIRE(engine->Submit(u).ok());
  const std::vector<float> x = RandomTokens(8, o.model.hidden, 3);
  auto s = engine->Step({x.data(), 8, {}});
  REQUIRE(s.ok());
  CHECK(s->epoch == 100);
  CHECK(engine->knobs(0).capacity_factor == 2.0);
  CHECK(engine->knobs(0).top_k == o.knobs.top_k);
}

TEST_CASE("Knobs submitted from another thread never change within a step", "[engine]") {
  Options o = SmallOptions();
  o.model.num_layers = 4;
  auto engine = MakeEngine(o);
  const int num_tokens = 32;
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 4);
  std::atomic<bool> done{false};
  std::thread submitter([&] {
    uint64_t epoch = 1;
    while (!done.load()) {
      KnobUpdate u;
      u.epoch = epoch;
      u.all_layers.top_k = 1 + epoch % 4;
      if (engine->Submit(u).ok()) ++epoch;
      std::this_thread::yield();
    }
  });
  for (int i = 0; i < 60; ++i) {
    auto s = engine->Step({x.data(), num_tokens, {}});
    REQUIRE(s.ok());
    // Every layer of a step ran under the same knobs: the epoch's top_k.
    const uint64_t k = s->epoch == 0 ? 2 : 1 + s->epoch % 4;
    for (const LayerStats& layer : s->layers) {
      CHECK(layer.num_token_slots == k * num_tokens);
    }
  }
  done = true;
  submitter.join();
}

TEST_CASE("Engine refuses a bad input and bad options", "[engine]") {
  Options o = SmallOptions();
  auto engine = MakeEngine(o);
  CHECK(engine->Step({nullptr, 0, {}}).status().code() == StatusCode::kInvalidArgument);
  o.model.num_groups = 3;  // does not divide 8 experts
  auto backend = CreateBackend("cpu");
  REQUIRE(backend.ok());
  CHECK(Engine::Create(o, std::move(backend).value()).status().code() ==
        StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::engine

namespace moe::engine {
namespace {

TEST_CASE("Expert parallelism: per-device stats, slowdown, placement under an epoch",
          "[engine][parallel]") {
  Options o = testing::SmallOptions();
  o.model.num_experts = 8;
  o.parallel.num_devices = 4;
  o.parallel.num_replicas = 12;
  o.parallel.devices_per_node = 2;
  auto engine = testing::MakeEngine(o);
  const int num_tokens = 64;
  const std::vector<float> x = testing::RandomTokens(num_tokens, o.model.hidden, 8);

  auto s0 = engine->Step({x.data(), num_tokens, {1.0, 1.0, 1.0, 50.0}});
  REQUIRE(s0.ok());
  const LayerStats& l0 = s0->layers[0];
  REQUIRE(l0.device_expert_us.size() == 4);
  REQUIRE(l0.device_tokens.size() == 4);
  REQUIRE(l0.slot_tokens.size() == 12);
  uint32_t device_sum = 0;
  for (uint32_t n : l0.device_tokens)
    device_sum += n;
  CHECK(device_sum == num_tokens * 2);
  CHECK(l0.expert_us == l0.device_expert_us[3]);  // the straggler is the critical path
  CHECK(l0.all_to_all_us > 0);
  CHECK(l0.total_us >= l0.router_us + l0.expert_us + l0.combine_us);
  CHECK(s0->placement_moved_bytes == 0);

  // Move expert 0's extra replicas: slots 8..11 now hold experts 0, 0, 0, 1.
  KnobUpdate move;
  move.epoch = 1;
  move.all_layers.phy2log = std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 1};
  REQUIRE(engine->Submit(move).ok());
  auto s1 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s1.ok());
  CHECK(s1->epoch == 1);
  // Default slots 8..11 held experts 0..3: slots 9, 10, 11 changed.
  const uint64_t expert_bytes = 4ull * 3 * o.model.hidden * o.model.expert_ffn;
  CHECK(s1->placement_moved_bytes == 3 * expert_bytes);
  CHECK(s1->placement_move_us > 0);
  const LayerStats& l1 = s1->layers[0];
  const uint32_t expert0 = l1.expert_tokens[0];
  uint32_t lo = UINT32_MAX, hi = 0;
  for (int s : {0, 8, 9, 10}) {
    lo = std::min(lo, l1.slot_tokens[s]);
    hi = std::max(hi, l1.slot_tokens[s]);
  }
  CHECK(l1.slot_tokens[0] + l1.slot_tokens[8] + l1.slot_tokens[9] + l1.slot_tokens[10] == expert0);
  CHECK(hi - lo <= 1);

  // A placement without a replica of some expert is refused.
  KnobUpdate bad;
  bad.epoch = 2;
  bad.all_layers.phy2log = std::vector<uint32_t>(12, 0);
  CHECK(engine->Submit(bad).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Quality probe: zero error unconstrained, positive when slots drop", "[engine][probe]") {
  Options o = testing::SmallOptions();
  o.quality_probe_tokens = 8;
  o.quality_probe_every = 1;
  auto engine = testing::MakeEngine(o);
  const std::vector<float> x = testing::RandomTokens(64, o.model.hidden, 6);
  auto free_step = engine->Step({x.data(), 64, {}});
  REQUIRE(free_step.ok());
  REQUIRE(free_step->layers[0].quality_error.has_value());
  CHECK(*free_step->layers[0].quality_error < 1e-6);
  KnobUpdate tight;
  tight.epoch = 1;
  tight.all_layers.capacity_factor = 0.25;
  REQUIRE(engine->Submit(tight).ok());
  auto tight_step = engine->Step({x.data(), 64, {}});
  REQUIRE(tight_step.ok());
  CHECK(tight_step->layers[0].dropped > 0);
  CHECK(*tight_step->layers[0].quality_error > 1e-3);
}

TEST_CASE("Quality probe: a K below the configured one shows as error, a larger one not",
          "[engine][probe]") {
  Options o = testing::SmallOptions();  // top_k 2, unlimited capacity
  o.quality_probe_tokens = 8;
  o.quality_probe_every = 1;
  auto engine = testing::MakeEngine(o);
  const std::vector<float> x = testing::RandomTokens(64, o.model.hidden, 7);
  KnobUpdate lower;
  lower.epoch = 1;
  lower.all_layers.top_k = 1;
  REQUIRE(engine->Submit(lower).ok());
  auto k1 = engine->Step({x.data(), 64, {}});
  REQUIRE(k1.ok());
  CHECK(k1->layers[0].dropped == 0);
  CHECK(*k1->layers[0].quality_error > 1e-3);  // the second expert is missing
  KnobUpdate raise;
  raise.epoch = 2;
  raise.all_layers.top_k = 3;
  REQUIRE(engine->Submit(raise).ok());
  auto k3 = engine->Step({x.data(), 64, {}});
  REQUIRE(k3.ok());
  CHECK(*k3->layers[0].quality_error < 1e-6);  // the reference follows the larger K
}

TEST_CASE("Quality probe: an engine started below the model's K still shows the error",
          "[engine][probe]") {
  Options o = testing::SmallOptions();
  o.quality_probe_tokens = 8;
  o.quality_probe_every = 1;
  o.knobs.top_k = 1;  // starts at K 1 ...
  const std::vector<float> x = testing::RandomTokens(64, o.model.hidden, 7);
  auto unaware = testing::MakeEngine(o);
  auto blind = unaware->Step({x.data(), 64, {}});
  REQUIRE(blind.ok());
  CHECK(*blind->layers[0].quality_error < 1e-6);  // judged against its own K 1
  o.model.reference_top_k = 2;                    // ... of a model trained at K 2
  auto engine = testing::MakeEngine(o);
  auto step = engine->Step({x.data(), 64, {}});
  REQUIRE(step.ok());
  CHECK(*step->layers[0].quality_error > 1e-3);
  o.model.reference_top_k = o.model.num_experts + 1;
  CHECK(ValidateOptions(o).message().find("reference_top_k") != std::string::npos);
}

}  // namespace
}  // namespace moe::engine

// A placement change is a real move: every physical slot holds its own copy of
// its expert's weights (there is no other copy), and a new placement applied
// at a step boundary copies the weights into exactly the slots whose expert
// changed, measured.

#include <cstdint>
#include <vector>

#include "moe/engine/engine.h"
#include "test_util.h"

namespace moe::engine {
namespace {

Options PlacementOptions() {
  Options o = testing::SmallOptions();
  o.model.num_layers = 2;
  o.model.num_experts = 4;
  o.parallel.num_devices = 2;
  o.parallel.num_replicas = 8;  // default placement: slot s holds expert s % 4
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 1.5;
  o.knobs.overflow_policy = OverflowPolicy::kReplica;
  return o;
}

uint64_t ExpertBytes(const Options& o) {
  // gate_up [H, 2F] + down [F, H], fp32.
  return sizeof(float) * 3ull * o.model.hidden * o.model.expert_ffn;
}

TEST_CASE("A new placement copies exactly the slots whose expert changed, measured",
          "[engine][placement]") {
  const Options o = PlacementOptions();
  auto engine = testing::MakeEngine(o);
  const int num_tokens = 48;
  const std::vector<float> x = testing::RandomTokens(num_tokens, o.model.hidden, 11);

  auto s0 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s0.ok());
  CHECK(s0->placement_moved_bytes == 0);
  CHECK(s0->placement_copy_us == 0);
  CHECK(s0->placement_move_us == 0);

  // Layer 0 gets a new placement (slots 1, 3, 4, 5, 6, 7 change); layer 1
  // keeps the default one, spelled out (no slot changes).
  const std::vector<uint32_t> fresh = {0, 0, 2, 2, 3, 3, 1, 1};
  KnobUpdate move;
  move.epoch = 1;
  move.layers.push_back({0, KnobPatch{}});
  move.layers.back().second.phy2log = fresh;
  move.layers.push_back({1, KnobPatch{}});
  move.layers.back().second.phy2log = DefaultPlacement(o);
  REQUIRE(engine->Submit(move).ok());
  auto s1 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s1.ok());
  CHECK(s1->epoch == 1);
  const std::vector<uint32_t> before = DefaultPlacement(o);
  uint64_t num_changed = 0;
  for (size_t s = 0; s < fresh.size(); ++s)
    num_changed += fresh[s] != before[s];
  REQUIRE(num_changed == 6);
  CHECK(s1->placement_moved_bytes == num_changed * ExpertBytes(o));
  CHECK(s1->placement_copy_us > 0);
  CHECK(s1->placement_move_us > 0);

  // A knob change that leaves the placement alone moves nothing.
  KnobUpdate knob;
  knob.epoch = 2;
  knob.all_layers.capacity_factor = 2.0;
  REQUIRE(engine->Submit(knob).ok());
  auto s2 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s2.ok());
  CHECK(s2->epoch == 2);
  CHECK(s2->placement_moved_bytes == 0);
  CHECK(s2->placement_copy_us == 0);
  CHECK(s2->placement_move_us == 0);

  // Back to the default: the same six slots move back.
  KnobUpdate back;
  back.epoch = 3;
  back.all_layers.phy2log = DefaultPlacement(o);
  REQUIRE(engine->Submit(back).ok());
  auto s3 = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s3.ok());
  CHECK(s3->placement_moved_bytes == num_changed * ExpertBytes(o));
  CHECK(s3->placement_copy_us > 0);
}

// Runs two steps (`warmup`, then `x`) on an engine that moves to `placement`
// between them and on one created with it; returns both second steps.
struct MovedAndDirect {
  StepStats moved, direct;
  std::vector<float> y_moved, y_direct;
};

MovedAndDirect RunMovedAndDirect(const Options& o, const std::vector<uint32_t>& placement,
                                 const std::vector<float>& warmup, const std::vector<float>& x,
                                 int num_tokens) {
  MovedAndDirect r;
  auto moved = testing::MakeEngine(o);
  REQUIRE(moved->Step({warmup.data(), num_tokens, {}}).ok());
  KnobUpdate move;
  move.epoch = 1;
  move.all_layers.phy2log = placement;
  REQUIRE(moved->Submit(move).ok());
  auto s_moved = moved->Step({x.data(), num_tokens, {}}, &r.y_moved);
  REQUIRE(s_moved.ok());
  r.moved = *s_moved;

  Options direct_options = o;
  direct_options.knobs.phy2log = placement;
  auto direct = testing::MakeEngine(direct_options);
  REQUIRE(direct->Step({warmup.data(), num_tokens, {}}).ok());
  auto s_direct = direct->Step({x.data(), num_tokens, {}}, &r.y_direct);
  REQUIRE(s_direct.ok());
  r.direct = *s_direct;
  return r;
}

TEST_CASE("Outputs after a move equal an engine created with the new placement",
          "[engine][placement]") {
  const Options o = PlacementOptions();
  const int num_tokens = 48;
  const MovedAndDirect r = RunMovedAndDirect(
      o, {3, 2, 1, 0, 0, 1, 2, 3}, testing::RandomTokens(num_tokens, o.model.hidden, 12),
      testing::RandomTokens(num_tokens, o.model.hidden, 13), num_tokens);
  // Slots 0..3 change in every layer; 4..7 keep their experts.
  CHECK(r.moved.placement_moved_bytes == o.model.num_layers * 4 * ExpertBytes(o));
  CHECK(r.direct.placement_moved_bytes == 0);
  CHECK(r.direct.placement_copy_us == 0);
  REQUIRE(r.y_moved.size() == r.y_direct.size());
  CHECK(r.y_moved == r.y_direct);  // bit-identical on the CPU backend
  CHECK(r.moved.layers[0].slot_tokens == r.direct.layers[0].slot_tokens);
}

TEST_CASE("A swap no slot keeps is staged: outputs equal an engine created with it",
          "[engine][placement]") {
  // One replica per expert: a permutation leaves no slot holding a moved
  // expert, so each is copied aside before its slot is overwritten.
  Options o = PlacementOptions();
  o.parallel.num_replicas = 4;
  o.knobs.overflow_policy = OverflowPolicy::kDrop;
  const int num_tokens = 32;
  const std::vector<float> x = testing::RandomTokens(num_tokens, o.model.hidden, 21);
  const MovedAndDirect r = RunMovedAndDirect(o, {1, 2, 3, 0}, x, x, num_tokens);
  CHECK(r.moved.placement_moved_bytes == o.model.num_layers * 4 * ExpertBytes(o));
  CHECK(r.y_moved == r.y_direct);
}

}  // namespace
}  // namespace moe::engine

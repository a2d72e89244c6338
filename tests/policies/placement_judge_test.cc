// Tests of the placement judge (policies/include/moe/policies/
// placement_judge.h) on a case worked by hand, in both capacity scopes, and
// its bad inputs.

#include <catch2/catch.hpp>

#include <vector>

#include "moe/policies/placement_judge.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;

// 4 experts in 6 slots on 2 devices (3 slots each): experts 0 and 1 have two
// replicas (slots 0, 3 and 1, 5), experts 2 and 3 one (slots 2 and 4).
const std::vector<uint32_t> kPlacement = {0, 1, 2, 0, 3, 1};
// 6 tokens, top-4: 24 token-slots.
const std::vector<double> kDemand = {12, 6, 4, 2};

TEST_CASE("Judge: device max/mean of a hand-worked step", "[judge]") {
  // Device 0: 12/2 + 6/2 + 4 = 13; device 1: 12/2 + 2 + 6/2 = 11; mean 12.
  auto mom = DeviceMaxOverMean(kDemand, kPlacement, 2);
  REQUIRE(mom.ok());
  CHECK(*mom == Approx(13.0 / 12.0));
  // One replica each on 2 devices: (12 + 6) vs (4 + 2).
  auto plain = DeviceMaxOverMean(kDemand, {0, 1, 2, 3}, 2);
  REQUIRE(plain.ok());
  CHECK(*plain == Approx(18.0 / 12.0));
  auto idle = DeviceMaxOverMean({0, 0, 0, 0}, kPlacement, 2);
  REQUIRE(idle.ok());
  CHECK(*idle == 1.0);
}

TEST_CASE("Judge: capacity is the engine's, at least one, 0 when unlimited", "[judge]") {
  CHECK(CapacityOf(1.0, 6, 4, 4) == 6);   // ceil(24 / 4)
  CHECK(CapacityOf(1.25, 6, 4, 4) == 8);  // ceil(7.5)
  CHECK(CapacityOf(1.0, 6, 4, 6) == 4);   // per slot of 6
  CHECK(CapacityOf(1.0 + 1e-12, 6, 4, 4) == 6);
  CHECK(CapacityOf(0.01, 6, 4, 4) == 1);
  CHECK(CapacityOf(0, 6, 4, 4) == 0);
  CHECK(CapacityOf(1.0, 6, 4, 0) == 0);
}

TEST_CASE("Judge: drops per logical expert vs per slot on a hand-worked step", "[judge]") {
  auto replicas = ValidatedReplicaCounts(kPlacement, 4);
  REQUIRE(replicas.ok());
  CHECK(*replicas == std::vector<uint32_t>{2, 2, 1, 1});
  const double per_expert = CapacityOf(1.0, 6, 4, 4);  // 6
  // Expert scope: expert 0 holds 6 whatever its replicas: 12 - 6 dropped.
  CHECK(DroppedTokenSlots(kDemand, *replicas, CapacityScope::kExpert, per_expert) == 6);
  // Slot scope, 6 per slot: expert 0 has room for 12; nothing dropped.
  CHECK(DroppedTokenSlots(kDemand, *replicas, CapacityScope::kSlot, per_expert) == 0);
  // Slot scope with the same total room (24 over 6 slots, 4 each): expert 0
  // has room for 8 and drops 4, expert 1 room 8, experts 2 and 3 room 4.
  const double per_slot = CapacityOf(1.0, 6, 4, 6);
  CHECK(DroppedTokenSlots(kDemand, *replicas, CapacityScope::kSlot, per_slot) == 4);
  // Without replicas both scopes are the same.
  const std::vector<uint32_t> single = {1, 1, 1, 1};
  CHECK(DroppedTokenSlots(kDemand, single, CapacityScope::kSlot, per_expert) == 6);
  CHECK(DroppedTokenSlots(kDemand, single, CapacityScope::kExpert, per_expert) == 6);
  // Unlimited capacity drops nothing.
  CHECK(DroppedTokenSlots(kDemand, *replicas, CapacityScope::kExpert, 0) == 0);
  CHECK(CapacityScopeName(CapacityScope::kExpert) == "expert");
  CHECK(CapacityScopeName(CapacityScope::kSlot) == "slot");
}

TEST_CASE("Judge refuses placements it cannot score", "[judge]") {
  auto missing = ValidatedReplicaCounts({0, 1, 1, 0}, 3);
  REQUIRE_FALSE(missing.ok());
  CHECK(Contains(missing.status().message(), "expert 2 has no replica"));
  auto beyond = ValidatedReplicaCounts({0, 1, 4}, 3);
  REQUIRE_FALSE(beyond.ok());
  CHECK(Contains(beyond.status().message(), "slot 2 holds expert 4"));
  CHECK_FALSE(DeviceMaxOverMean(kDemand, kPlacement, 4).ok());  // 6 slots over 4
  CHECK_FALSE(DeviceMaxOverMean(kDemand, kPlacement, 0).ok());
  CHECK_FALSE(DeviceMaxOverMean({1, 1, 1}, kPlacement, 2).ok());  // expert 3 unknown
}

}  // namespace
}  // namespace moe::policies

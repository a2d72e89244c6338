// Helpers shared by the policy tests.

#ifndef MOE_TESTS_POLICIES_POLICY_TEST_UTIL_H_
#define MOE_TESTS_POLICIES_POLICY_TEST_UTIL_H_

#include <catch2/catch.hpp>

#include <string>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies::testing {

inline bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// An engine "e1" of 8 experts at epoch 3, `steps_in_epoch` steps into it,
// with telemetry 100 ms old; the rest as EngineSnapshot's defaults.
inline EngineSnapshot BaseSnapshot(uint64_t steps_in_epoch = 20) {
  EngineSnapshot s;
  s.engine_id = "e1";
  s.now_ns = 100'000'000'000;
  s.last_telemetry_ns = s.now_ns - 100'000'000;
  s.epoch = 3;
  s.steps_in_epoch = steps_in_epoch;
  s.num_experts = 8;
  return s;
}

// The message of Validate(params), which must refuse them.
template <typename Params>
std::string ValidateMessage(const Params& params) {
  const Status s = Validate(params);
  REQUIRE_FALSE(s.ok());
  return s.message();
}

}  // namespace moe::policies::testing

#endif  // MOE_TESTS_POLICIES_POLICY_TEST_UTIL_H_

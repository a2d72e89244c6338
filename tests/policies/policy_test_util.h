// Helpers shared by the policy tests.

#ifndef MOE_TESTS_POLICIES_POLICY_TEST_UTIL_H_
#define MOE_TESTS_POLICIES_POLICY_TEST_UTIL_H_

#include <catch2/catch.hpp>

#include <string>

#include "moe/common/status.h"

namespace moe::policies::testing {

inline bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
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

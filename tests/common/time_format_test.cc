#include <catch2/catch.hpp>

#include "moe/common/time_format.h"

namespace moe {
namespace {

constexpr int64_t kSec = 1'000'000'000;

TEST_CASE("ISO times round-trip through FormatIsoTime", "[time]") {
  Result<int64_t> t = ParseTimeArg("2026-11-23T01:27:30.250Z", 0);
  REQUIRE(t.ok());
  CHECK(FormatIsoTime(*t) == "2026-11-23T01:27:30.250Z");
  CHECK(*ParseTimeArg("2026-11-23 01:27:30", 0) == *t - 250'000'000);
  CHECK(*ParseTimeArg("2026-11-23T02:27:30+01:00", 0) == *t - 250'000'000);
  CHECK(*ParseTimeArg("2026-11-23", 0) == *ParseTimeArg("2026-11-23T00:00:00Z", 0));
}

TEST_CASE("Relative times count back from now", "[time]") {
  int64_t now = 1'000'000 * kSec;
  CHECK(*ParseTimeArg("-10m", now) == now - 600 * kSec);
  CHECK(*ParseTimeArg("-2h", now) == now - 7200 * kSec);
  CHECK(*ParseTimeArg("-250ms", now) == now - 250'000'000);
  CHECK(*ParseTimeArg("now", now) == now);
  CHECK(*ParseDuration("90") == 90 * kSec);
}

TEST_CASE("Bad time arguments name the text and the fix", "[time]") {
  for (const char* text : {"yesterday", "-10q", "2026-13-01", "2026-11-23T25:00", "2026-11-23x"}) {
    Result<int64_t> r = ParseTimeArg(text, 0);
    INFO(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find(text) != std::string::npos);
  }
}

}  // namespace
}  // namespace moe

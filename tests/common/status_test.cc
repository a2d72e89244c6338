#include <catch2/catch.hpp>

#include "moe/common/status.h"

namespace moe {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  MOE_ASSIGN_OR_RETURN(int half, Half(x));
  MOE_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

Status CheckEven(int x) {
  MOE_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST_CASE("Status carries code and message", "[status]") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.ToString() == "ok");
  Status bad = Status::NotFound("no engine e1");
  CHECK_FALSE(bad.ok());
  CHECK(bad.code() == StatusCode::kNotFound);
  CHECK(bad.ToString() == "not_found: no engine e1");
  CHECK(bad.WithContext("query").message() == "query: no engine e1");
  CHECK(Status::Ok().WithContext("x").ok());
}

TEST_CASE("FromCall records statement and position", "[status]") {
  Status s = Status::FromCall(StatusCode::kIoError, "SQLite", "sqlite3_step(stmt)", "a.cc", 12,
                              "disk full");
  CHECK(s.message() == "SQLite call `sqlite3_step(stmt)` failed at a.cc:12: disk full");
}

TEST_CASE("Result propagates errors through the macros", "[status]") {
  CHECK(Quarter(8).value() == 2);
  Result<int> r = Quarter(6);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message() == "odd: 3");
  CHECK(r.value_or(-1) == -1);
  CHECK(CheckEven(4).ok());
  CHECK(CheckEven(5).code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe

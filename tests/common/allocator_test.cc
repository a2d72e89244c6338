// KeepFreedMemory: applied unless the operator's GLIBC_TUNABLES set malloc,
// and a threshold mallopt cannot take (it takes an int) is an error.

#include <catch2/catch.hpp>

#include <malloc.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/allocator.h"

namespace moe {
namespace {

// Restores GLIBC_TUNABLES as it was when the scope ends.
class TunablesGuard {
 public:
  TunablesGuard() {
    if (const char* v = std::getenv("GLIBC_TUNABLES")) saved_ = v;
  }
  ~TunablesGuard() {
    if (saved_) {
      setenv("GLIBC_TUNABLES", saved_->c_str(), 1);
    } else {
      unsetenv("GLIBC_TUNABLES");
    }
  }

 private:
  std::optional<std::string> saved_;
};

TEST_CASE("KeepFreedMemory applies its thresholds", "[allocator]") {
  TunablesGuard guard;
  unsetenv("GLIBC_TUNABLES");
  Result<bool> kept = KeepFreedMemory();
  REQUIRE(kept.ok());
  CHECK(*kept);
  // A block freed and taken again in a loop (a cycle's snapshot) works as
  // before; what changed is only where glibc keeps the pages.
  for (int i = 0; i < 100; ++i) {
    std::vector<double> block(size_t{1} << 17, i);
    CHECK(block.back() == i);
  }
}

TEST_CASE("KeepFreedMemory leaves malloc tunables of the environment alone", "[allocator]") {
  TunablesGuard guard;
  setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576", 1);
  Result<bool> kept = KeepFreedMemory();
  REQUIRE(kept.ok());
  CHECK_FALSE(*kept);
  // Tunables of something else do not count.
  setenv("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=512", 1);
  kept = KeepFreedMemory();
  REQUIRE(kept.ok());
  CHECK(*kept);
}

TEST_CASE("KeepFreedMemory refuses a threshold mallopt cannot take", "[allocator]") {
  TunablesGuard guard;
  unsetenv("GLIBC_TUNABLES");
  AllocatorSettings huge;
  huge.trim_threshold_bytes = size_t{1} << 40;
  Result<bool> kept = KeepFreedMemory(huge);
  REQUIRE_FALSE(kept.ok());
  CHECK(kept.status().message().find("at most") != std::string::npos);
  // Put the defaults back for the rest of the binary.
  REQUIRE(KeepFreedMemory().ok());
}

}  // namespace
}  // namespace moe

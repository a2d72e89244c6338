// moe-engine's config: the [engine] routing and GEMM keys, and errors that say
// file:line:column, the key and what is allowed.

#include <catch2/catch.hpp>

#include <string>

#include "engine_config.h"
#include "support/temp_dir.h"

namespace moe::engine_app {
namespace {

TEST_CASE("Engine config: routing, padding and GEMM precision", "[config][engine]") {
  moe::testing::TempDir dir;
  const std::string path = dir.Write("engine.toml",
                                     "[engine]\n"
                                     "backend = \"cuda\"\n"
                                     "routing = \"device\"\n"
                                     "max_capacity_padding = 0.25\n"
                                     "gemm_precision = \"bf16\"\n"
                                     "grouped_gemm_fallback = true\n");
  auto cfg = LoadEngineConfig(path);
  INFO(cfg.status().ToString());
  REQUIRE(cfg.ok());
  CHECK(cfg->engine.routing == engine::RoutingMode::kDevice);
  CHECK(cfg->engine.max_capacity_padding == 0.25);
  CHECK(cfg->app.gemm_precision == "bf16");
  CHECK(cfg->app.grouped_gemm_fallback);

  auto defaults = LoadEngineConfig(dir.Write("empty.toml", "[engine]\n"));
  REQUIRE(defaults.ok());
  CHECK(defaults->engine.routing == engine::RoutingMode::kAuto);
  CHECK(defaults->app.gemm_precision == "fp32");
  CHECK_FALSE(defaults->app.grouped_gemm_fallback);
}

TEST_CASE("Engine config: a bad routing value names file, line, column and choices",
          "[config][engine]") {
  moe::testing::TempDir dir;
  const std::string path = dir.Write("engine.toml", "[engine]\nid = \"e\"\nrouting = \"gpu\"\n");
  auto cfg = LoadEngineConfig(path);
  REQUIRE_FALSE(cfg.ok());
  const std::string message = cfg.status().message();
  INFO(message);
  CHECK(message.find(path + ":3:") != std::string::npos);
  CHECK(message.find("routing") != std::string::npos);
  CHECK(message.find("device") != std::string::npos);

  auto negative = LoadEngineConfig(dir.Write("neg.toml", "[engine]\nmax_capacity_padding = -1\n"));
  REQUIRE_FALSE(negative.ok());
  CHECK(negative.status().message().find("max_capacity_padding") != std::string::npos);
}

TEST_CASE("Engine config: capacity per expert or per replica slot", "[config][engine]") {
  moe::testing::TempDir dir;
  auto slot = LoadEngineConfig(dir.Write("slot.toml", "[knobs]\ncapacity_scope = \"slot\"\n"));
  INFO(slot.status().ToString());
  REQUIRE(slot.ok());
  CHECK(slot->engine.knobs.capacity_scope == engine::CapacityScope::kSlot);
  auto defaults = LoadEngineConfig(dir.Write("empty.toml", "[knobs]\n"));
  REQUIRE(defaults.ok());
  CHECK(defaults->engine.knobs.capacity_scope == engine::CapacityScope::kExpert);

  const std::string path = dir.Write("bad.toml", "[knobs]\ntop_k = 2\ncapacity_scope = \"gpu\"\n");
  auto bad = LoadEngineConfig(path);
  REQUIRE_FALSE(bad.ok());
  const std::string message = bad.status().message();
  INFO(message);
  CHECK(message.find(path + ":3:") != std::string::npos);
  CHECK(message.find("capacity_scope") != std::string::npos);
  CHECK(message.find("slot") != std::string::npos);
}

TEST_CASE("Engine config: lockstep with the controller and its timeout", "[config][engine]") {
  moe::testing::TempDir dir;
  auto on = LoadEngineConfig(
      dir.Write("on.toml", "[telemetry]\nawait_controller = true\nawait_timeout = \"250ms\"\n"));
  INFO(on.status().ToString());
  REQUIRE(on.ok());
  CHECK(on->app.await_controller);
  CHECK(on->app.await_timeout_ms == 250);
  auto defaults = LoadEngineConfig(dir.Write("empty.toml", "[telemetry]\n"));
  REQUIRE(defaults.ok());
  CHECK_FALSE(defaults->app.await_controller);
  CHECK(defaults->app.await_timeout_ms == 5000);

  const std::string path =
      dir.Write("bad.toml", "[telemetry]\nawait_controller = \"yes\"\nawait_timeout = \"0s\"\n");
  auto bad = LoadEngineConfig(path);
  REQUIRE_FALSE(bad.ok());
  const std::string message = bad.status().message();
  INFO(message);
  CHECK(message.find(path + ":2:") != std::string::npos);
  CHECK(message.find("await_controller") != std::string::npos);
  CHECK(message.find(path + ":3:") != std::string::npos);
  CHECK(message.find("await_timeout") != std::string::npos);
}

TEST_CASE("Engine config: command bounds on dynamic K and two-stage routing", "[config][engine]") {
  moe::testing::TempDir dir;
  auto cfg = LoadEngineConfig(dir.Write("bounds.toml",
                                        "[command_bounds]\n"
                                        "k_min_min = 2\n"
                                        "top_p_min = 0.6\n"
                                        "availability_weight_max = 0.25\n"));
  INFO(cfg.status().ToString());
  REQUIRE(cfg.ok());
  CHECK(cfg->engine.command_bounds.min_k_min == 2);
  CHECK(cfg->engine.command_bounds.min_top_p == 0.6);
  CHECK(cfg->engine.command_bounds.max_availability_weight == 0.25);
  auto defaults = LoadEngineConfig(dir.Write("empty.toml", "[command_bounds]\n"));
  REQUIRE(defaults.ok());
  CHECK(defaults->engine.command_bounds.min_k_min == 1);
  CHECK(defaults->engine.command_bounds.min_top_p == 0.0);
  CHECK(defaults->engine.command_bounds.max_availability_weight == 1.0);

  const std::string path =
      dir.Write("bad.toml", "[command_bounds]\nk_min_min = 1\ntop_p_min = 1.5\n");
  auto bad = LoadEngineConfig(path);
  REQUIRE_FALSE(bad.ok());
  const std::string message = bad.status().message();
  INFO(message);
  CHECK(message.find(path + ":3:") != std::string::npos);
  CHECK(message.find("top_p_min") != std::string::npos);
}

}  // namespace
}  // namespace moe::engine_app

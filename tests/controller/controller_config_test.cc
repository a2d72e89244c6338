#include <catch2/catch.hpp>

#include "controller_config.h"
#include "support/temp_dir.h"

namespace moe::controller {
namespace {

TEST_CASE("The shipped controller config and policies file load", "[config]") {
  auto options = LoadControllerConfig(std::string(MOE_SOURCE_DIR) + "/configs/controller.toml");
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->cadence_ms == 1000);
  CHECK(options->step_clock_ms == 0);  // real time
  CHECK(options->db_path == "/var/lib/moectld/moectl.db");
  CHECK(options->capacity.target_high == 0.02);      // from policies/default.toml
  CHECK(options->guard.capacity_factor.max == 8.0);  // from policies/default.toml
  CHECK(options->raw_retention_s == 7 * 86400);
  CHECK(options->policy_order == std::vector<std::string>{"counterfactual", "replication",
                                                          "capacity", "bias", "adaptive_k", "noise",
                                                          "learning"});
  CHECK_FALSE(options->learning_enabled);
  CHECK(options->learning.knobs == std::vector<std::string>{"capacity_factor"});
  CHECK(options->learning.arms ==
        std::vector<policies::Setting>{{1.0}, {1.25}, {1.5}, {2.0}, {3.0}});
  CHECK(options->learning.explore_max_drop_rate == 0.05);
  CHECK(options->learning.explore_quantile == 0.9);
  CHECK(options->learning.explore_lookback_steps == 16);
  CHECK(options->replication_enabled);
  CHECK(options->guard.placement_cooldown_ms == 250);
  CHECK(options->joint_changes);  // capacity and placement move in one command
  CHECK(options->replication.time_budget_ms == 1.0);
  CHECK(options->react_drop_rate == 0.02);
  CHECK(options->replication.forecast.method == policies::ForecastMethod::kRecent);
  CHECK(options->replication.forecast.change_threshold == 4.0);
  CHECK(options->replication.replica_counts == policies::ReplicaCountRule::kAuto);
  // The counterfactual policy sets capacity; the rule and the bias are off.
  CHECK(options->counterfactual_enabled);
  CHECK(options->counterfactual.pessimism == 0.2);
  CHECK_FALSE(options->capacity_enabled);
  CHECK_FALSE(options->bias_enabled);
  CHECK(options->reward.migration_weight == 1.0);
  CHECK(options->reward.capacity_weight == 0.0);
  CHECK(options->guard.expert_bias.max_change == 0.02);
  CHECK(options->guard.noise_std.min_change == 0.001);
}

TEST_CASE("Policy order, bias, adaptive K and noise sections are read and checked", "[config]") {
  moe::testing::TempDir dir;
  dir.Write("pol.toml",
            "order = [\"bias\", \"capacity\"]\n"
            "[bias]\nupdate_rate = 0.004\nmax_step = 0.01\n"
            "[adaptive_k]\nenabled = true\nslo_us = 30000\nmax_k = 4\n"
            "[noise]\nenabled = true\nmax_noise = 0.05\n"
            "[guard.expert_bias]\nmax = 0.3\nmin_change = 0.0005\n");
  std::string path = dir.Write("c.toml", "policies_file = \"pol.toml\"\n");
  auto options = LoadControllerConfig(path);
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->policy_order == std::vector<std::string>{"bias", "capacity"});
  CHECK(options->bias.update_rate == 0.004);
  CHECK(options->adaptive_k_enabled);
  CHECK(options->adaptive_k.slo_us == 30000);
  CHECK(options->adaptive_k.max_k == 4);
  CHECK(options->noise_enabled);
  CHECK(options->noise.max_noise == 0.05);
  CHECK(options->guard.expert_bias.max == 0.3);
  CHECK(options->guard.expert_bias.min_change == 0.0005);

  const std::string bad = dir.Write("bad.toml", "order = [\"capacity\", \"psychic\"]\n");
  dir.Write("c2.toml", "policies_file = \"bad.toml\"\n");
  auto refused = LoadControllerConfig(dir.File("c2.toml"));
  REQUIRE_FALSE(refused.ok());
  INFO(refused.status().message());
  CHECK(refused.status().message().find(bad + ":1:9: order: unknown policy \"psychic\"") !=
        std::string::npos);
}

TEST_CASE("[guard.KNOB] is read for every knob of the knob table", "[config][knobs]") {
  moe::testing::TempDir dir;
  dir.Write("pol.toml",
            "[guard.shortlist]\nmax = 16\nmax_change = 8\n"
            "[guard.availability_weight]\nmax = 0.5\n"
            "[guard.overflow_policy]\nmax = 1\n");
  auto options = LoadControllerConfig(dir.Write("c.toml", "policies_file = \"pol.toml\"\n"));
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->guard.shortlist.max == 16);
  CHECK(options->guard.shortlist.max_change == 8);
  CHECK(options->guard.availability_weight.max == 0.5);
  CHECK(options->guard.overflow_policy.max == 1);
  CHECK(options->guard.top_p.max == 1);  // the built-in limits where the file says nothing
  // The shipped policies file names them all.
  auto shipped = LoadControllerConfig(std::string(MOE_SOURCE_DIR) + "/configs/controller.toml");
  REQUIRE(shipped.ok());
  CHECK(shipped->guard.capacity_scope.max == 1);
  CHECK(shipped->guard.shortlist.max == 64);

  // An enum's limits are wire values of its names; an unknown key is an error.
  dir.Write("bad.toml", "[guard.capacity_scope]\nmax = 2\n");
  auto bad = LoadControllerConfig(dir.Write("c2.toml", "policies_file = \"bad.toml\"\n"));
  REQUIRE_FALSE(bad.ok());
  INFO(bad.status().message());
  CHECK(bad.status().message().find("guard.capacity_scope: min and max are wire values of "
                                    "expert, slot in [0, 1]") != std::string::npos);
  dir.Write("typo.toml", "[guard.shortlist]\nmaxx = 2\n");
  auto typo = LoadControllerConfig(dir.Write("c3.toml", "policies_file = \"typo.toml\"\n"));
  REQUIRE_FALSE(typo.ok());
  CHECK(typo.status().message().find("maxx") != std::string::npos);
}

TEST_CASE("The replication forecast and replica counts are read and checked", "[config]") {
  moe::testing::TempDir dir;
  dir.Write("pol.toml",
            "[replication]\nforecast = \"window_mean\"\nforecast_half_life = 8\n"
            "forecast_change_threshold = 0\nreplica_counts = \"balance\"\n");
  auto options = LoadControllerConfig(dir.Write("c.toml", "policies_file = \"pol.toml\"\n"));
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->replication.forecast.method == policies::ForecastMethod::kWindowMean);
  CHECK(options->replication.forecast.half_life_steps == 8.0);
  CHECK(options->replication.forecast.change_threshold == 0.0);
  CHECK(options->replication.replica_counts == policies::ReplicaCountRule::kBalance);

  dir.Write("bad.toml", "[replication]\nforecast = \"crystal_ball\"\n");
  auto refused = LoadControllerConfig(dir.Write("c2.toml", "policies_file = \"bad.toml\"\n"));
  REQUIRE_FALSE(refused.ok());
  INFO(refused.status().message());
  CHECK(refused.status().message().find("forecast") != std::string::npos);
  dir.Write("bad2.toml", "[replication]\nforecast_half_life = -1\n");
  CHECK_FALSE(LoadControllerConfig(dir.Write("c3.toml", "policies_file = \"bad2.toml\"\n")).ok());
  dir.Write("bad3.toml", "[replication]\nreplica_counts = \"many\"\n");
  CHECK_FALSE(LoadControllerConfig(dir.Write("c4.toml", "policies_file = \"bad3.toml\"\n")).ok());
}

TEST_CASE("mode and per-engine modes are read; a bad mode names its key", "[config][advisory]") {
  moe::testing::TempDir dir;
  std::string path = dir.Write("c.toml",
                               "mode = \"advisory\"\n"
                               "[engines.\"gpu-node-3\"]\nmode = \"active\"\n"
                               "[engines.canary]\nmode = \"advisory\"\n");
  auto options = LoadControllerConfig(path);
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->mode == ControlMode::kAdvisory);
  CHECK(options->ModeOf("gpu-node-3") == ControlMode::kActive);
  CHECK(options->ModeOf("canary") == ControlMode::kAdvisory);
  CHECK(options->ModeOf("anyone-else") == ControlMode::kAdvisory);
  auto shipped = LoadControllerConfig(std::string(MOE_SOURCE_DIR) + "/configs/controller.toml");
  REQUIRE(shipped.ok());
  CHECK(shipped->mode == ControlMode::kActive);

  dir.Write("bad.toml", "[engines.e1]\nmode = \"passive\"\n");
  auto refused = LoadControllerConfig(dir.File("bad.toml"));
  REQUIRE_FALSE(refused.ok());
  INFO(refused.status().message());
  CHECK(refused.status().message().find("engines.e1.mode") != std::string::npos);
  dir.Write("empty.toml", "[engines.e1]\n");
  auto missing = LoadControllerConfig(dir.File("empty.toml"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message().find("engines.e1.mode") != std::string::npos);
}

TEST_CASE("Config errors name file, line, column and key", "[config]") {
  moe::testing::TempDir dir;
  std::string path = dir.Write("c.toml",
                               "cadence = \"fast\"\n"
                               "[transport]\n"
                               "telemetry = 5555\n"
                               "[policies.capacity]\n"
                               "target_high = 2\n"
                               "[policies.gaurd]\n"
                               "cooldown = \"1s\"\n");
  auto options = LoadControllerConfig(path);
  REQUIRE_FALSE(options.ok());
  const std::string m = options.status().message();
  INFO(m);
  CHECK(m.find(path + ":1:11: cadence: expected a duration") != std::string::npos);
  CHECK(m.find(path + ":3:13: transport.telemetry: expected a string, got the integer 5555") !=
        std::string::npos);
  CHECK(m.find(path + ":5:15: policies.capacity.target_high: expected a number in [0, 1]") !=
        std::string::npos);
  CHECK(m.find("policies.gaurd: unknown key") != std::string::npos);
}

TEST_CASE("step_clock is a duration of at most an hour", "[config]") {
  moe::testing::TempDir dir;
  auto ok = LoadControllerConfig(dir.Write("c.toml", "step_clock = \"15ms\"\n"));
  INFO(ok.status().ToString());
  REQUIRE(ok.ok());
  CHECK(ok->step_clock_ms == 15);
  const std::string path = dir.Write("bad.toml", "cadence = \"1s\"\nstep_clock = \"2h\"\n");
  auto bad = LoadControllerConfig(path);
  REQUIRE_FALSE(bad.ok());
  INFO(bad.status().message());
  CHECK(bad.status().message().find(path + ":2:") != std::string::npos);
  CHECK(bad.status().message().find("step_clock") != std::string::npos);
}

TEST_CASE("[cost_model] reads a fixed model and the straggler switch; bad ones name the key",
          "[config]") {
  moe::testing::TempDir dir;
  auto shipped = LoadControllerConfig(dir.Write("empty.toml", ""));
  REQUIRE(shipped.ok());
  CHECK_FALSE(shipped->cost_model.fixed);  // fitted online by default
  CHECK(shipped->cost_model.stragglers);
  auto ok = LoadControllerConfig(
      dir.Write("c.toml",
                "[cost_model]\nsource = \"fixed\"\ndevice_fixed_us = 120\n"
                "device_per_row_us = 1.25\noverhead_fixed_us = 700\noverhead_per_token_us = 0.5\n"
                "stragglers = false\n"));
  INFO(ok.status().ToString());
  REQUIRE(ok.ok());
  CHECK(ok->cost_model.fixed);
  CHECK(ok->cost_model.device.fixed_us == 120);
  CHECK(ok->cost_model.device.per_row_us == 1.25);
  CHECK(ok->cost_model.overhead.fixed_us == 700);
  CHECK(ok->cost_model.overhead.per_row_us == 0.5);
  CHECK_FALSE(ok->cost_model.stragglers);

  struct Bad {
    std::string toml;
    std::string where;  // file:line: of the offending key
    std::string says;
  };
  const std::vector<Bad> bad = {
      // A fixed model needs its per-row cost.
      {"[cost_model]\nsource = \"fixed\"\ndevice_fixed_us = 100\n", ":1:", "device_per_row_us"},
      {"[cost_model]\nsource = \"fixed\"\ndevice_per_row_us = 0\n", "", "must be > 0"},
      {"[cost_model]\nsource = \"fixed\"\ndevice_per_row_us = -1\n", ":3:", "device_per_row_us"},
      // Figures without a fixed model would be silently ignored.
      {"[cost_model]\ndevice_per_row_us = 1.5\n", ":2:", "source = \"fixed\""},
      {"[cost_model]\nsource = \"guessed\"\n", ":2:", "measured"},
      {"[cost_model]\nstragglers = 1\n", ":2:", "stragglers"},
  };
  for (const Bad& b : bad) {
    const std::string path = dir.Write("bad.toml", b.toml);
    auto r = LoadControllerConfig(path);
    INFO(b.toml);
    REQUIRE_FALSE(r.ok());
    INFO(r.status().message());
    CHECK(r.status().message().find(path + b.where) != std::string::npos);
    CHECK(r.status().message().find(b.says) != std::string::npos);
  }
}

TEST_CASE("Unlimited capacity as a counterfactual candidate needs the guard's leave",
          "[config][unlimited]") {
  moe::testing::TempDir dir;
  const std::string policies =
      "[policies]\norder = [\"counterfactual\"]\n[policies.counterfactual]\nenabled = true\n"
      "candidates = [1.5, 0.0]\n";
  auto ok = LoadControllerConfig(
      dir.Write("c.toml", policies + "[policies.guard.capacity_factor]\nunlimited = true\n"));
  INFO(ok.status().ToString());
  REQUIRE(ok.ok());
  CHECK(ok->guard.unlimited_capacity);
  CHECK(ok->counterfactual.candidates == std::vector<double>{1.5, 0.0});

  auto refused = LoadControllerConfig(dir.Write("no.toml", policies));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("unlimited is false") != std::string::npos);
  auto priced = LoadControllerConfig(
      dir.Write("w.toml", policies + "[policies.guard.capacity_factor]\nunlimited = true\n"
                                     "[policies.reward]\ncapacity_weight = 0.1\n"));
  REQUIRE_FALSE(priced.ok());
  CHECK(priced.status().message().find("capacity_weight") != std::string::npos);
  const std::string tiny_path = dir.Write(
      "tiny.toml", "[policies.counterfactual]\nenabled = true\ncandidates = [1.5, 0.001]\n");
  auto tiny = LoadControllerConfig(tiny_path);
  REQUIRE_FALSE(tiny.ok());
  CHECK(tiny.status().message().find(tiny_path + ":3:") != std::string::npos);
  CHECK(tiny.status().message().find("0 means unlimited") != std::string::npos);
}

TEST_CASE("A policies file is resolved beside the config and checked too", "[config]") {
  moe::testing::TempDir dir;
  dir.Write("p/pol.toml", "[capacity]\ntarget_low = 0.3\ntarget_high = 0.2\n");
  std::string path = dir.Write("c.toml", "policies_file = \"p/pol.toml\"\n");
  auto options = LoadControllerConfig(path);
  REQUIRE_FALSE(options.ok());
  CHECK(options.status().message().find("target_low") != std::string::npos);

  dir.Write("p/pol.toml", "[capacity]\ntarget_low = 0.001\n[reward]\nslo_us = 1000\n");
  options = LoadControllerConfig(path);
  REQUIRE(options.ok());
  CHECK(options->capacity.target_low == 0.001);
  CHECK(options->reward.slo_us == 1000);

  dir.Write("p/pol.toml", "[capacity]\nspeed = 3\n");
  options = LoadControllerConfig(path);
  REQUIRE_FALSE(options.ok());
  CHECK(options.status().message().find("pol.toml:2:1: capacity.speed: unknown key") !=
        std::string::npos);
}

TEST_CASE("Retention of rollups and decisions is read from [storage] and checked",
          "[config][retention]") {
  moe::testing::TempDir dir;
  std::string path = dir.Write("c.toml",
                               "[storage]\n"
                               "raw_retention = \"1d\"\n"
                               "rollup_retention = \"30d\"\n"
                               "decision_retention = \"90d\"\n");
  auto options = LoadControllerConfig(path);
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->rollup_retention_s == 30 * 86400);
  CHECK(options->decision_retention_s == 90 * 86400);

  // Absent: kept forever, as before.
  options = LoadControllerConfig(dir.Write("empty.toml", ""));
  REQUIRE(options.ok());
  CHECK(options->rollup_retention_s == 0);
  CHECK(options->decision_retention_s == 0);

  // Rollups that would be deleted as soon as they are made.
  path = dir.Write("short.toml", "[storage]\nraw_retention = \"7d\"\nrollup_retention = \"1d\"\n");
  options = LoadControllerConfig(path);
  REQUIRE_FALSE(options.ok());
  INFO(options.status().message());
  CHECK(options.status().message().find(path + ":3:20: storage.rollup_retention: must not be "
                                               "shorter than raw_retention") != std::string::npos);

  // Not a duration, or negative.
  path =
      dir.Write("bad.toml", "[storage]\ndecision_retention = \"forever\"\nrollup_retention = -5\n");
  options = LoadControllerConfig(path);
  REQUIRE_FALSE(options.ok());
  const std::string m = options.status().message();
  INFO(m);
  CHECK(m.find(path + ":2:22: storage.decision_retention:") != std::string::npos);
  CHECK(m.find(path + ":3:20: storage.rollup_retention:") != std::string::npos);
}

}  // namespace
}  // namespace moe::controller

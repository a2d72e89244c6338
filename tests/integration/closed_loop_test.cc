// `moectl bench closed-loop` end to end on a tiny scenario: real moectl,
// moectld and moe-engine processes over loopback, a SQLite file per run.

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace {

using moe::testing::Subprocess;
using moe::testing::TempDir;
using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A small hot-spot workload that moves once, so capacity and placement matter.
constexpr char kScenario[] = R"(name = "tiny"
description = "32 tokens per step, the hot domain moves at step 12"
seed = 3
num_domains = 2
domain_scale = 1.0
noise_scale = 0.8
tokens_per_step = 32

[[keyframe]]
step = 0
mix = [0.9, 0.1]

[[keyframe]]
step = 12
mix = [0.1, 0.9]
)";

TEST_CASE("bench closed-loop runs every contender and reports sane figures", "[bench]") {
  TempDir dir;
  const std::string scenario = dir.Write("tiny.toml", kScenario);
  const auto started = std::chrono::steady_clock::now();
  Subprocess bench(
      {MOECTL_BIN, "bench", "closed-loop", "--scenario", scenario, "--steps", "24", "--json",
       "--grid", "2", "--step-interval-ms", "5", "--cadence-ms", "40", "--configs",
       std::string(MOE_SOURCE_DIR) + "/configs", "--out", dir.File("runs")},
      dir.File("bench.log"));
  std::optional<int> rc = bench.Wait(std::chrono::seconds(110));
  INFO(ReadFile(dir.File("bench.log")));
  REQUIRE(rc);
  REQUIRE(*rc == 0);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(110));
  // stdout and stderr share the log: the JSON document starts at its first '{'
  // at the start of a line.
  const std::string log = ReadFile(dir.File("bench.log"));
  const size_t begin = log.find("\n{");
  REQUIRE(begin != std::string::npos);
  const size_t end = log.rfind("\n}");
  REQUIRE(end != std::string::npos);
  json doc = json::parse(log.substr(begin + 1, end - begin + 1));
  CHECK(doc["scenario"] == "tiny");
  CHECK(doc["replay"] == false);
  CHECK(doc["cost_model"]["device_per_row_us"].get<double>() >= 0);
  std::set<std::string> names;
  for (const json& c : doc["contenders"]) {
    const std::string name = c["name"];
    INFO(name);
    names.insert(name);
    CHECK(c["steps"].get<uint64_t>() >= 20);
    CHECK(c["steps"].get<uint64_t>() <= 24);
    const double p50 = c["p50_latency_us"], p99 = c["p99_latency_us"];
    CHECK(p50 > 0);
    CHECK(p99 >= p50);
    CHECK(c["p50_measured_step_us"].get<double>() > 0);
    CHECK(c["tokens_per_s"].get<double>() > 0);
    const double drop = c["drop_rate"];
    CHECK(drop >= 0);
    CHECK(drop <= 1);
    CHECK(c["quality_error"].get<double>() >= 0);
    CHECK(c["bytes_migrated"].get<double>() >= 0);
    CHECK(c["rolled_back"].get<uint64_t>() <= c["decisions_applied"].get<uint64_t>());
    const double reward = c["mean_reward"];
    CHECK(std::isfinite(reward));
    CHECK(reward < 0.5);
  }
  CHECK(names == std::set<std::string>{"static_default", "static_dropless", "static_oracle",
                                       "dynamic_capacity", "expert_bias", "periodic_eplb",
                                       "moectl"});
  // The static ones send nothing; the oracle is the best of its grid.
  for (const json& c : doc["contenders"]) {
    if (c["name"] == "static_default" || c["name"] == "static_oracle") {
      CHECK(c["decisions_applied"] == 0);
    }
  }
  double best = -1e300;
  for (const json& g : doc["oracle_grid"])
    best = std::max(best, g["mean_reward"].get<double>());
  for (const json& c : doc["contenders"]) {
    if (c["name"] == "static_oracle") CHECK(c["mean_reward"].get<double>() == Approx(best));
  }
  CHECK(doc["verdict"].contains("moectl_beats_single_mechanisms"));
  // The controller prices with the calibration's model, not a fit of its own
  // run's times (which move with the machine's load): its config says so,
  // with the bench's figures to the last digit, and so does its log.
  CHECK(doc["cost_model"]["controller"].get<std::string>().find("fixed") != std::string::npos);
  const std::string run_dir = dir.File("runs") + "/moectl_cf1_k2_n0";
  const std::string toml = ReadFile(run_dir + "/controller.toml");
  INFO(toml);
  CHECK(toml.find("[cost_model]\nsource = \"fixed\"") != std::string::npos);
  const size_t per_row = toml.find("device_per_row_us = ");
  REQUIRE(per_row != std::string::npos);
  CHECK(std::stod(toml.substr(per_row + 20)) ==
        doc["cost_model"]["device_per_row_us"].get<double>());
  CHECK(ReadFile(run_dir + "/moectld.log").find("(fixed by [cost_model])") != std::string::npos);
}

TEST_CASE("bench closed-loop refuses an unknown scenario", "[bench]") {
  TempDir dir;
  Subprocess bench(
      {MOECTL_BIN, "bench", "closed-loop", "--scenario", "no_such_scenario", "--configs",
       std::string(MOE_SOURCE_DIR) + "/configs", "--out", dir.File("runs")},
      dir.File("bench.log"));
  std::optional<int> rc = bench.Wait(std::chrono::seconds(20));
  REQUIRE(rc);
  CHECK(*rc != 0);
  CHECK(ReadFile(dir.File("bench.log")).find("no scenario no_such_scenario") != std::string::npos);
}

TEST_CASE("bench closed-loop --plot draws every contender through the figure script", "[bench]") {
  TempDir dir;
  const std::string scenario = dir.Write("tiny.toml", kScenario);
  Subprocess bad({MOECTL_BIN, "bench", "closed-loop", "--scenario", scenario, "--plot",
                  dir.File("bench.pdf"), "--configs", std::string(MOE_SOURCE_DIR) + "/configs"},
                 dir.File("bad.log"));
  CHECK(bad.Wait(std::chrono::seconds(20)) == std::optional<int>(2));  // before any run
  CHECK(ReadFile(dir.File("bad.log")).find(".png or .svg") != std::string::npos);

  Subprocess probe({MOE_PYTHON, "-c", "import matplotlib"}, dir.File("probe.log"));
  if (probe.Wait(std::chrono::seconds(30)) != std::optional<int>(0)) {
    WARN(MOE_PYTHON " has no matplotlib (python3-matplotlib): no figure drawn");
    return;
  }
  const std::string svg = dir.File("bench.svg");
  Subprocess bench(
      {MOECTL_BIN, "bench", "closed-loop", "--scenario", scenario, "--steps", "24", "--contenders",
       "default,moectl", "--step-interval-ms", "5", "--cadence-ms", "40", "--configs",
       std::string(MOE_SOURCE_DIR) + "/configs", "--out", dir.File("runs"), "--plot", svg},
      dir.File("bench.log"));
  std::optional<int> rc = bench.Wait(std::chrono::seconds(110));
  INFO(ReadFile(dir.File("bench.log")));
  REQUIRE(rc == std::optional<int>(0));
  const std::string text = ReadFile(svg);
  CHECK(text.find("<svg") != std::string::npos);
  CHECK(text.find("closed-loop benchmark: tiny") != std::string::npos);
  CHECK(text.find("static_default") != std::string::npos);  // the legend
  CHECK(text.find("max |expert bias|") != std::string::npos);
}

}  // namespace

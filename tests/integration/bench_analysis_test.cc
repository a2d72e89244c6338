// The closed-loop bench's reading of epoch rows (apps/moectl/bench_analysis.h
// ApplyChange): a joint command's companion placement ("with") is part of the
// settings in force, so the bench prices the steps after it with that
// placement, as the engine ran them.

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "bench_analysis.h"

namespace moe::cli::bench {
namespace {

ModelShape Shape() {
  ModelShape s;
  s.num_layers = 2;
  s.num_experts = 4;
  s.num_replicas = 8;
  s.num_devices = 2;
  s.hidden = 16;
  s.expert_ffn = 32;
  return s;
}

EpochKnobs Default(const ModelShape& shape) {
  EpochKnobs k;
  k.knobs.capacity_factor = 1.0;
  k.phy2log.assign(shape.num_layers, {0, 1, 2, 3, 0, 1, 2, 3});
  k.bias.assign(shape.num_layers, std::vector<float>(shape.num_experts, 0.0f));
  return k;
}

TEST_CASE("A joint command's companion placement is in force after its epoch", "[bench]") {
  const ModelShape shape = Shape();
  EpochKnobs k = Default(shape);
  // controller.cc ChangeJson: a capacity raise with a placement of layer 0.
  const nlohmann::json change = nlohmann::json::parse(
      R"({"capacity_factor": 2.5, "with": [{"phy2log": {"0": {"1": [1, 0], "5": [1, 2]}}}]})");
  REQUIRE(ApplyChange(change, shape, &k).ok());
  CHECK(k.knobs.capacity_factor == 2.5);
  CHECK(k.phy2log[0] == std::vector<uint32_t>{0, 0, 2, 3, 0, 2, 2, 3});
  CHECK(k.phy2log[1] == std::vector<uint32_t>{0, 1, 2, 3, 0, 1, 2, 3});
  // Two slots moved, one on each device: the move costs one expert's bytes
  // over the link.
  CHECK(k.moved_bytes == Approx(2 * shape.ExpertBytes()));
  CHECK(k.move_us == Approx(shape.ExpertBytes() / (shape.inter_node_gbps * 1e3)));

  // The next row changes only the capacity: nothing moves, the placement stays.
  REQUIRE(ApplyChange(nlohmann::json::parse(R"({"capacity_factor": 2.0})"), shape, &k).ok());
  CHECK(k.moved_bytes == 0);
  CHECK(k.phy2log[0] == std::vector<uint32_t>{0, 0, 2, 3, 0, 2, 2, 3});
}

TEST_CASE("A companion placement out of range fails the row", "[bench]") {
  const ModelShape shape = Shape();
  EpochKnobs k = Default(shape);
  const Status s =
      ApplyChange(nlohmann::json::parse(
                      R"({"capacity_factor": 2.5, "with": [{"phy2log": {"0": {"9": [1, 0]}}}]})"),
                  shape, &k);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("slot out of range") != std::string::npos);
}

}  // namespace
}  // namespace moe::cli::bench

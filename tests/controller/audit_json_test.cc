// The decision row's inputs (SnapshotJsonText), written straight to text on
// the path from snapshot to command, reads back as the json tree of the same
// figures; a placement's changes written as text (PlacementChangesText,
// DumpWithMember) are the very text the json tree dumps; and the epoch
// ledger's running byte count stays that of its entries through every change.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "audit_json.h"
#include "epoch_ledger.h"

namespace moe::controller {
namespace {

using nlohmann::json;

// The tree the text must read back as (as the controller built it before it
// wrote the text by hand): non-finite numbers are null, an absent optional
// figure is absent.
json Expected(const policies::EngineSnapshot& s, const std::string& regime) {
  json layers = json::array();
  for (const policies::LayerEstimate& l : s.layers) {
    layers.push_back({{"layer", l.layer},
                      {"drop_rate", l.drop_rate},
                      {"overflow_rate", l.overflow_rate},
                      {"max_over_mean", l.max_over_mean},
                      {"layer_us", l.layer_us}});
  }
  json j = {{"epoch", s.epoch},
            {"steps_in_epoch", s.steps_in_epoch},
            {"drop_rate", s.drop_rate},
            {"overflow_rate", s.overflow_rate},
            {"step_us", s.step_us},
            {"max_over_mean", s.max_over_mean},
            {"telemetry_age_ms", (s.now_ns - s.last_telemetry_ns) / 1'000'000},
            {"tokens_per_step", s.tokens_per_step},
            {"regime", regime},
            {"knobs", KnobsJson(s.knobs)},
            {"layers", std::move(layers)}};
  if (s.quality_error) j["quality_error"] = *s.quality_error;
  if (s.demand_max_over_mean) j["demand_max_over_mean"] = *s.demand_max_over_mean;
  // Through text, as a reader sees it (null for NaN and infinities).
  return json::parse(j.dump());
}

TEST_CASE("The snapshot's audit text reads back as its figures", "[audit]") {
  policies::EngineSnapshot s;
  s.epoch = 7;
  s.steps_in_epoch = 31;
  s.now_ns = 5'000'000'000;
  s.last_telemetry_ns = 4'990'000'000;
  s.drop_rate = 0.1;
  s.overflow_rate = 1e-7;
  s.step_us = 4000.0;  // whole: written as 4000.0
  s.max_over_mean = 1.0 / 3.0;
  s.tokens_per_step = 4096;
  s.knobs.capacity_factor = 1.25;
  s.knobs.top_k = 6;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> any(-1e6, 1e6);
  for (uint32_t l = 0; l < 61; ++l) {
    policies::LayerEstimate e;
    e.layer = l;
    e.drop_rate = any(rng);
    e.overflow_rate = l % 7 == 0 ? std::numeric_limits<double>::quiet_NaN() : any(rng);
    e.max_over_mean = l % 11 == 0 ? std::numeric_limits<double>::infinity() : 2.0;
    e.layer_us = std::ldexp(any(rng), -40);
    s.layers.push_back(e);
  }
  const std::string regime = "imbalance 2 of 3, \"tokens\" 1 of 1";

  SECTION("without the optional figures") {
    const json text = json::parse(SnapshotJsonText(s, regime));
    CHECK(text == Expected(s, regime));
    CHECK_FALSE(text.contains("quality_error"));
    CHECK(text["layers"][7]["overflow_rate"].is_null());
    CHECK(text["step_us"].is_number_float());
  }
  SECTION("with them") {
    s.quality_error = 0.02;
    s.demand_max_over_mean = std::numeric_limits<double>::quiet_NaN();
    const json text = json::parse(SnapshotJsonText(s, regime));
    CHECK(text == Expected(s, regime));
    CHECK(text["demand_max_over_mean"].is_null());
    // Every double reads back to the same bits.
    CHECK(text["max_over_mean"].get<double>() == s.max_over_mean);
    CHECK(text["layers"][60]["layer_us"].get<double>() == s.layers[60].layer_us);
  }
  SECTION("with no layers") {
    s.layers.clear();
    CHECK(json::parse(SnapshotJsonText(s, regime)) == Expected(s, regime));
  }
}

uint64_t BytesFromScratch(const EpochLedger& ledger, uint64_t last_epoch) {
  uint64_t bytes = 0;
  for (uint64_t epoch = 0; epoch <= last_epoch; ++epoch) {
    const EpochEntry* entry = ledger.Find(epoch);
    if (entry == nullptr) continue;
    for (const auto& layer : entry->knobs.expert_bias)
      bytes += sizeof(layer) + layer.capacity() * sizeof(float);
    for (const auto& layer : entry->knobs.phy2log)
      bytes += sizeof(layer) + layer.capacity() * sizeof(uint32_t);
  }
  return bytes;
}

TEST_CASE("A placement's changes as text are the text of their json tree", "[audit]") {
  std::mt19937_64 rng(17);
  std::uniform_int_distribution<uint32_t> expert(0, 255);
  std::uniform_int_distribution<int> coin(0, 9);
  for (int round = 0; round < 50; ++round) {
    // 61 x 288 slots, a few moved per layer; some layers untouched, and
    // (some rounds) layers or slots the placement in force lacks.
    std::vector<std::vector<uint32_t>> before(61, std::vector<uint32_t>(288));
    for (auto& layer : before)
      for (uint32_t& e : layer)
        e = expert(rng);
    std::vector<std::vector<uint32_t>> after = before;
    for (auto& layer : after) {
      if (coin(rng) < 3) continue;
      for (int m = 0; m < 8; ++m)
        layer[expert(rng) % layer.size()] = expert(rng);
    }
    if (round % 5 == 1) before.resize(40);
    if (round % 5 == 2) before[7].resize(100);
    if (round % 5 == 3) after.push_back({});
    if (round % 5 == 4) before.clear();
    const json tree = PlacementChangesJson(before, after);
    const std::string text = PlacementChangesText(before, after);
    REQUIRE(text == tree.dump());

    // Spliced into a proposal (a member sorting first) and a command (in
    // the middle, between "epoch" and "with"), with text that needs escaping.
    json proposal = {{"knob", "phy2log"},
                     {"layer", -1},
                     {"current", 1.25},
                     {"value", 1.0 / 3},
                     {"reason", "moves \"hot\" experts\n\u00e9"}};
    json full = proposal;
    full["changes"] = tree;
    CHECK(DumpWithMember(proposal, "changes", text) == full.dump());
    json command = {{"epoch", 12}, {"with", json::array({{{"capacity_factor", 2.5}}})}};
    full = command;
    full["phy2log"] = tree;
    CHECK(DumpWithMember(command, "phy2log", text) == full.dump());
    CHECK(DumpWithMember(json::object(), "phy2log", text) == json({{"phy2log", tree}}).dump());
    CHECK(DumpWithMember(json({{"a", 1}}), "phy2log", text) ==
          json({{"a", 1}, {"phy2log", tree}}).dump());
  }
}

TEST_CASE("The epoch ledger's byte count follows its entries", "[audit][window]") {
  std::mt19937_64 rng(11);
  EpochLedger ledger;
  ledger.set_max_bytes(uint64_t{1} << 20);
  uint64_t epoch = 0;
  for (int i = 0; i < 600; ++i) {
    policies::KnobValues knobs;
    knobs.phy2log.assign(rng() % 4, std::vector<uint32_t>(rng() % 5000, 1));
    knobs.expert_bias.assign(rng() % 3, std::vector<float>(rng() % 3000, 0.5f));
    switch (rng() % 6) {
      case 0:  // a Hello over the epoch in force
        ledger.OnHello(epoch, knobs, false);
        break;
      case 1:  // an engine restart: counts epochs afresh from a lower one
        epoch = epoch > 5 ? epoch - 5 : 0;
        ledger.OnHello(epoch, knobs, true);
        break;
      case 2:  // a command the engine refuses
        ledger.OnSent(++epoch, knobs);
        ledger.OnRefused(epoch);
        break;
      default:  // a command that lands
        ledger.OnSent(++epoch, knobs);
        ledger.OnAcked(epoch);
        break;
    }
    REQUIRE(ledger.bytes() == BytesFromScratch(ledger, epoch + 1));
    REQUIRE(ledger.size() <= EpochLedger::kMaxEntries);
  }
  CHECK(ledger.bytes() <= uint64_t{1} << 20);
}

}  // namespace
}  // namespace moe::controller

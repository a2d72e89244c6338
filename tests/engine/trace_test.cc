// Routing traces (docs/engine.md, "Routing traces"): "A scenario can also
// replay a recorded routing trace, so real traces from other engines can drive
// the engine."

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "moe/engine/engine.h"
#include "routing_trace.h"
#include "support/temp_dir.h"
#include "test_util.h"

namespace moe::engine {
namespace {

using engine_app::LoadRoutingTrace;
using engine_app::RoutingOf;
using engine_app::TraceHeader;
using engine_app::TraceRecorder;
using testing::MakeEngine;
using testing::RandomTokens;
using testing::SmallOptions;

Options TraceOptions() {
  Options o = SmallOptions();
  o.model.num_layers = 2;
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 1.0;
  o.knobs.noise_std = 0.05;  // the router's choice depends on the seed
  return o;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_CASE("Replay through a trace file reproduces the recorded selection exactly", "[trace]") {
  moe::testing::TempDir dir;
  const std::string path = dir.File("run.jsonl");
  Options o = TraceOptions();
  const int num_steps = 4;
  std::vector<int> tokens = {40, 17, 40, 33};
  std::vector<StepStats> recorded;
  {
    auto engine = MakeEngine(o);
    TraceHeader header{o.model.num_layers, o.model.num_experts, o.knobs.top_k, "test"};
    auto recorder = TraceRecorder::Open(path, header);
    REQUIRE(recorder.ok());
    for (int s = 0; s < num_steps; ++s) {
      const std::vector<float> x = RandomTokens(tokens[s], o.model.hidden, 100 + s);
      StepInput in{x.data(), tokens[s], {}};
      in.record_selection = true;
      auto stats = engine->Step(in);
      REQUIRE(stats.ok());
      REQUIRE((*recorder)->Append(*stats).ok());
      recorded.push_back(*stats);
    }
    REQUIRE((*recorder)->Close().ok());
  }
  auto trace = LoadRoutingTrace(path);
  INFO(trace.status().ToString());
  REQUIRE(trace.ok());
  REQUIRE(trace->steps.size() == num_steps);
  CHECK(trace->header.source == "test");

  // Replay on an engine whose router would choose differently (other noise
  // seed, a strong bias): the selection must still be the recorded one.
  Options other = o;
  other.seed = 999;
  other.knobs.expert_bias.assign(o.model.num_experts, 0.0f);
  other.knobs.expert_bias[0] = 5.0f;
  auto replay = MakeEngine(other);
  auto free_run = MakeEngine(other);
  for (int s = 0; s < num_steps; ++s) {
    const engine_app::TraceStep* ts = trace->StepFor(s, false);
    REQUIRE(ts != nullptr);
    REQUIRE(ts->num_tokens == static_cast<uint32_t>(tokens[s]));
    const std::vector<float> x = RandomTokens(tokens[s], o.model.hidden, 100 + s);
    StepInput in{x.data(), tokens[s], {}};
    in.routing = RoutingOf(*ts);
    in.record_selection = true;
    auto stats = replay->Step(in);
    REQUIRE(stats.ok());
    StepInput plain{x.data(), tokens[s], {}};
    plain.record_selection = true;
    auto routed = free_run->Step(plain);
    REQUIRE(routed.ok());
    for (uint32_t l = 0; l < o.model.num_layers; ++l) {
      const LayerStats& want = recorded[s].layers[l];
      const LayerStats& got = stats->layers[l];
      CHECK(got.replayed);
      CHECK(got.selection.experts == want.selection.experts);
      CHECK(got.selection.offsets == want.selection.offsets);
      CHECK(got.expert_demand == want.expert_demand);
      // Capacity still applies to the replayed selection.
      CHECK(got.capacity == want.capacity);
      for (uint32_t n : got.expert_tokens)
        CHECK(n <= got.capacity);
      CHECK(!routed->layers[l].replayed);
    }
    // Without the trace, the biased router picks expert 0 for nearly everyone.
    CHECK(routed->layers[0].expert_demand[0] > stats->layers[0].expert_demand[0]);
  }
  CHECK(trace->StepFor(num_steps, false) == nullptr);
  CHECK(trace->StepFor(num_steps, true) == &trace->steps[0]);
}

TEST_CASE("Replay with the recording's knobs reproduces the outcome", "[trace]") {
  Options o = TraceOptions();
  o.knobs.noise_std = 0;
  auto engine = MakeEngine(o);
  const int num_tokens = 48;
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 5);
  StepInput in{x.data(), num_tokens, {}};
  in.record_selection = true;
  std::vector<float> out_a, out_b;
  auto a = engine->Step(in, &out_a);
  REQUIRE(a.ok());
  StepInput again{x.data(), num_tokens, {}};
  again.routing = {&a->layers[0].selection, &a->layers[1].selection};
  auto b = engine->Step(again, &out_b);
  REQUIRE(b.ok());
  CHECK(out_a == out_b);
  for (int l = 0; l < 2; ++l) {
    CHECK(a->layers[l].expert_tokens == b->layers[l].expert_tokens);
    CHECK(a->layers[l].dropped == b->layers[l].dropped);
  }
  // A selection of the wrong size is refused.
  ExpertSelection short_one = a->layers[0].selection;
  short_one.offsets.pop_back();
  again.routing = {&short_one};
  CHECK(engine->Step(again).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Replay keeps the knobs in charge: top_k truncates, capacity drops", "[trace]") {
  Options o = TraceOptions();
  o.model.num_layers = 1;
  o.knobs.noise_std = 0;
  o.knobs.top_k = 3;
  o.knobs.capacity_factor = 0;
  auto engine = MakeEngine(o);
  const int num_tokens = 32;
  // Every token recorded expert 3 first, then 5, then 6.
  ExpertSelection hot;
  hot.offsets.push_back(0);
  for (int t = 0; t < num_tokens; ++t) {
    hot.experts.insert(hot.experts.end(), {3, 5, 6});
    hot.offsets.push_back(static_cast<uint32_t>(hot.experts.size()));
  }
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 8);
  StepInput in{x.data(), num_tokens, {}};
  in.routing = {&hot};
  auto unlimited = engine->Step(in);
  REQUIRE(unlimited.ok());
  CHECK(unlimited->layers[0].expert_tokens[3] == num_tokens);
  CHECK(unlimited->layers[0].expert_tokens[6] == num_tokens);
  CHECK(unlimited->layers[0].dropped == 0);

  KnobUpdate update;
  update.epoch = 1;
  update.all_layers.top_k = 2;
  update.all_layers.capacity_factor = 1.0;  // capacity ceil(32 * 2 / 8) = 8
  REQUIRE(engine->Submit(update).ok());
  auto capped = engine->Step(in);
  REQUIRE(capped.ok());
  const LayerStats& l = capped->layers[0];
  CHECK(l.num_token_slots == 2u * num_tokens);
  CHECK(l.expert_tokens[3] == 8);
  CHECK(l.expert_tokens[5] == 8);
  CHECK(l.expert_tokens[6] == 0);
  CHECK(l.dropped == 2u * num_tokens - 16);
}

std::string Header() {
  return R"({"format": "moectl-routing-trace", "version": 1, "num_layers": 2, "num_experts": 8})";
}

// Loads `body` after a valid header and returns the error message.
std::string TraceError(const moe::testing::TempDir& dir, const std::string& body,
                       bool with_header = true) {
  const std::string path = dir.Write("bad.jsonl", (with_header ? Header() + "\n" : "") + body);
  auto trace = LoadRoutingTrace(path);
  if (trace.ok()) return "loaded";
  return trace.status().message();
}

TEST_CASE("Bad trace lines give errors naming the file, line and field", "[trace]") {
  moe::testing::TempDir dir;
  const std::string ok0 = R"({"step": 0, "layer": 0, "experts": [[1, 2], [3, 4]]})";
  const std::string ok1 = R"({"step": 0, "layer": 1, "experts": [[1], [3, 4]]})";
  CHECK(TraceError(dir, ok0 + "\n\n" + ok1 + "\n") == "loaded");

  auto check = [&](const std::string& body, const std::string& where, const std::string& what,
                   bool with_header = true) {
    const std::string msg = TraceError(dir, body, with_header);
    INFO(msg);
    CHECK(msg.find("bad.jsonl:" + where) != std::string::npos);
    CHECK(msg.find(what) != std::string::npos);
  };
  check(ok0 + "\n{\"step\": 0, \"layer\": 1, \"experts\": [[1, 9]]}\n",
        "3: field \"experts\": token 0", "expert id 9 is not in [0, 8)");
  check(ok0 + "\n" + R"({"step": 0, "layer": 1, "experts": [[1, 2]]})", "3: field \"experts\"",
        "1 tokens, but step 0 has 2 (line 2)");
  check(ok0 + "\n" + R"({"step": 0, "layer": 0, "experts": [[5], [6]]})", "3: field \"layer\"",
        "appears twice");
  check(ok0 + "\n" + R"({"step": 2, "layer": 0, "experts": [[5], [6]]})", "3: field \"step\"",
        "expected 0 or 1");
  check(R"({"step": 0, "layer": 2, "experts": [[5]]})", "2: field \"layer\"",
        "expected an integer in [0, 2)");
  check(R"({"step": 0, "layer": 0, "experts": [[5, 5]]})", "2: field \"experts\": token 0",
        "expert 5 appears twice");
  check(R"({"step": 0, "layer": 0, "experts": [[]]})", "2: field \"experts\": token 0",
        "non-empty list");
  check(R"({"step": 0, "layer": 0})", "2: ", "\"experts\" is missing");
  check(R"({"step": 0, "layer": 0, "expert": [[1]]})", "2: ", "unknown field \"expert\"");
  check("{\"step\": 0, \"layer\": 0, \"experts\": [[1]\n", "2: ", "not a valid JSON object");
  check(R"({"format": "something-else", "version": 1})", "1: field \"format\"",
        "the first line must be the header", false);
  check(R"({"format": "moectl-routing-trace", "version": 2, "num_layers": 1, "num_experts": 8})",
        "1: field \"version\"", "not supported", false);
  check("", "2: ", "no records");

  auto missing = LoadRoutingTrace(dir.File("nope.jsonl"));
  CHECK(missing.status().code() == StatusCode::kNotFound);

  // A trace that does not fit the model names the header field.
  const std::string path = dir.Write("fit.jsonl", Header() + "\n" + ok0 + "\n");
  auto trace = LoadRoutingTrace(path);
  REQUIRE(trace.ok());
  Options o = SmallOptions();
  o.model.num_layers = 2;
  CHECK(engine_app::CheckTraceFitsModel(*trace, o).ok());
  o.model.num_experts = 16;
  CHECK(engine_app::CheckTraceFitsModel(*trace, o).message().find(
            "fit.jsonl:1: field \"num_experts\"") != std::string::npos);
  o.model.num_experts = 8;
  o.model.num_layers = 1;
  CHECK(engine_app::CheckTraceFitsModel(*trace, o).message().find("num_layers") !=
        std::string::npos);
}

TEST_CASE("The recorder writes the documented format", "[trace]") {
  moe::testing::TempDir dir;
  const std::string path = dir.File("one.jsonl");
  auto recorder = TraceRecorder::Open(path, TraceHeader{1, 8, 2, "unit"});
  REQUIRE(recorder.ok());
  StepStats stats;
  stats.layers.resize(1);
  stats.layers[0].selection.experts = {3, 1, 4};
  stats.layers[0].selection.offsets = {0, 2, 3};
  REQUIRE((*recorder)->Append(stats).ok());
  REQUIRE((*recorder)->Close().ok());
  CHECK(ReadAll(path) ==
        "{\"format\":\"moectl-routing-trace\",\"version\":1,\"num_layers\":1,\"num_experts\":8,"
        "\"top_k\":2,\"source\":\"unit\"}\n"
        "{\"step\":0,\"layer\":0,\"experts\":[[3,1],[4]]}\n");
}

}  // namespace
}  // namespace moe::engine

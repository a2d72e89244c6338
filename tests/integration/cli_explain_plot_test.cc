// `moectl explain ID --format table|csv|json` and `moectl plot` on a real
// SQLite file written by the Store, run as processes the way an operator
// does. The decisions' JSON has the shapes the controller writes
// (controller/src/audit_json.cc: proposal "changes" and the command's knob
// entry are {layer: {index: [before, after]}}).

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_support.h"
#include "moe/common/clock.h"
#include "moe/storage/store.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using cli_testing::Exec;
using cli_testing::ReadFile;
using cli_testing::Run;
using nlohmann::json;
using testing::TempDir;

struct Db {
  std::string path;
  int64_t scalar = 0, vector = 0, placement = 0, rejected = 0;
};

// Engine "p1" (2 layers, 40 steps: 1-20 under epoch 1 dropping a fifth of
// its token-slots, 21-40 under epoch 2 dropping none), engine "p2" (a Hello
// only), and four decisions of p1.
Db MakeDb(const TempDir& dir) {
  Db db;
  storage::StoreOptions o;
  o.path = dir.File("moectl.db");
  auto store = storage::Store::Open(o, SystemClock());
  REQUIRE(store.ok());
  const int64_t now = SystemClock()->NowNanos();
  for (const char* id : {"p1", "p2"}) {
    telemetry::Hello hello;
    hello.engine_id = id;
    hello.backend = "cpu";
    hello.num_layers = 2;
    hello.num_experts = 4;
    hello.epoch = 1;
    hello.timestamp_ns = now - 60'000'000'000;
    (*store)->UpsertEngine(hello);
  }
  (*store)->RecordEpoch({"p1", 1, now - 50'000'000'000,
                         R"({"top_k":2,"capacity_factor":1.0,"source":"engine hello"})", 0});
  for (uint64_t step = 1; step <= 40; ++step) {
    telemetry::StepRecord r;
    r.engine_id = "p1";
    r.seq = step;
    r.step = step;
    r.epoch = step <= 20 ? 1 : 2;
    r.timestamp_ns = now - static_cast<int64_t>(41 - step) * 100'000'000;
    r.step_us = 1000.0 + static_cast<double>(step);
    for (uint32_t layer = 0; layer < 2; ++layer) {
      telemetry::LayerRecord l;
      l.layer = layer;
      l.num_tokens = 10;
      l.num_token_slots = 20;
      l.expert_tokens = {8, 4, 4, 4};
      l.dropped = step <= 20 ? 4 : 0;
      l.overflowed = l.dropped;
      l.timing.total_us = 400.0;
      r.layers.push_back(l);
    }
    (*store)->AppendStep(r);
  }

  storage::DecisionRow d;
  d.engine_id = "p1";
  d.policy = "capacity";
  d.knob = "capacity_factor";
  d.created_ns = now - 2'100'000'000;
  d.proposal_json =
      R"({"knob":"capacity_factor","layer":-1,"current":1.0,"value":2.0,"reason":"drops 0.2"})";
  d.verdict = "clamped";
  d.verdict_reason = "step limited to 0.5";
  d.command_json = R"({"capacity_factor":1.5,"epoch":2})";
  d.status = "sent";
  d.predicted_gain = 0.125;
  d.prediction_json = R"({"basis":"cost model"})";
  db.scalar = (*store)->RecordDecision(d);
  (*store)->RecordCommandSent(db.scalar, 2, d.created_ns);
  telemetry::Ack ack;
  ack.engine_id = "p1";
  ack.epoch = 2;
  ack.applied = true;
  ack.applied_at_step = 21;
  ack.timestamp_ns = d.created_ns + 1'000'000;
  (*store)->RecordAck(db.scalar, ack);
  (*store)->RecordOutcome(db.scalar, {R"({"drop_rate":0.0})", -3.5, -1.25, now});
  (*store)->RecordEpoch({"p1", 2, ack.timestamp_ns, R"({"capacity_factor":1.5})", db.scalar});

  storage::DecisionRow v;
  v.engine_id = "p1";
  v.policy = "expert_bias";
  v.knob = "expert_bias";
  v.created_ns = now - 1'000'000'000;
  v.proposal_json = R"({"knob":"expert_bias","layer":-1,"current":0,"value":0.5,"reason":"hot",
      "changes":{"0":{"10":[0.0,0.3],"2":[0.0,-0.2]},"1":{"3":[0.1,0.5]}}})";
  v.verdict = "clamped";
  v.verdict_reason = "bias held to 0.25 per step";
  v.command_json =
      R"({"expert_bias":{"0":{"10":[0.0,0.25],"2":[0.0,-0.2]},"1":{"3":[0.1,0.35]}},"epoch":3})";
  v.status = "sent";
  db.vector = (*store)->RecordDecision(v);

  storage::DecisionRow p;
  p.engine_id = "p1";
  p.policy = "replication";
  p.knob = "phy2log";
  p.created_ns = now - 900'000'000;
  p.proposal_json = R"({"knob":"phy2log","layer":0,"current":0,"value":0,"reason":"skew",
      "changes":{"0":{"4":[2,7],"5":[null,1]}}})";
  p.verdict = "accepted";
  p.command_json = R"({"phy2log":{"0":{"4":[2,7],"5":[null,1]}}})";
  p.status = "advisory";
  db.placement = (*store)->RecordDecision(p);

  storage::DecisionRow r;
  r.engine_id = "p1";
  r.policy = "capacity";
  r.knob = "capacity_factor";
  r.created_ns = now - 800'000'000;
  r.proposal_json =
      R"({"knob":"capacity_factor","layer":-1,"current":1.5,"value":3.0,"reason":"drops"})";
  r.verdict = "rejected";
  r.verdict_reason = "cooldown";
  r.status = "rejected";
  db.rejected = (*store)->RecordDecision(r);
  REQUIRE((*store)->Close().ok());
  db.path = o.path;
  return db;
}

Run Explain(const TempDir& dir, const Db& db, int64_t id, const std::string& format) {
  return Exec(dir,
              {MOECTL_BIN, "explain", "--db", db.path, "--format", format, std::to_string(id)});
}

TEST_CASE("explain --format csv lists the change element by element", "[integration][cli]") {
  TempDir dir;
  const Db db = MakeDb(dir);
  const std::string header = "knob,layer,index,from,proposed,to\n";
  Run scalar = Explain(dir, db, db.scalar, "csv");
  CHECK(scalar.status == 0);
  CHECK(scalar.out == header + "capacity_factor,all,,1,2,1.5\n");
  // Layers and indexes in numeric order (10 after 2); "to" is what was sent.
  Run vec = Explain(dir, db, db.vector, "csv");
  CHECK(vec.status == 0);
  CHECK(vec.out == header +
                       "expert_bias,0,2,0,-0.2,-0.2\n"
                       "expert_bias,0,10,0,0.3,0.25\n"
                       "expert_bias,1,3,0.1,0.5,0.35\n");
  // A slot that held no expert before has no "from".
  Run placement = Explain(dir, db, db.placement, "csv");
  CHECK(placement.status == 0);
  CHECK(placement.out == header + "phy2log,0,4,2,7,7\nphy2log,0,5,,1,1\n");
  // Rejected: nothing was sent.
  Run rejected = Explain(dir, db, db.rejected, "csv");
  CHECK(rejected.status == 0);
  CHECK(rejected.out == header + "capacity_factor,all,,1.5,3,\n");
}

TEST_CASE("explain --format table: the decision's figures, then its change", "[integration][cli]") {
  TempDir dir;
  const Db db = MakeDb(dir);
  Run t = Explain(dir, db, db.scalar, "table");
  INFO(t.out << t.err);
  CHECK(t.status == 0);
  for (const std::string& line :
       {"id:              " + std::to_string(db.scalar) + "\n",
        std::string("engine:          p1\n"), std::string("policy:          capacity\n"),
        std::string("knob:            capacity_factor\n"), std::string("layer:           all\n"),
        std::string("proposal:        drops 0.2\n"),
        std::string("verdict:         clamped: step limited to 0.5\n"),
        std::string("status:          measured\n"), std::string("epoch:           2\n"),
        std::string("predicted gain:  0.125\n"), std::string("reward before:   -3.5\n"),
        std::string("reward after:    -1.25\n")}) {
    CHECK(t.out.find(line) != std::string::npos);
  }
  CHECK(t.out.find(", applied at step 21\n") != std::string::npos);
  CHECK(t.out.find("knob             layer  index  from  proposed  to\n") != std::string::npos);
  CHECK(t.out.find("capacity_factor  all           1     2         1.5\n") != std::string::npos);

  Run v = Explain(dir, db, db.vector, "table");
  CHECK(v.status == 0);
  CHECK(v.out.find("epoch:           -\n") != std::string::npos);
  CHECK(v.out.find("ack:             -\n") != std::string::npos);
  CHECK(v.out.find("expert_bias  0      10     0     0.3       0.25\n") != std::string::npos);
  // Table is the default, like the other commands.
  Run plain = Exec(dir, {MOECTL_BIN, "explain", "--db", db.path, std::to_string(db.vector)});
  CHECK(plain.out == v.out);
}

TEST_CASE("explain --format json is the audit record; bad input exits as specified",
          "[integration][cli]") {
  TempDir dir;
  const Db db = MakeDb(dir);
  Run j = Explain(dir, db, db.vector, "json");
  REQUIRE(j.status == 0);
  const json doc = json::parse(j.out);
  CHECK(doc["id"] == db.vector);
  CHECK(doc["guard"]["verdict"] == "clamped");
  CHECK(doc["proposal"]["changes"]["0"]["10"][1] == 0.3);
  CHECK(doc["command"]["expert_bias"]["1"]["3"][1] == 0.35);

  Run bad_format = Explain(dir, db, db.vector, "xml");
  CHECK(bad_format.status == 2);
  CHECK(bad_format.err.find("table, csv or json") != std::string::npos);
  CHECK(bad_format.out.empty());
  Run missing = Explain(dir, db, 999, "table");
  CHECK(missing.status == 1);
  CHECK_FALSE(missing.err.empty());
}

bool HasMatplotlib(const TempDir& dir) {
  return Exec(dir, {MOE_PYTHON, "-c", "import matplotlib"}).status == 0;
}

TEST_CASE("plot draws PNG and SVG files with the epochs marked", "[integration][cli]") {
  TempDir dir;
  const Db db = MakeDb(dir);
  if (!HasMatplotlib(dir)) {
    WARN(MOE_PYTHON " has no matplotlib (python3-matplotlib): only the refusal is checked");
    Run r = Exec(dir, {MOECTL_BIN, "plot", "--db", db.path, "--engine", "p1", "--field",
                       "drop_rate", "--out", dir.File("run.png")});
    CHECK(r.status == 1);
    CHECK(r.err.find("python3-matplotlib") != std::string::npos);
    return;
  }
  const std::string png = dir.File("run.png");
  Run p = Exec(dir, {MOECTL_BIN, "plot", "--db", db.path, "--engine", "p1", "--field",
                     "drop_rate,max_over_mean", "--since", "-1h", "--out", png});
  INFO(p.err);
  REQUIRE(p.status == 0);
  CHECK(p.out.empty());
  CHECK(p.err.find("40 steps, 1 epoch changes") != std::string::npos);
  const std::string png_bytes = ReadFile(png);
  REQUIRE(png_bytes.size() > 1000);
  CHECK(png_bytes.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));

  const std::string svg = dir.File("run.svg");
  Run s = Exec(dir, {MOECTL_BIN, "plot", "--db", db.path, "--engine", "p1", "--field",
                     "drop_rate,step_us,layer_us,quality_error", "--out", svg});
  INFO(s.err);
  REQUIRE(s.status == 0);
  // Well-formed XML (Python's own parser), with the epoch's line and label.
  Run parsed = Exec(dir, {MOE_PYTHON, "-c",
                          "import sys, xml.etree.ElementTree as ET\n"
                          "root = ET.parse(sys.argv[1]).getroot()\n"
                          "print(root.tag)\n"
                          "print(sum(1 for e in root.iter() if e.get('id') == 'epoch-2'))",
                          svg});
  INFO(parsed.err);
  CHECK(parsed.status == 0);
  CHECK(parsed.out == "{http://www.w3.org/2000/svg}svg\n1\n");
  const std::string text = ReadFile(svg);
  CHECK(text.find("epoch 2: capacity_factor=1.5") != std::string::npos);
  CHECK(text.find("id=\"epoch-2-3\"") != std::string::npos);  // the line crosses all 4 panels
  CHECK(text.find("quality_error") != std::string::npos);
}

TEST_CASE("plot refuses bad input with the usage or failure exit", "[integration][cli]") {
  TempDir dir;
  const Db db = MakeDb(dir);
  auto plot = [&](std::vector<std::string> extra, std::vector<std::string> env = {}) {
    std::vector<std::string> argv = {MOECTL_BIN, "plot", "--db", db.path};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Exec(dir, argv, env);
  };
  const std::string out = dir.File("x.png");
  Run field = plot({"--engine", "p1", "--field", "drop_rate,bogus", "--out", out});
  CHECK(field.status == 2);
  CHECK(field.err.find("bogus") != std::string::npos);
  for (const char* known : {"drop_rate", "max_over_mean", "step_us", "layer_us", "quality_error"})
    CHECK(field.err.find(known) != std::string::npos);
  Run ext = plot({"--engine", "p1", "--field", "drop_rate", "--out", dir.File("x.pdf")});
  CHECK(ext.status == 2);
  CHECK(ext.err.find(".png or .svg") != std::string::npos);
  Run engine = plot({"--engine", "nope", "--field", "drop_rate", "--out", out});
  CHECK(engine.status == 2);
  CHECK(engine.err.find("--engine nope: unknown engine; known engines: p1, p2") !=
        std::string::npos);
  Run which = plot({"--field", "drop_rate", "--out", out});
  CHECK(which.status == 2);
  CHECK(which.err.find("known engines: p1, p2") != std::string::npos);
  CHECK(plot({"--engine", "p1", "--out", out}).status == 2);            // no --field
  CHECK(plot({"--engine", "p1", "--field", "drop_rate"}).status == 2);  // no --out
  Run empty = plot({"--engine", "p2", "--field", "drop_rate", "--out", out});
  CHECK(empty.status == 1);
  CHECK(empty.err.find("no steps of engine p2") != std::string::npos);
  Run no_db = Exec(dir, {MOECTL_BIN, "plot", "--db", dir.File("absent.db"), "--field", "drop_rate",
                         "--out", out});
  CHECK(no_db.status == 1);
  CHECK(access(out.c_str(), F_OK) != 0);

  // A Python without matplotlib (site-packages off): exit 1 naming the package.
  const std::string bare =
      dir.Write("bare-python", std::string("#!/bin/sh\nexec ") + MOE_PYTHON + " -I -S \"$@\"\n");
  REQUIRE(chmod(bare.c_str(), 0755) == 0);
  Run missing =
      plot({"--engine", "p1", "--field", "drop_rate", "--out", out}, {"MOECTL_PYTHON=" + bare});
  CHECK(missing.status == 1);
  CHECK(missing.err.find("python3-matplotlib") != std::string::npos);
  CHECK(access(out.c_str(), F_OK) != 0);
}

}  // namespace
}  // namespace moe

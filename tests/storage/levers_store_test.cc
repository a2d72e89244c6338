// Store and Reader: operator levers, repeated rejections folded into one
// decision row, engines marked gone, and the highest epoch per engine.

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "moe/storage/reader.h"
#include "moe/storage/store.h"
#include "storage_test_util.h"
#include "support/fake_clock.h"
#include "support/temp_dir.h"

namespace moe::storage {
namespace {

using moe::testing::FakeClock;
using moe::testing::TempDir;
using namespace moe::storage::testing;

OperatorActionRow MakeAction(const std::string& engine_id, const std::string& action) {
  OperatorActionRow a;
  a.created_ns = 1000;
  a.engine_id = engine_id;
  a.action = action;
  a.uid = 1000;
  a.who = "alice (uid 1000, pid 42)";
  a.reason = "incident 7";
  a.result = "done";
  return a;
}

TEST_CASE("operator levers round-trip, ids continue after reopening", "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  OperatorActionRow pin = MakeAction("e1", "pin");
  pin.knob = "capacity_factor";
  pin.value = 2.5;
  pin.until_ns = 5000;
  pin.decision_id = 9;
  {
    auto store = OpenStore(TestOptions(path), &clock);
    CHECK(store->RecordOperatorAction(MakeAction("e1", "pause")) == 1);
    pin.id = store->RecordOperatorAction(pin);
    CHECK(pin.id == 2);
    CHECK(store->RecordOperatorAction(MakeAction("e2", "resume")) == 3);
    REQUIRE(store->Close().ok());
  }
  auto store = OpenStore(TestOptions(path), &clock);
  CHECK(store->stats().last_action_id == 3);
  CHECK(store->RecordOperatorAction(MakeAction("e1", "resume")) == 4);
  REQUIRE(store->Flush().ok());
  auto reader = OpenReader(path);
  auto e1 = reader->OperatorActions("e1", 0);
  REQUIRE(e1.ok());
  REQUIRE(e1->size() == 3);
  CHECK((*e1)[0].action == "pause");
  CHECK((*e1)[1] == pin);
  CHECK((*e1)[2].id == 4);
  // The newest `limit`, oldest first.
  auto last_two = reader->OperatorActions("", 2);
  REQUIRE(last_two.ok());
  REQUIRE(last_two->size() == 2);
  CHECK((*last_two)[0].id == 3);
  CHECK((*last_two)[1].id == 4);
}

TEST_CASE("a repeated rejection updates its row; an unknown id is ignored", "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  DecisionRow d = MakeDecision("e1", 100, "capacity");
  d.status = "rejected";
  int64_t id = store->RecordDecision(d);
  store->RecordRepeat(id, 1, 200);
  store->RecordRepeat(id, 7, 900);
  store->RecordRepeat(id + 100, 3, 1000);
  REQUIRE(store->Flush().ok());
  auto row = OpenReader(path)->Decision(id);
  REQUIRE(row.ok());
  CHECK(row->repeats == 7);
  CHECK(row->last_repeat_ns == 900);
}

TEST_CASE("decisions in flight are closed as unknown, the rest stay", "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  auto record = [&](const std::string& status) {
    DecisionRow d = MakeDecision("e1", 100, "capacity");
    d.status = status;
    return store->RecordDecision(d);
  };
  const int64_t sent = record("sent");
  const int64_t acked = record("acked");
  const int64_t measured = record("measured");
  const int64_t rejected = record("rejected");
  const int64_t later = record("sent");
  store->RecordUnknown(later, "engine e1 went silent", 500);
  store->RecordUnknown(std::nullopt, "moectld restarted before the outcome was measured", 600);
  REQUIRE(store->Flush().ok());
  auto reader = OpenReader(path);
  auto status_of = [&](int64_t id) { return reader->Decision(id)->status; };
  CHECK(status_of(sent) == "unknown");
  CHECK(status_of(acked) == "unknown");
  CHECK(status_of(measured) == "measured");
  CHECK(status_of(rejected) == "rejected");
  CHECK(status_of(later) == "unknown");
  CHECK(reader->Decision(later)->ack_error == "engine e1 went silent");
  CHECK(reader->Decision(later)->measured_ns == 500);
  CHECK(reader->Decision(sent)->ack_error == "moectld restarted before the outcome was measured");
}

TEST_CASE("an engine marked gone is cleared by its next message", "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  store->UpsertEngine(MakeHello("e1", 1000));
  store->UpsertEngine(MakeHello("e2", 1000));
  store->MarkEngineGone("e1", 5000);
  store->MarkEngineGone("nobody", 5000);  // creates no row
  REQUIRE(store->Flush().ok());
  auto reader = OpenReader(path);
  auto engines = reader->Engines();
  REQUIRE(engines.ok());
  REQUIRE(engines->size() == 2);
  CHECK((*engines)[0].gone_ns == 5000);
  CHECK(!(*engines)[1].gone_ns);
  store->AppendStep(MakeStep("e1", 1, 6000, 2, 4));
  REQUIRE(store->Flush().ok());
  engines = reader->Engines();
  REQUIRE(engines.ok());
  CHECK(!(*engines)[0].gone_ns);
  store->MarkEngineGone("e2", 7000);
  store->UpsertEngine(MakeHello("e2", 8000));
  REQUIRE(store->Flush().ok());
  engines = reader->Engines();
  REQUIRE(engines.ok());
  CHECK(!(*engines)[1].gone_ns);
}

TEST_CASE("the highest epoch per engine covers commands, epochs and steps", "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  // e1: a command under epoch 7 that the engine never applied.
  DecisionRow sent = MakeDecision("e1", 100, "capacity");
  sent.status = "sent";
  sent.epoch = 7;
  store->RecordDecision(sent);
  store->RecordEpoch({"e1", 3, 100, "{}", 0});
  // e2: only steps, under epoch 4.
  telemetry::StepRecord step = MakeStep("e2", 1, 100, 1, 4);
  step.epoch = 4;
  store->AppendStep(step);
  REQUIRE(store->Flush().ok());
  auto highest = OpenReader(path)->HighestEpochs();
  REQUIRE(highest.ok());
  CHECK(highest->at("e1") == 7);
  CHECK(highest->at("e2") == 4);
  CHECK(highest->size() == 2);
}

TEST_CASE("epoch history is append-only: a repeated epoch adds a row, a re-sent one does not",
          "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  store->RecordEpoch({"e1", 0, 100, R"({"capacity_factor":1})", 0});
  store->RecordEpoch({"e1", 1, 200, R"({"capacity_factor":2})", 7});
  store->RecordEpoch({"e1", 0, 300, R"({"capacity_factor":1})", 0});  // re-sent: the same
  store->RecordEpoch({"e1", 0, 400, R"({"capacity_factor":3})", 0});  // a restart: new settings
  store->RecordEpoch({"e1", 1, 500, R"({"capacity_factor":2})", 7});  // the same again
  REQUIRE(store->Flush().ok());
  auto epochs = OpenReader(path)->Epochs("e1", TimeWindow{});
  REQUIRE(epochs.ok());
  REQUIRE(epochs->size() == 3);
  CHECK((*epochs)[0] == EpochRow{"e1", 0, 100, R"({"capacity_factor":1})", 0});
  CHECK((*epochs)[1] == EpochRow{"e1", 1, 200, R"({"capacity_factor":2})", 7});
  CHECK((*epochs)[2] == EpochRow{"e1", 0, 400, R"({"capacity_factor":3})", 0});
}

TEST_CASE("migration 8 keeps every epoch of a keyed epochs table", "[store][levers]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  {
    auto store = OpenStore(TestOptions(path), &clock);
    REQUIRE(store->Close().ok());
  }
  {
    // The epochs table as migrations 1 to 7 left it: one row per (engine, epoch).
    RawDb raw(path);
    UndoMigration9(raw);
    for (const char* sql :
         {"DROP TABLE epochs",
          "CREATE TABLE epochs (engine_id TEXT NOT NULL, epoch INTEGER NOT NULL, created_ns "
          "INTEGER NOT NULL, knobs_json TEXT NOT NULL, decision_id INTEGER NOT NULL DEFAULT 0, "
          "PRIMARY KEY (engine_id, epoch))",
          "INSERT INTO epochs VALUES ('e1', 0, 100, '{\"a\":1}', 0), ('e1', 1, 200, '{}', 3)",
          "DELETE FROM schema_migrations WHERE version = 8"}) {
      std::string error;
      INFO(sql << ": " << error);
      REQUIRE(raw.Exec(sql, &error) == SQLITE_OK);
    }
  }
  auto store = OpenStore(TestOptions(path), &clock);
  store->RecordEpoch({"e1", 1, 300, R"({"b":2})", 4});  // epoch 1 again: appended
  REQUIRE(store->Flush().ok());
  auto epochs = OpenReader(path)->Epochs("e1", TimeWindow{});
  REQUIRE(epochs.ok());
  REQUIRE(epochs->size() == 3);
  CHECK((*epochs)[0] == EpochRow{"e1", 0, 100, R"({"a":1})", 0});
  CHECK((*epochs)[1] == EpochRow{"e1", 1, 200, "{}", 3});
  CHECK((*epochs)[2] == EpochRow{"e1", 1, 300, R"({"b":2})", 4});
}

}  // namespace
}  // namespace moe::storage

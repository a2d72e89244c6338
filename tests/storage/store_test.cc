// Store: schema migrations, WAL, round trips, decisions, and the promise that
// a record handed to the Store is either committed or still queued.

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

constexpr int64_t kSecond = 1'000'000'000;

std::vector<StepRow> AllSteps(Reader& reader, const std::string& engine_id = "") {
  HistoryQuery q;
  q.engine_id = engine_id;
  q.limit = 0;
  auto rows = reader.History(q);
  INFO(rows.status().ToString());
  REQUIRE(rows.ok());
  return *rows;
}

TEST_CASE("migrations are numbered, recorded, and reopening applies nothing twice", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("sub/dir/moectl.db");  // directories are created
  const int64_t opened_at = clock.NowNanos();
  REQUIRE(OpenStore(TestOptions(path), &clock)->Close().ok());

  auto read_migrations = [&] {
    RawDb raw(path);
    std::string rows = raw.QueryText(
        "SELECT group_concat(version || ':' || name || ':' || applied_ns, ',') FROM "
        "(SELECT * FROM schema_migrations ORDER BY version)");
    return rows;
  };
  const std::string expected = "1:initial:" + std::to_string(opened_at) +
                               ",2:rollups:" + std::to_string(opened_at) +
                               ",3:learning samples:" + std::to_string(opened_at) +
                               ",4:decision predictions:" + std::to_string(opened_at) +
                               ",5:steps as one row:" + std::to_string(opened_at) +
                               ",6:operator levers:" + std::to_string(opened_at) +
                               ",7:decision retention:" + std::to_string(opened_at) +
                               ",8:epoch history:" + std::to_string(opened_at) +
                               ",9:joint learning settings:" + std::to_string(opened_at);
  CHECK(read_migrations() == expected);

  clock.Advance(3600 * kSecond);
  REQUIRE(OpenStore(TestOptions(path), &clock)->Close().ok());
  CHECK(read_migrations() == expected);  // same rows, same applied_ns

  auto reader = OpenReader(path);
  auto version = reader->SchemaVersion();
  REQUIRE(version.ok());
  CHECK(*version == kSchemaVersion);
}

TEST_CASE("a schema-3 database gains the prediction columns; a prediction round-trips", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  {
    auto store = OpenStore(TestOptions(path), &clock);
    store->RecordDecision(MakeDecision("e1", 1, "capacity"));
    REQUIRE(store->Close().ok());
  }
  {
    // What a database written before migration 4 looks like.
    RawDb raw(path);
    UndoMigration9(raw);
    UndoMigration6(raw);
    REQUIRE(raw.Exec("ALTER TABLE decisions DROP COLUMN predicted_gain") == 0);
    REQUIRE(raw.Exec("ALTER TABLE decisions DROP COLUMN prediction_json") == 0);
    REQUIRE(raw.Exec("DROP TABLE steps") == 0);              // and before migration 5
    REQUIRE(raw.Exec("DROP INDEX decisions_by_time") == 0);  // and 7
    REQUIRE(raw.Exec("DELETE FROM schema_migrations WHERE version >= 4") == 0);
  }
  auto store = OpenStore(TestOptions(path), &clock);
  DecisionRow advisory = MakeDecision("e1", 2, "learning");
  advisory.status = "advisory";
  advisory.predicted_gain = 0.25;
  advisory.prediction_json = R"({"basis":"learnt means"})";
  store->RecordDecision(advisory);
  REQUIRE(store->Flush().ok());
  auto reader = OpenReader(path);
  CHECK(*reader->SchemaVersion() == kSchemaVersion);
  auto decisions = reader->Decisions(DecisionQuery{});
  REQUIRE(decisions.ok());
  REQUIRE(decisions->size() == 2);
  CHECK_FALSE((*decisions)[0].predicted_gain.has_value());  // the old row: no prediction
  CHECK((*decisions)[0].prediction_json.empty());
  CHECK((*decisions)[1].status == "advisory");
  CHECK((*decisions)[1].predicted_gain == std::optional<double>(0.25));
  CHECK((*decisions)[1].prediction_json == R"({"basis":"learnt means"})");
}

TEST_CASE("a schema-2 database gains the learning table and keeps every row", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  {
    auto store = OpenStore(TestOptions(path), &clock);
    store->RecordDecision(MakeDecision("e1", 1, "capacity"));
    REQUIRE(store->Close().ok());
  }
  {
    // What a database written before migrations 3 to 6 looks like.
    RawDb raw(path);
    UndoMigration6(raw);
    REQUIRE(raw.Exec("DROP TABLE learning_samples") == 0);
    REQUIRE(raw.Exec("ALTER TABLE decisions DROP COLUMN predicted_gain") == 0);
    REQUIRE(raw.Exec("ALTER TABLE decisions DROP COLUMN prediction_json") == 0);
    REQUIRE(raw.Exec("DROP TABLE steps") == 0);
    REQUIRE(raw.Exec("DROP INDEX decisions_by_time") == 0);
    REQUIRE(raw.Exec("DELETE FROM schema_migrations WHERE version >= 3") == 0);
  }
  auto store = OpenStore(TestOptions(path), &clock);
  CHECK(store->stats().last_decision_id == 1);
  storage::LearningSampleRow sample{
      "e1", 7, 100, "imbalance 1 of 3, tokens 0 of 1", "capacity_factor", 1.5, -0.25, 16, {1.5}};
  store->RecordLearningSample(sample);
  store->RecordLearningSample({"e1", 8, 200, "imbalance 2 of 3, tokens 0 of 1", "top_k", 2, -1, 8});
  REQUIRE(store->Flush().ok());
  auto reader = OpenReader(path);
  CHECK(*reader->SchemaVersion() == kSchemaVersion);
  auto decisions = reader->Decisions(DecisionQuery{});
  REQUIRE(decisions.ok());
  CHECK(decisions->size() == 1);  // nothing lost in the migration
  auto samples = reader->LearningSamples("e1", "capacity_factor");
  REQUIRE(samples.ok());
  REQUIRE(samples->size() == 1);
  CHECK((*samples)[0] == sample);
  auto all = reader->LearningSamples("", "");
  REQUIRE(all.ok());
  CHECK(all->size() == 2);
  CHECK((*all)[1].setting == std::vector<double>{2});  // written without a setting
}

TEST_CASE(
    "learning samples keep a joint setting; rows from before migration 9 read as their "
    "value; a setting not written by moectld is an error",
    "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  {
    auto store = OpenStore(TestOptions(path), &clock);
    store->RecordLearningSample({"e1", 1, 100, "r", "capacity_factor", 1.25, -0.5, 8});
    REQUIRE(store->Close().ok());
  }
  {
    // A row as a schema-8 database holds it: no setting column.
    RawDb raw(path);
    UndoMigration9(raw);
  }
  {
    auto store = OpenStore(TestOptions(path), &clock);
    // 0.1 + 0.2 has no short decimal form: the text must round-trip it.
    store->RecordLearningSample(
        {"e1", 2, 200, "r", "capacity_factor,top_k", 0.1 + 0.2, -0.25, 8, {0.1 + 0.2, 6}});
    REQUIRE(store->Close().ok());
  }
  {
    auto reader = OpenReader(path);
    auto old_rows = reader->LearningSamples("e1", "capacity_factor");
    REQUIRE(old_rows.ok());
    REQUIRE(old_rows->size() == 1);
    CHECK((*old_rows)[0].setting == std::vector<double>{1.25});
    auto joint = reader->LearningSamples("e1", "capacity_factor,top_k");
    REQUIRE(joint.ok());
    REQUIRE(joint->size() == 1);
    CHECK((*joint)[0].setting == std::vector<double>{0.1 + 0.2, 6});
    CHECK((*joint)[0].value == 0.1 + 0.2);
  }
  for (const char* bad : {"[1,x]", "1,2", "[]", "[1,]"}) {
    {
      RawDb raw(path);
      REQUIRE(raw.Exec(std::string("UPDATE learning_samples SET setting = '") + bad +
                       "' WHERE epoch = 2") == SQLITE_OK);
    }
    auto reader = OpenReader(path);
    auto rows = reader->LearningSamples("e1", "");
    INFO(bad);
    REQUIRE_FALSE(rows.ok());
    CHECK(rows.status().message().find("learning_samples.setting") != std::string::npos);
  }
}

TEST_CASE("the database runs in WAL mode", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  RawDb raw(path);
  CHECK(raw.QueryText("PRAGMA journal_mode") == "wal");
}

TEST_CASE("a file whose schema is newer than the binary is refused", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  REQUIRE(OpenStore(TestOptions(path), &clock)->Close().ok());
  {
    RawDb raw(path);
    REQUIRE(raw.Exec("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)") ==
            SQLITE_OK);
  }
  auto store = Store::Open(TestOptions(path), &clock);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(store.status().message(), Catch::Contains("schema version 99") &&
                                           Catch::Contains("newer") && Catch::Contains(path));
  auto reader = Reader::Open(path);
  REQUIRE_FALSE(reader.ok());
  CHECK(reader.status().code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(reader.status().message(), Catch::Contains("newer"));
}

TEST_CASE("a foreign SQLite database is left alone", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("other.db");
  {
    RawDb raw(path);
    REQUIRE(raw.Exec("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)") == SQLITE_OK);
  }
  auto store = Store::Open(TestOptions(path), &clock);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(store.status().message(), Catch::Contains("not a moectl database"));
  RawDb raw(path);
  CHECK(raw.QueryInt("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'") == 0);
  CHECK(raw.QueryText("PRAGMA journal_mode") == "delete");
}

TEST_CASE("a file that is not SQLite is refused and left as it was", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string garbage(4096, 'x');
  const std::string path = dir.Write("garbage.db", garbage);
  auto store = Store::Open(TestOptions(path), &clock);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == StatusCode::kCorruption);
  CHECK_THAT(store.status().message(), Catch::Contains("not an SQLite database"));
  CHECK(ReadFileBytes(path) == garbage);
}

TEST_CASE("steps are written and read back exactly", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  const int64_t t0 = clock.NowNanos();
  store->UpsertEngine(MakeHello("e1", t0));
  std::vector<telemetry::StepRecord> records;
  for (uint64_t s = 1; s <= 3; ++s) {
    records.push_back(MakeStep("e1", s, t0 + static_cast<int64_t>(s) * kSecond, 2, 8));
  }
  // A layer with no routed tokens and no token slots: both ratios are 0.
  records[2].layers[1].expert_tokens.assign(8, 0);
  records[2].layers[1].num_token_slots = 0;
  // A layer with a known imbalance: mean 3, max 6.
  records[1].layers[0].expert_tokens = {1, 2, 3, 6, 0, 3, 4, 5};
  for (const auto& r : records)
    store->AppendStep(r);
  REQUIRE(store->Flush().ok());

  auto reader = OpenReader(path);
  std::vector<StepRow> rows = AllSteps(*reader);
  REQUIRE(rows.size() == 6);
  size_t i = 0;
  for (const auto& r : records) {
    for (size_t l = 0; l < r.layers.size(); ++l, ++i) {
      INFO("step " << r.step << " layer " << l);
      CHECK(rows[i] == ExpectedRow(r, l));
      CHECK_FALSE(rows[i].rollup);
    }
  }
  CHECK(rows[2].max_over_mean == Approx(2.0));
  CHECK(rows[5].max_over_mean == 0.0);
  CHECK(rows[5].drop_rate == 0.0);
  CHECK(rows[0].drop_rate == Approx(1.0 / (2.0 * 65)));
  CHECK(rows[1].quality_error.has_value() == false);  // step 1: odd, not sampled

  auto engines = reader->Engines();
  REQUIRE(engines.ok());
  REQUIRE(engines->size() == 1);
  const EngineRow& e = engines->front();
  CHECK(e.engine_id == "e1");
  CHECK(e.backend == "cpu");
  CHECK(e.num_layers == 2);
  CHECK(e.num_experts == 8);
  CHECK(e.num_shared_experts == 1);
  CHECK(e.num_replicas == 10);
  CHECK(e.num_devices == 2);
  CHECK(e.hidden == 256);
  CHECK(e.first_seen_ns == t0);
  CHECK(e.last_seen_ns == t0 + 3 * kSecond);
  CHECK(e.last_step == 3);

  StoreStats stats = store->stats();
  CHECK(stats.steps_written == 3);
  CHECK(stats.pending == 0);
  CHECK(stats.write_errors == 0);
  CHECK(stats.transactions >= 1);
}

TEST_CASE("steps of an engine that never said hello still create its row", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  store->AppendStep(MakeStep("anon", 7, 5 * kSecond, 3, 4));
  store->AppendStep(MakeStep("anon", 6, 4 * kSecond, 3, 4));  // late, older
  REQUIRE(store->Flush().ok());
  auto engines = OpenReader(path)->Engines();
  REQUIRE(engines.ok());
  REQUIRE(engines->size() == 1);
  CHECK(engines->front().backend.empty());
  CHECK(engines->front().num_layers == 3);
  CHECK(engines->front().num_experts == 4);
  CHECK(engines->front().first_seen_ns == 4 * kSecond);
  CHECK(engines->front().last_seen_ns == 5 * kSecond);
  CHECK(engines->front().last_step == 7);  // the newest step wins, not the last written
}

TEST_CASE("a decision's life is recorded and read back", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  const int64_t t0 = clock.NowNanos();

  DecisionRow accepted = MakeDecision("e1", t0, "capacity");
  const int64_t id1 = store->RecordDecision(accepted);
  DecisionRow rejected = MakeDecision("e1", t0 + 1, "noise");
  rejected.verdict = "rejected";
  rejected.verdict_reason = "cooldown";
  rejected.command_json.clear();
  rejected.status = "rejected";
  rejected.layer = 3;
  const int64_t id2 = store->RecordDecision(rejected);
  const int64_t id3 = store->RecordDecision(MakeDecision("e2", t0 + 2, "bias"));
  CHECK(id1 == 1);
  CHECK(id2 == 2);
  CHECK(id3 == 3);

  store->RecordCommandSent(id1, 7, t0 + 10);
  telemetry::Ack ack;
  ack.engine_id = "e1";
  ack.epoch = 7;
  ack.applied = true;
  ack.applied_at_step = 1234;
  ack.timestamp_ns = t0 + 20;
  store->RecordAck(id1, ack);
  DecisionOutcome outcome;
  outcome.outcome_json = R"({"drop_rate_after":0.01})";
  outcome.reward_before = -0.4;
  outcome.reward_after = -0.1;
  outcome.measured_ns = t0 + 30;
  store->RecordOutcome(id1, outcome);

  store->RecordCommandSent(id3, 8, t0 + 11);
  telemetry::Ack failed;
  failed.engine_id = "e2";
  failed.epoch = 8;
  failed.applied = false;
  failed.error = "bias has 7 entries, engine has 8 experts";
  failed.timestamp_ns = t0 + 21;
  store->RecordAck(id3, failed);

  EpochRow epoch;
  epoch.engine_id = "e1";
  epoch.epoch = 7;
  epoch.created_ns = t0 + 10;
  epoch.knobs_json = R"({"capacity_factor":1.5})";
  epoch.decision_id = id1;
  store->RecordEpoch(epoch);
  REQUIRE(store->Flush().ok());

  auto reader = OpenReader(path);
  auto d1 = reader->Decision(id1);
  REQUIRE(d1.ok());
  DecisionRow want1 = accepted;
  want1.id = id1;
  want1.status = "measured";
  want1.epoch = 7;
  want1.sent_ns = t0 + 10;
  want1.acked_ns = t0 + 20;
  want1.applied_at_step = 1234;
  want1.outcome_json = outcome.outcome_json;
  want1.reward_before = -0.4;
  want1.reward_after = -0.1;
  want1.measured_ns = t0 + 30;
  CHECK(*d1 == want1);

  auto d2 = reader->Decision(id2);
  REQUIRE(d2.ok());
  DecisionRow want2 = rejected;
  want2.id = id2;
  CHECK(*d2 == want2);

  auto d3 = reader->Decision(id3);
  REQUIRE(d3.ok());
  CHECK(d3->status == "failed");
  CHECK(d3->epoch == 8u);
  CHECK(d3->ack_error == failed.error);
  CHECK_FALSE(d3->applied_at_step.has_value());
  CHECK(d3->acked_ns == t0 + 21);

  auto missing = reader->Decision(99);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);

  DecisionQuery q;
  auto all = reader->Decisions(q);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].id == id1);  // oldest first
  CHECK((*all)[2].id == id3);

  q.engine_id = "e1";
  auto e1 = reader->Decisions(q);
  REQUIRE(e1.ok());
  CHECK(e1->size() == 2);

  q.engine_id.clear();
  q.status = "failed";
  auto by_status = reader->Decisions(q);
  REQUIRE(by_status.ok());
  REQUIRE(by_status->size() == 1);
  CHECK(by_status->front().id == id3);

  DecisionQuery newest;
  newest.limit = 2;
  auto two = reader->Decisions(newest);
  REQUIRE(two.ok());
  REQUIRE(two->size() == 2);
  CHECK((*two)[0].id == id2);
  CHECK((*two)[1].id == id3);

  DecisionQuery window;
  window.window.since_ns = t0 + 1;
  window.window.until_ns = t0 + 2;  // half-open
  auto windowed = reader->Decisions(window);
  REQUIRE(windowed.ok());
  REQUIRE(windowed->size() == 1);
  CHECK(windowed->front().id == id2);

  auto epochs = reader->Epochs("e1", TimeWindow{});
  REQUIRE(epochs.ok());
  REQUIRE(epochs->size() == 1);
  CHECK(epochs->front() == epoch);
}

TEST_CASE("decision ids continue after reopening", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  {
    auto store = OpenStore(TestOptions(path), &clock);
    for (int i = 1; i <= 3; ++i) {
      CHECK(store->RecordDecision(MakeDecision("e1", i, "capacity")) == i);
    }
    REQUIRE(store->Close().ok());
    REQUIRE(store->Close().ok());  // idempotent
  }
  auto store = OpenStore(TestOptions(path), &clock);
  CHECK(store->stats().last_decision_id == 3);
  CHECK(store->RecordDecision(MakeDecision("e1", 4, "capacity")) == 4);
  REQUIRE(store->Flush().ok());
  auto rows = OpenReader(path)->Decisions(DecisionQuery{});
  REQUIRE(rows.ok());
  CHECK(rows->size() == 4);
}

TEST_CASE("no record is lost while another connection holds the write lock", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.busy_timeout = std::chrono::milliseconds(20);
  auto store = OpenStore(options, &clock);

  RawDb blocker(path);
  REQUIRE(blocker.Exec("BEGIN EXCLUSIVE") == SQLITE_OK);

  constexpr int kSteps = 300;
  std::vector<int64_t> ids;
  for (int s = 0; s < kSteps; ++s) {
    store->AppendStep(MakeStep("e1", s, (s + 1) * kSecond, 2, 4));
    if (s % 50 == 0) {
      int64_t id = store->RecordDecision(MakeDecision("e1", s, "capacity"));
      store->RecordCommandSent(id, s, s + 1);
      ids.push_back(id);
    }
  }
  REQUIRE(WaitUntil([&] { return store->stats().write_errors > 0; }));
  Status timed_out = store->Flush(std::chrono::milliseconds(50));
  CHECK(timed_out.code() == StatusCode::kTimeout);
  StoreStats stats = store->stats();
  CHECK(stats.pending > 0);
  CHECK(stats.steps_written == 0);
  CHECK_THAT(stats.last_error, Catch::Contains("locked") || Catch::Contains("busy"));

  // WAL: readers still read while the lock is held.
  {
    auto reader = OpenReader(path);
    CHECK(AllSteps(*reader).empty());
  }

  REQUIRE(blocker.Exec("COMMIT") == SQLITE_OK);
  Status flushed = store->Flush(std::chrono::seconds(20));
  INFO(flushed.ToString());
  REQUIRE(flushed.ok());
  stats = store->stats();
  CHECK(stats.pending == 0);
  CHECK(stats.steps_written == kSteps);

  auto reader = OpenReader(path);
  std::vector<StepRow> rows = AllSteps(*reader);
  REQUIRE(rows.size() == 2 * kSteps);
  for (int s = 0; s < kSteps; ++s) {
    CHECK(rows[2 * s].step == static_cast<uint64_t>(s));
    CHECK(rows[2 * s + 1].step == static_cast<uint64_t>(s));
  }
  for (int64_t id : ids) {
    auto d = reader->Decision(id);
    REQUIRE(d.ok());
    CHECK(d->status == "sent");
  }
}

TEST_CASE("a full queue refuses telemetry but never decisions", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.busy_timeout = std::chrono::milliseconds(10);
  options.max_queue = 10;
  options.batch_rows = 4;
  auto store = OpenStore(options, &clock);

  RawDb blocker(path);
  REQUIRE(blocker.Exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  for (int s = 0; s < 30; ++s)
    store->AppendStep(MakeStep("e1", s, s * kSecond, 1, 4));
  for (int i = 0; i < 5; ++i)
    store->RecordDecision(MakeDecision("e1", i, "capacity"));
  StoreStats stats = store->stats();
  CHECK(stats.rejected == 20);
  CHECK(stats.pending == 15);

  REQUIRE(blocker.Exec("COMMIT") == SQLITE_OK);
  REQUIRE(store->Flush(std::chrono::seconds(20)).ok());
  auto reader = OpenReader(path);
  std::vector<StepRow> rows = AllSteps(*reader);
  REQUIRE(rows.size() == 10);
  CHECK(rows.front().step == 0);
  CHECK(rows.back().step == 9);
  auto decisions = reader->Decisions(DecisionQuery{});
  REQUIRE(decisions.ok());
  CHECK(decisions->size() == 5);
  CHECK(store->stats().rejected == 20);
}

TEST_CASE("the queue is bounded in bytes too: a few huge records cannot fill memory", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.busy_timeout = std::chrono::milliseconds(10);
  options.max_queue = 1'000'000;  // rows never bind here
  options.max_queue_bytes = size_t{1} << 20;
  options.batch_rows = 1;
  auto store = OpenStore(options, &clock);

  RawDb blocker(path);
  REQUIRE(blocker.Exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  // One layer of 65,536 experts: about 200 KiB packed here (at least 128 KiB).
  constexpr int kSteps = 20;
  for (int s = 0; s < kSteps; ++s)
    store->AppendStep(MakeStep("e1", s, s * kSecond, 1, 65'536));
  store->RecordDecision(MakeDecision("e1", 1, "capacity"));  // never refused
  const StoreStats stats = store->stats();
  const uint64_t accepted = kSteps - stats.rejected;
  CHECK(accepted >= 1);  // an empty queue always takes one
  CHECK(accepted <= 8);
  CHECK(stats.rejected >= kSteps - 8);

  REQUIRE(blocker.Exec("COMMIT") == SQLITE_OK);
  REQUIRE(store->Flush(std::chrono::seconds(20)).ok());
  auto reader = OpenReader(path);
  CHECK(AllSteps(*reader).size() == accepted);
  // Written, the bytes are free again: the next record is taken.
  store->AppendStep(MakeStep("e1", kSteps, kSteps * kSecond, 1, 65'536));
  CHECK(store->stats().rejected == stats.rejected);
}

TEST_CASE("a write SQLite rejects for good is discarded without blocking the rest", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  TakeDecisionId(path, 1);  // another writer, behind the Store's back
  for (int s = 0; s < 10; ++s) {
    store->AppendStep(MakeStep("e1", s, s * kSecond, 1, 4));
    if (s == 5) CHECK(store->RecordDecision(MakeDecision("e1", 5, "capacity")) == 1);
  }
  REQUIRE(store->Flush().ok());
  StoreStats stats = store->stats();
  CHECK(stats.write_errors >= 1);
  CHECK_THAT(stats.last_error, Catch::Contains("UNIQUE") || Catch::Contains("constraint"));
  CHECK(stats.steps_written == 10);
  auto reader = OpenReader(path);
  CHECK(AllSteps(*reader).size() == 10);
  auto d = reader->Decision(1);
  REQUIRE(d.ok());
  CHECK(d->engine_id == "x");  // the other writer's row is intact
}

TEST_CASE("an update of an unknown decision is ignored, not retried", "[store]") {
  TempDir dir;
  FakeClock clock;
  auto store = OpenStore(TestOptions(dir.File("moectl.db")), &clock);
  store->RecordCommandSent(42, 1, 1);
  REQUIRE(store->Flush().ok());
  CHECK(store->stats().write_errors == 0);
  CHECK(store->stats().pending == 0);
}

TEST_CASE("Close flushes; writes after Close are ignored", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  for (int s = 0; s < 100; ++s)
    store->AppendStep(MakeStep("e1", s, s * kSecond, 1, 4));
  REQUIRE(store->Close().ok());
  store->AppendStep(MakeStep("e1", 100, 100 * kSecond, 1, 4));
  CHECK(store->stats().pending == 0);
  auto reader = OpenReader(path);
  CHECK(AllSteps(*reader).size() == 100);
}

TEST_CASE("Close gives up after close_timeout and says how much was not written", "[store]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.busy_timeout = std::chrono::milliseconds(10);
  options.close_timeout = std::chrono::milliseconds(200);
  auto store = OpenStore(options, &clock);
  RawDb blocker(path);
  REQUIRE(blocker.Exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  for (int s = 0; s < 5; ++s)
    store->AppendStep(MakeStep("e1", s, s * kSecond, 1, 4));
  Status closed = store->Close();
  CHECK(closed.code() == StatusCode::kUnavailable);
  CHECK_THAT(closed.message(), Catch::Contains("5 writes could not be committed"));
  CHECK(store->Close().code() == StatusCode::kUnavailable);  // the same answer again
  REQUIRE(blocker.Exec("ROLLBACK") == SQLITE_OK);
}

TEST_CASE("Open validates its options", "[store]") {
  FakeClock clock;
  StoreOptions empty;
  CHECK(Store::Open(empty, &clock).status().code() == StatusCode::kInvalidArgument);
  TempDir dir;
  StoreOptions zero_batch = TestOptions(dir.File("moectl.db"));
  zero_batch.batch_rows = 0;
  CHECK(Store::Open(zero_batch, &clock).status().code() == StatusCode::kInvalidArgument);
  CHECK(Store::Open(TestOptions(dir.File("moectl.db")), nullptr).status().code() ==
        StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::storage

// Store::CommitDecision: the row a command waits for is committed ahead of
// the telemetry queued before it, in its own transaction; a timeout, a
// rejected row and a closed store each say so, and nothing is lost.

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
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
using std::chrono::milliseconds;

constexpr int64_t kSecond = 1'000'000'000;

// Queued steps would wait an hour (or `batch_rows` of them): only a decision
// wakes the writer.
StoreOptions OnlyDecisionsWake(const std::string& path, size_t batch_rows) {
  StoreOptions options = TestOptions(path);
  options.flush_interval = std::chrono::hours(1);
  options.batch_rows = batch_rows;
  return options;
}

size_t CountSteps(const std::string& path) {
  auto reader = OpenReader(path);
  HistoryQuery q;
  q.limit = 0;
  auto rows = reader->History(q);
  REQUIRE(rows.ok());
  return rows->size();
}

TEST_CASE("a committed decision goes ahead of the telemetry queued before it", "[store][commit]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(OnlyDecisionsWake(path, 100000), &clock);
  for (int s = 0; s < 200; ++s)
    store->AppendStep(MakeStep("e1", s, (s + 1) * kSecond, 4, 8));
  const int64_t rejected = store->RecordDecision(MakeDecision("e1", 1, "capacity"));

  Store::DecisionCommit commit =
      store->CommitDecision(MakeDecision("e1", 2, "counterfactual"), milliseconds(5000));
  INFO(commit.status.ToString());
  REQUIRE(commit.status.ok());
  CHECK(commit.id == rejected + 1);
  {
    auto reader = OpenReader(path);
    auto d = reader->Decision(commit.id);
    REQUIRE(d.ok());
    CHECK(d->policy == "counterfactual");
    // With the earlier row (not a step record); the steps are still queued.
    CHECK(reader->Decision(rejected).ok());
  }
  CHECK(CountSteps(path) == 0);
  CHECK(store->stats().pending == 200);

  // Flush covers both lanes; updates of the committed row apply after it.
  store->RecordCommandSent(commit.id, 7, 3 * kSecond);
  REQUIRE(store->Flush(milliseconds(20000)).ok());
  CHECK(store->stats().pending == 0);
  CHECK(store->stats().unmatched_updates == 0);
  CHECK(CountSteps(path) == 200 * 4);
  auto reader = OpenReader(path);
  auto d = reader->Decision(commit.id);
  REQUIRE(d.ok());
  CHECK(d->status == "sent");
  CHECK(d->epoch == 7u);
}

TEST_CASE("a committed decision keeps its place after every write that is not a step record",
          "[store][commit]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(OnlyDecisionsWake(path, 100000), &clock);
  DecisionRow in_flight = MakeDecision("e1", 1, "capacity");
  in_flight.status = "sent";
  const int64_t old_id = store->RecordDecision(in_flight);
  store->AppendStep(MakeStep("e1", 1, kSecond, 2, 4));
  // A restart closes what was in flight; the decision after it is not.
  store->RecordUnknown(std::nullopt, "restarted", 2 * kSecond);
  store->AppendStep(MakeStep("e1", 2, 2 * kSecond, 2, 4));
  DecisionRow fresh = MakeDecision("e1", 3, "capacity");
  fresh.status = "sent";
  Store::DecisionCommit commit = store->CommitDecision(fresh, milliseconds(5000));
  REQUIRE(commit.status.ok());
  {
    auto reader = OpenReader(path);
    auto old_row = reader->Decision(old_id);
    REQUIRE(old_row.ok());
    CHECK(old_row->status == "unknown");
    auto new_row = reader->Decision(commit.id);
    REQUIRE(new_row.ok());
    CHECK(new_row->status == "sent");
  }
  CHECK(CountSteps(path) == 0);
  CHECK(store->stats().pending == 2);
  REQUIRE(store->Flush(milliseconds(20000)).ok());
  CHECK(CountSteps(path) == 4);
  CHECK(store->stats().pending == 0);
}

TEST_CASE("a batch of step records in progress stops for a decision, and the rest follows",
          "[store][commit]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(OnlyDecisionsWake(path, 1'000'000), &clock);
  constexpr int kSteps = 40000;
  for (int s = 0; s < kSteps; ++s)
    store->AppendStep(MakeStep("e1", s, (s + 1) * kSecond, 1, 4));
  // Wakes the writer, which starts one transaction of every step.
  CHECK(store->Flush(milliseconds(20)).code() == StatusCode::kTimeout);
  Store::DecisionCommit commit =
      store->CommitDecision(MakeDecision("e1", 1, "capacity"), milliseconds(10000));
  REQUIRE(commit.status.ok());
  REQUIRE(store->Flush(milliseconds(30000)).ok());
  const StoreStats stats = store->stats();
  // The first part, the decision, the rest: every step once.
  CHECK(stats.transactions >= 3);
  CHECK(stats.steps_written == kSteps);
  CHECK(stats.pending == 0);
  CHECK(CountSteps(path) == kSteps);
  CHECK(OpenReader(path)->Decision(commit.id).ok());
}

TEST_CASE("a decision that cannot be committed in time says so and stays queued",
          "[store][commit]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.busy_timeout = milliseconds(10);
  auto store = OpenStore(options, &clock);
  RawDb blocker(path);
  REQUIRE(blocker.Exec("BEGIN EXCLUSIVE") == SQLITE_OK);

  Store::DecisionCommit commit =
      store->CommitDecision(MakeDecision("e1", 1, "capacity"), milliseconds(100));
  CHECK(commit.status.code() == StatusCode::kTimeout);
  CHECK_THAT(commit.status.message(), Catch::Contains("stays queued"));
  CHECK(commit.id == 1);
  CHECK(store->stats().pending == 1);

  REQUIRE(blocker.Exec("COMMIT") == SQLITE_OK);
  REQUIRE(store->Flush(milliseconds(20000)).ok());
  auto reader = OpenReader(path);
  CHECK(reader->Decision(1).ok());
  // The next one commits at once again.
  commit = store->CommitDecision(MakeDecision("e1", 2, "capacity"), milliseconds(5000));
  CHECK(commit.status.ok());
  CHECK(commit.id == 2);
}

TEST_CASE("a decision SQLite rejects is reported, never taken as committed", "[store][commit]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  TakeDecisionId(path, 1);  // another writer, behind the Store's back
  Store::DecisionCommit commit =
      store->CommitDecision(MakeDecision("e1", 1, "capacity"), milliseconds(5000));
  CHECK(commit.status.code() == StatusCode::kInvalidArgument);
  CHECK(commit.id == 1);
  CHECK(store->stats().discarded == 1);
  // The writer goes on: the next decision and queued steps are written.
  store->AppendStep(MakeStep("e1", 1, kSecond, 1, 4));
  commit = store->CommitDecision(MakeDecision("e1", 2, "capacity"), milliseconds(5000));
  CHECK(commit.status.ok());
  REQUIRE(store->Flush().ok());
  CHECK(CountSteps(path) == 1);
}

TEST_CASE("a decision after Close is refused and counted", "[store][commit]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  REQUIRE(store->Close().ok());
  Store::DecisionCommit commit =
      store->CommitDecision(MakeDecision("e1", 1, "capacity"), milliseconds(1000));
  CHECK(commit.status.code() == StatusCode::kFailedPrecondition);
  CHECK(store->stats().ignored_after_close == 1);
}

}  // namespace
}  // namespace moe::storage

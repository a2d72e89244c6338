// The Store under continuous load (WAL bounded, retention running), with its
// file replaced or deleted under it, and every refused or lost write counted.

#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <thread>
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
using namespace std::chrono_literals;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMilli = 1'000'000;

uint64_t FileSize(const std::string& path) {
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

std::set<int64_t> Column(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::set<int64_t> out;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  while (sqlite3_step(stmt) == SQLITE_ROW)
    out.insert(sqlite3_column_int64(stmt, 0));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

// The WAL bound of the load test: a checkpoint is due once a commit leaves
// more than wal_checkpoint_bytes (1 MiB) in the WAL; one commit adds at most
// batch_rows (2000) rows, 125 steps of 16 layers (about 0.6 MiB with their
// index and overflow pages), and one retention transaction rewrites at most
// the rows written since the previous pass. A reader that holds an old
// snapshot can delay a checkpoint by one query (a few ms), not more, since it
// releases the snapshot between polls. 1 MiB + twice that margin is well under
// 8 MiB; without checkpoints the WAL would hold everything written (the test
// checks that it is several times the bound).
constexpr uint64_t kWalBound = 8u << 20;

TEST_CASE("under continuous load the WAL stays bounded and retention rolls rows up",
          "[store][wal][load]") {
  TempDir dir;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.batch_rows = 2000;
  options.flush_interval = 50ms;
  options.raw_retention = 60s;
  options.retention_interval = 1s;
  options.wal_checkpoint_bytes = 1u << 20;
  options.checkpoint_interval = 200ms;
  Clock* clock = SystemClock();
  auto store = OpenStore(options, clock);

  // Steps stamped ten minutes ago, 1 ms apart: all older than the horizon, so
  // every retention pass has rows to roll up while new ones keep coming.
  const int64_t t0 = clock->NowNanos() - 600 * kSecond;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> num_appended{0};
  std::thread writer([&] {
    for (uint64_t s = 1; !stop; ++s) {
      store->AppendStep(MakeStep("e1", s, t0 + static_cast<int64_t>(s) * kMilli, 16, 64));
      num_appended = s;
      // The engine's rate, not a flood: keep the queue short so nothing is refused.
      while (!stop && store->stats().pending > 2000)
        std::this_thread::sleep_for(1ms);
    }
  });
  std::atomic<uint64_t> num_queries{0};
  std::atomic<bool> reader_ok{true};
  std::thread reader_thread([&] {
    auto reader = Reader::Open(path);
    if (!reader.ok()) {
      reader_ok = false;
      return;
    }
    while (!stop) {
      HistoryQuery query;
      query.engine_id = "e1";
      query.layer = 0;
      query.limit = 50;
      auto rows = (*reader)->History(query);
      if (!rows.ok()) reader_ok = false;
      ++num_queries;
      std::this_thread::sleep_for(2ms);
    }
  });

  uint64_t wal_max = 0;
  auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < 4s) {
    wal_max = std::max(wal_max, FileSize(path + "-wal"));
    std::this_thread::sleep_for(2ms);
  }
  StoreStats during = store->stats();  // before the writer stops: the queue was never empty
  stop = true;
  writer.join();
  reader_thread.join();
  REQUIRE(store->Flush().ok());
  REQUIRE(store->RunRetention().ok());
  StoreStats after = store->stats();

  INFO("steps " << num_appended << ", WAL max " << wal_max << " bytes (store saw "
                << after.wal_bytes_max << "), WAL pages written " << after.wal_pages_written
                << ", checkpoints " << after.checkpoints << " (" << after.checkpoints_truncated
                << " truncated, " << after.checkpoints_busy << " busy), retention runs "
                << during.retention_runs << ", rolled " << during.rows_rolled_up
                << ", reader queries " << num_queries);
  // What was measured, for docs/storage.md.
  WARN("WAL max " << wal_max << " bytes over " << num_appended << " steps; "
                  << after.wal_pages_written * 4096 / (1u << 20) << " MiB through the WAL; "
                  << after.checkpoints << " checkpoints, " << after.checkpoints_truncated
                  << " truncated; rolled up under load " << during.rows_rolled_up << " of "
                  << during.steps_written * 16 << " rows written");
  CHECK(reader_ok);
  CHECK(num_queries > 100);
  CHECK(after.rejected == 0);
  CHECK(after.lost() == 0);
  CHECK(after.steps_written == num_appended);
  // The load was heavy enough that an unchecked WAL would break the bound.
  CHECK(after.wal_pages_written * 4096 > 4 * kWalBound);
  CHECK(wal_max <= kWalBound);
  CHECK(after.wal_bytes_max <= kWalBound);
  CHECK(after.checkpoints_truncated > 0);
  // Retention ran while the queue kept filling, and kept pace with the
  // writes (every row here is old enough from the start, so one pass chases
  // the writer until it stops; the first pass starts after 1 s).
  CHECK(during.rows_rolled_up > 0);
  CHECK(during.rows_rolled_up * 4 > during.steps_written * 16);
  CHECK(after.retention_runs >= 1);
  CHECK(after.rows_rolled_up == 16 * num_appended);  // all of them, by the final pass

  // Every step is counted once: raw or in a rollup.
  REQUIRE(store->Close().ok());
  auto reader = OpenReader(path);
  HistoryQuery query;
  query.layer = 3;
  query.limit = 0;
  auto rows = reader->History(query);
  REQUIRE(rows.ok());
  uint64_t counted = 0;
  for (const StepRow& r : *rows)
    counted += r.rollup ? r.num_steps : 1;
  CHECK(counted == num_appended);
  // Closed cleanly: the WAL is gone or empty.
  CHECK(FileSize(path + "-wal") == 0);
}

// Appends steps 1..num_steps of engine `engine` (and a decision every 50th
// step) while `during` runs once halfway; returns the decision ids.
std::vector<int64_t> WriteAround(Store& store, const std::string& engine, uint64_t num_steps,
                                 int64_t t0, const std::function<void()>& during) {
  std::vector<int64_t> ids;
  for (uint64_t s = 1; s <= num_steps; ++s) {
    store.AppendStep(MakeStep(engine, s, t0 + static_cast<int64_t>(s) * kMilli, 2, 8));
    if (s % 50 == 0) ids.push_back(store.RecordDecision(MakeDecision(engine, t0, "capacity")));
    if (s == num_steps / 2) during();
    std::this_thread::sleep_for(200us);
  }
  return ids;
}

TEST_CASE("a database renamed over the live one: the writer reopens the path, nothing queued lost",
          "[store][replaced]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  const std::string other = dir.File("other.db");
  const std::string old_link = dir.File("old.db");  // keeps the old file reachable
  {
    // The replacement: another moectl database, with an engine of its own.
    auto store = OpenStore(TestOptions(other), &clock);
    store->UpsertEngine(MakeHello("other-engine", clock.NowNanos()));
    REQUIRE(store->Close().ok());
  }
  StoreOptions options = TestOptions(path);
  options.file_check_interval = 20ms;
  auto store = OpenStore(options, &clock);
  std::filesystem::create_hard_link(path, old_link);

  const uint64_t num_steps = 2000;
  std::vector<int64_t> ids = WriteAround(*store, "e1", num_steps, clock.NowNanos(), [&] {
    std::filesystem::rename(other, path);  // as `mv other.db moectl.db` would
  });
  REQUIRE(store->Flush().ok());
  StoreStats stats = store->stats();
  CHECK(stats.file_replaced == 1);
  CHECK(stats.reopened == 1);
  CHECK(stats.lost() == 0);
  CHECK_FALSE(stats.failing);
  CHECK(stats.last_error.find("stopped writing to the old file") != std::string::npos);
  REQUIRE(store->Close().ok());

  // The writes after the replacement are in the file now at the path (the
  // other database: its engine is there), the earlier ones in the old file.
  CHECK(Column(path, "SELECT COUNT(*) FROM engines WHERE engine_id = 'other-engine'") ==
        std::set<int64_t>{1});
  std::set<int64_t> new_steps = Column(path, "SELECT step FROM steps");
  std::set<int64_t> old_steps = Column(old_link, "SELECT step FROM steps");
  CHECK_FALSE(new_steps.empty());
  CHECK_FALSE(old_steps.empty());
  std::set<int64_t> all = new_steps;
  all.insert(old_steps.begin(), old_steps.end());
  CHECK(all.size() == num_steps);  // every step landed in one file or the other
  CHECK(*all.begin() == 1);
  CHECK(*all.rbegin() == static_cast<int64_t>(num_steps));
  // Only a batch whose commit raced the rename is in both.
  std::vector<int64_t> both;
  std::set_intersection(new_steps.begin(), new_steps.end(), old_steps.begin(), old_steps.end(),
                        std::back_inserter(both));
  CHECK(both.size() <= 64);
  std::set<int64_t> decisions = Column(path, "SELECT id FROM decisions");
  std::set<int64_t> old_decisions = Column(old_link, "SELECT id FROM decisions");
  decisions.insert(old_decisions.begin(), old_decisions.end());
  CHECK(decisions == std::set<int64_t>(ids.begin(), ids.end()));
  // Both files are whole, and the CLI reads the new one.
  RawDb raw_new(path);
  CHECK(raw_new.QueryText("PRAGMA integrity_check") == "ok");
  RawDb raw_old(old_link);
  CHECK(raw_old.QueryText("PRAGMA integrity_check") == "ok");
  auto reader = OpenReader(path);
  auto engines = reader->Engines();
  REQUIRE(engines.ok());
  CHECK(engines->size() == 2);
}

TEST_CASE("a foreign file renamed over the live one: the failure shows in stats, writes wait",
          "[store][replaced]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  const std::string foreign = dir.File("foreign.db");
  const std::string good = dir.File("good.db");
  {
    RawDb raw(foreign);
    REQUIRE(raw.Exec("CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT)") == SQLITE_OK);
  }
  const std::string foreign_bytes = ReadFileBytes(foreign);
  REQUIRE(OpenStore(TestOptions(good), &clock)->Close().ok());

  StoreOptions options = TestOptions(path);
  options.file_check_interval = 20ms;
  auto store = OpenStore(options, &clock);
  store->RecordDecision(MakeDecision("e1", clock.NowNanos(), "capacity"));
  REQUIRE(store->Flush().ok());
  std::filesystem::rename(foreign, path);
  int64_t id = store->RecordDecision(MakeDecision("e1", clock.NowNanos(), "capacity"));
  for (uint64_t s = 1; s <= 10; ++s)
    store->AppendStep(MakeStep("e1", s, clock.NowNanos(), 2, 8));
  CHECK(store->Flush(300ms).code() == StatusCode::kTimeout);
  StoreStats stats = store->stats();
  CHECK(stats.file_replaced == 1);
  CHECK(stats.reopened == 0);
  CHECK(stats.failing);
  INFO(stats.last_error);
  CHECK(stats.last_error.find("not a moectl database") != std::string::npos);
  CHECK(stats.pending == 11);
  CHECK(ReadFileBytes(path) == foreign_bytes);  // someone else's file is left alone

  // The operator puts a moectl database back: the queue goes there.
  std::filesystem::rename(good, path);
  REQUIRE(store->Flush(5s).ok());
  stats = store->stats();
  CHECK(stats.reopened == 1);
  CHECK_FALSE(stats.failing);
  CHECK(stats.lost() == 0);
  REQUIRE(store->Close().ok());
  CHECK(Column(path, "SELECT id FROM decisions") == std::set<int64_t>{id});
  CHECK(Column(path, "SELECT COUNT(*) FROM steps") == std::set<int64_t>{10});
}

TEST_CASE("a deleted database: the writer starts a new one at the path", "[store][replaced]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.file_check_interval = 20ms;
  auto store = OpenStore(options, &clock);
  int64_t first = store->RecordDecision(MakeDecision("e1", clock.NowNanos(), "capacity"));
  REQUIRE(store->Flush().ok());
  REQUIRE(::unlink(path.c_str()) == 0);
  REQUIRE(WaitUntil([&] { return store->stats().reopened == 1; }, 5s));
  int64_t second = store->RecordDecision(MakeDecision("e1", clock.NowNanos(), "capacity"));
  CHECK(second > first);
  REQUIRE(store->Flush().ok());
  CHECK(store->stats().file_replaced == 1);
  REQUIRE(store->Close().ok());
  CHECK(Column(path, "SELECT id FROM decisions") == std::set<int64_t>{second});
  RawDb raw(path);
  CHECK(raw.QueryText("PRAGMA integrity_check") == "ok");
  CHECK(raw.QueryInt("SELECT MAX(version) FROM schema_migrations") == kSchemaVersion);
}

TEST_CASE("every write refused or lost is counted", "[store][lost]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.max_queue = 4;
  options.close_timeout = 200ms;
  auto store = OpenStore(options, &clock);
  // An update of a decision that is not in the file.
  store->RecordAck(999, telemetry::Ack{});
  // A write SQLite refuses for good: a decision id already taken.
  int64_t id = store->RecordDecision(MakeDecision("e1", 1, "capacity"));
  REQUIRE(store->Flush().ok());
  TakeDecisionId(path, id + 1);
  store->RecordDecision(MakeDecision("e1", 2, "capacity"));  // gets id + 1: refused
  REQUIRE(store->Flush().ok());
  StoreStats stats = store->stats();
  CHECK(stats.unmatched_updates == 1);
  CHECK(stats.discarded == 1);

  // Another connection holds the write lock: the queue fills, then Close gives up.
  RawDb locker(path);
  REQUIRE(locker.Exec("BEGIN IMMEDIATE") == SQLITE_OK);
  for (uint64_t s = 1; s <= 10; ++s)
    store->AppendStep(MakeStep("e1", s, 3, 1, 4));
  CHECK(store->Close().code() == StatusCode::kUnavailable);
  store->RecordDecision(MakeDecision("e1", 4, "capacity"));  // after Close
  stats = store->stats();
  CHECK(stats.rejected == 6);  // four steps fit the queue
  CHECK(stats.abandoned_at_close == 4);
  CHECK(stats.ignored_after_close == 1);
  CHECK(stats.lost() == 1 + 1 + 6 + 4 + 1);
  REQUIRE(locker.Exec("ROLLBACK") == SQLITE_OK);
}

}  // namespace
}  // namespace moe::storage

// Reader: queries, clear errors on the wrong file, read-only access, and
// reading beside a live writer.

#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
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

constexpr int64_t kSecond = 1'000'000'000;

std::vector<StepRow> Query(Reader& reader, const HistoryQuery& q) {
  auto rows = reader.History(q);
  INFO(rows.status().ToString());
  REQUIRE(rows.ok());
  return *rows;
}

std::vector<uint64_t> Steps(const std::vector<StepRow>& rows) {
  std::vector<uint64_t> steps;
  for (const auto& r : rows)
    steps.push_back(r.step);
  return steps;
}

TEST_CASE("history keeps the most recent rows, in time order, inside the window", "[reader]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  const int64_t t0 = 1'000 * kSecond;
  {
    auto store = OpenStore(TestOptions(path), &clock);
    for (uint64_t s = 0; s < 10; ++s) {
      store->AppendStep(MakeStep("e1", s, t0 + static_cast<int64_t>(s) * kSecond, 2, 4));
    }
    for (uint64_t s = 0; s < 3; ++s) {
      store->AppendStep(MakeStep("e2", s, t0 + static_cast<int64_t>(s) * kSecond, 1, 4));
    }
    REQUIRE(store->Close().ok());
  }
  auto reader = OpenReader(path);

  HistoryQuery q;
  q.engine_id = "e1";
  q.layer = 0;
  q.limit = 3;
  CHECK(Steps(Query(*reader, q)) == std::vector<uint64_t>{7, 8, 9});

  q.limit = 100;
  q.window.since_ns = t0 + 2 * kSecond;
  q.window.until_ns = t0 + 5 * kSecond;  // half-open: step 5 is out
  CHECK(Steps(Query(*reader, q)) == std::vector<uint64_t>{2, 3, 4});

  q.limit = 2;  // the limit applies inside the window
  CHECK(Steps(Query(*reader, q)) == std::vector<uint64_t>{3, 4});

  HistoryQuery every;
  every.limit = 0;
  std::vector<StepRow> rows = Query(*reader, every);
  CHECK(rows.size() == 10 * 2 + 3);
  for (size_t i = 1; i < rows.size(); ++i) {
    CHECK(rows[i - 1].timestamp_ns <= rows[i].timestamp_ns);
    CHECK_FALSE(rows[i].rollup);
  }
  // At one instant: e1 layer 0, e1 layer 1, e2 layer 0.
  CHECK(rows[0].engine_id == "e1");
  CHECK(rows[0].layer == 0);
  CHECK(rows[1].layer == 1);
  CHECK(rows[2].engine_id == "e2");

  HistoryQuery layer1;
  layer1.layer = 1;
  layer1.limit = 0;
  CHECK(Query(*reader, layer1).size() == 10);

  HistoryQuery unknown;
  unknown.engine_id = "nope";
  CHECK(Query(*reader, unknown).empty());

  auto engines = reader->Engines();
  REQUIRE(engines.ok());
  REQUIRE(engines->size() == 2);
  CHECK((*engines)[0].engine_id == "e1");
  CHECK((*engines)[1].engine_id == "e2");
}

TEST_CASE("hot experts rank experts by load summed over the window", "[reader]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  const int64_t t0 = 1'000 * kSecond;
  {
    auto store = OpenStore(TestOptions(path), &clock);
    for (uint64_t s = 0; s < 4; ++s) {
      telemetry::StepRecord r = MakeStep("e1", s, t0 + static_cast<int64_t>(s) * kSecond, 2, 8);
      // Layer 0: expert 5 hot, expert 2 warm, the rest even (ties by id).
      r.layers[0].expert_tokens = {10, 10, 30, 10, 10, 50, 10, 10};
      // Layer 1: expert 7 hot only in step 3.
      r.layers[1].expert_tokens = {5, 5, 5, 5, 5, 5, 5, s == 3 ? 100u : 5u};
      store->AppendStep(r);
    }
    store->AppendStep(MakeStep("e2", 0, t0, 1, 8));
    REQUIRE(store->Close().ok());
  }
  auto reader = OpenReader(path);

  ExpertQuery q;
  q.engine_id = "e1";
  q.top = 3;
  auto hot = reader->HotExperts(q);
  REQUIRE(hot.ok());
  REQUIRE(hot->size() == 6);
  const auto& h = *hot;
  CHECK(h[0].layer == 0);
  CHECK(h[0].expert == 5);
  CHECK(h[0].tokens == 200);
  CHECK(h[0].share == Approx(200.0 / 560.0));
  CHECK(h[0].vs_mean == Approx(200.0 / 70.0));
  CHECK(h[1].expert == 2);
  CHECK(h[1].tokens == 120);
  CHECK(h[2].expert == 0);  // tie at 40: lowest id first
  CHECK(h[2].tokens == 40);
  CHECK(h[3].layer == 1);
  CHECK(h[3].expert == 7);
  CHECK(h[3].tokens == 115);

  q.layer = 1;
  q.top = 1;
  q.window.until_ns = t0 + 3 * kSecond;  // before the spike
  auto early = reader->HotExperts(q);
  REQUIRE(early.ok());
  REQUIRE(early->size() == 1);
  CHECK(early->front().layer == 1);
  CHECK(early->front().expert == 0);
  CHECK(early->front().tokens == 15);
  CHECK(early->front().vs_mean == Approx(1.0));

  ExpertQuery ambiguous;
  auto refused = reader->HotExperts(ambiguous);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(refused.status().message(), Catch::Contains("e1") && Catch::Contains("e2"));
}

TEST_CASE("opening a missing file says so and creates nothing", "[reader]") {
  TempDir dir;
  const std::string path = dir.File("absent.db");
  auto reader = Reader::Open(path);
  REQUIRE_FALSE(reader.ok());
  CHECK(reader.status().code() == StatusCode::kNotFound);
  CHECK_THAT(reader.status().message(), Catch::Contains("no database at " + path) &&
                                            Catch::Contains("moectld") && Catch::Contains("--db"));
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("opening a file that is not a moectl database says so", "[reader]") {
  TempDir dir;
  SECTION("garbage") {
    std::string garbage;
    for (int i = 0; i < 200; ++i)
      garbage += "this is not a database, just text. ";
    const std::string path = dir.Write("garbage.db", garbage);
    auto reader = Reader::Open(path);
    REQUIRE_FALSE(reader.ok());
    CHECK(reader.status().code() == StatusCode::kCorruption);
    CHECK_THAT(reader.status().message(),
               Catch::Contains(path) && Catch::Contains("not an SQLite database"));
    CHECK(ReadFileBytes(path) == garbage);
  }
  SECTION("empty file") {
    const std::string path = dir.Write("empty.db", "");
    auto reader = Reader::Open(path);
    REQUIRE_FALSE(reader.ok());
    CHECK(reader.status().code() == StatusCode::kFailedPrecondition);
    CHECK_THAT(reader.status().message(), Catch::Contains("not a moectl database"));
  }
  SECTION("another application's SQLite file") {
    const std::string path = dir.File("other.db");
    {
      RawDb raw(path);
      REQUIRE(raw.Exec("CREATE TABLE notes(body TEXT)") == SQLITE_OK);
    }
    auto reader = Reader::Open(path);
    REQUIRE_FALSE(reader.ok());
    CHECK(reader.status().code() == StatusCode::kFailedPrecondition);
    CHECK_THAT(reader.status().message(), Catch::Contains("not a moectl database"));
  }
  SECTION("a directory") {
    auto reader = Reader::Open(dir.path().string());
    REQUIRE_FALSE(reader.ok());
    CHECK_THAT(reader.status().message(), Catch::Contains("directory"));
  }
}

TEST_CASE("a reader never modifies the database", "[reader]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  {
    auto store = OpenStore(TestOptions(path), &clock);
    store->UpsertEngine(MakeHello("e1", 1));
    for (uint64_t s = 0; s < 20; ++s) {
      store->AppendStep(MakeStep("e1", s, static_cast<int64_t>(s) * kSecond, 2, 8));
    }
    store->RecordDecision(MakeDecision("e1", 5, "capacity"));
    REQUIRE(store->Close().ok());
  }
  const std::string before = ReadFileBytes(path);
  REQUIRE_FALSE(before.empty());
  const auto mtime = std::filesystem::last_write_time(path);
  {
    auto reader = OpenReader(path);
    CHECK(reader->Engines().ok());
    CHECK(reader->History(HistoryQuery{}).ok());
    CHECK(reader->Decisions(DecisionQuery{}).ok());
    CHECK(reader->Decision(1).ok());
    CHECK(reader->HotExperts(ExpertQuery{}).ok());
    CHECK(reader->Epochs("", TimeWindow{}).ok());
    CHECK(reader->SchemaVersion().ok());
  }
  CHECK(ReadFileBytes(path) == before);
  CHECK(std::filesystem::last_write_time(path) == mtime);
}

TEST_CASE("a reader reads while the store writes", "[reader]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  constexpr uint64_t kSteps = 600;
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    for (uint64_t s = 0; s < kSteps; ++s) {
      store->AppendStep(MakeStep("e1", s, static_cast<int64_t>(s + 1) * kSecond, 2, 16));
      if (s % 100 == 99) {
        store->RecordDecision(MakeDecision("e1", static_cast<int64_t>(s), "capacity"));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    writing = false;
  });

  auto reader = OpenReader(path);
  size_t last_count = 0;
  int num_reads = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool failed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    bool was_writing = writing.load();
    HistoryQuery q;
    q.limit = 0;
    auto rows = reader->History(q);
    auto hot = reader->HotExperts(ExpertQuery{});
    auto decisions = reader->Decisions(DecisionQuery{});
    if (!rows.ok() || !hot.ok() || !decisions.ok()) {
      failed = true;
      FAIL_CHECK("read failed: " << rows.status().ToString() << " / " << hot.status().ToString()
                                 << " / " << decisions.status().ToString());
      break;
    }
    CHECK(rows->size() >= last_count);  // committed rows never vanish
    CHECK(rows->size() % 2 == 0);       // a step's layers commit together
    last_count = rows->size();
    ++num_reads;
    if (!was_writing) break;
  }
  writer.join();
  CHECK_FALSE(failed);
  CHECK(num_reads >= 1);
  REQUIRE(store->Flush().ok());
  HistoryQuery q;
  q.limit = 0;
  auto rows = reader->History(q);
  REQUIRE(rows.ok());
  CHECK(rows->size() == 2 * kSteps);
}

}  // namespace
}  // namespace moe::storage

// Retention: raw rows older than the horizon become per-minute rollups, in one
// transaction, so every step stays counted exactly once.

#include <catch2/catch.hpp>

#include <map>
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
constexpr int64_t kMinute = 60 * kSecond;

int64_t FloorMinute(int64_t ns) {
  return ns - ns % kMinute;
}  // ns > 0 here

struct Totals {
  uint64_t num_steps = 0;
  uint64_t tokens = 0;
  uint64_t slots = 0;
  uint64_t dropped = 0;
  uint64_t overflowed = 0;
};

std::map<uint32_t, Totals> SumByLayer(const std::vector<StepRow>& rows) {
  std::map<uint32_t, Totals> totals;
  for (const StepRow& r : rows) {
    Totals& t = totals[r.layer];
    t.num_steps += r.num_steps;
    t.tokens += r.num_tokens;
    t.slots += r.num_token_slots;
    t.dropped += r.dropped;
    t.overflowed += r.overflowed;
  }
  return totals;
}

std::map<uint32_t, Totals> SumByLayer(const std::vector<telemetry::StepRecord>& records) {
  std::vector<StepRow> rows;
  for (const auto& r : records) {
    for (size_t l = 0; l < r.layers.size(); ++l)
      rows.push_back(ExpectedRow(r, l));
  }
  return SumByLayer(rows);
}

bool operator==(const Totals& a, const Totals& b) {
  return a.num_steps == b.num_steps && a.tokens == b.tokens && a.slots == b.slots &&
         a.dropped == b.dropped && a.overflowed == b.overflowed;
}

std::vector<StepRow> Everything(Reader& reader, bool include_rollups = true) {
  HistoryQuery q;
  q.limit = 0;
  q.include_rollups = include_rollups;
  auto rows = reader.History(q);
  INFO(rows.status().ToString());
  REQUIRE(rows.ok());
  return *rows;
}

std::vector<ExpertLoadRow> AllLoads(Reader& reader) {
  ExpertQuery q;
  q.engine_id = "e1";
  q.top = 0;
  auto rows = reader.HotExperts(q);
  INFO(rows.status().ToString());
  REQUIRE(rows.ok());
  return *rows;
}

bool SameLoads(const std::vector<ExpertLoadRow>& a, const std::vector<ExpertLoadRow>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].layer != b[i].layer || a[i].expert != b[i].expert || a[i].tokens != b[i].tokens) {
      return false;
    }
  }
  return true;
}

TEST_CASE("old raw rows become per-minute rollups and no step is lost", "[retention]") {
  TempDir dir;
  FakeClock clock;
  const int64_t now = FloorMinute(clock.NowNanos()) + 30 * kSecond;
  clock.Set(now);
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.raw_retention = std::chrono::seconds(120);
  options.retention_interval = std::chrono::seconds(3600);  // only when asked
  auto store = Store::Open(options, &clock);
  REQUIRE(store.ok());

  // 40 steps 15 s apart, from 10 minutes ago: 4 per minute.
  const int64_t start = FloorMinute(now) - 10 * kMinute;
  std::vector<telemetry::StepRecord> records;
  for (uint64_t s = 0; s < 40; ++s) {
    records.push_back(MakeStep("e1", s, start + static_cast<int64_t>(s) * 15 * kSecond, 2, 4));
    (*store)->AppendStep(records.back());
  }
  REQUIRE((*store)->Flush().ok());
  auto reader_result = Reader::Open(path);
  REQUIRE(reader_result.ok());
  auto& reader = **reader_result;
  const std::vector<ExpertLoadRow> loads_before = AllLoads(reader);

  Status ran = (*store)->RunRetention();
  INFO(ran.ToString());
  REQUIRE(ran.ok());

  // Horizon: 2 minutes before now, rounded down to the minute.
  const int64_t horizon = FloorMinute(now - 120 * kSecond);
  std::vector<StepRow> rows = Everything(reader);
  size_t num_raw = 0;
  size_t num_rollups = 0;
  for (const StepRow& r : rows) {
    if (r.rollup) {
      ++num_rollups;
      CHECK(r.timestamp_ns < horizon);
      CHECK(r.timestamp_ns % kMinute == 0);
    } else {
      ++num_raw;
      CHECK(r.timestamp_ns >= horizon);
    }
  }
  // Minutes start-8 .. start+7 are rolled up (8 minutes x 2 layers), the
  // last 2 minutes (8 steps x 2 layers) stay raw.
  CHECK(num_rollups == 8 * 2);
  CHECK(num_raw == 8 * 2);
  CHECK(SumByLayer(rows) == SumByLayer(records));
  CHECK(Everything(reader, /*include_rollups=*/false).size() == num_raw);

  // One bucket in detail: minute 3 holds steps 12..15.
  const StepRow* bucket = nullptr;
  for (const StepRow& r : rows) {
    if (r.rollup && r.layer == 1 && r.timestamp_ns == start + 3 * kMinute) bucket = &r;
  }
  REQUIRE(bucket != nullptr);
  CHECK(bucket->num_steps == 4);
  CHECK(bucket->step == 15);
  CHECK(bucket->seq == records[15].seq);
  CHECK(bucket->epoch == records[15].epoch);
  uint64_t tokens = 0, slots = 0, dropped = 0;
  double max_over_mean = 0, quality = 0, step_us = 0;
  int num_quality = 0;
  for (int s = 12; s < 16; ++s) {
    StepRow raw = ExpectedRow(records[s], 1);
    tokens += raw.num_tokens;
    slots += raw.num_token_slots;
    dropped += raw.dropped;
    max_over_mean += raw.max_over_mean;
    step_us += raw.step_us;
    if (raw.quality_error) {
      quality += *raw.quality_error;
      ++num_quality;
    }
  }
  CHECK(bucket->num_tokens == tokens);
  CHECK(bucket->num_token_slots == slots);
  CHECK(bucket->dropped == dropped);
  CHECK(bucket->drop_rate == Approx(static_cast<double>(dropped) / static_cast<double>(slots)));
  CHECK(bucket->max_over_mean == Approx(max_over_mean / 4));
  CHECK(bucket->step_us == Approx(step_us / 4));
  REQUIRE(bucket->quality_error.has_value());
  CHECK(*bucket->quality_error == Approx(quality / num_quality));

  // Expert loads survive in the rollups.
  CHECK(SameLoads(AllLoads(reader), loads_before));

  StoreStats stats = (*store)->stats();
  CHECK(stats.rows_rolled_up == 32 * 2);
  CHECK(stats.retention_runs == 1);

  SECTION("a late row merges into its minute's rollup") {
    telemetry::StepRecord late = MakeStep("e1", 99, start + 3 * kMinute + 59 * kSecond, 2, 4);
    (*store)->AppendStep(late);
    REQUIRE((*store)->RunRetention().ok());
    std::vector<StepRow> after = Everything(reader);
    CHECK(after.size() == rows.size());
    records.push_back(late);
    CHECK(SumByLayer(after) == SumByLayer(records));
    for (const StepRow& r : after) {
      if (r.rollup && r.layer == 1 && r.timestamp_ns == start + 3 * kMinute) {
        CHECK(r.num_steps == 5);
        CHECK(r.step == 99);  // the latest step of the minute
      }
    }
  }

  SECTION("history limits count rollups and raw rows together") {
    HistoryQuery q;
    q.layer = 0;
    q.limit = 10;
    auto last = reader.History(q);
    REQUIRE(last.ok());
    REQUIRE(last->size() == 10);
    CHECK((*last)[0].rollup);  // two rollups, then the 8 raw rows
    CHECK((*last)[1].rollup);
    CHECK_FALSE((*last)[2].rollup);
    CHECK((*last)[1].timestamp_ns == horizon - kMinute);
  }

  SECTION("moving time on rolls up more, keeping the totals") {
    clock.Advance(5 * kMinute);
    REQUIRE((*store)->RunRetention().ok());
    std::vector<StepRow> after = Everything(reader);
    for (const StepRow& r : after)
      CHECK(r.rollup);
    CHECK(SumByLayer(after) == SumByLayer(records));
    CHECK(SameLoads(AllLoads(reader), loads_before));
  }
}

TEST_CASE("the writer runs retention on its own cadence", "[retention]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  StoreOptions options = TestOptions(path);
  options.raw_retention = std::chrono::seconds(60);
  options.retention_interval = std::chrono::seconds(5);
  auto store = Store::Open(options, &clock);
  REQUIRE(store.ok());
  const int64_t old = FloorMinute(clock.NowNanos()) - 30 * kMinute;
  for (uint64_t s = 0; s < 10; ++s) {
    (*store)->AppendStep(MakeStep("e1", s, old + static_cast<int64_t>(s) * kSecond, 1, 4));
  }
  REQUIRE((*store)->Flush().ok());
  CHECK((*store)->stats().retention_runs == 0);  // not due yet: the fake clock stands still

  clock.Advance(6 * kSecond);
  REQUIRE(WaitUntil([&] { return (*store)->stats().rows_rolled_up == 10; }));
  CHECK((*store)->stats().retention_runs >= 1);
  auto reader = Reader::Open(path);
  REQUIRE(reader.ok());
  auto rows = (*reader)->History(HistoryQuery{});
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 1);
  CHECK(rows->front().rollup);
  CHECK(rows->front().num_steps == 10);
}

TEST_CASE("old rollups and decisions go; young and in-flight ones, epochs and samples stay",
          "[retention][decisions]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  const int64_t now = clock.NowNanos();
  constexpr int64_t kHour = 60 * kMinute;
  constexpr int64_t kDay = 24 * kHour;
  StoreOptions options = TestOptions(path);
  options.raw_retention = std::chrono::hours(1);
  options.rollup_retention = std::chrono::hours(24);
  options.decision_retention = std::chrono::hours(24 * 7);
  auto store = OpenStore(options, &clock);

  // Raw steps two days old (rolled up, and the rollups are past their
  // retention), two hours old (rolled up, kept) and ten minutes old (raw).
  store->AppendStep(MakeStep("e1", 1, now - 2 * kDay, 3, 4));
  store->AppendStep(MakeStep("e1", 2, now - 2 * kHour, 3, 4));
  store->AppendStep(MakeStep("e1", 3, now - 10 * kMinute, 3, 4));

  const int64_t old = now - 8 * kDay;
  telemetry::Ack applied{"e1", 5, true, "", 10, old};
  telemetry::Ack refused{"e1", 6, false, "out of bounds", 0, old};
  int64_t old_proposed = store->RecordDecision(MakeDecision("e1", old, "capacity"));
  int64_t old_sent = store->RecordDecision(MakeDecision("e1", old, "capacity"));
  store->RecordCommandSent(old_sent, 5, old);
  int64_t old_acked = store->RecordDecision(MakeDecision("e1", old, "capacity"));
  store->RecordCommandSent(old_acked, 5, old);
  store->RecordAck(old_acked, applied);
  int64_t old_failed = store->RecordDecision(MakeDecision("e1", old, "capacity"));
  store->RecordCommandSent(old_failed, 6, old);
  store->RecordAck(old_failed, refused);
  int64_t old_measured = store->RecordDecision(MakeDecision("e1", old, "capacity"));
  store->RecordCommandSent(old_measured, 7, old);
  store->RecordAck(old_measured, applied);
  store->RecordOutcome(old_measured, DecisionOutcome{"{}", 1.0, 2.0, old + kMinute});
  int64_t young = store->RecordDecision(MakeDecision("e1", now - 6 * kDay, "capacity"));
  store->RecordEpoch(EpochRow{"e1", 5, now - 30 * kDay, "{}", old_acked});
  store->RecordLearningSample({"e1", 5, now - 30 * kDay, "r", "capacity_factor", 1.5, -0.2, 16});
  REQUIRE(store->RunRetention().ok());

  StoreStats stats = store->stats();
  CHECK(stats.decisions_deleted == 3);  // proposed, failed and measured, all 8 days old
  CHECK(stats.rollups_deleted == 3);    // step 1's three layers
  CHECK(stats.rows_rolled_up == 6);     // steps 1 and 2
  auto reader = OpenReader(path);
  auto decisions = reader->Decisions(DecisionQuery{});
  REQUIRE(decisions.ok());
  std::vector<int64_t> ids;
  for (const DecisionRow& d : *decisions)
    ids.push_back(d.id);
  CHECK(ids == std::vector<int64_t>{old_sent, old_acked, young});
  (void)old_proposed;

  HistoryQuery query;
  query.limit = 0;
  auto rows = reader->History(query);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 6);
  for (size_t i = 0; i < 3; ++i) {
    CHECK((*rows)[i].rollup);
    CHECK((*rows)[i].step == 2);
    CHECK_FALSE((*rows)[i + 3].rollup);
    CHECK((*rows)[i + 3].step == 3);
  }
  auto epochs = reader->Epochs("e1", TimeWindow{});
  REQUIRE(epochs.ok());
  CHECK(epochs->size() == 1);
  RawDb raw(path);
  CHECK(raw.QueryInt("SELECT COUNT(*) FROM learning_samples") == 1);

  // A second pass finds nothing more; a week later the acked one is still in
  // flight and stays, the young one goes.
  REQUIRE(store->RunRetention().ok());
  CHECK(store->stats().decisions_deleted == 3);
  clock.Advance(2 * kDay);
  REQUIRE(store->RunRetention().ok());
  CHECK(store->stats().decisions_deleted == 4);
  CHECK(raw.QueryInt("SELECT COUNT(*) FROM decisions") == 2);
  REQUIRE(store->Close().ok());
}

TEST_CASE("retention options are checked at Open", "[retention]") {
  TempDir dir;
  FakeClock clock;
  StoreOptions options = TestOptions(dir.File("moectl.db"));
  options.raw_retention = std::chrono::hours(24);
  options.rollup_retention = std::chrono::hours(1);
  auto store = Store::Open(options, &clock);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == StatusCode::kInvalidArgument);
  CHECK(store.status().message().find("rollup_retention") != std::string::npos);
  options.rollup_retention = std::chrono::seconds(0);
  options.decision_retention = std::chrono::seconds(-1);
  store = Store::Open(options, &clock);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().message().find("decision_retention") != std::string::npos);
}

}  // namespace
}  // namespace moe::storage

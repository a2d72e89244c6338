// Migration 4: a step is one row of `steps` with its layers packed in a BLOB.
// Rows written before it (step_layers + expert_loads) stay readable, count in
// hot-expert sums and roll up like the new ones; a damaged blob is reported.

#include <catch2/catch.hpp>

#include <fmt/format.h>

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

std::string Real(double v) {
  return fmt::format("{}", v);  // shortest text that reads back as the same double
}

// Writes `record` the way a schema-4 Store did: one step_layers row and one
// expert_loads row (little-endian uint32 per expert) per layer.
void InsertLegacyStep(RawDb& raw, const telemetry::StepRecord& record) {
  for (size_t l = 0; l < record.layers.size(); ++l) {
    const StepRow r = ExpectedRow(record, l);
    std::string sql = fmt::format(
        "INSERT INTO step_layers(engine_id, step, seq, timestamp_ns, epoch, layer, num_tokens, "
        "num_token_slots, overflowed, rerouted, dropped, drop_rate, max_over_mean, "
        "router_entropy, gate_mass, quality_error, router_us, dispatch_us, expert_us, "
        "combine_us, all_to_all_us, layer_us, step_us, timing_on_device) VALUES ('{}', {}, {}, "
        "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
        r.engine_id, r.step, r.seq, r.timestamp_ns, r.epoch, r.layer, r.num_tokens,
        r.num_token_slots, r.overflowed, r.rerouted, r.dropped, Real(r.drop_rate),
        Real(r.max_over_mean), Real(r.router_entropy), Real(r.gate_mass),
        r.quality_error ? Real(*r.quality_error) : "NULL", Real(r.router_us), Real(r.dispatch_us),
        Real(r.expert_us), Real(r.combine_us), Real(r.all_to_all_us), Real(r.layer_us),
        Real(r.step_us), r.timing_on_device ? 1 : 0);
    REQUIRE(raw.Exec(sql) == SQLITE_OK);
    std::string hex;
    for (uint32_t t : record.layers[l].expert_tokens) {
      for (int b = 0; b < 4; ++b)
        hex += fmt::format("{:02x}", (t >> (8 * b)) & 0xff);
    }
    REQUIRE(raw.Exec(fmt::format("INSERT INTO expert_loads(step_layer_id, tokens) VALUES "
                                 "(last_insert_rowid(), X'{}')",
                                 hex)) == SQLITE_OK);
  }
}

std::vector<StepRow> History(Reader& reader, size_t limit, bool rollups = true) {
  HistoryQuery q;
  q.limit = limit;
  q.include_rollups = rollups;
  auto rows = reader.History(q);
  INFO(rows.status().ToString());
  REQUIRE(rows.ok());
  return *rows;
}

std::map<std::pair<uint32_t, uint32_t>, uint64_t> Loads(Reader& reader) {
  ExpertQuery q;
  q.engine_id = "e1";
  q.top = 0;
  auto rows = reader.HotExperts(q);
  INFO(rows.status().ToString());
  REQUIRE(rows.ok());
  std::map<std::pair<uint32_t, uint32_t>, uint64_t> out;
  for (const ExpertLoadRow& r : *rows)
    out[{r.layer, r.expert}] = r.tokens;
  return out;
}

std::map<std::pair<uint32_t, uint32_t>, uint64_t> Loads(
    const std::vector<telemetry::StepRecord>& records) {
  std::map<std::pair<uint32_t, uint32_t>, uint64_t> out;
  for (const auto& r : records) {
    for (const auto& layer : r.layers) {
      for (size_t e = 0; e < layer.expert_tokens.size(); ++e)
        out[{layer.layer, static_cast<uint32_t>(e)}] += layer.expert_tokens[e];
    }
  }
  return out;
}

TEST_CASE("a step is one row, and rows written before migration 5 stay readable", "[steps]") {
  TempDir dir;
  FakeClock clock;
  const int64_t now = clock.NowNanos() - clock.NowNanos() % kMinute + 30 * kSecond;
  clock.Set(now);
  const std::string path = dir.File("moectl.db");
  REQUIRE(OpenStore(TestOptions(path), &clock)->Close().ok());

  // What a schema-4 database holds: steps 1..3 as per-layer rows.
  const int64_t t0 = now - 10 * kMinute;
  std::vector<telemetry::StepRecord> records;
  for (uint64_t s = 1; s <= 3; ++s)
    records.push_back(MakeStep("e1", s, t0 + static_cast<int64_t>(s) * kSecond, 3, 8));
  {
    RawDb raw(path);
    UndoMigration9(raw);
    UndoMigration6(raw);
    REQUIRE(raw.Exec("DROP TABLE steps") == SQLITE_OK);
    REQUIRE(raw.Exec("DROP INDEX decisions_by_time") == SQLITE_OK);  // migration 7
    REQUIRE(raw.Exec("DELETE FROM schema_migrations WHERE version >= 5") == SQLITE_OK);
    for (const auto& r : records)
      InsertLegacyStep(raw, r);
  }

  StoreOptions options = TestOptions(path);
  options.raw_retention = std::chrono::seconds(120);
  options.retention_interval = std::chrono::seconds(3600);  // only when asked
  auto store = OpenStore(options, &clock);
  // Steps 4..6 go into the new table; step 7 shares step 6's instant.
  for (uint64_t s = 4; s <= 7; ++s) {
    records.push_back(
        MakeStep("e1", s, t0 + static_cast<int64_t>(std::min<uint64_t>(s, 6)) * kSecond, 3, 8));
    store->AppendStep(records.back());
  }
  REQUIRE(store->Flush().ok());
  {
    RawDb raw(path);
    CHECK(raw.QueryInt("SELECT COUNT(*) FROM steps") == 4);  // one row per step
    CHECK(raw.QueryInt("SELECT COUNT(*) FROM step_layers") == 9);
    CHECK(raw.QueryInt("SELECT MAX(version) FROM schema_migrations") == kSchemaVersion);
  }

  auto reader = OpenReader(path);
  std::vector<StepRow> rows = History(*reader, 0);
  REQUIRE(rows.size() == records.size() * 3);
  // Time order, then layer, then step: steps 6 and 7 interleave by layer.
  std::vector<StepRow> expected;
  for (size_t i = 0; i < 5; ++i) {
    for (size_t l = 0; l < 3; ++l)
      expected.push_back(ExpectedRow(records[i], l));
  }
  for (size_t l = 0; l < 3; ++l) {
    expected.push_back(ExpectedRow(records[5], l));
    expected.push_back(ExpectedRow(records[6], l));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    INFO("row " << i << ": step " << rows[i].step << " layer " << rows[i].layer);
    CHECK(rows[i] == expected[i]);
  }

  SECTION("a limit keeps the most recent rows, across steps of one instant") {
    for (size_t limit : {1, 2, 4, 5, 7, 12}) {
      INFO("limit " << limit);
      std::vector<StepRow> last = History(*reader, limit);
      REQUIRE(last.size() == limit);
      CHECK(std::equal(last.begin(), last.end(), rows.end() - static_cast<std::ptrdiff_t>(limit)));
    }
    HistoryQuery q;
    q.layer = 1;
    q.limit = 3;
    auto layer = reader->History(q);
    REQUIRE(layer.ok());
    REQUIRE(layer->size() == 3);
    CHECK((*layer)[0] == ExpectedRow(records[4], 1));
    CHECK((*layer)[1] == ExpectedRow(records[5], 1));
    CHECK((*layer)[2] == ExpectedRow(records[6], 1));
  }

  SECTION("hot experts sum both kinds of rows") {
    CHECK(Loads(*reader) == Loads(records));
    ExpertQuery q;
    q.engine_id = "e1";
    q.layer = 2;
    q.top = 1;
    q.window.since_ns = t0 + 4 * kSecond;  // the new rows only
    auto top = reader->HotExperts(q);
    REQUIRE(top.ok());
    REQUIRE(top->size() == 1);
    std::vector<telemetry::StepRecord> recent(records.begin() + 3, records.end());
    std::map<std::pair<uint32_t, uint32_t>, uint64_t> sums = Loads(recent);
    uint64_t best = 0;
    for (uint32_t e = 0; e < 8; ++e)
      best = std::max(best, sums[{2, e}]);
    CHECK((*top)[0].layer == 2);
    CHECK((*top)[0].tokens == best);
  }

  SECTION("retention rolls up both kinds of rows and deletes them") {
    REQUIRE(store->RunRetention().ok());
    CHECK(store->stats().rows_rolled_up == records.size() * 3);
    std::vector<StepRow> after = History(*reader, 0);
    uint64_t num_steps = 0;
    for (const StepRow& r : after) {
      CHECK(r.rollup);
      num_steps += r.num_steps;
    }
    CHECK(num_steps == records.size() * 3);
    CHECK(Loads(*reader) == Loads(records));
    RawDb raw(path);
    CHECK(raw.QueryInt("SELECT COUNT(*) FROM steps") == 0);
    CHECK(raw.QueryInt("SELECT COUNT(*) FROM step_layers") == 0);
    CHECK(raw.QueryInt("SELECT COUNT(*) FROM expert_loads") == 0);
  }
}

TEST_CASE("a damaged step blob is reported as corruption", "[steps]") {
  TempDir dir;
  FakeClock clock;
  const std::string path = dir.File("moectl.db");
  auto store = OpenStore(TestOptions(path), &clock);
  store->AppendStep(MakeStep("e1", 1, clock.NowNanos(), 2, 4));
  REQUIRE(store->Close().ok());
  std::string good_layers, good_loads;
  {
    RawDb raw(path);
    good_layers = raw.QueryText("SELECT hex(layers) FROM steps");
    good_loads = raw.QueryText("SELECT hex(loads) FROM steps");
  }
  ExpertQuery experts;
  experts.engine_id = "e1";

  SECTION("the figures") {
    // Empty, an unknown format version, fewer bytes than its layer count needs.
    for (const std::string blob : {"X''", "X'0201000000'", "X'0102000000aa'"}) {
      INFO(blob);
      {
        RawDb raw(path);
        REQUIRE(raw.Exec("UPDATE steps SET layers = " + blob) == SQLITE_OK);
      }
      auto reader = OpenReader(path);
      auto rows = reader->History(HistoryQuery{});
      REQUIRE_FALSE(rows.ok());
      CHECK(rows.status().code() == StatusCode::kCorruption);
      CHECK_THAT(rows.status().message(),
                 Catch::Contains("step 1 of engine e1") && Catch::Contains("layers blob"));
      CHECK(reader->HotExperts(experts).ok());  // the loads are intact
    }
  }
  SECTION("the loads") {
    const std::vector<std::string> damaged = {
        "X''",                // empty
        "X'02'",              // unknown format version
        "X'01020004'",        // layer 0 of 4 experts, truncated
        "X'0100ff'",          // no layers, then trailing bytes
        "X'01ffffffffffff'",  // a layer count that runs off the end
    };
    for (const std::string& blob : damaged) {
      INFO(blob);
      {
        RawDb raw(path);
        REQUIRE(raw.Exec("UPDATE steps SET loads = " + blob) == SQLITE_OK);
      }
      auto reader = OpenReader(path);
      auto loads = reader->HotExperts(experts);
      REQUIRE_FALSE(loads.ok());
      CHECK(loads.status().code() == StatusCode::kCorruption);
      CHECK_THAT(loads.status().message(),
                 Catch::Contains("step 1 of engine e1") && Catch::Contains("loads blob"));
      CHECK(reader->History(HistoryQuery{}).ok());  // the figures are intact
    }
    SECTION("retention refuses to roll up what it cannot read, and keeps it") {
      StoreOptions options = TestOptions(path);
      options.raw_retention = std::chrono::seconds(1);
      options.retention_interval = std::chrono::seconds(3600);
      clock.Advance(10 * kMinute);
      auto again = OpenStore(options, &clock);
      Status ran = again->RunRetention();
      CHECK(ran.code() == StatusCode::kCorruption);
      RawDb raw(path);
      CHECK(raw.QueryInt("SELECT COUNT(*) FROM steps") == 1);
      CHECK(raw.QueryInt("SELECT COUNT(*) FROM rollups") == 0);
    }
  }
  SECTION("intact blobs read back") {
    auto reader = OpenReader(path);
    CHECK(reader->History(HistoryQuery{}).ok());
    CHECK(reader->HotExperts(experts).ok());
    CHECK(good_layers.size() == 2 * (5 + 2 * 117));
    CHECK_FALSE(good_loads.empty());
  }
}

}  // namespace
}  // namespace moe::storage

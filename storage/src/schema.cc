#include "schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

namespace moe::storage::internal {
namespace {

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

// REAL columns are nullable on purpose: SQLite stores NaN as NULL, and a NaN
// in telemetry must not make a write fail forever. NULL reads back as NaN.
constexpr Migration kMigrations[] = {
    {1, "initial", R"sql(
CREATE TABLE engines (
  engine_id TEXT PRIMARY KEY NOT NULL,
  backend TEXT NOT NULL DEFAULT '',
  num_layers INTEGER NOT NULL DEFAULT 0,
  num_experts INTEGER NOT NULL DEFAULT 0,
  num_shared_experts INTEGER NOT NULL DEFAULT 0,
  num_replicas INTEGER NOT NULL DEFAULT 0,
  num_devices INTEGER NOT NULL DEFAULT 0,
  hidden INTEGER NOT NULL DEFAULT 0,
  first_seen_ns INTEGER NOT NULL,
  last_seen_ns INTEGER NOT NULL,
  last_step INTEGER NOT NULL DEFAULT 0,
  last_epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE step_layers (
  id INTEGER PRIMARY KEY,
  engine_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  timestamp_ns INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  layer INTEGER NOT NULL,
  num_tokens INTEGER NOT NULL,
  num_token_slots INTEGER NOT NULL,
  overflowed INTEGER NOT NULL,
  rerouted INTEGER NOT NULL,
  dropped INTEGER NOT NULL,
  drop_rate REAL,
  max_over_mean REAL,
  router_entropy REAL,
  gate_mass REAL,
  quality_error REAL,
  router_us REAL,
  dispatch_us REAL,
  expert_us REAL,
  combine_us REAL,
  all_to_all_us REAL,
  layer_us REAL,
  step_us REAL,
  timing_on_device INTEGER NOT NULL
);
CREATE INDEX step_layers_by_engine_layer_time ON step_layers(engine_id, layer, timestamp_ns);
CREATE INDEX step_layers_by_time ON step_layers(timestamp_ns);
CREATE TABLE expert_loads (
  step_layer_id INTEGER PRIMARY KEY,
  tokens BLOB NOT NULL
);
CREATE TABLE decisions (
  id INTEGER PRIMARY KEY,
  engine_id TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  policy TEXT NOT NULL,
  layer INTEGER NOT NULL,
  knob TEXT NOT NULL,
  inputs_json TEXT NOT NULL,
  proposal_json TEXT NOT NULL,
  verdict TEXT NOT NULL,
  verdict_reason TEXT NOT NULL,
  command_json TEXT NOT NULL,
  status TEXT NOT NULL,
  epoch INTEGER,
  sent_ns INTEGER,
  acked_ns INTEGER,
  applied_at_step INTEGER,
  ack_error TEXT NOT NULL DEFAULT '',
  outcome_json TEXT NOT NULL DEFAULT '',
  reward_before REAL,
  reward_after REAL,
  measured_ns INTEGER
);
CREATE INDEX decisions_by_engine_time ON decisions(engine_id, created_ns);
CREATE TABLE epochs (
  engine_id TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  knobs_json TEXT NOT NULL,
  decision_id INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (engine_id, epoch)
);
)sql"},
    {2, "rollups", R"sql(
CREATE TABLE rollups (
  engine_id TEXT NOT NULL,
  layer INTEGER NOT NULL,
  bucket_ns INTEGER NOT NULL,
  num_steps INTEGER NOT NULL,
  first_ns INTEGER NOT NULL,
  last_ns INTEGER NOT NULL,
  last_step INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  last_epoch INTEGER NOT NULL,
  sum_tokens INTEGER NOT NULL,
  sum_token_slots INTEGER NOT NULL,
  sum_overflowed INTEGER NOT NULL,
  sum_rerouted INTEGER NOT NULL,
  sum_dropped INTEGER NOT NULL,
  sum_max_over_mean REAL,
  sum_router_entropy REAL,
  sum_gate_mass REAL,
  sum_quality_error REAL,
  num_quality INTEGER NOT NULL,
  sum_router_us REAL,
  sum_dispatch_us REAL,
  sum_expert_us REAL,
  sum_combine_us REAL,
  sum_all_to_all_us REAL,
  sum_layer_us REAL,
  sum_step_us REAL,
  any_on_device INTEGER NOT NULL,
  expert_tokens BLOB NOT NULL,
  PRIMARY KEY (engine_id, layer, bucket_ns)
);
CREATE INDEX rollups_by_time ON rollups(bucket_ns);
)sql"},
    {3, "learning samples", R"sql(
CREATE TABLE learning_samples (
  id INTEGER PRIMARY KEY,
  engine_id TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  knob TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  regime TEXT NOT NULL,
  value REAL NOT NULL,
  reward REAL NOT NULL,
  steps INTEGER NOT NULL
);
CREATE INDEX learning_samples_by_engine ON learning_samples(engine_id, knob);
)sql"},
    {4, "decision predictions", R"sql(
ALTER TABLE decisions ADD COLUMN predicted_gain REAL;
ALTER TABLE decisions ADD COLUMN prediction_json TEXT NOT NULL DEFAULT '';
)sql"},
    // One row per step, its layers packed in two BLOBs (step_blob.h): a
    // step of 61 layers was 122 rows of step_layers and expert_loads. Rows
    // written before stay where they are and are read (and rolled up) from
    // there; new steps go here only.
    {5, "steps as one row", R"sql(
CREATE TABLE steps (
  id INTEGER PRIMARY KEY,
  engine_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  timestamp_ns INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  step_us REAL,
  timing_on_device INTEGER NOT NULL,
  num_layers INTEGER NOT NULL,
  layers BLOB NOT NULL,
  loads BLOB NOT NULL
);
CREATE INDEX steps_by_engine_time ON steps(engine_id, timestamp_ns);
CREATE INDEX steps_by_time ON steps(timestamp_ns);
)sql"},
    // Operator levers (pause, resume, pin, unpin, mode) with who pulled them
    // and why; engines the controller expired; identical rejections folded
    // into one decision row (`repeats` more, the last at last_repeat_ns).
    {6, "operator levers", R"sql(
CREATE TABLE operator_actions (
  id INTEGER PRIMARY KEY,
  created_ns INTEGER NOT NULL,
  engine_id TEXT NOT NULL,
  action TEXT NOT NULL,
  knob TEXT NOT NULL DEFAULT '',
  value REAL,
  until_ns INTEGER,
  mode TEXT NOT NULL DEFAULT '',
  uid INTEGER NOT NULL,
  who TEXT NOT NULL,
  reason TEXT NOT NULL,
  result TEXT NOT NULL,
  decision_id INTEGER
);
CREATE INDEX operator_actions_by_engine ON operator_actions(engine_id, id);
ALTER TABLE engines ADD COLUMN gone_ns INTEGER;
ALTER TABLE decisions ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
ALTER TABLE decisions ADD COLUMN last_repeat_ns INTEGER;
)sql"},
    // Decision retention deletes by age across engines (store.h).
    {7, "decision retention", R"sql(
CREATE INDEX decisions_by_time ON decisions(created_ns);
)sql"},
    // Epoch history append-only: an engine that restarts (or a controller
    // that reissues) adds rows instead of overwriting (engine, epoch).
    {8, "epoch history", R"sql(
CREATE TABLE epochs_history (
  id INTEGER PRIMARY KEY,
  engine_id TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  knobs_json TEXT NOT NULL,
  decision_id INTEGER NOT NULL DEFAULT 0
);
INSERT INTO epochs_history(engine_id, epoch, created_ns, knobs_json, decision_id)
  SELECT engine_id, epoch, created_ns, knobs_json, decision_id FROM epochs
  ORDER BY created_ns, engine_id, epoch;
DROP TABLE epochs;
ALTER TABLE epochs_history RENAME TO epochs;
CREATE INDEX epochs_by_engine ON epochs(engine_id, epoch);
CREATE INDEX epochs_by_time ON epochs(created_ns);
)sql"},
    // A learner of joint settings: every knob's value of the sample, as a
    // JSON array in the order of `knob`'s comma-separated names ('' on rows
    // of one knob written before: their setting is `value`).
    {9, "joint learning settings", R"sql(
ALTER TABLE learning_samples ADD COLUMN setting TEXT NOT NULL DEFAULT '';
)sql"},
};

// Numbered 1, 2, ... with no gap; the last is the latest.
static_assert(std::size(kMigrations) == kLatestSchemaVersion);
static_assert(kMigrations[std::size(kMigrations) - 1].version == kLatestSchemaVersion);

uint32_t Saturate32(uint64_t value) {
  return static_cast<uint32_t>(std::min<uint64_t>(value, std::numeric_limits<uint32_t>::max()));
}

Status ApplyOne(sqlite3* db, const std::string& path, const Migration& m, int64_t now_ns) {
  MOE_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE", "starting a migration"));
  auto body = [&]() -> Status {
    // Another process may have applied it since we looked.
    MOE_ASSIGN_OR_RETURN(
        Statement check,
        Statement::Prepare(db, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?1"));
    MOE_ASSIGN_OR_RETURN(bool row, check.BindInt(1, m.version).Step());
    const bool applied = row && check.ColumnInt(0) > 0;
    // No statement may be active while a migration drops a table.
    check.Reset();
    if (applied) return Status::Ok();
    MOE_RETURN_IF_ERROR(Exec(db, m.sql, fmt::format("migration {} ({})", m.version, m.name)));
    MOE_ASSIGN_OR_RETURN(Statement record,
                         Statement::Prepare(db,
                                            "INSERT INTO schema_migrations(version, name, "
                                            "applied_ns) VALUES (?1, ?2, ?3)"));
    MOE_RETURN_IF_ERROR(record.BindInt(1, m.version).BindText(2, m.name).BindInt(3, now_ns).Run());
    return Exec(db, "COMMIT", "committing a migration");
  };
  Status status = body();
  if (!status.ok()) {
    // The rollback's own failure adds nothing: the migration failed either way.
    (void)Exec(db, "ROLLBACK", "rolling back a migration");
    return status.WithContext(
        fmt::format("applying migration {} ({}) to {}", m.version, m.name, path));
  }
  return Status::Ok();
}

}  // namespace

double RealOrNaN(const Statement& stmt, int index) {
  return stmt.ColumnIsNull(index) ? std::numeric_limits<double>::quiet_NaN()
                                  : stmt.ColumnReal(index);
}

const char* const kPackedStepColumns =
    "engine_id, step, seq, timestamp_ns, epoch, step_us, timing_on_device";

StepRow ReadPackedStep(const Statement& stmt, int first) {
  StepRow row;
  row.engine_id = stmt.ColumnText(first);
  row.step = stmt.ColumnU64(first + 1);
  row.seq = stmt.ColumnU64(first + 2);
  row.timestamp_ns = stmt.ColumnInt(first + 3);
  row.epoch = stmt.ColumnU64(first + 4);
  row.step_us = RealOrNaN(stmt, first + 5);
  row.timing_on_device = stmt.ColumnInt(first + 6) != 0;
  row.num_steps = 1;
  row.rollup = false;
  return row;
}

int64_t FloorToMinute(int64_t ns) {
  int64_t q = ns / kNanosPerMinute;
  if (ns % kNanosPerMinute != 0 && ns < 0) --q;
  return q * kNanosPerMinute;
}

Result<int> ReadSchemaVersion(sqlite3* db, const std::string& path) {
  auto tables = Statement::Prepare(
      db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
  if (!tables.ok()) {
    if (tables.status().code() == StatusCode::kCorruption) {
      return Status::Corruption(
          fmt::format("{} is not an SQLite database (is it the moectld database?): {}", path,
                      tables.status().message()));
    }
    return tables.status().WithContext(fmt::format("reading the schema of {}", path));
  }
  bool has_migrations = false;
  size_t num_tables = 0;
  while (true) {
    auto row = tables->Step();
    if (!row.ok()) {
      if (row.status().code() == StatusCode::kCorruption) {
        return Status::Corruption(
            fmt::format("{} is not an SQLite database: {}", path, row.status().message()));
      }
      return row.status().WithContext(fmt::format("reading the schema of {}", path));
    }
    if (!*row) break;
    ++num_tables;
    if (tables->ColumnText(0) == "schema_migrations") has_migrations = true;
  }
  if (!has_migrations) {
    if (num_tables == 0) return 0;
    return Status::FailedPrecondition(
        fmt::format("{} is an SQLite database but not a moectl database (it has {} tables and no "
                    "schema_migrations table); pass the moectld database with --db",
                    path, num_tables));
  }
  MOE_ASSIGN_OR_RETURN(
      Statement max_version,
      Statement::Prepare(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  MOE_ASSIGN_OR_RETURN(bool row, max_version.Step());
  if (!row) return Status::Internal("SELECT MAX(version) returned no row");
  return static_cast<int>(max_version.ColumnInt(0));
}

Status Migrate(sqlite3* db, const std::string& path, int64_t now_ns) {
  MOE_ASSIGN_OR_RETURN(int version, ReadSchemaVersion(db, path));
  if (version > kLatestSchemaVersion) {
    return Status::FailedPrecondition(
        fmt::format("{} has schema version {}, newer than this binary knows ({}); upgrade moectl "
                    "or point it at another database",
                    path, version, kLatestSchemaVersion));
  }
  MOE_RETURN_IF_ERROR(Exec(db,
                           "CREATE TABLE IF NOT EXISTS schema_migrations ("
                           "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                           "applied_ns INTEGER NOT NULL)",
                           "creating schema_migrations"));
  for (const Migration& m : kMigrations) {
    if (m.version <= version) continue;
    MOE_RETURN_IF_ERROR(ApplyOne(db, path, m, now_ns));
  }
  return Status::Ok();
}

const char* const kStepColumns =
    "engine_id, step, seq, timestamp_ns, epoch, layer, num_tokens, num_token_slots, "
    "overflowed, rerouted, dropped, drop_rate, max_over_mean, router_entropy, gate_mass, "
    "quality_error, router_us, dispatch_us, expert_us, combine_us, all_to_all_us, layer_us, "
    "step_us, timing_on_device";

StepRow ReadStepRow(const Statement& stmt, int first) {
  int c = first;
  StepRow row;
  row.engine_id = stmt.ColumnText(c++);
  row.step = stmt.ColumnU64(c++);
  row.seq = stmt.ColumnU64(c++);
  row.timestamp_ns = stmt.ColumnInt(c++);
  row.epoch = stmt.ColumnU64(c++);
  row.layer = static_cast<uint32_t>(stmt.ColumnInt(c++));
  row.num_tokens = static_cast<uint32_t>(stmt.ColumnInt(c++));
  row.num_token_slots = stmt.ColumnU64(c++);
  row.overflowed = static_cast<uint32_t>(stmt.ColumnInt(c++));
  row.rerouted = static_cast<uint32_t>(stmt.ColumnInt(c++));
  row.dropped = static_cast<uint32_t>(stmt.ColumnInt(c++));
  row.drop_rate = RealOrNaN(stmt, c++);
  row.max_over_mean = RealOrNaN(stmt, c++);
  row.router_entropy = RealOrNaN(stmt, c++);
  row.gate_mass = RealOrNaN(stmt, c++);
  row.quality_error = stmt.ColumnOptionalReal(c++);
  row.router_us = RealOrNaN(stmt, c++);
  row.dispatch_us = RealOrNaN(stmt, c++);
  row.expert_us = RealOrNaN(stmt, c++);
  row.combine_us = RealOrNaN(stmt, c++);
  row.all_to_all_us = RealOrNaN(stmt, c++);
  row.layer_us = RealOrNaN(stmt, c++);
  row.step_us = RealOrNaN(stmt, c++);
  row.timing_on_device = stmt.ColumnInt(c++) != 0;
  row.num_steps = 1;
  row.rollup = false;
  return row;
}

RollupAgg RollupAgg::FromStep(const StepRow& row, std::vector<uint64_t> expert_tokens) {
  RollupAgg agg;
  agg.num_steps = 1;
  agg.first_ns = row.timestamp_ns;
  agg.last_ns = row.timestamp_ns;
  agg.last_step = row.step;
  agg.last_seq = row.seq;
  agg.last_epoch = row.epoch;
  agg.sum_tokens = row.num_tokens;
  agg.sum_token_slots = row.num_token_slots;
  agg.sum_overflowed = row.overflowed;
  agg.sum_rerouted = row.rerouted;
  agg.sum_dropped = row.dropped;
  agg.sum_max_over_mean = row.max_over_mean;
  agg.sum_router_entropy = row.router_entropy;
  agg.sum_gate_mass = row.gate_mass;
  if (row.quality_error) {
    agg.sum_quality_error = *row.quality_error;
    agg.num_quality = 1;
  }
  agg.sum_router_us = row.router_us;
  agg.sum_dispatch_us = row.dispatch_us;
  agg.sum_expert_us = row.expert_us;
  agg.sum_combine_us = row.combine_us;
  agg.sum_all_to_all_us = row.all_to_all_us;
  agg.sum_layer_us = row.layer_us;
  agg.sum_step_us = row.step_us;
  agg.any_on_device = row.timing_on_device;
  agg.expert_tokens = std::move(expert_tokens);
  return agg;
}

void RollupAgg::Merge(const RollupAgg& other) {
  if (other.num_steps == 0) return;
  if (num_steps == 0) {
    *this = other;
    return;
  }
  first_ns = std::min(first_ns, other.first_ns);
  if (other.last_ns > last_ns || (other.last_ns == last_ns && other.last_step > last_step)) {
    last_ns = other.last_ns;
    last_step = other.last_step;
    last_seq = other.last_seq;
    last_epoch = other.last_epoch;
  }
  num_steps += other.num_steps;
  sum_tokens += other.sum_tokens;
  sum_token_slots += other.sum_token_slots;
  sum_overflowed += other.sum_overflowed;
  sum_rerouted += other.sum_rerouted;
  sum_dropped += other.sum_dropped;
  sum_max_over_mean += other.sum_max_over_mean;
  sum_router_entropy += other.sum_router_entropy;
  sum_gate_mass += other.sum_gate_mass;
  sum_quality_error += other.sum_quality_error;
  num_quality += other.num_quality;
  sum_router_us += other.sum_router_us;
  sum_dispatch_us += other.sum_dispatch_us;
  sum_expert_us += other.sum_expert_us;
  sum_combine_us += other.sum_combine_us;
  sum_all_to_all_us += other.sum_all_to_all_us;
  sum_layer_us += other.sum_layer_us;
  sum_step_us += other.sum_step_us;
  any_on_device = any_on_device || other.any_on_device;
  if (expert_tokens.size() < other.expert_tokens.size()) {
    expert_tokens.resize(other.expert_tokens.size(), 0);
  }
  for (size_t i = 0; i < other.expert_tokens.size(); ++i) {
    expert_tokens[i] += other.expert_tokens[i];
  }
}

const char* const kRollupColumns =
    "num_steps, first_ns, last_ns, last_step, last_seq, last_epoch, sum_tokens, "
    "sum_token_slots, sum_overflowed, sum_rerouted, sum_dropped, sum_max_over_mean, "
    "sum_router_entropy, sum_gate_mass, sum_quality_error, num_quality, sum_router_us, "
    "sum_dispatch_us, sum_expert_us, sum_combine_us, sum_all_to_all_us, sum_layer_us, "
    "sum_step_us, any_on_device, expert_tokens";

Result<RollupAgg> ReadRollup(const Statement& stmt, int first) {
  int c = first;
  RollupAgg agg;
  agg.num_steps = stmt.ColumnU64(c++);
  agg.first_ns = stmt.ColumnInt(c++);
  agg.last_ns = stmt.ColumnInt(c++);
  agg.last_step = stmt.ColumnU64(c++);
  agg.last_seq = stmt.ColumnU64(c++);
  agg.last_epoch = stmt.ColumnU64(c++);
  agg.sum_tokens = stmt.ColumnU64(c++);
  agg.sum_token_slots = stmt.ColumnU64(c++);
  agg.sum_overflowed = stmt.ColumnU64(c++);
  agg.sum_rerouted = stmt.ColumnU64(c++);
  agg.sum_dropped = stmt.ColumnU64(c++);
  agg.sum_max_over_mean = RealOrNaN(stmt, c++);
  agg.sum_router_entropy = RealOrNaN(stmt, c++);
  agg.sum_gate_mass = RealOrNaN(stmt, c++);
  agg.sum_quality_error = RealOrNaN(stmt, c++);
  agg.num_quality = stmt.ColumnU64(c++);
  agg.sum_router_us = RealOrNaN(stmt, c++);
  agg.sum_dispatch_us = RealOrNaN(stmt, c++);
  agg.sum_expert_us = RealOrNaN(stmt, c++);
  agg.sum_combine_us = RealOrNaN(stmt, c++);
  agg.sum_all_to_all_us = RealOrNaN(stmt, c++);
  agg.sum_layer_us = RealOrNaN(stmt, c++);
  agg.sum_step_us = RealOrNaN(stmt, c++);
  agg.any_on_device = stmt.ColumnInt(c++) != 0;
  MOE_RETURN_IF_ERROR(AddBlob(stmt.ColumnBlob(c++), 8, &agg.expert_tokens));
  return agg;
}

void BindRollup(Statement& stmt, int first, const RollupAgg& agg) {
  int c = first;
  stmt.BindU64(c++, agg.num_steps);
  stmt.BindInt(c++, agg.first_ns);
  stmt.BindInt(c++, agg.last_ns);
  stmt.BindU64(c++, agg.last_step);
  stmt.BindU64(c++, agg.last_seq);
  stmt.BindU64(c++, agg.last_epoch);
  stmt.BindU64(c++, agg.sum_tokens);
  stmt.BindU64(c++, agg.sum_token_slots);
  stmt.BindU64(c++, agg.sum_overflowed);
  stmt.BindU64(c++, agg.sum_rerouted);
  stmt.BindU64(c++, agg.sum_dropped);
  stmt.BindReal(c++, agg.sum_max_over_mean);
  stmt.BindReal(c++, agg.sum_router_entropy);
  stmt.BindReal(c++, agg.sum_gate_mass);
  stmt.BindReal(c++, agg.sum_quality_error);
  stmt.BindU64(c++, agg.num_quality);
  stmt.BindReal(c++, agg.sum_router_us);
  stmt.BindReal(c++, agg.sum_dispatch_us);
  stmt.BindReal(c++, agg.sum_expert_us);
  stmt.BindReal(c++, agg.sum_combine_us);
  stmt.BindReal(c++, agg.sum_all_to_all_us);
  stmt.BindReal(c++, agg.sum_layer_us);
  stmt.BindReal(c++, agg.sum_step_us);
  stmt.BindInt(c++, agg.any_on_device ? 1 : 0);
  std::string blob = EncodeU64(agg.expert_tokens);
  stmt.BindBlob(c++, blob.data(), blob.size());
}

StepRow RollupToStepRow(const std::string& engine_id, uint32_t layer, int64_t bucket_ns,
                        const RollupAgg& agg) {
  StepRow row;
  double n = agg.num_steps > 0 ? static_cast<double>(agg.num_steps) : 1.0;
  row.engine_id = engine_id;
  row.step = agg.last_step;
  row.seq = agg.last_seq;
  row.timestamp_ns = bucket_ns;
  row.epoch = agg.last_epoch;
  row.layer = layer;
  row.num_tokens = Saturate32(agg.sum_tokens);
  row.num_token_slots = agg.sum_token_slots;
  row.overflowed = Saturate32(agg.sum_overflowed);
  row.rerouted = Saturate32(agg.sum_rerouted);
  row.dropped = Saturate32(agg.sum_dropped);
  row.drop_rate = agg.sum_token_slots > 0 ? static_cast<double>(agg.sum_dropped) /
                                                static_cast<double>(agg.sum_token_slots)
                                          : 0.0;
  row.max_over_mean = agg.sum_max_over_mean / n;
  row.router_entropy = agg.sum_router_entropy / n;
  row.gate_mass = agg.sum_gate_mass / n;
  if (agg.num_quality > 0) {
    row.quality_error = agg.sum_quality_error / static_cast<double>(agg.num_quality);
  }
  row.router_us = agg.sum_router_us / n;
  row.dispatch_us = agg.sum_dispatch_us / n;
  row.expert_us = agg.sum_expert_us / n;
  row.combine_us = agg.sum_combine_us / n;
  row.all_to_all_us = agg.sum_all_to_all_us / n;
  row.layer_us = agg.sum_layer_us / n;
  row.step_us = agg.sum_step_us / n;
  row.timing_on_device = agg.any_on_device;
  row.num_steps = Saturate32(agg.num_steps);
  row.rollup = true;
  return row;
}

}  // namespace moe::storage::internal

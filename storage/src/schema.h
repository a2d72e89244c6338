// Private: the database schema (numbered migrations), and the column layouts
// of step_layers and rollups shared by the Store and the Reader.

#ifndef MOE_STORAGE_SRC_SCHEMA_H_
#define MOE_STORAGE_SRC_SCHEMA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/storage/rows.h"
#include "sqlite_util.h"

namespace moe::storage::internal {

// The highest migration this binary knows.
inline constexpr int kLatestSchemaVersion = 9;

inline constexpr int64_t kNanosPerMinute = 60'000'000'000;

// Start of the minute holding `ns` (floor, also for negative times).
int64_t FloorToMinute(int64_t ns);

// The schema version of an open file: 0 for a file with no tables (new).
// kFailedPrecondition when the file has tables but no schema_migrations (not a
// moectl database); kCorruption when it is not an SQLite file. `path` is for
// messages only.
Result<int> ReadSchemaVersion(sqlite3* db, const std::string& path);

// Applies every missing migration, each in its own transaction, recording it
// in schema_migrations with `now_ns`. kFailedPrecondition when the file's
// schema is newer than kLatestSchemaVersion.
Status Migrate(sqlite3* db, const std::string& path, int64_t now_ns);

// A REAL column, NaN where it is NULL (SQLite stores NaN as NULL).
double RealOrNaN(const Statement& stmt, int index);

// Columns of steps (migration 5) in the order ReadPackedStep expects, without
// the BLOBs `layers` and `loads` (step_blob.h), which queries name after them
// as they need them (a column selected is read).
extern const char* const kPackedStepColumns;
inline constexpr int kNumPackedStepColumns = 7;
// The step fields of a StepRow (no layer fields) from the current row of
// `stmt`, whose columns start at `first` with kPackedStepColumns.
StepRow ReadPackedStep(const Statement& stmt, int first);

// Columns of step_layers in the order ReadStepRow expects (without id).
extern const char* const kStepColumns;
// A StepRow from the current row of `stmt`, whose columns start at `first`
// with kStepColumns.
StepRow ReadStepRow(const Statement& stmt, int first);

// Sums over the raw rows of one engine, layer and minute (a rollup row).
struct RollupAgg {
  uint64_t num_steps = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  uint64_t last_step = 0;
  uint64_t last_seq = 0;
  uint64_t last_epoch = 0;
  uint64_t sum_tokens = 0;
  uint64_t sum_token_slots = 0;
  uint64_t sum_overflowed = 0;
  uint64_t sum_rerouted = 0;
  uint64_t sum_dropped = 0;
  double sum_max_over_mean = 0;
  double sum_router_entropy = 0;
  double sum_gate_mass = 0;
  double sum_quality_error = 0;
  uint64_t num_quality = 0;
  double sum_router_us = 0;
  double sum_dispatch_us = 0;
  double sum_expert_us = 0;
  double sum_combine_us = 0;
  double sum_all_to_all_us = 0;
  double sum_layer_us = 0;
  double sum_step_us = 0;
  bool any_on_device = false;
  std::vector<uint64_t> expert_tokens;  // per expert

  // The aggregate of one raw row.
  static RollupAgg FromStep(const StepRow& row, std::vector<uint64_t> expert_tokens);
  void Merge(const RollupAgg& other);
};

// Columns of rollups after (engine_id, layer, bucket_ns), in the order
// ReadRollup and BindRollup use.
extern const char* const kRollupColumns;
inline constexpr int kNumRollupColumns = 25;
Result<RollupAgg> ReadRollup(const Statement& stmt, int first);
void BindRollup(Statement& stmt, int first, const RollupAgg& agg);
// The rollup as a StepRow (rollup == true); see rows.h for the meaning.
StepRow RollupToStepRow(const std::string& engine_id, uint32_t layer, int64_t bucket_ns,
                        const RollupAgg& agg);

}  // namespace moe::storage::internal

#endif  // MOE_STORAGE_SRC_SCHEMA_H_

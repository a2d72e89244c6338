// Helpers shared by the storage tests: telemetry builders, the StepRow a
// record should read back as, and a raw SQLite connection for tampering.

#ifndef MOE_TESTS_STORAGE_STORAGE_TEST_UTIL_H_
#define MOE_TESTS_STORAGE_STORAGE_TEST_UTIL_H_

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "moe/storage/reader.h"
#include "moe/storage/rows.h"
#include "moe/storage/store.h"
#include "moe/telemetry/types.h"

namespace moe::storage::testing {

// The schema version of a database this build creates (the last migration).
inline constexpr int kSchemaVersion = 9;

// A step of `num_layers` layers with `num_experts` experts each; every figure
// depends on (step, layer) so rows are told apart.
telemetry::StepRecord MakeStep(const std::string& engine_id, uint64_t step, int64_t timestamp_ns,
                               uint32_t num_layers, uint32_t num_experts);

// The StepRow that layer `index` of `record` must read back as.
StepRow ExpectedRow(const telemetry::StepRecord& record, size_t index);

telemetry::Hello MakeHello(const std::string& engine_id, int64_t timestamp_ns);

// Open a Store / Reader, failing the current test (with the status) if they
// cannot be opened.
std::unique_ptr<Store> OpenStore(const StoreOptions& options, Clock* clock);
std::unique_ptr<Reader> OpenReader(const std::string& path);

DecisionRow MakeDecision(const std::string& engine_id, int64_t created_ns,
                         const std::string& policy);

// Options for a test store in `path`: short intervals so tests run fast.
StoreOptions TestOptions(const std::string& path);

// Polls `done` every few milliseconds until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& done,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A plain read-write connection, as another process would open.
class RawDb {
 public:
  explicit RawDb(const std::string& path);
  ~RawDb();
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // sqlite3_exec's result code; the error text goes to `error` when given.
  int Exec(const std::string& sql, std::string* error = nullptr);
  // The first column of the first row, as text ("" when no row).
  std::string QueryText(const std::string& sql);
  int64_t QueryInt(const std::string& sql);

 private:
  sqlite3* db_ = nullptr;
};

// Inserts a decision row with `id` behind the Store's back (another writer),
// so the Store's own write of that id is one SQLite rejects for good.
void TakeDecisionId(const std::string& path, int64_t id);

// Turns a database of the latest schema back into one written before
// migration 6 (operator levers): its table and columns dropped, its
// schema_migrations row deleted.
void UndoMigration6(RawDb& raw);
// Takes migration 9 (learning_samples.setting) back out.
void UndoMigration9(RawDb& raw);

// The whole file's bytes ("" if missing).
std::string ReadFileBytes(const std::string& path);

}  // namespace moe::storage::testing

#endif  // MOE_TESTS_STORAGE_STORAGE_TEST_UTIL_H_

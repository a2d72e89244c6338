// Reader: read-only queries over the controller database, for the CLI.
//
// Opens the file with SQLITE_OPEN_READONLY, so it can run beside a live daemon
// (WAL lets readers proceed while the writer commits) and can never change the
// data. Time windows are half-open [since_ns, until_ns).
//
// Thread safety: one Reader per thread.

#ifndef MOE_STORAGE_READER_H_
#define MOE_STORAGE_READER_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/storage/rows.h"

namespace moe::storage {

struct TimeWindow {
  int64_t since_ns = std::numeric_limits<int64_t>::min();
  int64_t until_ns = std::numeric_limits<int64_t>::max();
};

struct HistoryQuery {
  std::string engine_id;          // empty: every engine
  std::optional<uint32_t> layer;  // absent: every layer
  TimeWindow window;
  size_t limit = 1000;          // most recent rows first are kept, returned in time order
  bool include_rollups = true;  // also return per-minute rollups of pruned raw rows
};

struct DecisionQuery {
  std::string engine_id;  // empty: every engine
  TimeWindow window;
  std::string status;  // empty: any
  size_t limit = 200;  // newest kept, returned oldest first
};

struct ExpertQuery {
  std::string engine_id;          // required when several engines exist
  std::optional<uint32_t> layer;  // absent: every layer
  TimeWindow window;
  size_t top = 10;  // per layer
};

class Reader {
 public:
  // kNotFound if the file does not exist; kFailedPrecondition if it is not a
  // moectl database or its schema is newer than this binary knows.
  static Result<std::unique_ptr<Reader>> Open(const std::string& path);
  virtual ~Reader() = default;

  virtual Result<std::vector<EngineRow>> Engines() = 0;
  virtual Result<std::vector<StepRow>> History(const HistoryQuery& query) = 0;
  virtual Result<std::vector<DecisionRow>> Decisions(const DecisionQuery& query) = 0;
  virtual Result<DecisionRow> Decision(int64_t id) = 0;  // kNotFound if absent
  virtual Result<std::vector<ExpertLoadRow>> HotExperts(const ExpertQuery& query) = 0;
  // Highest migration number applied to the file.
  virtual Result<int> SchemaVersion() = 0;
};

}  // namespace moe::storage

#endif  // MOE_STORAGE_READER_H_

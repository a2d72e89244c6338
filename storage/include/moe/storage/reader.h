// Reader: read-only queries over the controller database, for the CLI.
//
// Opens the file with SQLITE_OPEN_READONLY, so it can run beside a live daemon
// (WAL lets readers proceed while the writer commits) and can never change the
// data. Time windows are half-open [since_ns, until_ns); a per-minute rollup
// is in a window when the start of its minute is.
//
// Thread safety: one Reader per thread.

#ifndef MOE_STORAGE_READER_H_
#define MOE_STORAGE_READER_H_

#include <cstdint>
#include <limits>
#include <map>
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
  size_t limit = 1000;          // the most recent rows are kept, returned in time order; 0: all
  bool include_rollups = true;  // also return per-minute rollups of pruned raw rows
};

struct DecisionQuery {
  std::string engine_id;  // empty: every engine
  TimeWindow window;
  std::string status;  // empty: any
  size_t limit = 200;  // newest kept, returned oldest first; 0: all
};

struct ExpertQuery {
  std::string engine_id;          // required when several engines exist
  std::optional<uint32_t> layer;  // absent: every layer
  TimeWindow window;              // raw loads and rollups both count
  size_t top = 10;                // per layer; 0: every expert
};

class Reader {
 public:
  // kNotFound if the file does not exist; kCorruption if it is not an SQLite
  // file; kFailedPrecondition if it is not a moectl database or its schema is
  // older or newer than this binary knows (the daemon migrates on open).
  static Result<std::unique_ptr<Reader>> Open(const std::string& path);
  virtual ~Reader() = default;

  // Every engine, by engine_id.
  virtual Result<std::vector<EngineRow>> Engines() = 0;
  // Steps (and rollups) in time order, then engine_id, layer.
  virtual Result<std::vector<StepRow>> History(const HistoryQuery& query) = 0;
  // Decisions by created_ns, then id.
  virtual Result<std::vector<DecisionRow>> Decisions(const DecisionQuery& query) = 0;
  virtual Result<DecisionRow> Decision(int64_t id) = 0;  // kNotFound if absent
  // Per layer (ascending), the `top` experts with the most routed token-slots
  // in the window, most loaded first (ties: lower expert id first). Empty
  // engine_id with several engines: kInvalidArgument naming them.
  virtual Result<std::vector<ExpertLoadRow>> HotExperts(const ExpertQuery& query) = 0;
  // Settings epochs of one engine (every engine if empty) whose created_ns is
  // in the window, oldest first.
  virtual Result<std::vector<EpochRow>> Epochs(const std::string& engine_id,
                                               const TimeWindow& window) = 0;
  // What the learning policy learnt, per epoch, of one engine (every engine
  // if empty) and one knob (every knob if empty), by engine_id, oldest first.
  virtual Result<std::vector<LearningSampleRow>> LearningSamples(const std::string& engine_id,
                                                                 const std::string& knob) = 0;
  // Every raw step's served load per expert of one engine, by step then
  // layer (steps pruned by retention are absent).
  virtual Result<std::vector<StepLoadRow>> StepLoads(const std::string& engine_id) = 0;
  // Operator levers of one engine (every engine if empty), the newest
  // `limit` (0: all) returned oldest first.
  virtual Result<std::vector<OperatorActionRow>> OperatorActions(const std::string& engine_id,
                                                                 size_t limit) = 0;
  // Per engine, the highest epoch the database holds (commands recorded,
  // epochs in force, steps seen): a restarted controller issues above it.
  virtual Result<std::map<std::string, uint64_t>> HighestEpochs() = 0;
  // Highest migration number applied to the file.
  virtual Result<int> SchemaVersion() = 0;
};

}  // namespace moe::storage

#endif  // MOE_STORAGE_READER_H_

#include "moe/storage/reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <tuple>
#include <utility>
#include <variant>

#include "schema.h"
#include "setting_text.h"
#include "sqlite_util.h"
#include "step_blob.h"

namespace moe::storage {
namespace {

using internal::Statement;

constexpr int kReaderBusyTimeoutMs = 5000;

constexpr const char* kDecisionColumns =
    "id, engine_id, created_ns, policy, layer, knob, inputs_json, proposal_json, verdict, "
    "verdict_reason, command_json, status, epoch, sent_ns, acked_ns, applied_at_step, ack_error, "
    "outcome_json, reward_before, reward_after, measured_ns, predicted_gain, prediction_json, "
    "repeats, last_repeat_ns";

DecisionRow ReadDecision(const Statement& stmt) {
  int c = 0;
  DecisionRow row;
  row.id = stmt.ColumnInt(c++);
  row.engine_id = stmt.ColumnText(c++);
  row.created_ns = stmt.ColumnInt(c++);
  row.policy = stmt.ColumnText(c++);
  row.layer = static_cast<int32_t>(stmt.ColumnInt(c++));
  row.knob = stmt.ColumnText(c++);
  row.inputs_json = stmt.ColumnText(c++);
  row.proposal_json = stmt.ColumnText(c++);
  row.verdict = stmt.ColumnText(c++);
  row.verdict_reason = stmt.ColumnText(c++);
  row.command_json = stmt.ColumnText(c++);
  row.status = stmt.ColumnText(c++);
  row.epoch = stmt.ColumnOptionalInt<uint64_t>(c++);
  row.sent_ns = stmt.ColumnOptionalInt<int64_t>(c++);
  row.acked_ns = stmt.ColumnOptionalInt<int64_t>(c++);
  row.applied_at_step = stmt.ColumnOptionalInt<uint64_t>(c++);
  row.ack_error = stmt.ColumnText(c++);
  row.outcome_json = stmt.ColumnText(c++);
  row.reward_before = stmt.ColumnOptionalReal(c++);
  row.reward_after = stmt.ColumnOptionalReal(c++);
  row.measured_ns = stmt.ColumnOptionalInt<int64_t>(c++);
  row.predicted_gain = stmt.ColumnOptionalReal(c++);
  row.prediction_json = stmt.ColumnText(c++);
  row.repeats = stmt.ColumnU64(c++);
  row.last_repeat_ns = stmt.ColumnOptionalInt<int64_t>(c++);
  return row;
}

// A WHERE clause built from optional conditions, with its parameters in order
// (anonymous `?` placeholders).
class Where {
 public:
  Where& Add(std::string clause, std::variant<int64_t, std::string> param) {
    clauses_.push_back(std::move(clause));
    params_.push_back(std::move(param));
    return *this;
  }
  Where& AddWindow(const char* column, const TimeWindow& window) {
    Add(fmt::format("{} >= ?", column), window.since_ns);
    return Add(fmt::format("{} < ?", column), window.until_ns);
  }
  std::string Sql() const {
    std::string sql;
    for (const std::string& clause : clauses_) {
      sql += sql.empty() ? " WHERE " : " AND ";
      sql += clause;
    }
    return sql;
  }
  // Binds the parameters from 1 on; returns the next free index.
  int Bind(Statement& stmt) const {
    int index = 1;
    for (const auto& param : params_) {
      if (const auto* i = std::get_if<int64_t>(&param)) {
        stmt.BindInt(index++, *i);
      } else {
        stmt.BindText(index++, std::get<std::string>(param));
      }
    }
    return index;
  }

 private:
  std::vector<std::string> clauses_;
  std::vector<std::variant<int64_t, std::string>> params_;
};

// SQLite's LIMIT: a negative value means no limit.
int64_t SqlLimit(size_t limit) {
  if (limit == 0 || limit > static_cast<size_t>(std::numeric_limits<int64_t>::max())) return -1;
  return static_cast<int64_t>(limit);
}

class ReaderImpl final : public Reader {
 public:
  ReaderImpl(std::string path, internal::DbHandle db)
      : path_(std::move(path)), db_(std::move(db)) {}

  Result<std::vector<EngineRow>> Engines() override;
  Result<std::vector<StepRow>> History(const HistoryQuery& query) override {
    return InSnapshot([&] { return HistoryInSnapshot(query); });
  }
  Result<std::vector<DecisionRow>> Decisions(const DecisionQuery& query) override;
  Result<DecisionRow> Decision(int64_t id) override;
  Result<std::vector<ExpertLoadRow>> HotExperts(const ExpertQuery& query) override {
    return InSnapshot([&] { return HotExpertsInSnapshot(query); });
  }
  Result<std::vector<EpochRow>> Epochs(const std::string& engine_id,
                                       const TimeWindow& window) override;
  Result<std::vector<LearningSampleRow>> LearningSamples(const std::string& engine_id,
                                                         const std::string& knob) override;
  Result<std::vector<StepLoadRow>> StepLoads(const std::string& engine_id) override;
  Result<std::vector<OperatorActionRow>> OperatorActions(const std::string& engine_id,
                                                         size_t limit) override;
  Result<std::map<std::string, uint64_t>> HighestEpochs() override;
  Result<int> SchemaVersion() override { return internal::ReadSchemaVersion(db_.get(), path_); }

 private:
  // Queries that read several tables run in one read transaction, so a
  // retention pass committing in between cannot make a row count twice or
  // not at all.
  template <typename F>
  auto InSnapshot(F body) -> decltype(body()) {
    MOE_RETURN_IF_ERROR(internal::Exec(db_.get(), "BEGIN", "starting a read transaction"));
    auto result = body();
    // Ending a read transaction cannot lose anything; report its error only
    // if the query itself succeeded.
    Status end = internal::Exec(db_.get(), "COMMIT", "ending a read transaction");
    if (result.ok() && !end.ok()) return end;
    return result;
  }
  Result<std::vector<StepRow>> HistoryInSnapshot(const HistoryQuery& query);
  Result<std::vector<ExpertLoadRow>> HotExpertsInSnapshot(const ExpertQuery& query);

  Result<Statement> Prepare(const std::string& sql) {
    auto stmt = Statement::Prepare(db_.get(), sql);
    if (!stmt.ok()) return stmt.status().WithContext(fmt::format("querying {}", path_));
    return stmt;
  }

  std::string path_;
  internal::DbHandle db_;
};

Result<std::vector<EngineRow>> ReaderImpl::Engines() {
  MOE_ASSIGN_OR_RETURN(
      Statement stmt,
      Prepare("SELECT engine_id, backend, num_layers, num_experts, num_shared_experts, "
              "num_replicas, num_devices, hidden, first_seen_ns, last_seen_ns, last_step, "
              "last_epoch, gone_ns FROM engines ORDER BY engine_id"));
  std::vector<EngineRow> rows;
  while (true) {
    MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    EngineRow e;
    e.engine_id = stmt.ColumnText(0);
    e.backend = stmt.ColumnText(1);
    e.num_layers = static_cast<uint32_t>(stmt.ColumnInt(2));
    e.num_experts = static_cast<uint32_t>(stmt.ColumnInt(3));
    e.num_shared_experts = static_cast<uint32_t>(stmt.ColumnInt(4));
    e.num_replicas = static_cast<uint32_t>(stmt.ColumnInt(5));
    e.num_devices = static_cast<uint32_t>(stmt.ColumnInt(6));
    e.hidden = static_cast<uint32_t>(stmt.ColumnInt(7));
    e.first_seen_ns = stmt.ColumnInt(8);
    e.last_seen_ns = stmt.ColumnInt(9);
    e.last_step = stmt.ColumnU64(10);
    e.last_epoch = stmt.ColumnU64(11);
    e.gone_ns = stmt.ColumnOptionalInt<int64_t>(12);
    rows.push_back(std::move(e));
  }
  return rows;
}

Result<std::vector<StepRow>> ReaderImpl::HistoryInSnapshot(const HistoryQuery& query) {
  auto filters = [&](const char* time_column) {
    Where where;
    if (!query.engine_id.empty()) where.Add("engine_id = ?", query.engine_id);
    if (query.layer) where.Add("layer = ?", static_cast<int64_t>(*query.layer));
    where.AddWindow(time_column, query.window);
    return where;
  };
  std::vector<StepRow> rows;
  {
    // Steps written since migration 5, one row each, newest first, until
    // `limit` layer rows are in hand (and the rest of that instant's steps of
    // that engine, which the final order may still rank higher).
    Where where;
    if (!query.engine_id.empty()) where.Add("engine_id = ?", query.engine_id);
    where.AddWindow("timestamp_ns", query.window);
    MOE_ASSIGN_OR_RETURN(
        Statement stmt,
        Prepare(fmt::format("SELECT {}, layers FROM steps{} ORDER BY timestamp_ns DESC, "
                            "engine_id DESC, step DESC, id DESC",
                            internal::kPackedStepColumns, where.Sql())));
    where.Bind(stmt);
    size_t num_rows = 0;
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      const StepRow step = internal::ReadPackedStep(stmt, 0);
      if (query.limit > 0 && num_rows >= query.limit &&
          (step.timestamp_ns != rows.back().timestamp_ns ||
           step.engine_id != rows.back().engine_id)) {
        break;
      }
      MOE_RETURN_IF_ERROR(internal::UnpackLayers(stmt.ColumnBlob(internal::kNumPackedStepColumns),
                                                 step, query.layer, [&](StepRow& layer) {
                                                   rows.push_back(layer);
                                                   ++num_rows;
                                                 }));
    }
  }
  {
    // Steps written before migration 5.
    Where where = filters("timestamp_ns");
    MOE_ASSIGN_OR_RETURN(
        Statement stmt,
        Prepare(fmt::format("SELECT {} FROM step_layers{} ORDER BY timestamp_ns DESC, engine_id "
                            "DESC, layer DESC, step DESC, id DESC LIMIT ?",
                            internal::kStepColumns, where.Sql())));
    stmt.BindInt(where.Bind(stmt), SqlLimit(query.limit));
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      rows.push_back(internal::ReadStepRow(stmt, 0));
    }
  }
  if (query.include_rollups) {
    Where where = filters("bucket_ns");
    MOE_ASSIGN_OR_RETURN(
        Statement stmt,
        Prepare(fmt::format("SELECT engine_id, layer, bucket_ns, {} FROM rollups{} ORDER BY "
                            "bucket_ns DESC, engine_id DESC, layer DESC LIMIT ?",
                            internal::kRollupColumns, where.Sql())));
    stmt.BindInt(where.Bind(stmt), SqlLimit(query.limit));
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      MOE_ASSIGN_OR_RETURN(internal::RollupAgg agg, internal::ReadRollup(stmt, 3));
      rows.push_back(internal::RollupToStepRow(
          stmt.ColumnText(0), static_cast<uint32_t>(stmt.ColumnInt(1)), stmt.ColumnInt(2), agg));
    }
  }
  // Time order; at one instant a rollup (start of its minute) comes first.
  auto key = [](const StepRow& r) {
    return std::tuple<int64_t, bool, const std::string&, uint32_t, uint64_t, uint64_t>(
        r.timestamp_ns, !r.rollup, r.engine_id, r.layer, r.step, r.seq);
  };
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const StepRow& a, const StepRow& b) { return key(a) < key(b); });
  if (query.limit > 0 && rows.size() > query.limit) {
    rows.erase(rows.begin(), rows.end() - static_cast<std::ptrdiff_t>(query.limit));
  }
  return rows;
}

Result<std::vector<StepLoadRow>> ReaderImpl::StepLoads(const std::string& engine_id) {
  return InSnapshot([&]() -> Result<std::vector<StepLoadRow>> {
    std::vector<StepLoadRow> rows;
    // Steps written before migration 5: one row per layer.
    MOE_ASSIGN_OR_RETURN(
        Statement old_rows,
        Prepare("SELECT step, epoch, layer, tokens FROM step_layers JOIN expert_loads ON "
                "step_layer_id = id WHERE engine_id = ?1 ORDER BY step, layer, id"));
    old_rows.BindText(1, engine_id);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, old_rows.Step());
      if (!row) break;
      StepLoadRow r;
      r.step = old_rows.ColumnU64(0);
      r.epoch = old_rows.ColumnU64(1);
      r.layer = static_cast<uint32_t>(old_rows.ColumnInt(2));
      MOE_RETURN_IF_ERROR(internal::AddBlob(old_rows.ColumnBlob(3), 4, &r.expert_tokens));
      rows.push_back(std::move(r));
    }
    // Since migration 5: one row per step, the loads packed.
    MOE_ASSIGN_OR_RETURN(Statement packed,
                         Prepare(fmt::format("SELECT {}, loads FROM steps WHERE engine_id = ?1 "
                                             "ORDER BY step, id",
                                             internal::kPackedStepColumns)));
    packed.BindText(1, engine_id);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, packed.Step());
      if (!row) break;
      const StepRow step = internal::ReadPackedStep(packed, 0);
      MOE_RETURN_IF_ERROR(internal::UnpackLoads(
          packed.ColumnBlob(internal::kNumPackedStepColumns), step, std::nullopt,
          [&](uint32_t layer, const std::vector<uint64_t>& tokens) {
            StepLoadRow r;
            r.step = step.step;
            r.epoch = step.epoch;
            r.layer = layer;
            r.expert_tokens = tokens;
            rows.push_back(std::move(r));
          }));
    }
    std::stable_sort(rows.begin(), rows.end(), [](const StepLoadRow& a, const StepLoadRow& b) {
      return a.step != b.step ? a.step < b.step : a.layer < b.layer;
    });
    return rows;
  });
}

Result<std::vector<DecisionRow>> ReaderImpl::Decisions(const DecisionQuery& query) {
  Where where;
  if (!query.engine_id.empty()) where.Add("engine_id = ?", query.engine_id);
  where.AddWindow("created_ns", query.window);
  if (!query.status.empty()) where.Add("status = ?", query.status);
  MOE_ASSIGN_OR_RETURN(Statement stmt,
                       Prepare(fmt::format("SELECT {} FROM decisions{} ORDER BY created_ns DESC, "
                                           "id DESC LIMIT ?",
                                           kDecisionColumns, where.Sql())));
  stmt.BindInt(where.Bind(stmt), SqlLimit(query.limit));
  std::vector<DecisionRow> rows;
  while (true) {
    MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    rows.push_back(ReadDecision(stmt));
  }
  std::reverse(rows.begin(), rows.end());
  return rows;
}

Result<DecisionRow> ReaderImpl::Decision(int64_t id) {
  MOE_ASSIGN_OR_RETURN(Statement stmt, Prepare(fmt::format("SELECT {} FROM decisions WHERE id = ?1",
                                                           kDecisionColumns)));
  MOE_ASSIGN_OR_RETURN(bool row, stmt.BindInt(1, id).Step());
  if (!row) return Status::NotFound(fmt::format("no decision with id {} in {}", id, path_));
  return ReadDecision(stmt);
}

Result<std::vector<ExpertLoadRow>> ReaderImpl::HotExpertsInSnapshot(const ExpertQuery& query) {
  std::string engine_id = query.engine_id;
  if (engine_id.empty()) {
    MOE_ASSIGN_OR_RETURN(std::vector<EngineRow> engines, Engines());
    if (engines.empty()) return std::vector<ExpertLoadRow>{};
    if (engines.size() > 1) {
      std::string names;
      for (const EngineRow& e : engines)
        names += (names.empty() ? "" : ", ") + e.engine_id;
      return Status::InvalidArgument(
          fmt::format("{} holds several engines ({}); name one", path_, names));
    }
    engine_id = engines[0].engine_id;
  }
  std::map<uint32_t, std::vector<uint64_t>> sums;
  auto accumulate = [&](const std::string& sql, const char* time_column, size_t width) -> Status {
    Where where;
    where.Add("engine_id = ?", engine_id);
    if (query.layer) where.Add("layer = ?", static_cast<int64_t>(*query.layer));
    where.AddWindow(time_column, query.window);
    MOE_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql + where.Sql()));
    where.Bind(stmt);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      uint32_t layer = static_cast<uint32_t>(stmt.ColumnInt(0));
      MOE_RETURN_IF_ERROR(internal::AddBlob(stmt.ColumnBlob(1), width, &sums[layer]));
    }
    return Status::Ok();
  };
  {
    Where where;
    where.Add("engine_id = ?", engine_id);
    where.AddWindow("timestamp_ns", query.window);
    MOE_ASSIGN_OR_RETURN(Statement stmt,
                         Prepare(fmt::format("SELECT {}, loads FROM steps{}",
                                             internal::kPackedStepColumns, where.Sql())));
    where.Bind(stmt);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      MOE_RETURN_IF_ERROR(internal::UnpackLoads(
          stmt.ColumnBlob(internal::kNumPackedStepColumns), internal::ReadPackedStep(stmt, 0),
          query.layer, [&](uint32_t layer, const std::vector<uint64_t>& tokens) {
            std::vector<uint64_t>& sum = sums[layer];
            if (sum.size() < tokens.size()) sum.resize(tokens.size(), 0);
            for (size_t i = 0; i < tokens.size(); ++i)
              sum[i] += tokens[i];
          }));
    }
  }
  // Steps written before migration 5.
  MOE_RETURN_IF_ERROR(
      accumulate("SELECT layer, tokens FROM step_layers JOIN expert_loads ON step_layer_id = id",
                 "timestamp_ns", 4));
  MOE_RETURN_IF_ERROR(accumulate("SELECT layer, expert_tokens FROM rollups", "bucket_ns", 8));

  std::vector<ExpertLoadRow> rows;
  for (const auto& [layer, tokens] : sums) {
    if (tokens.empty()) continue;
    uint64_t total = 0;
    for (uint64_t t : tokens)
      total += t;
    double mean = static_cast<double>(total) / static_cast<double>(tokens.size());
    std::vector<uint32_t> order(tokens.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = static_cast<uint32_t>(i);
    size_t top = query.top == 0 ? order.size() : std::min(query.top, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
                      [&counts = tokens](uint32_t a, uint32_t b) {
                        return counts[a] != counts[b] ? counts[a] > counts[b] : a < b;
                      });
    for (size_t i = 0; i < top; ++i) {
      ExpertLoadRow r;
      r.layer = layer;
      r.expert = order[i];
      r.tokens = tokens[order[i]];
      r.share = total > 0 ? static_cast<double>(r.tokens) / static_cast<double>(total) : 0.0;
      r.vs_mean = mean > 0 ? static_cast<double>(r.tokens) / mean : 0.0;
      rows.push_back(r);
    }
  }
  return rows;
}

Result<std::vector<OperatorActionRow>> ReaderImpl::OperatorActions(const std::string& engine_id,
                                                                   size_t limit) {
  Where where;
  if (!engine_id.empty()) where.Add("engine_id = ?", engine_id);
  MOE_ASSIGN_OR_RETURN(
      Statement stmt,
      Prepare(fmt::format("SELECT * FROM (SELECT id, created_ns, engine_id, action, knob, value, "
                          "until_ns, mode, uid, who, reason, result, decision_id FROM "
                          "operator_actions{} ORDER BY id DESC LIMIT ?) ORDER BY id",
                          where.Sql())));
  stmt.BindInt(where.Bind(stmt), SqlLimit(limit));
  std::vector<OperatorActionRow> rows;
  while (true) {
    MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    int c = 0;
    OperatorActionRow a;
    a.id = stmt.ColumnInt(c++);
    a.created_ns = stmt.ColumnInt(c++);
    a.engine_id = stmt.ColumnText(c++);
    a.action = stmt.ColumnText(c++);
    a.knob = stmt.ColumnText(c++);
    a.value = stmt.ColumnOptionalReal(c++);
    a.until_ns = stmt.ColumnOptionalInt<int64_t>(c++);
    a.mode = stmt.ColumnText(c++);
    a.uid = stmt.ColumnInt(c++);
    a.who = stmt.ColumnText(c++);
    a.reason = stmt.ColumnText(c++);
    a.result = stmt.ColumnText(c++);
    a.decision_id = stmt.ColumnOptionalInt<int64_t>(c++);
    rows.push_back(std::move(a));
  }
  return rows;
}

Result<std::map<std::string, uint64_t>> ReaderImpl::HighestEpochs() {
  return InSnapshot([&]() -> Result<std::map<std::string, uint64_t>> {
    MOE_ASSIGN_OR_RETURN(
        Statement stmt,
        Prepare("SELECT engine_id, MAX(e) FROM (SELECT engine_id, MAX(epoch) AS e FROM decisions "
                "WHERE epoch IS NOT NULL GROUP BY engine_id UNION ALL SELECT engine_id, "
                "MAX(epoch) FROM epochs GROUP BY engine_id UNION ALL SELECT engine_id, "
                "last_epoch FROM engines) GROUP BY engine_id"));
    std::map<std::string, uint64_t> highest;
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      highest[stmt.ColumnText(0)] = stmt.ColumnU64(1);
    }
    return highest;
  });
}

Result<std::vector<EpochRow>> ReaderImpl::Epochs(const std::string& engine_id,
                                                 const TimeWindow& window) {
  Where where;
  if (!engine_id.empty()) where.Add("engine_id = ?", engine_id);
  where.AddWindow("created_ns", window);
  MOE_ASSIGN_OR_RETURN(
      Statement stmt,
      Prepare(fmt::format("SELECT engine_id, epoch, created_ns, knobs_json, decision_id FROM "
                          "epochs{} ORDER BY created_ns, engine_id, epoch, id",
                          where.Sql())));
  where.Bind(stmt);
  std::vector<EpochRow> rows;
  while (true) {
    MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    EpochRow e;
    e.engine_id = stmt.ColumnText(0);
    e.epoch = stmt.ColumnU64(1);
    e.created_ns = stmt.ColumnInt(2);
    e.knobs_json = stmt.ColumnText(3);
    e.decision_id = stmt.ColumnInt(4);
    rows.push_back(std::move(e));
  }
  return rows;
}

Result<std::vector<LearningSampleRow>> ReaderImpl::LearningSamples(const std::string& engine_id,
                                                                   const std::string& knob) {
  Where where;
  if (!engine_id.empty()) where.Add("engine_id = ?", engine_id);
  if (!knob.empty()) where.Add("knob = ?", knob);
  MOE_ASSIGN_OR_RETURN(
      Statement stmt,
      Prepare(
          fmt::format("SELECT engine_id, epoch, created_ns, regime, knob, value, reward, steps, "
                      "setting "
                      "FROM learning_samples{} ORDER BY engine_id, id",
                      where.Sql())));
  where.Bind(stmt);
  std::vector<LearningSampleRow> rows;
  while (true) {
    MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    LearningSampleRow r;
    r.engine_id = stmt.ColumnText(0);
    r.epoch = stmt.ColumnU64(1);
    r.created_ns = stmt.ColumnInt(2);
    r.regime = stmt.ColumnText(3);
    r.knob = stmt.ColumnText(4);
    r.value = stmt.ColumnReal(5);
    r.reward = stmt.ColumnReal(6);
    r.steps = stmt.ColumnU64(7);
    MOE_ASSIGN_OR_RETURN(r.setting, internal::SettingOf(stmt.ColumnText(8), r.value));
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace

Result<std::unique_ptr<Reader>> Reader::Open(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return Status::NotFound(
        fmt::format("no database at {}; is moectld running? (pass --db to choose the file)", path));
  }
  if (std::filesystem::is_directory(status)) {
    return Status::InvalidArgument(
        fmt::format("{} is a directory; pass the database file with --db", path));
  }
  MOE_ASSIGN_OR_RETURN(internal::DbHandle db,
                       internal::OpenDatabase(path, SQLITE_OPEN_READONLY, kReaderBusyTimeoutMs));
  // Belt and braces: the connection is read-only already.
  MOE_RETURN_IF_ERROR(internal::Exec(db.get(), "PRAGMA query_only = 1", "setting query_only"));
  MOE_ASSIGN_OR_RETURN(int version, internal::ReadSchemaVersion(db.get(), path));
  if (version == 0) {
    return Status::FailedPrecondition(
        fmt::format("{} is not a moectl database (it has no tables); pass the moectld database "
                    "with --db",
                    path));
  }
  if (version > internal::kLatestSchemaVersion) {
    return Status::FailedPrecondition(
        fmt::format("{} has schema version {}, newer than this moectl knows ({}); upgrade moectl",
                    path, version, internal::kLatestSchemaVersion));
  }
  if (version < internal::kLatestSchemaVersion) {
    return Status::FailedPrecondition(
        fmt::format("{} has schema version {}, older than this moectl needs ({}); start the "
                    "matching moectld once, which migrates the file",
                    path, version, internal::kLatestSchemaVersion));
  }
  return std::unique_ptr<Reader>(std::make_unique<ReaderImpl>(path, std::move(db)));
}

}  // namespace moe::storage

// Retention: raw rows rolled up per minute, old rollups and decisions deleted.
// Runs on the writer thread (see store_impl.h).

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "schema.h"
#include "store_impl.h"

namespace moe::storage::internal {
namespace {

int64_t Nanos(std::chrono::seconds s) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(s).count();
}

}  // namespace

Status StoreImpl::RetentionStep(RetentionCounts* counts, bool* done) {
  // Stages in order: raw rows into rollups, old rollups, old decisions. Each
  // call does one transaction of the first stage with work left.
  *done = false;
  bool more = false;
  switch (retention_stage_) {
    case 0:
      if (options_.raw_retention.count() > 0) {
        int64_t horizon = FloorToMinute(retention_now_ns_ - Nanos(options_.raw_retention));
        MOE_RETURN_IF_ERROR(RetentionChunk(horizon, &counts->rolled, &more));
        if (more) return Status::Ok();
      }
      retention_stage_ = 1;
      return Status::Ok();
    case 1:
      if (options_.rollup_retention.count() > 0) {
        MOE_RETURN_IF_ERROR(DeleteChunk(stmts_->delete_old_rollups,
                                        retention_now_ns_ - Nanos(options_.rollup_retention),
                                        &counts->rollups_deleted, &more));
        if (more) return Status::Ok();
      }
      retention_stage_ = 2;
      return Status::Ok();
    default:
      if (options_.decision_retention.count() > 0) {
        MOE_RETURN_IF_ERROR(DeleteChunk(stmts_->delete_old_decisions,
                                        retention_now_ns_ - Nanos(options_.decision_retention),
                                        &counts->decisions_deleted, &more));
        if (more) return Status::Ok();
      }
      *done = true;
      return Status::Ok();
  }
}

Status StoreImpl::DeleteChunk(Statement& stmt, int64_t horizon_ns, uint64_t* num_deleted,
                              bool* more) {
  uint64_t deleted = 0;
  Status status = InTransaction([&]() -> Status {
    MOE_RETURN_IF_ERROR(stmt.Reset().BindInt(1, horizon_ns).Run());
    deleted = static_cast<uint64_t>(sqlite3_changes(db_.get()));
    return Status::Ok();
  });
  if (!status.ok()) return status;
  *num_deleted += deleted;
  *more = deleted >= kRetentionDeleteChunk;
  return Status::Ok();
}

// Rolls the raw rows of the oldest minute before `horizon_ns` into rollups and
// deletes them, in one transaction: a row is either raw or counted in a rollup.
Status StoreImpl::RetentionChunk(int64_t horizon_ns, uint64_t* num_rolled, bool* more) {
  Statements& s = *stmts_;
  uint64_t rolled = 0;
  Status status = InTransaction([&]() -> Status {
    // Every statement stepped to a row is reset on the way out, error or not:
    // one left stepped keeps a read transaction, and with it a WAL snapshot,
    // open on the writer's connection (the WAL then cannot be reset).
    int64_t bucket = 0;
    {
      ResetOnExit reset(s.min_raw_time);
      MOE_ASSIGN_OR_RETURN(bool row, s.min_raw_time.Reset().BindInt(1, horizon_ns).Step());
      if (!row || s.min_raw_time.ColumnIsNull(0)) {
        *more = false;
        return Status::Ok();
      }
      bucket = FloorToMinute(s.min_raw_time.ColumnInt(0));
    }
    int64_t chunk_end = std::min(horizon_ns, bucket + kNanosPerMinute);
    *more = chunk_end < horizon_ns;

    std::map<std::pair<std::string, uint32_t>, RollupAgg> aggs;
    ResetOnExit reset_raw(s.select_raw);
    s.select_raw.Reset().BindInt(1, chunk_end);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool has_row, s.select_raw.Step());
      if (!has_row) break;
      StepRow step = ReadStepRow(s.select_raw, 0);
      std::vector<uint64_t> tokens;
      MOE_RETURN_IF_ERROR(AddBlob(s.select_raw.ColumnBlob(24), 4, &tokens));
      aggs[{step.engine_id, step.layer}].Merge(RollupAgg::FromStep(step, std::move(tokens)));
      ++rolled;
    }
    s.select_raw.Reset();
    // Steps oldest first, until the transaction holds about batch_rows rows
    // (step x layer): a transaction of retention is no bigger than one of
    // writes, however many steps a minute holds, so the WAL stays bounded.
    std::vector<int64_t> step_ids;
    size_t num_rows = 0;
    ResetOnExit reset_raw_steps(s.select_raw_steps);
    s.select_raw_steps.Reset().BindInt(1, chunk_end);
    while (true) {
      if (num_rows >= options_.batch_rows) {
        *more = true;
        break;
      }
      MOE_ASSIGN_OR_RETURN(bool has_row, s.select_raw_steps.Step());
      if (!has_row) break;
      const StepRow step = ReadPackedStep(s.select_raw_steps, 0);
      const int first_blob = kNumPackedStepColumns;
      step_ids.push_back(s.select_raw_steps.ColumnInt(first_blob + 2));
      std::vector<StepRow> layers;
      MOE_RETURN_IF_ERROR(UnpackLayers(s.select_raw_steps.ColumnBlob(first_blob), step,
                                       std::nullopt,
                                       [&](StepRow& figures) { layers.push_back(figures); }));
      num_rows += std::max<size_t>(1, layers.size());
      // Both blobs hold the record's layers in the same order.
      size_t index = 0;
      Status paired;
      MOE_RETURN_IF_ERROR(UnpackLoads(
          s.select_raw_steps.ColumnBlob(first_blob + 1), step, std::nullopt,
          [&](uint32_t layer, const std::vector<uint64_t>& tokens) {
            if (index >= layers.size() || layers[index].layer != layer) {
              paired = Status::Corruption(
                  fmt::format("step {} of engine {}: loads of layer {} do not match its figures",
                              step.step, step.engine_id, layer));
              return;
            }
            const StepRow& figures = layers[index++];
            aggs[{figures.engine_id, figures.layer}].Merge(RollupAgg::FromStep(figures, tokens));
            ++rolled;
          }));
      MOE_RETURN_IF_ERROR(paired);
      for (; index < layers.size(); ++index) {  // a layer without loads
        aggs[{layers[index].engine_id, layers[index].layer}].Merge(
            RollupAgg::FromStep(layers[index], {}));
        ++rolled;
      }
    }
    s.select_raw_steps.Reset();

    ResetOnExit reset_rollup(s.select_rollup);
    for (auto& [key, agg] : aggs) {
      MOE_ASSIGN_OR_RETURN(bool existing, s.select_rollup.Reset()
                                              .BindText(1, key.first)
                                              .BindInt(2, key.second)
                                              .BindInt(3, bucket)
                                              .Step());
      if (existing) {
        MOE_ASSIGN_OR_RETURN(RollupAgg old, ReadRollup(s.select_rollup, 0));
        agg.Merge(old);
      }
      s.select_rollup.Reset();
      s.upsert_rollup.Reset().BindText(1, key.first).BindInt(2, key.second).BindInt(3, bucket);
      BindRollup(s.upsert_rollup, 4, agg);
      MOE_RETURN_IF_ERROR(s.upsert_rollup.Run());
    }
    MOE_RETURN_IF_ERROR(s.delete_raw_loads.Reset().BindInt(1, chunk_end).Run());
    MOE_RETURN_IF_ERROR(s.delete_raw_steps.Reset().BindInt(1, chunk_end).Run());
    for (int64_t id : step_ids)
      MOE_RETURN_IF_ERROR(s.delete_raw_packed_steps.Reset().BindInt(1, id).Run());
    return Status::Ok();
  });
  if (status.ok()) *num_rolled += rolled;
  return status;
}

}  // namespace moe::storage::internal

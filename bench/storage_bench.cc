// storage_bench: how fast the Store commits telemetry, and how fast a Reader
// answers the CLI's queries over it.
//
//   storage_bench [--steps N] [--layers L] [--experts E] [--batch-rows B] [--db PATH]
//
// Writes N StepRecords of L layers with E experts each through Store (the
// daemon's path: enqueue, batched transactions), flushes, then times History
// and HotExperts on a Reader. Without --db the file goes to a fresh temporary
// directory that is removed at the end.

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "moe/common/clock.h"
#include "moe/common/logging.h"
#include "moe/storage/reader.h"
#include "moe/storage/store.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

moe::telemetry::StepRecord MakeStep(uint64_t step, int64_t timestamp_ns, uint32_t num_layers,
                                    uint32_t num_experts) {
  moe::telemetry::StepRecord r;
  r.engine_id = "bench";
  r.seq = step;
  r.step = step;
  r.timestamp_ns = timestamp_ns;
  r.step_us = 1500;
  r.layers.resize(num_layers);
  for (uint32_t l = 0; l < num_layers; ++l) {
    auto& layer = r.layers[l];
    layer.layer = l;
    layer.num_tokens = 4096;
    layer.num_token_slots = 4096 * 8;
    layer.expert_tokens.resize(num_experts);
    for (uint32_t e = 0; e < num_experts; ++e) {
      layer.expert_tokens[e] = static_cast<uint32_t>((step * 31 + e * 17 + l) % 257);
    }
    layer.router_entropy = 3.2;
    layer.gate_mass = 0.8;
    layer.timing.total_us = 90;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Store write throughput and Reader query latency"};
  uint64_t num_steps = 20000;
  uint32_t num_layers = 8;
  uint32_t num_experts = 64;
  size_t batch_rows = 2000;
  std::string db_path;
  app.add_option("--steps", num_steps, "StepRecords to write")->check(CLI::PositiveNumber);
  app.add_option("--layers", num_layers, "layers per step")->check(CLI::PositiveNumber);
  app.add_option("--experts", num_experts, "experts per layer")->check(CLI::PositiveNumber);
  app.add_option("--batch-rows", batch_rows, "StoreOptions::batch_rows")
      ->check(CLI::PositiveNumber);
  app.add_option("--db", db_path, "database file (default: a temporary one)");
  CLI11_PARSE(app, argc, argv);
  if (moe::Status s = moe::InitLogging("storage_bench", "warn", false); !s.ok()) return 1;

  std::filesystem::path temp_dir;
  if (db_path.empty()) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "moectl-storage-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::fprintf(stderr, "storage_bench: cannot create a temporary directory\n");
      return 1;
    }
    temp_dir = pattern;
    db_path = (temp_dir / "bench.db").string();
  }

  moe::storage::StoreOptions options;
  options.path = db_path;
  options.batch_rows = batch_rows;
  options.max_queue = static_cast<size_t>(num_steps) * num_layers + 1;  // measure, never refuse
  auto store = moe::storage::Store::Open(options, moe::SystemClock());
  if (!store.ok()) {
    std::fprintf(stderr, "storage_bench: %s\n", store.status().ToString().c_str());
    return 1;
  }

  const int64_t t0 = moe::SystemClock()->NowNanos();
  auto start = SteadyClock::now();
  for (uint64_t s = 0; s < num_steps; ++s) {
    (*store)->AppendStep(
        MakeStep(s, t0 + static_cast<int64_t>(s) * 1'000'000, num_layers, num_experts));
  }
  double enqueue_s = SecondsSince(start);
  moe::Status flushed = (*store)->Flush(std::chrono::minutes(10));
  double write_s = SecondsSince(start);
  if (!flushed.ok()) {
    std::fprintf(stderr, "storage_bench: %s\n", flushed.ToString().c_str());
    return 1;
  }
  moe::storage::StoreStats stats = (*store)->stats();
  nlohmann::json result = {
      {"benchmark", "storage"},
      {"shape", {{"steps", num_steps}, {"layers", num_layers}, {"experts", num_experts}}},
      {"write",
       {{"seconds", write_s},
        {"steps_per_s", num_steps / write_s},
        {"step_layer_rows_per_s", num_steps * num_layers / write_s},
        {"enqueue_seconds", enqueue_s},
        {"enqueue_share", enqueue_s / write_s},
        {"transactions", stats.transactions},
        {"write_errors", stats.write_errors}}}};
  std::fprintf(stderr, "storage_bench: wrote %llu steps in %.3f s\n",
               static_cast<unsigned long long>(num_steps), write_s);

  auto reader = moe::storage::Reader::Open(db_path);
  if (!reader.ok()) {
    std::fprintf(stderr, "storage_bench: %s\n", reader.status().ToString().c_str());
    return 1;
  }
  moe::storage::HistoryQuery history;
  history.engine_id = "bench";
  history.layer = 0;
  history.limit = 1000;
  start = SteadyClock::now();
  auto rows = (*reader)->History(history);
  result["history_last_1000"] = {{"rows", rows.ok() ? rows->size() : 0},
                                 {"ms", SecondsSince(start) * 1e3}};
  moe::storage::ExpertQuery hot;
  hot.engine_id = "bench";
  start = SteadyClock::now();
  auto loads = (*reader)->HotExperts(hot);
  result["hot_experts_all"] = {{"rows", loads.ok() ? loads->size() : 0},
                               {"ms", SecondsSince(start) * 1e3}};
  reader->reset();

  moe::Status closed = (*store)->Close();
  std::error_code ec;
  result["file_mib"] = static_cast<double>(std::filesystem::file_size(db_path, ec)) / (1 << 20);
  result["bytes_per_step_layer"] = static_cast<double>(std::filesystem::file_size(db_path, ec)) /
                                   static_cast<double>(num_steps * num_layers);
  std::printf("%s\n", result.dump(2).c_str());
  if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir, ec);
  return closed.ok() && rows.ok() && loads.ok() ? 0 : 1;
}

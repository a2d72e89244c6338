#include "storage_test_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

namespace moe::storage::testing {

telemetry::StepRecord MakeStep(const std::string& engine_id, uint64_t step, int64_t timestamp_ns,
                               uint32_t num_layers, uint32_t num_experts) {
  telemetry::StepRecord r;
  r.engine_id = engine_id;
  r.seq = 1000 + step;
  r.step = step;
  r.timestamp_ns = timestamp_ns;
  r.epoch = step / 10;
  r.timing_on_device = step % 2 == 1;
  r.step_us = 1000.0 + static_cast<double>(step) * 0.5;
  for (uint32_t l = 0; l < num_layers; ++l) {
    telemetry::LayerRecord layer;
    layer.layer = l;
    layer.num_tokens = static_cast<uint32_t>(64 + step + l);
    layer.num_token_slots = 2ull * layer.num_tokens;
    for (uint32_t e = 0; e < num_experts; ++e) {
      layer.expert_tokens.push_back(static_cast<uint32_t>((step * 7 + e * 3 + l) % 11 + e));
    }
    layer.slot_tokens = layer.expert_tokens;
    layer.device_tokens = {layer.num_tokens};
    layer.dropped = static_cast<uint32_t>(step % 5);
    layer.rerouted = 2;
    layer.overflowed = layer.dropped + layer.rerouted;
    layer.k_histogram = {0, 3, layer.num_tokens - 3};
    layer.router_entropy = 1.5 + 0.01 * l + 0.001 * static_cast<double>(step);
    layer.gate_mass = 0.9 - 0.001 * l;
    if (step % 2 == 0) layer.quality_error = 0.01 * static_cast<double>(step + 1);
    layer.timing.router_us = 10.0 + l;
    layer.timing.dispatch_us = 3.25;
    layer.timing.expert_us = 50.0 + static_cast<double>(step % 3);
    layer.timing.combine_us = 4.5;
    layer.timing.all_to_all_us = 7.0;
    layer.timing.total_us = 80.0 + l;
    layer.timing.device_expert_us = {50.0};
    r.layers.push_back(std::move(layer));
  }
  return r;
}

StepRow ExpectedRow(const telemetry::StepRecord& record, size_t index) {
  const telemetry::LayerRecord& l = record.layers[index];
  StepRow row;
  row.engine_id = record.engine_id;
  row.step = record.step;
  row.seq = record.seq;
  row.timestamp_ns = record.timestamp_ns;
  row.epoch = record.epoch;
  row.layer = l.layer;
  row.num_tokens = l.num_tokens;
  row.num_token_slots = l.num_token_slots;
  row.overflowed = l.overflowed;
  row.rerouted = l.rerouted;
  row.dropped = l.dropped;
  row.drop_rate = l.num_token_slots == 0
                      ? 0.0
                      : static_cast<double>(l.dropped) / static_cast<double>(l.num_token_slots);
  if (!l.expert_tokens.empty()) {
    uint64_t sum = 0;
    uint32_t max = 0;
    for (uint32_t t : l.expert_tokens) {
      sum += t;
      max = std::max(max, t);
    }
    if (sum > 0) {
      double mean = static_cast<double>(sum) / static_cast<double>(l.expert_tokens.size());
      row.max_over_mean = static_cast<double>(max) / mean;
    }
  }
  row.router_entropy = l.router_entropy;
  row.gate_mass = l.gate_mass;
  row.quality_error = l.quality_error;
  row.router_us = l.timing.router_us;
  row.dispatch_us = l.timing.dispatch_us;
  row.expert_us = l.timing.expert_us;
  row.combine_us = l.timing.combine_us;
  row.all_to_all_us = l.timing.all_to_all_us;
  row.layer_us = l.timing.total_us;
  row.step_us = record.step_us;
  row.timing_on_device = record.timing_on_device;
  row.num_steps = 1;
  row.rollup = false;
  return row;
}

telemetry::Hello MakeHello(const std::string& engine_id, int64_t timestamp_ns) {
  telemetry::Hello h;
  h.engine_id = engine_id;
  h.seq = 1;
  h.backend = "cpu";
  h.num_layers = 2;
  h.num_experts = 8;
  h.num_shared_experts = 1;
  h.num_replicas = 10;
  h.num_devices = 2;
  h.hidden = 256;
  h.epoch = 0;
  h.timestamp_ns = timestamp_ns;
  return h;
}

DecisionRow MakeDecision(const std::string& engine_id, int64_t created_ns,
                         const std::string& policy) {
  DecisionRow d;
  d.engine_id = engine_id;
  d.created_ns = created_ns;
  d.policy = policy;
  d.layer = -1;
  d.knob = "capacity_factor";
  d.inputs_json = R"({"overflow_rate":0.12})";
  d.proposal_json = R"({"capacity_factor":1.5})";
  d.verdict = "accepted";
  d.verdict_reason = "within bounds";
  d.command_json = R"({"capacity_factor":1.5})";
  d.status = "proposed";
  return d;
}

StoreOptions TestOptions(const std::string& path) {
  StoreOptions o;
  o.path = path;
  o.batch_rows = 64;
  o.flush_interval = std::chrono::milliseconds(10);
  o.busy_timeout = std::chrono::milliseconds(200);
  o.close_timeout = std::chrono::milliseconds(5000);
  return o;
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

RawDb::RawDb(const std::string& path) {
  sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  sqlite3_busy_timeout(db_, 2000);
}

RawDb::~RawDb() {
  sqlite3_close_v2(db_);
}

int RawDb::Exec(const std::string& sql, std::string* error) {
  char* message = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
  if (error != nullptr) *error = message != nullptr ? message : "";
  sqlite3_free(message);
  return rc;
}

std::string RawDb::QueryText(const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    if (text != nullptr) out = reinterpret_cast<const char*>(text);
  }
  sqlite3_finalize(stmt);
  return out;
}

int64_t RawDb::QueryInt(const std::string& sql) {
  std::string text = QueryText(sql);
  return text.empty() ? -1 : std::stoll(text);
}

void TakeDecisionId(const std::string& path, int64_t id) {
  RawDb raw(path);
  REQUIRE(raw.Exec("INSERT INTO decisions(id, engine_id, created_ns, policy, layer, knob, "
                   "inputs_json, proposal_json, verdict, verdict_reason, command_json, status) "
                   "VALUES (" +
                   std::to_string(id) +
                   ", 'x', 0, 'p', -1, 'k', '', '', 'accepted', '', '', "
                   "'proposed')") == SQLITE_OK);
}

void UndoMigration9(RawDb& raw) {
  for (const char* sql : {"ALTER TABLE learning_samples DROP COLUMN setting",
                          "DELETE FROM schema_migrations WHERE version = 9"}) {
    std::string error;
    INFO(sql << ": " << error);
    REQUIRE(raw.Exec(sql, &error) == SQLITE_OK);
  }
}

void UndoMigration6(RawDb& raw) {
  for (const char* sql : {"DROP TABLE operator_actions", "ALTER TABLE engines DROP COLUMN gone_ns",
                          "ALTER TABLE decisions DROP COLUMN repeats",
                          "ALTER TABLE decisions DROP COLUMN last_repeat_ns",
                          "DELETE FROM schema_migrations WHERE version = 6"}) {
    std::string error;
    INFO(sql << ": " << error);
    REQUIRE(raw.Exec(sql, &error) == SQLITE_OK);
  }
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::unique_ptr<Store> OpenStore(const StoreOptions& options, Clock* clock) {
  auto store = Store::Open(options, clock);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  return std::move(store).value();
}

std::unique_ptr<Reader> OpenReader(const std::string& path) {
  auto reader = Reader::Open(path);
  INFO(reader.status().ToString());
  REQUIRE(reader.ok());
  return std::move(reader).value();
}

}  // namespace moe::storage::testing

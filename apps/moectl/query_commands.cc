#include "query_commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

#include <nlohmann/json.hpp>

#include "explain_view.h"
#include "moe/common/clock.h"
#include "moe/common/time_format.h"
#include "moe/storage/reader.h"
#include "output.h"
#include "plot.h"

namespace moe::cli {
namespace {

constexpr const char* kDefaultDb = "/var/lib/moectld/moectl.db";

// Options every query shares.
struct QueryFlags {
  std::string db;
  std::string format = "table";
  std::string since;
  std::string until;
  std::string engine;
};

[[noreturn]] void Fail(const Status& status) {
  std::fprintf(stderr, "moectl: %s\n", status.message().c_str());
  throw CLI::RuntimeError(status.code() == StatusCode::kInvalidArgument ? 2 : 1);
}

template <typename T>
T Check(Result<T> result) {
  if (!result.ok()) Fail(result.status());
  return std::move(result).value();
}

void AddCommonFlags(CLI::App* cmd, QueryFlags* flags, bool with_window) {
  const char* env_db = std::getenv("MOECTL_DB");
  flags->db = env_db ? env_db : kDefaultDb;
  cmd->add_option("--db", flags->db,
                  "database file (default $MOECTL_DB or " + std::string(kDefaultDb) + ")");
  cmd->add_option("--format", flags->format, "table | csv | json")->capture_default_str();
  cmd->add_option("--engine", flags->engine, "engine id (default: every engine)");
  if (with_window) {
    cmd->add_option("--since", flags->since,
                    "start of the window: ISO time (2026-11-23T01:00Z) or relative (-10m)");
    cmd->add_option("--until", flags->until, "end of the window (exclusive); default now");
  }
}

storage::TimeWindow Window(const QueryFlags& flags) {
  storage::TimeWindow window;
  int64_t now = SystemClock()->NowNanos();
  if (!flags.since.empty()) {
    Result<int64_t> since = ParseTimeArg(flags.since, now);
    if (!since.ok()) Fail(since.status().WithContext("--since"));
    window.since_ns = *since;
  }
  if (!flags.until.empty()) {
    Result<int64_t> until = ParseTimeArg(flags.until, now);
    if (!until.ok()) Fail(until.status().WithContext("--until"));
    window.until_ns = *until;
  }
  return window;
}

// Opens the database and checks --engine and --layer against it: an unknown
// engine is a usage error that lists the known ones; so is a layer that no
// engine (or not the one chosen) has.
std::unique_ptr<storage::Reader> OpenDb(const QueryFlags& flags, int64_t layer = -1) {
  std::unique_ptr<storage::Reader> reader = Check(storage::Reader::Open(flags.db));
  if (flags.engine.empty() && layer < 0) return reader;
  const std::vector<storage::EngineRow> engines = Check(reader->Engines());
  std::vector<std::string> known;
  uint32_t num_layers = 0;
  bool found = flags.engine.empty();
  for (const storage::EngineRow& e : engines) {
    known.push_back(e.engine_id);
    if (flags.engine.empty() || e.engine_id == flags.engine) {
      num_layers = std::max(num_layers, e.num_layers);
      if (e.engine_id == flags.engine) found = true;
    }
  }
  if (!found) {
    Fail(Status::InvalidArgument(
        known.empty() ? fmt::format("--engine {}: no engine is known in {}", flags.engine, flags.db)
                      : fmt::format("--engine {}: unknown engine; known engines: {}", flags.engine,
                                    fmt::join(known, ", "))));
  }
  if (layer >= 0 && num_layers > 0 && layer >= int64_t{num_layers}) {
    Fail(Status::InvalidArgument(
        flags.engine.empty()
            ? fmt::format("--layer {}: out of range; no engine has more than {} layers (0 to {})",
                          layer, num_layers, num_layers - 1)
            : fmt::format("--layer {}: out of range; engine {} has layers 0 to {}", layer,
                          flags.engine, num_layers - 1)));
  }
  return reader;
}

// Asks for one row more than `limit` to learn whether rows were left out.
size_t WithOneMore(size_t limit) {
  return limit == 0 ? 0 : limit + 1;
}

// Drops the oldest row beyond `limit` and says on stderr that older rows were
// left out (stdout stays the data alone).
template <typename Row>
void AnnounceTruncation(std::vector<Row>* rows, size_t limit, std::string_view what) {
  if (limit == 0 || rows->size() <= limit) return;
  rows->erase(rows->begin(), rows->begin() + static_cast<std::ptrdiff_t>(rows->size() - limit));
  std::fprintf(stderr,
               "moectl: showing the newest %zu %s only; older ones match too (--limit N, "
               "--limit 0 for all, or narrow with --since)\n",
               limit, std::string(what).c_str());
}

Cell Time(int64_t ns) {
  return FormatIsoTime(ns);
}

// "gone" when the controller expired the engine; else "live" when its last
// message is within `stale_after_ns`, "stale" otherwise.
std::string Liveness(const storage::EngineRow& e, int64_t now_ns, int64_t stale_after_ns) {
  if (e.gone_ns) return "gone";
  return now_ns - e.last_seen_ns <= stale_after_ns ? "live" : "stale";
}

void Engines(const QueryFlags& flags, const std::string& stale_after, const std::string& state) {
  auto reader = OpenDb(flags);
  Result<int64_t> stale_ns = ParseDuration(stale_after);
  if (!stale_ns.ok()) Fail(stale_ns.status().WithContext("--stale-after"));
  const int64_t now = SystemClock()->NowNanos();
  TableData t{{"engine", "state", "backend", "layers", "experts", "replicas", "devices",
               "first_seen", "last_seen", "gone_since", "last_step", "last_epoch"},
              {}};
  for (const storage::EngineRow& e : Check(reader->Engines())) {
    if (!flags.engine.empty() && e.engine_id != flags.engine) continue;
    const std::string liveness = Liveness(e, now, *stale_ns);
    if (!state.empty() && liveness != state) continue;
    t.rows.push_back({e.engine_id, liveness, e.backend, int64_t{e.num_layers},
                      int64_t{e.num_experts}, int64_t{e.num_replicas}, int64_t{e.num_devices},
                      Time(e.first_seen_ns), Time(e.last_seen_ns),
                      e.gone_ns ? Time(*e.gone_ns) : Cell{}, static_cast<int64_t>(e.last_step),
                      static_cast<int64_t>(e.last_epoch)});
  }
  Render(t, Check(ParseFormat(flags.format)), std::cout);
}

// The operator levers pulled (the audit of moectl pause/resume/pin/unpin/mode).
void Levers(const QueryFlags& flags, size_t limit) {
  auto reader = OpenDb(flags);
  std::vector<storage::OperatorActionRow> rows =
      Check(reader->OperatorActions(flags.engine, WithOneMore(limit)));
  AnnounceTruncation(&rows, limit, "levers");
  TableData t{{"id", "time", "engine", "action", "knob", "value", "until", "mode", "who", "reason",
               "result", "decision"},
              {}};
  for (const storage::OperatorActionRow& a : rows) {
    t.rows.push_back({a.id, Time(a.created_ns), a.engine_id, a.action, a.knob,
                      OptionalCell(a.value), a.until_ns ? Time(*a.until_ns) : Cell{}, a.mode, a.who,
                      a.reason, a.result, OptionalCell(a.decision_id)});
  }
  Render(t, Check(ParseFormat(flags.format)), std::cout, 6);
}

// Per-step values of `field` (drop_rate summed over layers, other figures
// averaged), with a marker at every epoch change.
Series StepSeries(const std::vector<storage::StepRow>& rows, const std::string& field) {
  struct Acc {
    double value = 0, slots = 0, dropped = 0;
    int n = 0;
    uint64_t epoch = 0;
  };
  std::map<uint64_t, Acc> steps;
  std::string engine;
  for (const storage::StepRow& r : rows) {
    if (engine.empty()) engine = r.engine_id;
    if (r.engine_id != engine || r.rollup) continue;
    Acc& a = steps[r.step];
    a.epoch = r.epoch;
    a.slots += static_cast<double>(r.num_token_slots);
    a.dropped += r.dropped;
    double v = field == "step_us"         ? r.step_us
               : field == "layer_us"      ? r.layer_us
               : field == "max_over_mean" ? r.max_over_mean
               : field == "quality_error" ? r.quality_error.value_or(NAN)
                                          : 0;
    if (!std::isnan(v)) {
      a.value += v;
      ++a.n;
    }
  }
  Series s;
  s.title = fmt::format("{} of engine {} per step{}", field, engine,
                        field == "drop_rate" ? " (all layers)" : " (mean over layers)");
  s.marker_legend = "^ new epoch (a decision applied)";
  uint64_t last_epoch = 0;
  bool first = true;
  for (const auto& [step, a] : steps) {
    double y = field == "drop_rate" ? (a.slots > 0 ? a.dropped / a.slots : 0)
                                    : (a.n > 0 ? a.value / a.n : NAN);
    s.x.push_back(static_cast<double>(step));
    s.y.push_back(y);
    if (!first && a.epoch != last_epoch) s.markers.push_back(static_cast<double>(step));
    last_epoch = a.epoch;
    first = false;
  }
  return s;
}

void History(const QueryFlags& flags, int64_t layer, size_t limit, const std::string& plot) {
  auto reader = OpenDb(flags, layer);
  storage::HistoryQuery q;
  q.engine_id = flags.engine;
  if (layer >= 0) q.layer = static_cast<uint32_t>(layer);
  q.window = Window(flags);
  q.limit = WithOneMore(limit);
  std::vector<storage::StepRow> rows = Check(reader->History(q));
  AnnounceTruncation(&rows, limit, "rows");
  if (!plot.empty()) {
    std::cout << RenderChart(StepSeries(rows, plot));
    return;
  }
  TableData t{
      {"time", "engine", "step", "epoch", "layer", "tokens", "slots", "dropped", "drop_rate",
       "max_over_mean", "router_us", "expert_us", "layer_us", "step_us", "quality_error", "rollup"},
      {}};
  for (const storage::StepRow& r : rows) {
    t.rows.push_back({Time(r.timestamp_ns), r.engine_id, static_cast<int64_t>(r.step),
                      static_cast<int64_t>(r.epoch), int64_t{r.layer}, int64_t{r.num_tokens},
                      static_cast<int64_t>(r.num_token_slots), int64_t{r.dropped}, r.drop_rate,
                      r.max_over_mean, r.router_us, r.expert_us, r.layer_us, r.step_us,
                      OptionalCell(r.quality_error), int64_t{r.rollup ? 1 : 0}});
  }
  Render(t, Check(ParseFormat(flags.format)), std::cout);
}

nlohmann::json ParseOrText(const std::string& text) {
  if (text.empty()) return nullptr;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? nlohmann::json(text) : j;
}

void Decisions(const QueryFlags& flags, const std::string& status, size_t limit) {
  auto reader = OpenDb(flags);
  storage::DecisionQuery q;
  q.engine_id = flags.engine;
  q.window = Window(flags);
  q.status = status;
  q.limit = WithOneMore(limit);
  std::vector<storage::DecisionRow> rows = Check(reader->Decisions(q));
  AnnounceTruncation(&rows, limit, "decisions");
  Format format = Check(ParseFormat(flags.format));
  if (format == Format::kJson) {
    nlohmann::json array = nlohmann::json::array();
    for (const storage::DecisionRow& d : rows) {
      nlohmann::json j = {{"id", d.id},
                          {"engine", d.engine_id},
                          {"time", FormatIsoTime(d.created_ns)},
                          {"policy", d.policy},
                          {"layer", d.layer},
                          {"knob", d.knob},
                          {"verdict", d.verdict},
                          {"verdict_reason", d.verdict_reason},
                          {"status", d.status},
                          {"inputs", ParseOrText(d.inputs_json)},
                          {"proposal", ParseOrText(d.proposal_json)},
                          {"command", ParseOrText(d.command_json)},
                          {"outcome", ParseOrText(d.outcome_json)}};
      j["epoch"] = d.epoch ? nlohmann::json(*d.epoch) : nlohmann::json(nullptr);
      j["acked_epoch"] = d.acked_ns && d.ack_error.empty() && d.epoch ? nlohmann::json(*d.epoch)
                                                                      : nlohmann::json(nullptr);
      j["acked_at"] = d.acked_ns ? nlohmann::json(FormatIsoTime(*d.acked_ns)) : nullptr;
      j["applied_at_step"] =
          d.applied_at_step ? nlohmann::json(*d.applied_at_step) : nlohmann::json(nullptr);
      j["ack_error"] = d.ack_error;
      j["repeats"] = d.repeats;
      j["last_repeat_at"] =
          d.last_repeat_ns ? nlohmann::json(FormatIsoTime(*d.last_repeat_ns)) : nullptr;
      j["reward_before"] = d.reward_before ? nlohmann::json(*d.reward_before) : nullptr;
      j["reward_after"] = d.reward_after ? nlohmann::json(*d.reward_after) : nullptr;
      // What the controller expected (for an advisory decision: what it would
      // have done and gained).
      j["predicted_gain"] = d.predicted_gain ? nlohmann::json(*d.predicted_gain) : nullptr;
      j["prediction"] =
          d.prediction_json.empty() ? nlohmann::json(nullptr) : ParseOrText(d.prediction_json);
      array.push_back(std::move(j));
    }
    std::cout << array.dump(2) << "\n";
    return;
  }
  TableData t{{"id", "time", "engine", "policy", "knob", "from", "to", "verdict", "status", "epoch",
               "repeats", "predicted_gain", "reward_before", "reward_after", "reason"},
              {}};
  for (const storage::DecisionRow& d : rows) {
    nlohmann::json proposal = ParseOrText(d.proposal_json);
    nlohmann::json command = ParseOrText(d.command_json);
    // Scalar knobs: the value before and the one sent; a vector knob
    // (expert_bias) shows its largest |element| before and after (`explain`
    // lists every element that changed).
    auto number = [](const nlohmann::json& object, const std::string& key) -> Cell {
      if (object.is_object() && object.contains(key) && object[key].is_number()) {
        return object[key].get<double>();
      }
      return Cell{};
    };
    Cell from = number(proposal, "current");
    Cell to = number(command, d.knob);
    if (std::holds_alternative<std::monostate>(to)) to = number(proposal, "value");
    std::string reason = d.verdict == "rejected" ? d.verdict_reason
                         : proposal.is_object()  ? proposal.value("reason", "")
                                                 : "";
    if (!d.ack_error.empty()) reason = d.ack_error;
    t.rows.push_back({d.id, Time(d.created_ns), d.engine_id, d.policy, d.knob, from, to, d.verdict,
                      d.status, OptionalCell(d.epoch), static_cast<int64_t>(d.repeats),
                      OptionalCell(d.predicted_gain), OptionalCell(d.reward_before),
                      OptionalCell(d.reward_after), reason});
  }
  Render(t, format, std::cout, 4);
}

void Explain(const QueryFlags& flags, int64_t id) {
  const Format format = Check(ParseFormat(flags.format));
  auto reader = OpenDb(flags);
  storage::DecisionRow d = Check(reader->Decision(id));
  if (format == Format::kCsv) {
    Render(ExplainChanges(d), format, std::cout);
    return;
  }
  if (format == Format::kTable) {
    PrintExplainHeader(ExplainHeader(d), std::cout);
    std::cout << "\n";
    Render(ExplainChanges(d), format, std::cout);
    return;
  }
  nlohmann::json j = {{"id", d.id},
                      {"engine", d.engine_id},
                      {"time", FormatIsoTime(d.created_ns)},
                      {"policy", d.policy},
                      {"knob", d.knob},
                      {"layer", d.layer},
                      {"inputs", ParseOrText(d.inputs_json)},
                      {"proposal", ParseOrText(d.proposal_json)},
                      {"guard", {{"verdict", d.verdict}, {"reason", d.verdict_reason}}},
                      {"command", ParseOrText(d.command_json)},
                      {"status", d.status},
                      {"outcome", ParseOrText(d.outcome_json)}};
  if (!d.prediction_json.empty()) j["prediction"] = ParseOrText(d.prediction_json);
  if (d.epoch) j["epoch"] = *d.epoch;
  if (d.acked_ns) {
    j["ack"] = {{"at", FormatIsoTime(*d.acked_ns)}, {"error", d.ack_error}};
    if (d.applied_at_step) j["ack"]["applied_at_step"] = *d.applied_at_step;
  }
  std::cout << j.dump(2) << "\n";
}

// What the learning policy has learnt: per engine, knob and load regime, the
// mean reward of each value it has measured; `best` marks the highest mean.
void Learning(const QueryFlags& flags, const std::string& knob) {
  auto reader = OpenDb(flags);
  struct Arm {
    int64_t samples = 0;
    double reward_sum = 0;
    uint64_t last_epoch = 0;
  };
  // (engine, knobs, regime) -> setting -> arm, in a stable order. A joint
  // setting's knobs are `knob`'s comma-separated names, its values the
  // setting's, in that order.
  std::map<std::tuple<std::string, std::string, std::string>, std::map<std::vector<double>, Arm>>
      table;
  for (const storage::LearningSampleRow& r : Check(reader->LearningSamples(flags.engine, knob))) {
    Arm& arm = table[{r.engine_id, r.knob, r.regime}][r.setting];
    arm.samples += 1;
    arm.reward_sum += r.reward;
    arm.last_epoch = std::max(arm.last_epoch, r.epoch);
  }
  TableData t{{"engine", "knob", "regime", "value", "samples", "mean_reward", "last_epoch", "best"},
              {}};
  for (const auto& [key, arms] : table) {
    double best = -std::numeric_limits<double>::infinity();
    for (const auto& [value, arm] : arms)
      best = std::max(best, arm.reward_sum / static_cast<double>(arm.samples));
    for (const auto& [setting, arm] : arms) {
      const double mean = arm.reward_sum / static_cast<double>(arm.samples);
      Cell value =
          setting.size() == 1 ? Cell(setting[0]) : Cell(fmt::format("{}", fmt::join(setting, ",")));
      t.rows.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), value, arm.samples,
                        mean, static_cast<int64_t>(arm.last_epoch),
                        std::string(mean == best ? "*" : "")});
    }
  }
  Render(t, Check(ParseFormat(flags.format)), std::cout, 4);
}

void Experts(const QueryFlags& flags, int64_t layer, size_t top) {
  auto reader = OpenDb(flags, layer);
  storage::ExpertQuery q;
  q.engine_id = flags.engine;
  if (layer >= 0) q.layer = static_cast<uint32_t>(layer);
  q.window = Window(flags);
  q.top = top;
  TableData t{{"layer", "rank", "expert", "tokens", "share", "vs_mean"}, {}};
  int64_t rank = 0;
  int64_t last_layer = -1;
  for (const storage::ExpertLoadRow& r : Check(reader->HotExperts(q))) {
    rank = (int64_t{r.layer} == last_layer) ? rank + 1 : 1;
    last_layer = r.layer;
    t.rows.push_back({int64_t{r.layer}, rank, int64_t{r.expert}, static_cast<int64_t>(r.tokens),
                      r.share, r.vs_mean});
  }
  Render(t, Check(ParseFormat(flags.format)), std::cout, 4);
}

}  // namespace

std::unique_ptr<storage::Reader> OpenQueryDb(const std::string& db, const std::string& engine) {
  QueryFlags flags;
  flags.db = db;
  flags.engine = engine;
  return OpenDb(flags);
}

void AddQueryCommands(CLI::App& app) {
  auto flags = std::make_shared<QueryFlags>();

  auto stale_after = std::make_shared<std::string>("10s");
  auto engine_state = std::make_shared<std::string>();
  CLI::App* engines = app.add_subcommand(
      "engines", "engines known to the controller: live, stale (silent for --stale-after) or gone");
  AddCommonFlags(engines, flags.get(), /*with_window=*/false);
  engines
      ->add_option("--stale-after", *stale_after,
                   "silence after which a live engine shows as stale (the daemon's stale_after)")
      ->capture_default_str();
  engines->add_option("--state", *engine_state, "only engines in this state")
      ->check(CLI::IsMember({"live", "stale", "gone"}));
  engines->callback([=] { Engines(*flags, *stale_after, *engine_state); });

  auto history_layer = std::make_shared<int64_t>(-1);
  auto history_limit = std::make_shared<size_t>(1000);
  CLI::App* history = app.add_subcommand("history", "per-step, per-layer telemetry summaries");
  AddCommonFlags(history, flags.get(), /*with_window=*/true);
  history->add_option("--layer", *history_layer, "one layer (default: every layer)")
      ->check(CLI::NonNegativeNumber);
  history->add_option("--limit", *history_limit, "most recent rows to show")->capture_default_str();
  auto history_plot = std::make_shared<std::string>();
  history
      ->add_option("--plot", *history_plot,
                   "draw one figure per step in the terminal instead of a table")
      ->check(
          CLI::IsMember({"drop_rate", "step_us", "layer_us", "max_over_mean", "quality_error"}));
  history->callback([=] { History(*flags, *history_layer, *history_limit, *history_plot); });

  auto status = std::make_shared<std::string>();
  auto decisions_limit = std::make_shared<size_t>(200);
  CLI::App* decisions =
      app.add_subcommand("decisions", "the controller's decisions: verdict, ack, outcome");
  AddCommonFlags(decisions, flags.get(), /*with_window=*/true);
  decisions
      ->add_option("--status", *status,
                   "rejected | advisory | sent | acked | failed | measured | unknown")
      ->check(CLI::IsMember(
          {"rejected", "advisory", "sent", "acked", "failed", "measured", "unknown"}));
  decisions->add_option("--limit", *decisions_limit, "most recent decisions to show")
      ->capture_default_str();
  decisions->callback([=] { Decisions(*flags, *status, *decisions_limit); });

  auto explain_id = std::make_shared<int64_t>(0);
  CLI::App* explain = app.add_subcommand("explain", "everything recorded about one decision");
  AddCommonFlags(explain, flags.get(), /*with_window=*/false);
  explain->add_option("id", *explain_id, "decision id (see moectl decisions)")->required();
  explain->callback([=] { Explain(*flags, *explain_id); });

  auto experts_layer = std::make_shared<int64_t>(-1);
  auto experts_top = std::make_shared<size_t>(5);
  CLI::App* experts = app.add_subcommand("experts", "hottest experts per layer over a window");
  AddCommonFlags(experts, flags.get(), /*with_window=*/true);
  experts->add_option("--layer", *experts_layer, "one layer (default: every layer)")
      ->check(CLI::NonNegativeNumber);
  experts->add_option("--top", *experts_top, "experts per layer")->capture_default_str();
  experts->callback([=] { Experts(*flags, *experts_layer, *experts_top); });

  auto learning_knob = std::make_shared<std::string>();
  CLI::App* learning = app.add_subcommand(
      "learning", "what the learning policy has learnt: mean reward per regime and setting");
  AddCommonFlags(learning, flags.get(), /*with_window=*/false);
  learning->add_option("--knob", *learning_knob,
                       "one learner's knobs, joint ones joined by \",\" as stored (e.g. "
                       "capacity_factor,top_k; default: every learner)");
  learning->callback([=] { Learning(*flags, *learning_knob); });

  auto levers_limit = std::make_shared<size_t>(200);
  CLI::App* levers = app.add_subcommand(
      "levers", "operator levers pulled (pause, resume, pin, unpin, mode): who, why, result");
  AddCommonFlags(levers, flags.get(), /*with_window=*/false);
  levers->add_option("--limit", *levers_limit, "most recent levers to show")->capture_default_str();
  levers->callback([=] { Levers(*flags, *levers_limit); });
}

}  // namespace moe::cli

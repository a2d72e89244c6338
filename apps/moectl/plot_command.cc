#include "plot_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "matplotlib_figure.h"
#include "moe/common/clock.h"
#include "moe/common/time_format.h"
#include "moe/policies/knobs.h"
#include "moe/storage/reader.h"
#include "query_commands.h"

namespace moe::cli {
namespace {

using nlohmann::json;

constexpr const char* kDefaultDb = "/var/lib/moectld/moectl.db";

// The figures a step row has, in the order panels are drawn when asked for.
const std::vector<std::string>& KnownFields() {
  static const std::vector<std::string> fields = {"drop_rate", "max_over_mean", "step_us",
                                                  "layer_us", "quality_error"};
  return fields;
}

struct PlotFlags {
  std::string db;
  std::string engine;
  std::vector<std::string> fields;
  std::string since = "-1h";
  std::string until;
  std::string out;
};

[[noreturn]] void Fail(const Status& status) {
  std::fprintf(stderr, "moectl plot: %s\n", status.message().c_str());
  throw CLI::RuntimeError(status.code() == StatusCode::kInvalidArgument ? 2 : 1);
}

template <typename T>
T Check(Result<T> result) {
  if (!result.ok()) Fail(result.status());
  return std::move(result).value();
}

// How much of the window one query reads: the rows of one slice are folded
// into per-step figures before the next slice is read, so memory follows the
// number of steps, not steps times layers.
constexpr int64_t kSliceNs = 60'000'000'000;

// Per step: drop_rate over all layers (dropped / token slots), the other
// figures averaged over the layers that have them (indexed as the fields).
struct StepFigures {
  double slots = 0, dropped = 0;
  std::array<std::pair<double, int>, 5> sums{};  // (sum, count) per field
  uint64_t epoch = 0;
  int64_t time_ns = 0;
};

std::optional<double> FieldOf(const storage::StepRow& r, const std::string& field) {
  if (field == "max_over_mean") return r.max_over_mean;
  if (field == "step_us") return r.step_us;
  if (field == "layer_us") return r.layer_us;
  if (field == "quality_error") return r.quality_error;
  return std::nullopt;
}

std::string YLabel(const std::string& field) {
  if (field == "drop_rate") return "drop_rate (all layers)";
  if (field == "step_us") return "step_us (microseconds)";
  if (field == "layer_us") return "layer_us (microseconds, mean over layers)";
  return field + " (mean over layers)";
}

// What an epoch brought, from its knobs_json: "capacity_factor=1.5", or for a
// vector or placement "expert_bias: 12 elements in 3 layers".
std::string KnobSummary(const std::string& knobs_json) {
  const json knobs = json::parse(knobs_json, nullptr, /*allow_exceptions=*/false);
  if (!knobs.is_object()) return "";
  std::vector<std::string> parts;
  for (const auto& [knob, value] : knobs.items()) {
    if (knob == "source" || knob == "epoch") continue;
    if (const policies::KnobSpec* spec = policies::FindKnob(knob);
        spec != nullptr && spec->scalar() && value.is_number()) {
      parts.push_back(fmt::format("{}={}", knob, spec->Format(value.get<double>())));
    } else if (value.is_number()) {
      parts.push_back(fmt::format("{}={:g}", knob, value.get<double>()));
    } else if (value.is_object()) {
      size_t elements = 0;
      for (const auto& [layer, changed] : value.items())
        elements += changed.is_object() ? changed.size() : 0;
      parts.push_back(fmt::format("{}: {} elements in {} layers", knob, elements, value.size()));
    }
  }
  return fmt::format("{}", fmt::join(parts, ", "));
}

void Plot(const PlotFlags& f) {
  if (!IsFigurePath(f.out)) {
    Fail(Status::InvalidArgument(
        fmt::format("--out {}: the file must end in .png or .svg (that picks the format)", f.out)));
  }
  storage::TimeWindow window;
  const int64_t now = SystemClock()->NowNanos();
  if (!f.since.empty()) {
    Result<int64_t> since = ParseTimeArg(f.since, now);
    if (!since.ok()) Fail(since.status().WithContext("--since"));
    window.since_ns = *since;
  }
  if (!f.until.empty()) {
    Result<int64_t> until = ParseTimeArg(f.until, now);
    if (!until.ok()) Fail(until.status().WithContext("--until"));
    window.until_ns = *until;
  }
  // Each field once, in the order asked for (at most the known five).
  std::vector<std::string> fields;
  for (const std::string& field : f.fields) {
    if (std::find(fields.begin(), fields.end(), field) == fields.end()) fields.push_back(field);
  }
  std::unique_ptr<storage::Reader> reader = OpenQueryDb(f.db, f.engine);
  std::string engine = f.engine;
  if (engine.empty()) {
    std::vector<std::string> known;
    for (const storage::EngineRow& e : Check(reader->Engines()))
      known.push_back(e.engine_id);
    if (known.empty()) Fail(Status::NotFound(fmt::format("no engine is known in {}", f.db)));
    if (known.size() > 1) {
      Fail(Status::InvalidArgument(
          fmt::format("--engine is required: {} has several; known engines: {}", f.db,
                      fmt::join(known, ", "))));
    }
    engine = known.front();
  }

  // The window, narrowed to the engine's own life, read slice by slice.
  for (const storage::EngineRow& e : Check(reader->Engines())) {
    if (e.engine_id != engine) continue;
    window.since_ns = std::max(window.since_ns, e.first_seen_ns);
    if (e.last_seen_ns < std::numeric_limits<int64_t>::max()) {
      window.until_ns = std::min(window.until_ns, e.last_seen_ns + 1);
    }
  }
  std::map<uint64_t, StepFigures> steps;
  for (int64_t start = window.since_ns; start < window.until_ns;) {
    const int64_t end = window.until_ns - start > kSliceNs ? start + kSliceNs : window.until_ns;
    storage::HistoryQuery q;
    q.engine_id = engine;
    q.window = {start, end};
    q.limit = 0;
    q.include_rollups = false;
    for (const storage::StepRow& r : Check(reader->History(q))) {
      StepFigures& s = steps[r.step];
      s.epoch = r.epoch;
      s.time_ns = r.timestamp_ns;
      s.slots += static_cast<double>(r.num_token_slots);
      s.dropped += r.dropped;
      for (size_t i = 0; i < fields.size(); ++i) {
        std::optional<double> v = FieldOf(r, fields[i]);
        if (!v || !std::isfinite(*v)) continue;
        s.sums[i].first += *v;
        s.sums[i].second += 1;
      }
    }
    start = end;
  }
  if (steps.empty()) {
    Fail(
        Status::NotFound(fmt::format("no steps of engine {} in the window (--since {}{}{})", engine,
                                     f.since, f.until.empty() ? "" : ", --until ", f.until)));
  }

  std::map<uint64_t, std::string> brought;
  for (const storage::EpochRow& e : Check(reader->Epochs(engine, storage::TimeWindow{})))
    brought[e.epoch] = KnobSummary(e.knobs_json);

  json x = json::array();
  std::map<std::string, json> ys;
  json markers = json::array();
  uint64_t last_epoch = steps.begin()->second.epoch;
  for (const auto& [step, s] : steps) {
    x.push_back(step);
    for (size_t i = 0; i < fields.size(); ++i) {
      json& y = ys[fields[i]];
      if (fields[i] == "drop_rate") {
        y.push_back(s.slots > 0 ? json(s.dropped / s.slots) : json(nullptr));
        continue;
      }
      const auto& [sum, count] = s.sums[i];
      y.push_back(count > 0 ? json(sum / count) : json(nullptr));
    }
    if (s.epoch != last_epoch) {
      const std::string what = brought.count(s.epoch) ? brought[s.epoch] : std::string();
      markers.push_back({{"x", step},
                         {"id", fmt::format("epoch-{}", s.epoch)},
                         {"label", what.empty() ? fmt::format("epoch {}", s.epoch)
                                                : fmt::format("epoch {}: {}", s.epoch, what)}});
      last_epoch = s.epoch;
    }
  }
  json panels = json::array();
  for (const std::string& field : fields) {
    panels.push_back({{"ylabel", YLabel(field)},
                      {"lines", json::array({{{"label", engine}, {"x", x}, {"y", ys[field]}}})}});
  }
  const json figure = {
      {"title", fmt::format("engine {}: {} per step, {} to {} (dashed: a new epoch)", engine,
                            fmt::join(fields, ", "), FormatIsoTime(steps.begin()->second.time_ns),
                            FormatIsoTime(steps.rbegin()->second.time_ns))},
      {"xlabel", "engine step"},
      {"panels", panels},
      {"markers", markers}};
  if (Status s = DrawFigure(figure, f.out); !s.ok()) Fail(s);
  std::fprintf(stderr, "moectl plot: wrote %s (%zu steps, %zu epoch changes)\n", f.out.c_str(),
               steps.size(), markers.size());
}

}  // namespace

void AddPlotCommand(CLI::App& app) {
  auto flags = std::make_shared<PlotFlags>();
  const char* env_db = std::getenv("MOECTL_DB");
  flags->db = env_db ? env_db : kDefaultDb;
  CLI::App* plot = app.add_subcommand(
      "plot", "draw one engine's per-step figures with its epochs marked, as PNG or SVG");
  plot->add_option("--db", flags->db,
                   "database file (default $MOECTL_DB or " + std::string(kDefaultDb) + ")");
  plot->add_option("--engine", flags->engine, "engine id (default: the only engine)");
  plot->add_option("--field", flags->fields, "figures to draw, one panel each (comma list)")
      ->delimiter(',')
      ->required()
      ->check(CLI::IsMember(KnownFields()));
  plot->add_option("--since", flags->since,
                   "start of the window: ISO time (2026-11-23T01:00Z) or relative (-10m)")
      ->capture_default_str();
  plot->add_option("--until", flags->until, "end of the window (exclusive); default now");
  plot->add_option("--out", flags->out, "the figure's file: .png or .svg")->required();
  plot->callback([flags] { Plot(*flags); });
}

}  // namespace moe::cli

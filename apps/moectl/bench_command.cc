#include "bench_command.h"

#include <fmt/format.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_analysis.h"
#include "bench_run.h"
#include "matplotlib_figure.h"
#include "output.h"

namespace moe::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace bench;

struct BenchFlags {
  std::string scenario;
  std::string model;
  std::string engine_config;
  std::string configs_dir;
  std::string out_dir;
  std::string bin_dir;
  std::string plot;
  std::string contenders =
      "default,dropless,oracle,dynamic_capacity,expert_bias,periodic_eplb,moectl";
  std::vector<double> grid = {1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  uint64_t steps = 240;
  uint64_t warmup_steps = 16;
  int64_t step_interval_ms = 15;
  bool wall_clock = false;
  bool online_cost_model = false;
  int64_t cadence_ms = 100;
  std::string capacity_scope = "slot";
  double react_drop_rate = 0.02;
  bool json = false;
};

[[noreturn]] void Fail(const Status& status) {
  std::cerr << "moectl bench: " << status.ToString() << "\n";
  throw CLI::RuntimeError(status.code() == StatusCode::kInvalidArgument ? 2 : 1);
}

std::string SelfDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// configs/ of the source tree: given, under the working directory, or beside
// the build tree moectl runs from (build/apps/moectl/moectl).
Result<fs::path> ConfigsDir(const std::string& flag) {
  std::vector<fs::path> candidates;
  if (!flag.empty()) candidates.push_back(flag);
  candidates.push_back(fs::current_path() / "configs");
  candidates.push_back(fs::path(SelfDir()) / "../../../configs");
  for (const fs::path& c : candidates) {
    if (fs::exists(c / "bench" / "static.toml")) return fs::weakly_canonical(c);
  }
  return Status::NotFound("no configs/ folder with bench/static.toml; pass --configs DIR");
}

Result<std::string> FindBinary(const std::string& bin_dir, const std::string& name) {
  std::vector<fs::path> candidates;
  if (!bin_dir.empty()) candidates.push_back(fs::path(bin_dir) / name);
  const fs::path self = SelfDir();
  candidates.push_back(self / name);
  candidates.push_back(self / ".." / name / name);  // build/apps/<name>/<name>
  for (const fs::path& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) return fs::weakly_canonical(c).string();
  }
  return Status::NotFound(fmt::format("cannot find {}; pass --bin-dir DIR", name));
}

// The reward the shipped controller uses ([reward] of its policies file), so
// the bench and the controller weigh outcomes the same way.
Result<policies::RewardParams> ReadReward(const fs::path& policies_file) {
  policies::RewardParams r;
  toml::table t;
  try {
    t = toml::parse_file(policies_file.string());
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(fmt::format("{}: {}", policies_file.string(), e.description()));
  }
  auto read = [&](const char* key, double* v) {
    if (auto x = t["reward"][key].value<double>()) *v = *x;
  };
  read("latency_weight", &r.latency_weight);
  read("slo_us", &r.slo_us);
  read("slo_weight", &r.slo_weight);
  read("drop_weight", &r.drop_weight);
  read("quality_weight", &r.quality_weight);
  read("migration_weight", &r.migration_weight);
  read("capacity_weight", &r.capacity_weight);
  MOE_RETURN_IF_ERROR(policies::Validate(r));
  return r;
}

std::string Label(const std::string& contender, const KnobPoint& k) {
  return fmt::format("{}_cf{}_k{}_n{}", contender, k.capacity_factor, k.top_k, k.noise_std);
}

json SummaryJson(const Summary& s) {
  return {{"steps", s.steps},
          {"p50_latency_us", s.p50_latency_us},
          {"p99_latency_us", s.p99_latency_us},
          {"p50_balanced_us", s.p50_balanced_us},
          {"p99_balanced_us", s.p99_balanced_us},
          {"p50_measured_step_us", s.p50_measured_us},
          {"p99_measured_step_us", s.p99_measured_us},
          {"p50_measured_path_us", s.p50_measured_path_us},
          {"p99_measured_path_us", s.p99_measured_path_us},
          {"tokens_per_s", s.tokens_per_s},
          {"measured_tokens_per_s", s.measured_tokens_per_s},
          {"drop_rate", s.drop_rate},
          {"quality_error", s.quality_error},
          {"bytes_migrated", s.bytes_migrated},
          {"decisions_applied", s.decisions_applied},
          {"rolled_back", s.rolled_back},
          {"mean_reward", s.mean_reward},
          {"reward_terms",
           {{"latency", s.mean_terms.latency},
            {"slo", s.mean_terms.slo},
            {"drops", s.mean_terms.drops},
            {"quality", s.mean_terms.quality},
            {"migration", s.mean_terms.migration},
            {"capacity", s.mean_terms.capacity}}}};
}

json SeriesJson(const std::string& name, const Summary& s) {
  return {{"name", name},
          {"step", s.step},
          {"latency_us", s.latency_us},
          {"measured_us", s.measured_us},
          {"drop_rate", s.drop_rate_series},
          {"capacity_factor", s.capacity_factor},
          {"top_k", s.top_k},
          {"noise_std", s.noise_std},
          {"max_abs_bias", s.max_abs_bias},
          {"reward", s.reward}};
}

bool Wants(const std::string& list, const std::string& name) {
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == name) return true;
  }
  return false;
}

void ClosedLoop(const BenchFlags& f) {
  if (!f.plot.empty() && !IsFigurePath(f.plot)) {
    Fail(Status::InvalidArgument("--plot " + f.plot + ": the file must end in .png or .svg"));
  }
  Result<fs::path> configs = ConfigsDir(f.configs_dir);
  if (!configs.ok()) Fail(configs.status());
  BenchSetup setup;
  Result<std::string> engine = FindBinary(f.bin_dir, "moe-engine");
  if (!engine.ok()) Fail(engine.status());
  Result<std::string> daemon = FindBinary(f.bin_dir, "moectld");
  if (!daemon.ok()) Fail(daemon.status());
  setup.engine_bin = *engine;
  setup.moectld_bin = *daemon;
  fs::path scenario = *configs / "scenarios" / (f.scenario + ".toml");
  if (!fs::exists(scenario)) scenario = f.scenario;
  if (!fs::exists(scenario)) {
    Fail(Status::NotFound(fmt::format("no scenario {} (neither {}/scenarios/{}.toml nor a file)",
                                      f.scenario, configs->string(), f.scenario)));
  }
  const std::string name = scenario.stem().string();
  setup.scenario = fs::absolute(scenario).string();
  setup.engine_config = fs::absolute(f.engine_config.empty() ? *configs / "bench" / "engine.toml"
                                                             : fs::path(f.engine_config))
                            .string();
  if (!f.model.empty()) setup.model_preset = fs::absolute(f.model).string();
  setup.out_dir = fs::absolute(f.out_dir.empty() ? fs::path("build") / "closed-loop" / name
                                                 : fs::path(f.out_dir))
                      .string();
  setup.steps = f.steps;
  setup.warmup_steps = f.warmup_steps;
  setup.step_interval_ms = f.step_interval_ms;
  setup.wall_clock = f.wall_clock;
  setup.cadence_ms = f.cadence_ms;
  setup.capacity_scope = f.capacity_scope;
  setup.react_drop_rate = f.react_drop_rate;

  KnobPoint base;
  Result<ModelShape> shape = ReadShape(setup, &base);
  if (!shape.ok()) Fail(shape.status());
  Result<bool> replay = ScenarioReplays(setup.scenario);
  if (!replay.ok()) Fail(replay.status());
  const fs::path shipped = *configs / "policies" / "default.toml";
  Result<policies::RewardParams> reward = ReadReward(shipped);
  if (!reward.ok()) Fail(reward.status());

  std::cerr << fmt::format(
      "bench: closed-loop on {} ({} steps, {} layers x {} experts, top-{}, {} devices{}) into {}\n",
      name, f.steps, shape->num_layers, shape->num_experts, shape->top_k, shape->num_devices,
      *replay ? ", replay" : "", setup.out_dir);

  // The cost model is fitted on a calibration run of its own, before the
  // contenders: the static default's knobs, unlimited capacity, over a range
  // of token counts (WriteCalibrationScenario).
  std::error_code ec;
  fs::create_directories(setup.out_dir, ec);
  BenchSetup calibration = setup;
  calibration.scenario = (fs::path(setup.out_dir) / "calibration.toml").string();
  calibration.steps = kCalibrationLevels * kCalibrationHold;
  if (Status s = WriteCalibrationScenario(setup, calibration.scenario); !s.ok()) Fail(s);
  KnobPoint unlimited = base;
  unlimited.capacity_factor = 0;
  Result<RunData> calibrated = RunContender(calibration,
                                            RunSpec{"calibration",
                                                    "calibration",
                                                    unlimited,
                                                    (*configs / "bench" / "static.toml").string(),
                                                    {}},
                                            *shape, std::cerr);
  if (!calibrated.ok()) Fail(calibrated.status().WithContext("the cost model's calibration run"));

  Result<policies::CostModel> model = FitCostModel({&*calibrated}, *shape);
  if (!model.ok()) Fail(model.status());
  // The controller prices with the same model unless asked to fit its own:
  // then its decisions move with how loaded the machine is.
  if (!f.online_cost_model) setup.controller_cost_model = *model;

  std::vector<std::unique_ptr<RunData>> runs;
  auto run = [&](const std::string& contender, const KnobPoint& knobs, const fs::path& policies,
                 std::map<std::string, int64_t> overrides = {}) -> RunData* {
    RunSpec spec{contender, Label(contender, knobs), knobs, policies.string(),
                 std::move(overrides)};
    Result<RunData> data = RunContender(setup, spec, *shape, std::cerr);
    if (!data.ok()) Fail(data.status().WithContext("contender " + spec.label));
    runs.push_back(std::make_unique<RunData>(std::move(*data)));
    return runs.back().get();
  };
  const fs::path static_policies = *configs / "bench" / "static.toml";
  RunData* default_run = run("static_default", base, static_policies);
  // What serving engines run by default: no capacity limit, every token
  // served at the model's K (the static default's other knobs).
  RunData* dropless_run = nullptr;
  if (Wants(f.contenders, "dropless") && base.capacity_factor != 0) {
    KnobPoint k = base;
    k.capacity_factor = 0;
    dropless_run = run("static_dropless", k, static_policies);
  }
  // Unlimited capacity is a fixed setting too: the oracle considers it.
  std::vector<RunData*> grid = {default_run};
  if (dropless_run != nullptr) grid.push_back(dropless_run);
  const bool want_oracle = Wants(f.contenders, "oracle");
  if (want_oracle) {
    for (double cf : f.grid) {
      if (std::abs(cf - base.capacity_factor) < 1e-9) continue;
      KnobPoint k = base;
      k.capacity_factor = cf;
      grid.push_back(run("oracle_grid", k, static_policies));
    }
  }
  std::vector<std::pair<std::string, RunData*>> dynamic;
  if (Wants(f.contenders, "dynamic_capacity")) {
    dynamic.emplace_back("dynamic_capacity", run("dynamic_capacity", base,
                                                 *configs / "bench" / "dynamic_capacity.toml"));
  }
  if (Wants(f.contenders, "expert_bias")) {
    dynamic.emplace_back("expert_bias",
                         run("expert_bias", base, *configs / "bench" / "expert_bias.toml"));
  }
  if (Wants(f.contenders, "periodic_eplb")) {
    // Every sixth of the run, within the controller's 32-step window (the
    // steps it can count under the placement in force).
    const int64_t period = std::clamp<int64_t>(static_cast<int64_t>(f.steps / 6), 8, 32);
    dynamic.emplace_back("periodic_eplb",
                         run("periodic_eplb", base, *configs / "bench" / "periodic_eplb.toml",
                             {{"eplb.period_steps", period}}));
  }
  if (Wants(f.contenders, "moectl")) dynamic.emplace_back("moectl", run("moectl", base, shipped));

  // The oracle: the best fixed setting of the capacity-factor grid, then K
  // and noise tried at that capacity factor (coordinate search).
  Result<DeviceSlowdowns> slowdowns = ScenarioSlowdowns(setup.scenario);
  if (!slowdowns.ok()) Fail(slowdowns.status());
  auto summarise = [&](const RunData& r) {
    return Summarise(r, *shape, *model, *reward, *slowdowns);
  };
  json grid_json = json::array();
  RunData* oracle = default_run;
  double oracle_reward = summarise(*default_run).mean_reward;
  auto consider = [&](RunData* r) {
    const Summary s = summarise(*r);
    grid_json.push_back({{"label", r->label},
                         {"capacity_factor", r->start.capacity_factor},
                         {"top_k", r->start.top_k},
                         {"noise_std", r->start.noise_std},
                         {"mean_reward", s.mean_reward},
                         {"drop_rate", s.drop_rate},
                         {"p99_latency_us", s.p99_latency_us}});
    if (s.mean_reward > oracle_reward) {
      oracle_reward = s.mean_reward;
      oracle = r;
    }
  };
  for (RunData* r : grid)
    consider(r);
  if (want_oracle) {
    const KnobPoint best = oracle->start;
    if (best.top_k > 1) {
      KnobPoint k = best;
      k.top_k = best.top_k - 1;
      consider(run("oracle_grid", k, static_policies));
    }
    if (!*replay) {
      KnobPoint k = best;
      k.noise_std = 0.05;
      consider(run("oracle_grid", k, static_policies));
    }
  }

  json contenders = json::array();
  json series = json::array();
  std::map<std::string, Summary> by_name;
  auto add = [&](const std::string& cname, const RunData& r) {
    const Summary s = summarise(r);
    json j = SummaryJson(s);
    j["name"] = cname;
    j["run"] = r.label;
    j["start"] = {{"capacity_factor", r.start.capacity_factor},
                  {"top_k", r.start.top_k},
                  {"noise_std", r.start.noise_std}};
    j["decisions"] = r.decisions;
    j["wall_s"] = r.wall_s;
    contenders.push_back(std::move(j));
    series.push_back(SeriesJson(cname, s));
    by_name[cname] = s;
  };
  add("static_default", *default_run);
  if (dropless_run != nullptr) add("static_dropless", *dropless_run);
  if (want_oracle) add("static_oracle", *oracle);
  for (const auto& [cname, r] : dynamic)
    add(cname, *r);

  json verdict = json::object();
  if (by_name.count("moectl")) {
    const Summary& m = by_name["moectl"];
    std::string best_baseline;
    double best = -1e300;
    for (const char* b : {"static_default", "dynamic_capacity", "expert_bias", "periodic_eplb"}) {
      if (by_name.count(b) && by_name[b].mean_reward > best) {
        best = by_name[b].mean_reward;
        best_baseline = b;
      }
    }
    verdict["best_single_mechanism"] = best_baseline;
    verdict["moectl_beats_single_mechanisms"] = m.mean_reward > best;
    verdict["moectl_vs_best_single_mechanism_relative"] =
        best != 0 ? (m.mean_reward - best) / std::abs(best) : 0.0;
    // The static default drops what does not fit, so its p99 is that of less
    // work; the oracle's is the p99 of a fixed setting that serves the tokens.
    verdict["moectl_p99_below_static_default"] =
        m.p99_latency_us < by_name["static_default"].p99_latency_us;
    verdict["static_default_drop_rate"] = by_name["static_default"].drop_rate;
    if (by_name.count("static_dropless")) {
      // The serving engines' default serves every token: the p99 to beat at
      // (nearly) no drops.
      const Summary& d = by_name["static_dropless"];
      verdict["moectl_p99_below_static_dropless"] = m.p99_latency_us < d.p99_latency_us;
      verdict["moectl_p99_vs_static_dropless"] =
          d.p99_latency_us > 0 ? m.p99_latency_us / d.p99_latency_us : 0.0;
      verdict["moectl_beats_static_dropless"] = m.mean_reward > d.mean_reward;
    }
    if (by_name.count("static_oracle")) {
      verdict["moectl_p99_below_static_oracle"] =
          m.p99_latency_us < by_name["static_oracle"].p99_latency_us;
      const double o = by_name["static_oracle"].mean_reward;
      verdict["moectl_minus_oracle_reward"] = m.mean_reward - o;
      verdict["moectl_vs_oracle_relative"] = o != 0 ? (m.mean_reward - o) / std::abs(o) : 0.0;
      verdict["moectl_beats_oracle"] = m.mean_reward > o;
    }
  }

  json doc = {
      {"benchmark", "closed-loop"},
      {"scenario", name},
      {"scenario_file", setup.scenario},
      {"model_preset", setup.model_preset},
      {"steps", f.steps},
      {"warmup_steps", f.warmup_steps},
      {"step_interval_ms", f.step_interval_ms},
      {"clock", f.wall_clock ? "wall" : "lockstep"},
      {"cadence_ms", f.cadence_ms},
      {"capacity_scope", f.capacity_scope},
      {"react_drop_rate", f.react_drop_rate},
      {"replay", *replay},
      {"fixed_knobs", *replay ? json::array({"expert_bias", "noise_std"}) : json::array()},
      // A straggler: each device's slowdown from a step on, priced by the
      // cost model for every contender.
      {"device_slowdown",
       [&] {
         json j = json::object();
         for (const auto& [step, factors] : *slowdowns)
           j[std::to_string(step)] = factors;
         return j;
       }()},
      {"model",
       {{"num_layers", shape->num_layers},
        {"num_experts", shape->num_experts},
        {"num_replicas", shape->num_replicas},
        {"num_devices", shape->num_devices},
        {"top_k", shape->top_k}}},
      {"cost_model",
       {{"device_fixed_us", model->device.fixed_us},
        {"device_per_row_us", model->device.per_row_us},
        {"overhead_fixed_us", model->overhead.fixed_us},
        {"overhead_per_token_us", model->overhead.per_row_us},
        {"controller", f.online_cost_model
                           ? "fitted online from each run's measured times (--online-cost-model)"
                           : "this model, fixed ([cost_model] source = \"fixed\"; stragglers "
                             "measured against it)"},
        {"fit", fmt::format("a calibration run before the contenders ({} steps of token count "
                            "from 0.25x to 3x the scenario's, capacity unlimited): least "
                            "squares of binned medians of each layer's measured slowest-device "
                            "time on its most loaded device's rows",
                            kCalibrationLevels)}}},
      {"reward",
       {{"from", shipped.string()},
        {"latency_weight", reward->latency_weight},
        {"slo_us", reward->slo_us},
        {"slo_weight", reward->slo_weight},
        {"drop_weight", reward->drop_weight},
        {"quality_weight", reward->quality_weight},
        {"migration_weight", reward->migration_weight},
        {"capacity_weight", reward->capacity_weight}}},
      {"contenders", contenders},
      {"oracle_grid", grid_json},
      {"verdict", verdict}};

  if (!f.plot.empty()) {
    // One panel per series, a line per contender (matplotlib_figure.h).
    const std::vector<std::pair<std::string, std::string>> panels = {
        {"latency_us", "critical path, cost model (us)"},
        {"measured_us", "step time, measured (us)"},
        {"drop_rate", "drop rate"},
        {"capacity_factor", "capacity factor"},
        {"top_k", "top-k"},
        {"max_abs_bias", "max |expert bias|"}};
    json figure_panels = json::array();
    for (const auto& [key, label] : panels) {
      json lines = json::array();
      for (const json& c : series)
        lines.push_back({{"label", c["name"]}, {"x", c["step"]}, {"y", c[key]}});
      figure_panels.push_back({{"ylabel", label}, {"lines", std::move(lines)}});
    }
    const json figure = {{"title", "closed-loop benchmark: " + name},
                         {"xlabel", "engine step"},
                         {"panels", std::move(figure_panels)},
                         {"markers", json::array()}};
    if (Status drawn = DrawFigure(figure, f.plot); !drawn.ok()) Fail(drawn);
    std::cerr << "bench: wrote " << f.plot << "\n";
  }
  if (f.json) {
    std::cout << doc.dump(1) << "\n";
    return;
  }
  TableData table;
  table.columns = {"contender", "run",     "p50_us",     "p99_us",  "meas_p50_us", "tok/s",
                   "drop_rate", "quality", "migrated_B", "applied", "rolled_back", "reward"};
  for (const json& c : contenders) {
    table.rows.push_back({c["name"].get<std::string>(), c["run"].get<std::string>(),
                          c["p50_latency_us"].get<double>(), c["p99_latency_us"].get<double>(),
                          c["p50_measured_step_us"].get<double>(), c["tokens_per_s"].get<double>(),
                          c["drop_rate"].get<double>(), c["quality_error"].get<double>(),
                          c["bytes_migrated"].get<double>(),
                          static_cast<int64_t>(c["decisions_applied"].get<uint64_t>()),
                          static_cast<int64_t>(c["rolled_back"].get<uint64_t>()),
                          c["mean_reward"].get<double>()});
  }
  Render(table, Format::kTable, std::cout);
  std::cout << "verdict: " << verdict.dump() << "\n";
}

}  // namespace

void AddBenchCommand(CLI::App& app) {
  CLI::App* bench =
      app.add_subcommand("bench", "benchmarks that run the engine and the controller");
  bench->require_subcommand(1);
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cl = bench->add_subcommand(
      "closed-loop",
      "every contender (static default, static oracle, dynamic capacity, expert bias, periodic "
      "EPLB, moectl) on the same token stream, real moe-engine + moectld over loopback");
  cl->add_option("--scenario", flags->scenario, "built-in scenario name or scenario TOML file")
      ->required();
  cl->add_option("--model", flags->model, "model preset for the engine (a replay's shape)");
  cl->add_option("--steps", flags->steps, "engine steps per run")->capture_default_str();
  cl->add_flag("--json", flags->json, "print one JSON document instead of a table");
  cl->add_option("--plot", flags->plot, "write latency, drop rate and knobs over time (PNG/SVG)");
  cl->add_option("--engine-config", flags->engine_config,
                 "engine TOML (default configs/bench/engine.toml)");
  cl->add_option("--configs", flags->configs_dir, "the configs/ folder (default: found)");
  cl->add_option("--bin-dir", flags->bin_dir, "folder of moe-engine and moectld");
  cl->add_option("--out", flags->out_dir, "run folders (default build/closed-loop/SCENARIO)");
  cl->add_option("--contenders", flags->contenders,
                 "comma list of default,dropless,oracle,dynamic_capacity,expert_bias,periodic_eplb,"
                 "moectl")
      ->capture_default_str();
  cl->add_option("--grid", flags->grid, "oracle's capacity factors")->delimiter(',');
  cl->add_option("--step-interval-ms", flags->step_interval_ms,
                 "a step's length on the controller's step clock (with --wall-clock: the "
                 "engine's pacing)")
      ->capture_default_str();
  cl->add_flag("--wall-clock", flags->wall_clock,
               "controller on the wall clock, engine paced, no lockstep (the verdict moves with "
               "the machine's speed)");
  cl->add_flag("--online-cost-model", flags->online_cost_model,
               "the controller fits its cost model from each run's measured times, as shipped, "
               "instead of pricing with the calibration's (its decisions then move with the "
               "machine's load)");
  cl->add_option("--cadence-ms", flags->cadence_ms, "controller cadence")->capture_default_str();
  cl->add_option("--warmup-steps", flags->warmup_steps,
                 "steps every contender runs first on the same tokens, not counted")
      ->capture_default_str();
  cl->add_option("--capacity-scope", flags->capacity_scope,
                 "every contender's capacity: per replica slot or per logical expert")
      ->check(CLI::IsMember({"slot", "expert"}))
      ->capture_default_str();
  cl->add_option(
        "--react-drop-rate", flags->react_drop_rate,
        "controller: a step dropping this much runs the pipeline at once (0 = cadence only)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cl->callback([flags] { ClosedLoop(*flags); });
}

}  // namespace moe::cli

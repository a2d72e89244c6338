#include "bench_run.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "moe/storage/reader.h"

extern char** environ;

namespace moe::cli::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Result<toml::table> ParseToml(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(fmt::format("{}: {}", path, e.description()));
  }
}

// A child process with stdout and stderr in a log file; killed if still
// running when destroyed.
class Child {
 public:
  static Result<Child> Start(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      return Status::Unavailable(fmt::format("cannot start {}: {}", argv[0], std::strerror(rc)));
    }
    return Child(pid);
  }
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }
  // The exit status (128 + signal when killed), or nullopt after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::nullopt;
  }

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& text, size_t n = 1500) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

// controller.toml's [cost_model] for a given model (none: the online fit).
// Printed with every digit, so the controller prices with the bench's model.
std::string CostModelToml(const std::optional<policies::CostModel>& model) {
  if (!model) return "";
  return fmt::format(
      "[cost_model]\nsource = \"fixed\"\ndevice_fixed_us = {:.17g}\ndevice_per_row_us = "
      "{:.17g}\noverhead_fixed_us = {:.17g}\noverhead_per_token_us = {:.17g}\n",
      model->device.fixed_us, model->device.per_row_us, model->overhead.fixed_us,
      model->overhead.per_row_us);
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::Internal("cannot write " + path);
  return Status::Ok();
}

}  // namespace

Result<ModelShape> ReadShape(const BenchSetup& setup, KnobPoint* knobs) {
  MOE_ASSIGN_OR_RETURN(toml::table config, ParseToml(setup.engine_config));
  std::vector<toml::table> layers = {config};
  if (!setup.model_preset.empty()) {
    MOE_ASSIGN_OR_RETURN(toml::table preset, ParseToml(setup.model_preset));
    layers.push_back(std::move(preset));
  }
  auto get = [&](const char* table, const char* key, double fallback) {
    double v = fallback;
    for (const toml::table& t : layers) {
      if (auto node = t[table][key].value<double>()) v = *node;
    }
    return v;
  };
  ModelShape s;
  s.num_layers = static_cast<uint32_t>(get("model", "num_layers", 4));
  s.num_experts = static_cast<uint32_t>(get("model", "num_experts", 16));
  s.hidden = static_cast<uint32_t>(get("model", "hidden", 256));
  s.expert_ffn = static_cast<uint32_t>(get("model", "expert_ffn", 256));
  s.num_devices = std::max<uint32_t>(1, static_cast<uint32_t>(get("parallel", "num_devices", 1)));
  s.num_replicas = static_cast<uint32_t>(get("parallel", "num_replicas", 0));
  if (s.num_replicas == 0) s.num_replicas = s.num_experts;
  s.inter_node_gbps = get("parallel", "inter_node_gbps", 50.0);
  knobs->top_k = static_cast<uint32_t>(get("knobs", "top_k", 2));
  knobs->capacity_factor = get("knobs", "capacity_factor", 1.0);
  knobs->noise_std = get("knobs", "noise_std", 0.0);
  s.top_k = knobs->top_k;
  return s;
}

Result<bool> ScenarioReplays(const std::string& scenario) {
  MOE_ASSIGN_OR_RETURN(toml::table t, ParseToml(scenario));
  return t.contains("trace");
}

Result<DeviceSlowdowns> ScenarioSlowdowns(const std::string& scenario) {
  MOE_ASSIGN_OR_RETURN(toml::table t, ParseToml(scenario));
  DeviceSlowdowns out;
  const toml::array* frames = t["keyframe"].as_array();
  if (frames == nullptr) return out;
  for (const toml::node& node : *frames) {
    const toml::table* kf = node.as_table();
    if (kf == nullptr) continue;
    const toml::array* factors = (*kf)["device_slowdown"].as_array();
    const std::optional<int64_t> step = (*kf)["step"].value<int64_t>();
    if (factors == nullptr || !step) continue;
    std::vector<double> f;
    for (const toml::node& x : *factors) {
      const std::optional<double> v = x.value<double>();
      if (!v || !(*v >= 1)) {
        return Status::InvalidArgument(
            fmt::format("{}: keyframe at step {}: device_slowdown entries must be numbers >= 1",
                        scenario, *step));
      }
      f.push_back(*v);
    }
    out[static_cast<uint64_t>(std::max<int64_t>(0, *step))] = std::move(f);
  }
  // Nothing slower than 1 anywhere: nothing to model.
  for (const auto& [step, f] : out)
    for (double x : f)
      if (x != 1.0) return out;
  return DeviceSlowdowns{};
}

Status WriteCalibrationScenario(const BenchSetup& setup, const std::string& path) {
  MOE_ASSIGN_OR_RETURN(toml::table base, ParseToml(setup.scenario));
  const bool replay = base.contains("trace");
  toml::table out;
  out.insert("name", "calibration");
  out.insert("description", "the cost model's calibration: token count in steps");
  const int64_t tokens = replay ? 256 : base["tokens_per_step"].value_or(int64_t{256});
  const int64_t num_domains = replay ? 4 : base["num_domains"].value_or(int64_t{4});
  out.insert("seed", replay ? int64_t{7} : base["seed"].value_or(int64_t{7}));
  out.insert("num_domains", num_domains);
  out.insert("domain_scale", replay ? 1.0 : base["domain_scale"].value_or(1.0));
  out.insert("noise_scale", replay ? 0.8 : base["noise_scale"].value_or(0.8));
  out.insert("tokens_per_step", tokens);
  // The scenario's first mix (a skew, when it has one, spreads the rows more).
  toml::array mix;
  const toml::array* frames = replay ? nullptr : base["keyframe"].as_array();
  const toml::table* first =
      frames != nullptr && !frames->empty() ? frames->get(0)->as_table() : nullptr;
  if (first != nullptr && first->contains("mix")) {
    mix = *(*first)["mix"].as_array();
  } else {
    for (int64_t d = 0; d < num_domains; ++d)
      mix.push_back(1.0);
  }
  constexpr std::array<double, kCalibrationLevels> kLevels = {0.25, 0.5, 1.0, 1.5, 2.0, 3.0};
  toml::array keyframes;
  for (int i = 0; i < kCalibrationLevels; ++i) {
    toml::table kf;
    // The first level also covers the warm-up, which is not counted.
    kf.insert("step", i == 0 ? int64_t{0}
                             : static_cast<int64_t>(setup.warmup_steps + i * kCalibrationHold));
    kf.insert("mix", mix);
    kf.insert("tokens_per_step",
              std::max<int64_t>(1, static_cast<int64_t>(std::lround(tokens * kLevels[i]))));
    keyframes.push_back(std::move(kf));
  }
  out.insert("keyframe", std::move(keyframes));
  std::stringstream text;
  text << out << "\n";
  return WriteText(path, text.str());
}

Result<RunData> RunContender(const BenchSetup& setup, const RunSpec& spec, const ModelShape& shape,
                             std::ostream& progress) {
  const std::string dir = (fs::path(setup.out_dir) / spec.label).string();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) return Status::Internal(fmt::format("cannot create {}: {}", dir, ec.message()));

  // The policies file, with the run's overrides.
  MOE_ASSIGN_OR_RETURN(toml::table policies, ParseToml(spec.policies_file));
  for (const auto& [key, value] : spec.overrides) {
    const size_t dot = key.find('.');
    const std::string table = key.substr(0, dot), field = key.substr(dot + 1);
    if (!policies.contains(table)) policies.insert(table, toml::table{});
    policies[table].as_table()->insert_or_assign(field, value);
  }
  std::stringstream policies_text;
  policies_text << policies << "\n";
  MOE_RETURN_IF_ERROR(WriteText(dir + "/policies.toml", policies_text.str()));

  // The engine's starting knobs as a preset over the scenario's model.
  toml::table preset;
  if (!setup.model_preset.empty()) {
    MOE_ASSIGN_OR_RETURN(preset, ParseToml(setup.model_preset));
  }
  if (!preset.contains("knobs")) preset.insert("knobs", toml::table{});
  toml::table& knobs = *preset["knobs"].as_table();
  knobs.insert_or_assign("top_k", static_cast<int64_t>(spec.knobs.top_k));
  knobs.insert_or_assign("capacity_factor", spec.knobs.capacity_factor);
  knobs.insert_or_assign("noise_std", spec.knobs.noise_std);
  knobs.insert_or_assign("capacity_scope", setup.capacity_scope);
  // Quality is judged against the model's K, whatever K the run starts at.
  if (!preset.contains("model")) preset.insert("model", toml::table{});
  preset["model"].as_table()->insert_or_assign("reference_top_k",
                                               static_cast<int64_t>(shape.top_k));
  std::stringstream preset_text;
  preset_text << preset << "\n";
  MOE_RETURN_IF_ERROR(WriteText(dir + "/preset.toml", preset_text.str()));

  const std::string db = dir + "/moectl.db";
  MOE_RETURN_IF_ERROR(WriteText(
      dir + "/controller.toml",
      fmt::format(
          "log_level = \"info\"\ncadence = {}\nreact_drop_rate = {}\nack_timeout = \"2s\"\n"
          "outcome_steps = 8\nwindow_steps = 32\nprogress_interval = \"0s\"\n"
          "policies_file = \"policies.toml\"\nstep_clock = \"{}ms\"\n"
          "[transport]\ntelemetry = \"tcp://127.0.0.1:*\"\ncommands = \"tcp://127.0.0.1:*\"\n"
          "[storage]\npath = \"{}\"\nflush_interval = \"50ms\"\nraw_retention = \"0s\"\n{}",
          setup.cadence_ms, setup.react_drop_rate, setup.wall_clock ? 0 : setup.step_interval_ms,
          db, CostModelToml(setup.controller_cost_model))));

  const auto started = Clock::now();
  const std::string daemon_log = dir + "/moectld.log";
  MOE_ASSIGN_OR_RETURN(
      Child daemon,
      Child::Start({setup.moectld_bin, "--config", dir + "/controller.toml"}, daemon_log));
  // The daemon binds wildcard ports and names them in its log.
  const std::regex serving(R"(serving: telemetry (tcp://\S+) commands (tcp://\S+))");
  std::smatch m;
  std::string telemetry, commands;
  for (auto deadline = Clock::now() + std::chrono::seconds(15); Clock::now() < deadline;) {
    std::string log = ReadText(daemon_log);
    if (std::regex_search(log, m, serving)) {
      telemetry = m[1];
      commands = m[2];
      break;
    }
    if (daemon.Wait(std::chrono::milliseconds(20))) {
      return Status::Unavailable("moectld exited at start: " + Tail(ReadText(daemon_log)));
    }
  }
  if (telemetry.empty())
    return Status::Unavailable("moectld did not start: " + Tail(ReadText(daemon_log)));

  const std::string engine_log = dir + "/engine.log";
  const std::vector<std::pair<std::string, std::string>> engine_flags = {
      {"--config", setup.engine_config},
      {"--model", dir + "/preset.toml"},
      {"--scenario", setup.scenario},
      {"--engine-id", "engine-0"},
      {"--telemetry", telemetry},
      {"--commands", commands},
      {"--steps", std::to_string(setup.steps + setup.warmup_steps)},
      {"--log-level", "warn"},
  };
  std::vector<std::string> engine_args = {setup.engine_bin};
  for (const auto& [flag, value] : engine_flags) {
    engine_args.push_back(flag);
    engine_args.push_back(value);
  }
  if (setup.wall_clock) {
    engine_args.insert(engine_args.end(),
                       {"--step-interval-ms", std::to_string(setup.step_interval_ms)});
  } else {
    // Lockstep: the controller's step clock paces; the engine needs no sleep.
    engine_args.insert(engine_args.end(), {"--step-interval-ms", "0", "--await-controller"});
  }
  MOE_ASSIGN_OR_RETURN(Child engine, Child::Start(engine_args, engine_log));
  const auto limit = std::chrono::milliseconds(60'000 + 2'000 * static_cast<int64_t>(setup.steps));
  std::optional<int> engine_rc = engine.Wait(limit);
  if (!engine_rc)
    return Status::Timeout("moe-engine did not finish: " + Tail(ReadText(engine_log)));
  if (*engine_rc != 0) {
    return Status::Internal(
        fmt::format("moe-engine exited {}: {}", *engine_rc, Tail(ReadText(engine_log))));
  }
  // Let the daemon take the last steps in, then stop it (it commits on SIGTERM).
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  daemon.Signal(SIGTERM);
  std::optional<int> daemon_rc = daemon.Wait(std::chrono::seconds(20));
  if (!daemon_rc || *daemon_rc != 0) {
    return Status::Internal("moectld did not stop cleanly: " + Tail(ReadText(daemon_log)));
  }
  const double wall_s = std::chrono::duration<double>(Clock::now() - started).count();

  MOE_ASSIGN_OR_RETURN(std::unique_ptr<storage::Reader> reader, storage::Reader::Open(db));
  storage::HistoryQuery history;
  history.engine_id = "engine-0";
  history.limit = 0;
  history.include_rollups = false;
  MOE_ASSIGN_OR_RETURN(std::vector<storage::StepRow> steps, reader->History(history));
  MOE_ASSIGN_OR_RETURN(std::vector<storage::StepLoadRow> loads, reader->StepLoads("engine-0"));
  MOE_ASSIGN_OR_RETURN(std::vector<storage::EpochRow> epochs, reader->Epochs("engine-0", {}));
  storage::DecisionQuery dq;
  dq.engine_id = "engine-0";
  dq.limit = 0;
  MOE_ASSIGN_OR_RETURN(std::vector<storage::DecisionRow> decisions, reader->Decisions(dq));
  MOE_ASSIGN_OR_RETURN(
      RunData run, BuildRun(spec.contender, spec.knobs, shape, steps, loads, epochs, decisions));
  run.label = spec.label;
  run.wall_s = wall_s;
  std::erase_if(run.steps, [&](const StepData& s) { return s.step < setup.warmup_steps; });
  if (run.steps.empty()) return Status::Internal("no steps reached the database " + db);
  progress << fmt::format("bench: {:<28} {} steps, {} decisions applied, {:.1f} s\n", spec.label,
                          run.steps.size(), run.decisions_applied, wall_s)
           << std::flush;
  return run;
}

}  // namespace moe::cli::bench

// controller_bench: the controller's own costs at a real model's shape
// (DeepSeek-V3: 61 MoE layers x 256 experts, top-8, 288 slots on 32 devices).
//
//   controller_bench [--quick] [--config FILE] [--cycles N] [--engines N]
//                    [--rates R,...] [--seconds S] [--memory-engines N,...]
//                    [--moectld PATH] [--only cycle|ingest|memory]
//
// Prints one JSON document on stdout (progress on stderr):
//   cycle:  one control cycle, snapshot to command: the wall and CPU time of a
//           Controller::Poll that finds no message waiting and runs the policy
//           pipeline of one engine (state estimate, every enabled policy of
//           configs/policies/default.toml, the guard, the audit rows, the
//           command on the wire). An in-process Controller on a fake clock is
//           fed over ZeroMQ by a synthetic engine that runs `steps_per_cycle`
//           steps between cycles and applies and acks every command, so the
//           cycles cover the pipeline's paths as they come (a command sent,
//           only rejections, a decision in flight). p50/p99 per kind, and
//           per phase of the pipeline (Controller::last_cycle: snapshot,
//           learner, each policy, guard, prediction, audit JSON, the commit
//           of the decision row, the send), over all cycles and over those
//           that sent a command; snapshot_to_command: from the snapshot to
//           the command on the wire (the whole pipeline where none was sent).
//   ingest: `--engines` synthetic engines on their own threads publish at the
//           offered rate (all engines together) over ZeroMQ on loopback into
//           one in-process Controller with its SQLite store (default
//           settings, policies on); reports steps/s received and stored, and
//           what was lost: engine-side drops, sequence gaps, malformed
//           messages, and steps sent but not in the database (counted with
//           the Reader after the store is closed).
//   memory: a moectld process (the daemon as shipped) on a temporary
//           database; engines join one batch at a time, each fills its window;
//           the daemon's resident set after each batch, and the growth per
//           engine.
// Without --config the repository's configs/controller.toml (and the policies
// file it names) is used; endpoints and the database are temporary.

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>
#include <thread>

#include "controller_bench.h"
#include "controller_config.h"
#include "moe/common/allocator.h"
#include "moe/common/clock.h"
#include "moe/common/logging.h"
#include "moe/controller/controller.h"
#include "moe/policies/bias_policy.h"
#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/replication_policy.h"
#include "moe/storage/reader.h"
#include "moe/telemetry/transport.h"

namespace moe::bench {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

constexpr int64_t kNanosPerMilli = 1'000'000;

// A clock whose time of day moves only when the benchmark says so.
class BenchClock final : public Clock {
 public:
  int64_t NowNanos() const override { return now_.load(); }
  // Real time: the planner's search deadline is a compute budget.
  int64_t MonotonicNanos() const override { return SystemClock()->MonotonicNanos(); }
  void Set(int64_t ns) { now_ = ns; }
  void Advance(int64_t ns) { now_ += ns; }

 private:
  std::atomic<int64_t> now_{1'790'000'000'000'000'000};
};

double ThreadCpuMicros() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

json Distribution(const std::vector<double>& us) {
  if (us.empty()) return json({{"count", 0}});
  double sum = 0;
  for (double x : us)
    sum += x;
  return {{"count", us.size()},
          {"p50_us", Percentile(us, 50)},
          {"p90_us", Percentile(us, 90)},
          {"p99_us", Percentile(us, 99)},
          {"max_us", *std::max_element(us.begin(), us.end())},
          {"mean_us", sum / static_cast<double>(us.size())}};
}

}  // namespace

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout,
             std::chrono::microseconds every) {
  auto deadline = SteadyClock::now() + timeout;
  while (!done()) {
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

// One call of each costly policy on a snapshot built from `num_steps`
// synthetic steps, timed alone: what a cycle that asks it pays.
json TimePolicies(const controller::ControllerOptions& o, const ModelShape& shape, int num_steps) {
  SyntheticEngine engine("policy-engine", shape, 7);
  policies::EngineSnapshot snapshot;
  snapshot.engine_id = "policy-engine";
  snapshot.num_experts = shape.num_experts;
  snapshot.num_replicas = shape.num_replicas;
  snapshot.num_devices = shape.num_devices;
  snapshot.steps_in_epoch = 64;
  snapshot.layers.resize(shape.num_layers);
  for (int s = 0; s < num_steps; ++s) {
    telemetry::StepRecord r = engine.NextStep(0);
    policies::StepDemand demand;
    demand.step = r.step;
    demand.tokens = shape.num_tokens;
    demand.all_to_all_us.assign(shape.num_layers, 40.0);
    for (uint32_t l = 0; l < shape.num_layers; ++l) {
      demand.layers.emplace_back(r.layers[l].expert_demand.begin(),
                                 r.layers[l].expert_demand.end());
    }
    snapshot.recent.push_back(std::move(demand));
    for (uint32_t l = 0; l < shape.num_layers; ++l) {
      policies::LayerEstimate& est = snapshot.layers[l];
      est.layer = l;
      est.expert_load.resize(shape.num_experts);
      est.expert_demand.resize(shape.num_experts);
      for (uint32_t e = 0; e < shape.num_experts; ++e) {
        est.expert_load[e] += r.layers[l].expert_tokens[e] / static_cast<double>(num_steps);
        est.expert_demand[e] += r.layers[l].expert_demand[e] / static_cast<double>(num_steps);
      }
    }
  }
  auto time_us = [](auto&& call) {
    const auto t0 = SteadyClock::now();
    bool proposed = call();
    return std::make_pair(
        std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count(), proposed);
  };
  auto [bias_us, bias_proposed] =
      time_us([&] { return policies::ProposeBias(snapshot, o.bias).has_value(); });
  auto [replication_us, replication_proposed] =
      time_us([&] { return policies::ProposeReplication(snapshot, o.replication).has_value(); });
  // The counterfactual capacity policy scores every candidate on the recent
  // steps' demand only with a calibrated cost model, which the synthetic
  // engine (no per-device times) never gives the cycle: timed here with one.
  snapshot.knobs.top_k = shape.top_k;
  snapshot.knobs.capacity_factor = 1.0;
  snapshot.reference_top_k = shape.top_k;
  snapshot.cost_model.device = {5.0, 0.05};
  snapshot.cost_model.overhead = {20.0, 0.01};
  snapshot.cost_model.calibrated = true;
  auto [counterfactual_us, counterfactual_proposed] = time_us([&] {
    return policies::ProposeCounterfactualCapacity(snapshot, o.counterfactual, o.reward)
        .has_value();
  });
  // The same with the replays moectld keeps at ingest (EngineState): each
  // step worked out once under the candidates, then priced in the cycle.
  std::vector<double> factors = o.counterfactual.candidates;
  factors.push_back(snapshot.knobs.capacity_factor);
  const auto replay_t0 = SteadyClock::now();
  for (const policies::StepDemand& step : snapshot.recent) {
    snapshot.capacity_replays.push_back(policies::ReplayCapacities(
        step, snapshot.knobs, snapshot.num_replicas, snapshot.num_devices, factors));
  }
  const double replay_per_step_us =
      std::chrono::duration<double, std::micro>(SteadyClock::now() - replay_t0).count() /
      std::max<size_t>(1, snapshot.recent.size());
  auto [replayed_us, replayed_proposed] = time_us([&] {
    return policies::ProposeCounterfactualCapacity(snapshot, o.counterfactual, o.reward)
        .has_value();
  });
  return {{"bias_us", bias_us},
          {"bias_proposed", bias_proposed},
          {"counterfactual_calibrated_us", counterfactual_us},
          {"counterfactual_proposed", counterfactual_proposed},
          {"counterfactual_with_replays_us", replayed_us},
          {"counterfactual_with_replays_proposed", replayed_proposed},
          {"capacity_replay_per_step_us", replay_per_step_us},
          {"counterfactual_steps", snapshot.recent.size()},
          {"replication_us", replication_us},
          {"replication_proposed", replication_proposed}};
}

Result<json> RunCycles(const controller::ControllerOptions& base, const ModelShape& shape,
                       const CycleOptions& options, const std::string& dir) {
  BenchClock clock;
  controller::ControllerOptions o = base;
  o.telemetry_endpoint = "tcp://127.0.0.1:*";
  o.command_endpoint = "tcp://127.0.0.1:*";
  o.db_path = dir + "/cycle.db";
  // The cadence tick is what is timed: a reaction to a dropping step (the
  // same pipeline) would run it inside the ingest polls instead.
  o.react_drop_rate = 0;
  o.progress_interval_ms = 0;
  MOE_ASSIGN_OR_RETURN(auto ctl, controller::Controller::Create(o, &clock));

  SyntheticEngine engine("cycle-engine", shape, 1);
  // Per-device times, as a real engine reports them: the cost model
  // calibrates and the counterfactual capacity policy runs in every cycle.
  engine.set_device_times(true);
  telemetry::EngineLinkOptions link_options;
  link_options.engine_id = "cycle-engine";
  link_options.telemetry_endpoint = ctl->telemetry_endpoint();
  link_options.command_endpoint = ctl->command_endpoint();
  link_options.linger = milliseconds(2000);
  MOE_ASSIGN_OR_RETURN(auto link, telemetry::EngineLink::Connect(link_options, engine.Hello()));

  // Polls (time frozen) until `done`: the cadence is never due inside.
  auto poll_until = [&](const std::function<bool()>& done) -> Status {
    for (int i = 0; i < 2000 && !done(); ++i)
      MOE_RETURN_IF_ERROR(ctl->Poll(milliseconds(5)));
    return done() ? Status::Ok()
                  : Status::Timeout("the controller did not receive what the engine sent");
  };
  MOE_RETURN_IF_ERROR(
      poll_until([&] { return ctl->stats().engines == 1 && ctl->stats().messages >= 2; }));

  const int64_t cadence_ns = o.cadence_ms * kNanosPerMilli;
  // Steps fill the cadence up to 1 ms before the tick, so no poll that waits
  // for them runs the pipeline; the timed poll then finds the tick due.
  const int64_t step_ns = (cadence_ns - kNanosPerMilli) / options.steps_per_cycle;
  int64_t tick = clock.NowNanos() + cadence_ns;
  uint64_t steps_sent = 0, acks_sent = 0, commands_seen = 0;

  std::vector<double> wall_all, cpu_all, wall_sent, cpu_sent, wall_rejected, wall_idle;
  // Snapshot to command: to the send in a cycle that sent one, else the
  // pipeline as a whole (Controller::last_cycle).
  std::vector<double> to_command;
  // Per phase of the pipeline (Controller::last_cycle), over every timed cycle
  // and over those that sent a command.
  std::map<std::string, std::vector<double>> phases_all, phases_sent;
  uint64_t sent_cycles = 0, rejected_cycles = 0, idle_cycles = 0;
  const int total = options.warmup_cycles + options.num_cycles;
  for (int c = 0; c < total; ++c) {
    // The engine: apply what arrived, ack it, run one cadence of steps.
    const uint64_t commands_sent = ctl->stats().commands_sent;
    std::vector<telemetry::Command> commands;
    bool got = WaitFor(
        [&] {
          auto polled = link->PollCommands();
          if (polled.ok()) {
            for (auto& cmd : *polled)
              commands.push_back(std::move(cmd));
          }
          return commands_seen + commands.size() >= commands_sent;
        },
        milliseconds(5000));
    if (!got) return Status::Timeout("commands sent by the controller did not arrive");
    commands_seen += commands.size();
    for (const telemetry::Command& cmd : commands) {
      MOE_RETURN_IF_ERROR(link->SendAck(engine.Apply(cmd, clock.NowNanos())));
      ++acks_sent;
    }
    for (int s = 0; s < options.steps_per_cycle; ++s) {
      clock.Advance(step_ns);
      MOE_RETURN_IF_ERROR(link->Publish(engine.NextStep(clock.NowNanos())));
      ++steps_sent;
    }
    MOE_RETURN_IF_ERROR(poll_until([&] {
      controller::ControllerStats st = ctl->stats();
      return st.steps >= steps_sent && st.acks >= acks_sent;
    }));

    // The cycle: nothing is waiting on the sockets, the tick is due.
    clock.Set(tick);
    tick += cadence_ns;
    const controller::ControllerStats before = ctl->stats();
    const double cpu0 = ThreadCpuMicros();
    const auto t0 = SteadyClock::now();
    MOE_RETURN_IF_ERROR(ctl->Poll(milliseconds(0)));
    const double wall = std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count();
    const double cpu = ThreadCpuMicros() - cpu0;
    const controller::ControllerStats after = ctl->stats();
    if (c < options.warmup_cycles) continue;
    const controller::CycleProfile profile = ctl->last_cycle();
    if (profile.engines_run != 1)
      return Status::Internal("the timed poll did not run the pipeline");
    const bool sent_one = after.commands_sent > before.commands_sent;
    auto note = [&](const std::string& name, double us) {
      phases_all[name].push_back(us);
      if (sent_one) phases_sent[name].push_back(us);
    };
    note("snapshot", profile.snapshot_us);
    note("learn", profile.learn_us);
    note("policies", profile.policies_us);
    for (const auto& [policy, us] : profile.policy_us)
      note("policy:" + policy, us);
    note("guard", profile.guard_us);
    note("prediction", profile.prediction_us);
    note("audit_json", profile.audit_us);
    note("commit", profile.commit_us);
    note("send", profile.send_us);
    note("other", profile.other_us);
    note("pipeline_total", profile.total_us);
    if (sent_one) note("to_command", profile.to_command_us);
    to_command.push_back(sent_one ? profile.to_command_us : profile.total_us);
    wall_all.push_back(wall);
    cpu_all.push_back(cpu);
    if (sent_one) {
      ++sent_cycles;
      wall_sent.push_back(wall);
      cpu_sent.push_back(cpu);
    } else if (after.decisions > before.decisions) {
      ++rejected_cycles;
      wall_rejected.push_back(wall);
    } else {
      ++idle_cycles;
      wall_idle.push_back(wall);
    }
  }
  const controller::ControllerStats end = ctl->stats();
  MOE_RETURN_IF_ERROR(ctl->Shutdown());
  link.reset();

  // What the cycles decided, from the audit trail.
  json by_policy = json::object();
  MOE_ASSIGN_OR_RETURN(auto reader, storage::Reader::Open(o.db_path));
  storage::DecisionQuery query;
  query.limit = 0;
  MOE_ASSIGN_OR_RETURN(std::vector<storage::DecisionRow> decisions, reader->Decisions(query));
  std::map<std::string, std::map<std::string, int>> counts;
  // Where each placement was judged on demand (JudgePlacement's reason): on
  // the plan's own snapshot, by the plan worker, or replayed in the cycle.
  uint64_t judged_on_plan = 0, judged_in_cycle = 0;
  for (const storage::DecisionRow& d : decisions) {
    ++counts[d.policy][d.verdict];
    if (d.knob != "phy2log") continue;
    if (d.verdict_reason.find("the window the plan was made from") != std::string::npos) {
      ++judged_on_plan;
    } else if (d.verdict_reason.find("the window's own demand") != std::string::npos) {
      ++judged_in_cycle;
    }
  }
  for (const auto& [policy, verdicts] : counts)
    by_policy[policy] = verdicts;

  // Cycles over the goal, and of those the ones whose own thread ran under
  // it: the rest of their wall time was spent off the core (preempted).
  uint64_t over_goal = 0, over_goal_cpu_under = 0;
  for (size_t i = 0; i < wall_all.size(); ++i) {
    if (wall_all[i] < 1000) continue;
    ++over_goal;
    if (cpu_all[i] < 1000) ++over_goal_cpu_under;
  }
  const double p99 = Percentile(wall_all, 99);
  const double to_command_p99 = Percentile(to_command, 99);
  auto phase_table = [](const std::map<std::string, std::vector<double>>& phases) {
    json out = json::object();
    for (const auto& [name, us] : phases)
      out[name] = Distribution(us);
    return out;
  };
  return json(
      {{"cycles", options.num_cycles},
       {"steps_per_cycle", options.steps_per_cycle},
       {"wall", Distribution(wall_all)},
       {"cpu", Distribution(cpu_all)},
       {"sent_command",
        {{"cycles", sent_cycles},
         {"wall", Distribution(wall_sent)},
         {"cpu", Distribution(cpu_sent)}}},
       {"only_rejections", {{"cycles", rejected_cycles}, {"wall", Distribution(wall_rejected)}}},
       {"nothing_to_decide", {{"cycles", idle_cycles}, {"wall", Distribution(wall_idle)}}},
       {"phases", phase_table(phases_all)},
       {"phases_sent_command", phase_table(phases_sent)},
       {"decisions_by_policy", by_policy},
       {"placements_judged",
        {{"on_the_plans_window", judged_on_plan}, {"replayed_in_the_cycle", judged_in_cycle}}},
       {"commands_sent", end.commands_sent},
       {"rollbacks", end.rollbacks},
       {"snapshot_to_command", Distribution(to_command)},
       {"goal_p99_us", 1000},
       {"over_goal", {{"cycles", over_goal}, {"thread_cpu_under_goal", over_goal_cpu_under}}},
       {"p99_under_goal", p99 < 1000},
       {"snapshot_to_command_p99_under_goal", to_command_p99 < 1000}});
}

}  // namespace moe::bench

namespace {

std::vector<std::string> Split(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::string MachineLine() {
  unsigned cores = std::thread::hardware_concurrency();
  return fmt::format("{} hardware threads", cores);
}

}  // namespace

int main(int argc, char** argv) {
  using nlohmann::json;
  namespace b = moe::bench;
  CLI::App app{"controller_bench: the control cycle, ingest and memory of moectld at full shape"};
  std::string config_path = std::string(MOE_REPO_ROOT) + "/configs/controller.toml";
  std::string moectld_path = MOE_MOECTLD_PATH;
  bool quick = false;
  bool malloc_defaults = false;
  b::ModelShape shape;
  b::CycleOptions cycle;
  b::IngestOptions ingest;
  b::MemoryOptions memory;
  std::string rates_text, memory_text, only;
  app.add_flag("--quick", quick, "smaller runs, for a smoke check");
  app.add_flag("--malloc-defaults", malloc_defaults,
               "keep glibc's malloc defaults (moectld keeps freed memory: moe/common/allocator.h)");
  app.add_option("--config", config_path, "controller.toml (its policies file is used too)");
  app.add_option("--moectld", moectld_path, "the moectld binary (memory section)");
  app.add_option("--layers", shape.num_layers)->check(CLI::Range(1, 4096));
  app.add_option("--experts", shape.num_experts)->check(CLI::Range(2, 65536));
  app.add_option("--replicas", shape.num_replicas)->check(CLI::Range(2, 65536));
  app.add_option("--devices", shape.num_devices)->check(CLI::Range(1, 4096));
  app.add_option("--top-k", shape.top_k)->check(CLI::Range(1, 64));
  app.add_option("--tokens", shape.num_tokens, "tokens per step")->check(CLI::Range(1, 1 << 20));
  app.add_option("--cycles", cycle.num_cycles, "control cycles timed")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--steps-per-cycle", cycle.steps_per_cycle)->check(CLI::Range(1, 100000));
  app.add_option("--engines", ingest.num_engines, "ingest: engines")->check(CLI::Range(1, 256));
  app.add_option("--rates", rates_text, "ingest: offered steps/s, comma separated");
  app.add_option("--seconds", ingest.seconds, "ingest: seconds per rate")
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--memory-engines", memory_text, "memory: engine counts, comma separated");
  app.add_option("--only", only, "run one section")
      ->check(CLI::IsMember({"policies", "cycle", "ingest", "memory"}));
  CLI11_PARSE(app, argc, argv);
  if (moe::Status s = moe::InitLogging("controller_bench", "warn", false); !s.ok()) return 1;
  // The cycle runs in this process: the allocator as moectld sets it.
  std::string allocator = "glibc defaults";
  if (!malloc_defaults) {
    moe::Result<bool> kept = moe::KeepFreedMemory();
    if (!kept.ok()) {
      std::fprintf(stderr, "controller_bench: %s\n", kept.status().ToString().c_str());
      return 1;
    }
    allocator = *kept ? "moectld's (moe/common/allocator.h)" : "GLIBC_TUNABLES";
  }
  if (shape.num_replicas < shape.num_experts || shape.num_replicas % shape.num_devices != 0) {
    std::fprintf(stderr,
                 "controller_bench: need experts <= replicas and replicas %% devices == 0\n");
    return 2;
  }

  if (quick) {
    cycle.num_cycles = 200;
    ingest.seconds = 2;
    memory.engine_counts = {1, 2, 4};
  }
  if (!rates_text.empty()) {
    ingest.rates.clear();
    for (const std::string& r : Split(rates_text))
      ingest.rates.push_back(std::stod(r));
  }
  if (!memory_text.empty()) {
    memory.engine_counts.clear();
    for (const std::string& n : Split(memory_text))
      memory.engine_counts.push_back(std::stoi(n));
  }
  memory.moectld_path = moectld_path;
  memory.config_path = config_path;

  auto loaded = moe::controller::LoadControllerConfig(config_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "controller_bench: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  moe::controller::ControllerOptions options = *loaded;
  options.log_level = "warn";

  std::string pattern =
      (std::filesystem::temp_directory_path() / "moectl-controller-bench-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "controller_bench: cannot create a temporary directory\n");
    return 1;
  }
  const std::string dir = pattern;

  json result = {{"benchmark", "controller"},
                 {"command", fmt::format("controller_bench{}{}", quick ? " --quick" : "",
                                         malloc_defaults ? " --malloc-defaults" : "")},
                 {"machine", MachineLine()},
                 {"allocator", allocator},
                 {"shape",
                  {{"layers", shape.num_layers},
                   {"experts", shape.num_experts},
                   {"replicas", shape.num_replicas},
                   {"devices", shape.num_devices},
                   {"top_k", shape.top_k},
                   {"tokens_per_step", shape.num_tokens}}},
                 {"policies", options.policy_order}};
  int rc = 0;
  auto fail = [&](const char* section, const moe::Status& s) {
    std::fprintf(stderr, "controller_bench: %s: %s\n", section, s.ToString().c_str());
    result[section] = {{"error", s.ToString()}};
    rc = 1;
  };
  if (only.empty() || only == "policies") {
    std::fprintf(stderr, "controller_bench: each costly policy once ...\n");
    // The counterfactual policy scores the newest lookback_steps of the window.
    result["policies_alone"] = b::TimePolicies(
        options, shape,
        static_cast<int>(std::max<uint64_t>(options.counterfactual.lookback_steps,
                                            static_cast<uint64_t>(cycle.steps_per_cycle))));
  }
  if (only.empty() || only == "cycle") {
    std::fprintf(stderr, "controller_bench: %d control cycles ...\n", cycle.num_cycles);
    auto r = b::RunCycles(options, shape, cycle, dir);
    if (r.ok()) {
      result["cycle"] = *r;
    } else {
      fail("cycle", r.status());
    }
  }
  if (only.empty() || only == "ingest") {
    json runs = json::array();
    for (double rate : ingest.rates) {
      std::fprintf(stderr, "controller_bench: ingest, %d engines at %.0f steps/s for %.1f s ...\n",
                   ingest.num_engines, rate, ingest.seconds);
      auto r = b::RunIngest(options, shape, ingest, rate, dir);
      if (!r.ok()) {
        fail("ingest", r.status());
        break;
      }
      runs.push_back(*r);
    }
    if (rc == 0) result["ingest"] = runs;
  }
  if (only.empty() || only == "memory") {
    std::fprintf(stderr, "controller_bench: memory of moectld ...\n");
    auto r = b::RunMemory(shape, memory, options.window_steps, dir);
    if (r.ok()) {
      result["memory"] = *r;
    } else {
      fail("memory", r.status());
    }
  }
  std::printf("%s\n", result.dump(2).c_str());
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

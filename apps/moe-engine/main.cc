// moe-engine: runs the MoE engine over a scenario workload, streams per-step
// telemetry to the controller and applies its commands at step boundaries.

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine_config.h"
#include "moe/common/clock.h"
#include "moe/common/logging.h"
#include "moe/common/time_format.h"
#include "moe/engine/engine.h"
#include "moe/engine/workload.h"
#include "moe/telemetry/transport.h"
#include "parse_args.h"
#include "routing_trace.h"
#include "telemetry_glue.h"

namespace {

constexpr int kExitConfig = 78;       // EX_CONFIG
constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE
constexpr int kExitSoftware = 70;     // EX_SOFTWARE

std::atomic<bool> g_stop{false};

void OnSignal(int) {
  g_stop.store(true);
}

void InstallSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

struct Flags {
  std::string config = "configs/engine.toml";
  std::string model;
  std::string scenario;
  std::string engine_id;
  std::string telemetry;
  std::string commands;
  std::string backend;
  uint64_t steps = 0;
  std::string duration;
  int64_t step_interval_ms = -1;
  bool no_telemetry = false;
  bool await_controller = false;
  std::string record_trace;
  std::string log_level = "info";
  std::optional<uint64_t> initial_epoch;
};

}  // namespace

int main(int argc, char** argv) {
  using namespace moe;
  Flags flags;
  CLI::App cli{"moe-engine: MoE serving engine with live telemetry and knob control", "moe-engine"};
  moe::cli::AddVersionFlag(cli, "moe-engine");
  cli.footer(
      "Exit status: 0 after the last step or SIGTERM/SIGINT; 2 a usage error; 69 (EX_UNAVAILABLE) "
      "a backend, endpoint or file that cannot be had; 70 (EX_SOFTWARE) a step or the trace "
      "failed; 78 (EX_CONFIG) a bad configuration.");
  cli.add_option("--config", flags.config, "engine config (TOML)")->capture_default_str();
  cli.add_option("--model", flags.model,
                 "model preset (TOML) overriding [model]/[parallel]/[knobs]");
  cli.add_option("--scenario", flags.scenario, "scenario file (TOML); default from the config");
  cli.add_option("--engine-id", flags.engine_id, "engine id (default from the config)");
  cli.add_option("--telemetry", flags.telemetry, "telemetry endpoint, e.g. tcp://127.0.0.1:5555");
  cli.add_option("--commands", flags.commands, "command endpoint, e.g. tcp://127.0.0.1:5556");
  cli.add_option("--backend", flags.backend, "compute backend")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cli.add_option("--steps", flags.steps, "stop after N steps (0 = no limit)");
  cli.add_option("--duration", flags.duration, "stop after this long, e.g. 60s, 5m");
  cli.add_option("--step-interval-ms", flags.step_interval_ms,
                 "minimum milliseconds between step starts (demo pacing)");
  cli.add_flag("--no-telemetry", flags.no_telemetry, "run without telemetry and commands");
  cli.add_flag("--await-controller", flags.await_controller,
               "lockstep: after each step wait for the controller's Sync of it (benchmarks)");
  cli.add_option("--initial-epoch", flags.initial_epoch,
                 "epoch of the starting settings (default: the start time in milliseconds since "
                 "1970, so a restarted engine never repeats an epoch)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 60));
  cli.add_option("--record-trace", flags.record_trace,
                 "write every step's routing selection to FILE (JSON Lines routing trace)");
  cli.add_option("--log-level", flags.log_level, "trace|debug|info|warn|error|critical|off")
      ->capture_default_str();
  if (std::optional<int> code = moe::cli::ParseArgs(cli, argc, argv)) return *code;

  if (Status st = InitLogging("moe-engine", flags.log_level, StderrIsJournal()); !st.ok()) {
    std::fprintf(stderr, "moe-engine: %s\n", st.ToString().c_str());
    return kExitConfig;
  }
  auto loaded = engine_app::LoadEngineConfig(flags.config);
  if (!loaded.ok()) {
    spdlog::error("bad config: {}", loaded.status().message());
    return kExitConfig;
  }
  engine_app::EngineConfig cfg = std::move(loaded).value();
  if (!flags.model.empty()) {
    if (Status st = engine_app::LoadModelPreset(flags.model, &cfg.engine); !st.ok()) {
      spdlog::error("bad model preset: {}", st.message());
      return kExitConfig;
    }
    if (Status st = engine::ValidateOptions(cfg.engine); !st.ok()) {
      spdlog::error("bad model preset {}: {}", flags.model, st.message());
      return kExitConfig;
    }
  }
  engine_app::AppOptions& app = cfg.app;
  if (!flags.scenario.empty()) app.scenario = flags.scenario;
  if (!flags.engine_id.empty()) app.engine_id = flags.engine_id;
  if (!flags.telemetry.empty()) app.telemetry_endpoint = flags.telemetry;
  if (!flags.commands.empty()) app.command_endpoint = flags.commands;
  if (!flags.backend.empty()) app.backend = flags.backend;
  if (flags.step_interval_ms >= 0) app.step_interval_ms = flags.step_interval_ms;
  if (flags.no_telemetry) app.telemetry_enabled = false;
  if (flags.await_controller) app.await_controller = true;
  int64_t duration_ns = 0;
  if (!flags.duration.empty()) {
    auto parsed = ParseDuration(flags.duration);
    if (!parsed.ok()) {
      spdlog::error("--duration: {}", parsed.status().message());
      return kExitConfig;
    }
    duration_ns = *parsed;
  }

  engine::ScenarioOptions scenario;
  engine_app::TraceOptions trace_options;
  if (!app.scenario.empty()) {
    auto s = engine_app::LoadScenario(app.scenario);
    if (!s.ok()) {
      spdlog::error("bad scenario: {}", s.status().message());
      return kExitConfig;
    }
    scenario = std::move(s->workload);
    trace_options = std::move(s->trace);
  }
  std::optional<engine_app::RoutingTrace> trace;
  if (!trace_options.path.empty()) {
    auto loaded_trace = engine_app::LoadRoutingTrace(trace_options.path);
    Status st = loaded_trace.ok() ? engine_app::CheckTraceFitsModel(*loaded_trace, cfg.engine)
                                  : loaded_trace.status();
    if (!st.ok()) {
      spdlog::error("bad routing trace: {}", st.message());
      return kExitConfig;
    }
    trace = std::move(loaded_trace).value();
    spdlog::info("replaying routing trace {}: {} steps, {} layers{}", trace->path,
                 trace->steps.size(), trace->header.num_layers,
                 trace_options.loop ? ", looped" : "");
  }

  engine::BackendOptions backend_options;
  backend_options.num_threads = app.blas_threads;
  backend_options.device = app.cuda_device;
  backend_options.gemm_precision = app.gemm_precision == "tf32"   ? engine::GemmPrecision::kTf32
                                   : app.gemm_precision == "bf16" ? engine::GemmPrecision::kBf16
                                                                  : engine::GemmPrecision::kFp32;
  backend_options.grouped_gemm_fallback = app.grouped_gemm_fallback;
  auto backend = engine::CreateBackend(app.backend, backend_options);
  if (!backend.ok()) {
    spdlog::error("backend {}: {}", app.backend, backend.status().ToString());
    return kExitUnavailable;
  }
  spdlog::info("backend {}: {}; routing {}", app.backend, (*backend)->description(),
               engine::RoutingModeName(cfg.engine.routing));
  cfg.engine.initial_epoch =
      flags.initial_epoch.value_or(static_cast<uint64_t>(SystemClock()->NowNanos() / 1'000'000));
  auto created = engine::Engine::Create(cfg.engine, std::move(backend).value());
  if (!created.ok()) {
    spdlog::error("engine: {}", created.status().ToString());
    // A bad option, or options the backend cannot run (routing = "device" with
    // knobs it does not cover), is the config's to fix.
    const StatusCode code = created.status().code();
    return code == StatusCode::kInvalidArgument || code == StatusCode::kUnsupported
               ? kExitConfig
               : kExitUnavailable;
  }
  std::unique_ptr<engine::Engine> eng = std::move(created).value();
  auto workload_or = engine::Workload::Create(scenario, cfg.engine.model.hidden);
  if (!workload_or.ok()) {
    spdlog::error("scenario: {}", workload_or.status().message());
    return kExitConfig;
  }
  std::unique_ptr<engine::Workload> workload = std::move(workload_or).value();

  std::unique_ptr<engine_app::TraceRecorder> recorder;
  if (!flags.record_trace.empty()) {
    engine_app::TraceHeader header;
    header.num_layers = cfg.engine.model.num_layers;
    header.num_experts = cfg.engine.model.num_experts;
    header.top_k = cfg.engine.knobs.top_k;
    header.source = "moe-engine " + app.engine_id + ", scenario " + scenario.name;
    auto opened = engine_app::TraceRecorder::Open(flags.record_trace, header);
    if (!opened.ok()) {
      spdlog::error("--record-trace: {}", opened.status().ToString());
      return kExitUnavailable;
    }
    recorder = std::move(opened).value();
  }

  Clock* clock = SystemClock();
  std::unique_ptr<telemetry::EngineLink> link;
  if (app.telemetry_enabled) {
    telemetry::EngineLinkOptions link_options;
    link_options.engine_id = app.engine_id;
    link_options.telemetry_endpoint = app.telemetry_endpoint;
    link_options.command_endpoint = app.command_endpoint;
    link_options.send_queue = app.send_queue;
    if (!app.curve_secret_key.empty()) {
      link_options.curve = telemetry::CurveKeys{app.curve_public_key, app.curve_secret_key};
      link_options.controller_public_key = app.controller_public_key;
    }
    auto connected = telemetry::EngineLink::Connect(
        link_options, engine_app::MakeHello(*eng, app, clock->NowNanos()));
    if (!connected.ok()) {
      spdlog::error("telemetry: {}", connected.status().ToString());
      return kExitUnavailable;
    }
    link = std::move(connected).value();
  }
  InstallSignalHandlers();
  spdlog::info(
      "engine {} up: {} layers, hidden {}, {} experts (+{} shared), top_k {}, cf {}, scenario "
      "'{}', telemetry {}",
      app.engine_id, cfg.engine.model.num_layers, cfg.engine.model.hidden,
      cfg.engine.model.num_experts, cfg.engine.model.num_shared_experts, cfg.engine.knobs.top_k,
      cfg.engine.knobs.capacity_factor, scenario.name,
      link ? app.telemetry_endpoint + " / " + app.command_endpoint : std::string("off"));

  engine_app::CommandHandler commands(eng.get(), app.engine_id);
  engine_app::SyncWaiter sync_waiter(app.await_timeout_ms);
  engine_app::ProgressMeter progress(app.progress_ms * 1000000);
  if (link && app.await_controller) {
    sync_waiter.AwaitLink(link.get(), &commands, [] { return g_stop.load(); });
  }
  const int64_t start_ns = clock->MonotonicNanos();
  int64_t last_publish_ns = start_ns;
  engine_app::HelloTicker hello_ticker(app.hello_interval_ms * 1000000, eng->epoch(), start_ns);
  int exit_code = 0;
  while (!g_stop.load()) {
    const uint64_t step = eng->next_step();
    if (flags.steps > 0 && step >= flags.steps) break;
    const int64_t step_start_ns = clock->MonotonicNanos();
    if (duration_ns > 0 && step_start_ns - start_ns >= duration_ns) break;
    if (link) commands.Poll(link.get(), clock->NowNanos());

    const engine_app::TraceStep* replay =
        trace ? trace->StepFor(step, trace_options.loop) : nullptr;
    engine::WorkloadStep input = workload->Generate(step, replay ? replay->num_tokens : 0);
    engine::StepInput step_input{input.hidden.data(), input.num_tokens, input.device_slowdown};
    if (replay != nullptr) step_input.routing = engine_app::RoutingOf(*replay);
    step_input.record_selection = recorder != nullptr;
    auto stats = eng->Step(step_input);
    if (!stats.ok()) {
      spdlog::error("step {} failed: {}", step, stats.status().ToString());
      exit_code = kExitSoftware;
      break;
    }
    if (link) {
      commands.AckApplied(link.get(), *stats, clock->NowNanos());
      telemetry::StepRecord record =
          engine_app::MakeStepRecord(*stats, app.engine_id, clock->NowNanos());
      record.await_sync = app.await_controller;
      if (Status st = link->Publish(std::move(record)); !st.ok()) {
        spdlog::warn("publish step {}: {}", step, st.ToString());
      }
      // The Hello follows the settings in force (a restarted controller gets
      // it on reconnect) and is re-sent periodically (one that missed an ack
      // learns the epoch and knobs in force).
      if (hello_ticker.Due(stats->epoch, clock->MonotonicNanos())) {
        if (Status st = link->PublishHello(engine_app::MakeHello(*eng, app, clock->NowNanos()));
            !st.ok()) {
          spdlog::warn("hello: {}", st.ToString());
        }
      }
      last_publish_ns = clock->MonotonicNanos();
      if (app.await_controller) {
        sync_waiter.Await(link.get(), &commands, step, [] { return g_stop.load(); });
      }
    }
    if (recorder) {
      if (Status st = recorder->Append(*stats); !st.ok()) {
        spdlog::error("--record-trace: {}; recording stops", st.ToString());
        recorder.reset();
        exit_code = kExitSoftware;
      }
    }
    progress.Observe(*stats, clock->MonotonicNanos(), link ? link->dropped() : 0);

    // Pacing; heartbeats and commands keep flowing while idle.
    while (!g_stop.load()) {
      const int64_t now = clock->MonotonicNanos();
      const int64_t due = step_start_ns + app.step_interval_ms * 1000000;
      if (link && now - last_publish_ns >= app.heartbeat_ms * 1000000) {
        telemetry::Heartbeat hb;
        hb.engine_id = app.engine_id;
        hb.step = eng->next_step();
        hb.epoch = eng->epoch();
        hb.timestamp_ns = clock->NowNanos();
        if (Status st = link->PublishHeartbeat(hb); !st.ok()) {
          spdlog::warn("heartbeat: {}", st.ToString());
        }
        last_publish_ns = now;
      }
      if (now >= due) break;
      if (link) commands.Poll(link.get(), clock->NowNanos());
      std::this_thread::sleep_for(
          std::chrono::nanoseconds(std::min<int64_t>(due - now, 20 * 1000000)));
    }
  }
  spdlog::info("engine {} stopping after {} steps (epoch {})", app.engine_id, eng->next_step(),
               eng->epoch());
  progress.Final();
  if (recorder) {
    if (Status st = recorder->Close(); !st.ok()) {
      spdlog::error("--record-trace: {}", st.ToString());
      return kExitSoftware;
    }
    spdlog::info("recorded {} steps of routing to {}", recorder->num_steps(), flags.record_trace);
  }
  return exit_code;
}

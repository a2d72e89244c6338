// moectld: the moectl controller daemon. Run by systemd (Type=notify) beside
// the engine; see deploy/systemd/moectld.service and README.md.
//
// Exit status: 0 after SIGTERM/SIGINT, 78 (EX_CONFIG) for a bad configuration
// at start, 1 for other start-up failures (e.g. an endpoint in use), 2 for a
// usage error (an unknown flag).

#include <systemd/sd-daemon.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>

#include "control_handler.h"
#include "control_server.h"
#include "controller_config.h"
#include "metrics_server.h"
#include "moe/common/allocator.h"
#include "moe/common/clock.h"
#include "moe/common/logging.h"
#include "moe/controller/controller.h"
#include "notify.h"
#include "parse_args.h"

namespace {

constexpr int kExitConfig = 78;  // EX_CONFIG from sysexits.h
// How often the loop hands the metrics server a fresh snapshot.
constexpr auto kMetricsInterval = std::chrono::milliseconds(250);

std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};

void OnSignal(int signal) {
  if (signal == SIGHUP) {
    g_reload = true;
  } else {
    g_stop = true;
  }
}

void InstallSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);
}

struct Overrides {
  std::string db_path;
  std::string telemetry;
  std::string commands;
  std::string log_level;
  std::optional<std::string> control_socket;
};

moe::Result<moe::controller::ControllerOptions> Load(const std::string& path,
                                                     const Overrides& overrides) {
  auto options = moe::controller::LoadControllerConfig(path);
  if (!options.ok()) return options;
  if (!overrides.db_path.empty()) options->db_path = overrides.db_path;
  if (!overrides.telemetry.empty()) options->telemetry_endpoint = overrides.telemetry;
  if (!overrides.commands.empty()) options->command_endpoint = overrides.commands;
  if (!overrides.log_level.empty()) options->log_level = overrides.log_level;
  if (overrides.control_socket) options->control.socket = *overrides.control_socket;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moectld: the moectl controller daemon (telemetry in, decisions out)", "moectld"};
  moe::cli::AddVersionFlag(app, "moectld");
  app.footer(
      "Exit status: 0 after SIGTERM or SIGINT; 1 a start-up failure (e.g. an endpoint in use); "
      "2 a usage error; 78 (EX_CONFIG) a bad configuration.");
  std::string config_path = "configs/controller.toml";
  Overrides overrides;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "controller configuration (TOML)");
  app.add_option("--db", overrides.db_path, "database path (overrides storage.path)");
  app.add_option("--telemetry", overrides.telemetry,
                 "telemetry endpoint to bind (overrides transport.telemetry)");
  app.add_option("--commands", overrides.commands,
                 "command endpoint to bind (overrides transport.commands)");
  app.add_option("--log-level", overrides.log_level, "trace|debug|info|warn|error");
  app.add_option("--control-socket", overrides.control_socket,
                 "Unix socket for operator levers (overrides control.socket; \"\" for none)");
  app.add_flag("--check-config", check_only, "validate the configuration and exit");
  if (std::optional<int> code = moe::cli::ParseArgs(app, argc, argv)) return *code;

  const bool journal = moe::StderrIsJournal();
  auto options = Load(config_path, overrides);
  if (!options.ok()) {
    std::fprintf(stderr, "moectld: bad configuration:\n%s\n", options.status().message().c_str());
    return kExitConfig;
  }
  if (check_only) {
    std::printf("%s: OK\n", config_path.c_str());
    return 0;
  }
  if (moe::Status s = moe::InitLogging("moectld", options->log_level, journal); !s.ok()) {
    std::fprintf(stderr, "moectld: %s\n", s.message().c_str());
    return kExitConfig;
  }
  InstallSignalHandlers();
  // Before the controller's threads start: its cycle frees and rebuilds a
  // snapshot of every engine (moe/common/allocator.h).
  if (moe::Result<bool> kept = moe::KeepFreedMemory(); !kept.ok()) {
    spdlog::warn("{}; glibc's defaults stay", kept.status().message());
  } else if (!*kept) {
    spdlog::info("allocator: GLIBC_TUNABLES sets malloc; left as the environment says");
  }

  auto controller = moe::controller::Controller::Create(*options, moe::SystemClock());
  if (!controller.ok()) {
    spdlog::critical("cannot start: {}", controller.status().ToString());
    return controller.status().code() == moe::StatusCode::kInvalidArgument ? kExitConfig : 1;
  }
  std::unique_ptr<moe::controller::MetricsServer> metrics;
  if (!options->metrics.listen.empty()) {
    auto server = moe::controller::MetricsServer::Start(options->metrics);
    if (!server.ok()) {
      spdlog::critical("cannot start: {}", server.status().ToString());
      return server.status().code() == moe::StatusCode::kInvalidArgument ? kExitConfig : 1;
    }
    metrics = std::move(*server);
    metrics->Publish((*controller)->metrics(options->metrics.per_layer));
    spdlog::info("metrics: http://{}/metrics and /healthz", metrics->address());
  }
  std::unique_ptr<moe::controller::ControlServer> control;
  if (!options->control.socket.empty()) {
    auto server = moe::controller::ControlServer::Start(options->control);
    if (!server.ok()) {
      spdlog::critical("cannot start: {}", server.status().ToString());
      return server.status().code() == moe::StatusCode::kInvalidArgument ? kExitConfig : 1;
    }
    control = std::move(*server);
    spdlog::info("control socket: {} (moectl status, pause, resume, pin, unpin, mode)",
                 control->path());
  }
  auto answer = [&](const nlohmann::json& request, const moe::controller::Caller& caller) {
    return moe::controller::HandleControlRequest(**controller, request, caller);
  };
  spdlog::info("serving: telemetry {} commands {} database {}", (*controller)->telemetry_endpoint(),
               (*controller)->command_endpoint(), options->db_path);
  // With WatchdogSec= in the unit, systemd restarts a loop that stops pinging.
  uint64_t watchdog_usec = 0;
  const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
  const auto watchdog_interval = std::chrono::microseconds(watchdog_usec / 2);
  auto next_watchdog = std::chrono::steady_clock::now();
  auto next_metrics = std::chrono::steady_clock::now() + kMetricsInterval;
  moe::controller::Notifier notify;
  notify.Send("READY=1\nSTATUS=serving telemetry on " + (*controller)->telemetry_endpoint());

  int exit_code = 0;
  auto next_status = std::chrono::steady_clock::now();
  while (!g_stop) {
    if (moe::Status s = (*controller)->Poll(std::chrono::milliseconds(100)); !s.ok()) {
      spdlog::error("poll failed: {}", s.ToString());
    }
    if (control) control->Serve(answer);
    const auto now = std::chrono::steady_clock::now();
    if (watchdog && now >= next_watchdog) {
      next_watchdog = now + watchdog_interval;
      notify.Send("WATCHDOG=1");
    }
    if (metrics && now >= next_metrics) {
      next_metrics = now + kMetricsInterval;
      metrics->Publish((*controller)->metrics(options->metrics.per_layer));
    }
    if (now >= next_status) {
      // `systemctl status moectld` shows this line.
      next_status += std::chrono::seconds(5);
      moe::controller::ControllerStats st = (*controller)->stats();
      notify.Send(fmt::format(
          "STATUS={} engines, {} steps, {} decisions ({} sent, {} failed), {} malformed, {} "
          "refused, db pending {}, db refused {}, db lost {}",
          st.engines, st.steps, st.decisions, st.commands_sent, st.failed_commands, st.malformed,
          moe::controller::RefusedTotal(st), st.store_pending, st.store_rejected, st.store_lost));
    }
    if (g_reload.exchange(false)) {
      notify.Send("RELOADING=1");
      auto fresh = Load(config_path, overrides);
      moe::Status s = fresh.ok() ? (*controller)->Reload(*fresh) : fresh.status();
      if (s.ok()) {
        if (fresh->log_level != options->log_level) {
          spdlog::set_level(spdlog::level::from_str(fresh->log_level));
        }
        if (fresh->control.socket != options->control.socket ||
            fresh->control.group != options->control.group ||
            fresh->control.socket_mode != options->control.socket_mode) {
          spdlog::warn("reload: the control socket stays {} (restart moectld to change it)",
                       options->control.socket);
          fresh->control = options->control;
        }
        if (fresh->metrics.listen != options->metrics.listen) {
          spdlog::warn("reload: metrics listen stays \"{}\" (restart moectld to change it)",
                       options->metrics.listen);
          fresh->metrics.listen = options->metrics.listen;
        }
        if (metrics) metrics->Update(fresh->metrics);
        options = std::move(fresh);
      } else {
        spdlog::error("reload refused, keeping the running configuration:\n{}", s.message());
      }
      notify.Send("READY=1");
    }
  }
  notify.Send("STOPPING=1");
  spdlog::info("stopping: flushing the database");
  if (moe::Status s = (*controller)->Shutdown(); !s.ok()) {
    spdlog::error("shutdown: {}", s.ToString());
    exit_code = 1;
  }
  moe::controller::ControllerStats st = (*controller)->stats();
  spdlog::info("stopped: {} steps, {} decisions, {} commands, {} malformed messages", st.steps,
               st.decisions, st.commands_sent, st.malformed);
  return exit_code;
}

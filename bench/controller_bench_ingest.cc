// controller_bench: the ingest and memory sections (see controller_bench.cc).

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "controller_bench.h"
#include "ingest_engine.h"
#include "moe/common/clock.h"
#include "moe/controller/controller.h"
#include "moe/storage/reader.h"
#include "moe/telemetry/transport.h"

namespace moe::bench {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double ThreadCpuSeconds(pthread_t thread) {
  clockid_t id;
  if (pthread_getcpuclockid(thread, &id) != 0) return 0;
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

Result<json> RunIngest(const controller::ControllerOptions& base, const ModelShape& shape,
                       const IngestOptions& options, double rate, const std::string& dir) {
  controller::ControllerOptions o = base;
  o.telemetry_endpoint = "tcp://127.0.0.1:*";
  o.command_endpoint = "tcp://127.0.0.1:*";
  o.db_path = fmt::format("{}/ingest-{:.0f}.db", dir, rate);
  o.progress_interval_ms = 0;
  MOE_ASSIGN_OR_RETURN(auto ctl, controller::Controller::Create(o, SystemClock()));
  const std::string telemetry_endpoint = ctl->telemetry_endpoint();
  const std::string command_endpoint = ctl->command_endpoint();

  const int n = options.num_engines;
  const auto start = SteadyClock::now() + milliseconds(500);  // links connect first
  std::atomic<bool> close{false};
  std::atomic<int> finished{0};
  std::vector<IngestEngineResult> results(static_cast<size_t>(n));
  std::vector<std::thread> engines;
  for (int i = 0; i < n; ++i) {
    engines.emplace_back(RunIngestEngine, fmt::format("engine-{}", i), shape, 100 + i,
                         telemetry_endpoint, command_endpoint, rate / n, options.seconds, start,
                         &finished, &close, &results[static_cast<size_t>(i)]);
  }
  const uint64_t expected =
      static_cast<uint64_t>(n) * static_cast<uint64_t>(rate / n * options.seconds);
  const double cpu_before = ProcessCpuSeconds();

  // The controller runs on this thread, as in moectld.
  const double ctl_cpu_before = ThreadCpuSeconds(pthread_self());
  uint64_t max_pending = 0;
  auto next_sample = SteadyClock::now();
  SteadyClock::time_point received_at{};
  const auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(options.seconds + 60));
  Status poll_status;
  uint64_t last_steps = 0;
  auto last_progress = SteadyClock::now();
  while (SteadyClock::now() < deadline) {
    poll_status = ctl->Poll(milliseconds(5));
    if (!poll_status.ok()) break;
    if (SteadyClock::now() >= next_sample) {
      max_pending = std::max(max_pending, ctl->stats().store_pending);
      next_sample += milliseconds(50);
    }
    const controller::ControllerStats st = ctl->stats();
    // Done when every step sent arrived, or the engines are finished and
    // nothing more comes (steps lost on the way).
    if (st.steps >= expected) {
      received_at = SteadyClock::now();
      break;
    }
    if (st.steps != last_steps) {
      last_steps = st.steps;
      last_progress = SteadyClock::now();
    } else if (finished.load() == n && SteadyClock::now() - last_progress > milliseconds(2000)) {
      break;
    }
  }
  const double ctl_cpu = ThreadCpuSeconds(pthread_self()) - ctl_cpu_before;
  const controller::ControllerStats st = ctl->stats();
  Status closed = ctl->Shutdown();  // flushes the store
  const auto stored_at = SteadyClock::now();
  const double cpu_total = ProcessCpuSeconds() - cpu_before;
  close = true;
  for (std::thread& t : engines)
    t.join();
  ctl.reset();
  MOE_RETURN_IF_ERROR(poll_status);
  MOE_RETURN_IF_ERROR(closed);

  uint64_t sent = 0, dropped = 0, commands = 0;
  double engines_cpu = 0;
  for (const IngestEngineResult& r : results) {
    MOE_RETURN_IF_ERROR(r.status);
    sent += r.sent;
    dropped += r.dropped;
    commands += r.commands;
    engines_cpu += r.cpu_s;
  }

  // What the database holds: steps of the first and the last layer per engine.
  MOE_ASSIGN_OR_RETURN(auto reader, storage::Reader::Open(o.db_path));
  uint64_t stored_first = 0, stored_last = 0;
  for (int i = 0; i < n; ++i) {
    storage::HistoryQuery q;
    q.engine_id = fmt::format("engine-{}", i);
    q.limit = 0;
    q.include_rollups = false;
    q.layer = 0;
    MOE_ASSIGN_OR_RETURN(std::vector<storage::StepRow> first, reader->History(q));
    q.layer = shape.num_layers - 1;
    MOE_ASSIGN_OR_RETURN(std::vector<storage::StepRow> last, reader->History(q));
    stored_first += first.size();
    stored_last += last.size();
  }
  const uint64_t stored = std::min(stored_first, stored_last);
  const double received_s =
      received_at == SteadyClock::time_point{} ? 0 : Seconds(received_at - start);
  const double stored_s = Seconds(stored_at - start);
  const uint64_t lost = sent - std::min(sent, stored);
  return json({{"engines", n},
               {"offered_steps_per_s", rate},
               {"seconds", options.seconds},
               {"steps_sent", sent},
               {"steps_received", st.steps},
               {"steps_stored", stored},
               {"rows_stored", stored * shape.num_layers},
               {"received_steps_per_s", received_s > 0 ? st.steps / received_s : 0},
               {"stored_steps_per_s", stored / stored_s},
               {"stored_layer_rows_per_s", stored * shape.num_layers / stored_s},
               {"flush_tail_s", received_s > 0 ? stored_s - received_s : 0},
               {"max_store_pending", max_pending},
               {"engine_drops", dropped},
               {"sequence_gaps", st.sequence_gaps},
               {"malformed", st.malformed},
               {"store_write_errors", st.store_write_errors},
               {"steps_lost", lost},
               {"nothing_lost", lost == 0 && dropped == 0 && st.sequence_gaps == 0 &&
                                    st.malformed == 0 && stored == sent},
               {"commands_sent", st.commands_sent},
               {"commands_applied_by_engines", commands},
               {"cpu_s",
                {{"controller_thread", ctl_cpu},
                 {"engine_threads", engines_cpu},
                 {"rest", cpu_total - ctl_cpu - engines_cpu}}}});
}

namespace {

// A free TCP port on the loopback interface (bound, read, released).
Result<int> FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Status::IoError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (rc == 0) rc = getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  if (rc != 0) return Status::IoError("cannot find a free loopback port");
  return static_cast<int>(ntohs(addr.sin_port));
}

// VmRSS of `pid` in KiB (0 when unreadable).
uint64_t RssKib(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

// Ends the daemon this benchmark started, by its id.
struct Daemon {
  pid_t pid = -1;
  ~Daemon() { Stop(); }
  int Stop() {
    if (pid <= 0) return 0;
    kill(pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    pid = -1;
    return 137;
  }
};

}  // namespace

Result<json> RunMemory(const ModelShape& shape, const MemoryOptions& options, uint64_t window_steps,
                       const std::string& dir) {
  if (access(options.moectld_path.c_str(), X_OK) != 0) {
    return Status::NotFound(fmt::format("moectld not found at {}", options.moectld_path));
  }
  MOE_ASSIGN_OR_RETURN(int telemetry_port, FreePort());
  MOE_ASSIGN_OR_RETURN(int command_port, FreePort());
  const std::string telemetry_endpoint = fmt::format("tcp://127.0.0.1:{}", telemetry_port);
  const std::string command_endpoint = fmt::format("tcp://127.0.0.1:{}", command_port);
  const std::string db = dir + "/memory.db";
  std::vector<std::string> args = {
      options.moectld_path, "--config",   options.config_path, "--db",        db,    "--telemetry",
      telemetry_endpoint,   "--commands", command_endpoint,    "--log-level", "warn"};
  Daemon daemon;
  daemon.pid = fork();
  if (daemon.pid < 0) return Status::IoError("fork failed");
  if (daemon.pid == 0) {
    std::vector<char*> argv;
    for (std::string& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  // The daemon is up once its database has the schema.
  bool up = WaitFor([&] { return storage::Reader::Open(db).ok(); }, milliseconds(20'000),
                    std::chrono::microseconds(50'000));
  if (!up) return Status::Unavailable("moectld did not open its database within 20 s");
  std::this_thread::sleep_for(milliseconds(500));
  const uint64_t rss_start = RssKib(daemon.pid);

  // Steps per engine: a full window plus a cadence's worth more.
  const uint64_t steps = window_steps + 16;
  std::vector<std::unique_ptr<telemetry::EngineLink>> links;
  json points = json::array();
  points.push_back({{"engines", 0}, {"rss_mib", rss_start / 1024.0}});
  for (int count : options.engine_counts) {
    while (static_cast<int>(links.size()) < count) {
      const std::string id = fmt::format("mem-engine-{}", links.size());
      SyntheticEngine engine(id, shape, 500 + links.size());
      telemetry::EngineLinkOptions o;
      o.engine_id = id;
      o.telemetry_endpoint = telemetry_endpoint;
      o.command_endpoint = command_endpoint;
      o.linger = milliseconds(5000);
      MOE_ASSIGN_OR_RETURN(auto link, telemetry::EngineLink::Connect(o, engine.Hello()));
      for (uint64_t s = 0; s < steps; ++s) {
        MOE_RETURN_IF_ERROR(link->Publish(engine.NextStep(SystemClock()->NowNanos())));
        std::this_thread::sleep_for(milliseconds(2));
      }
      links.push_back(std::move(link));
    }
    // Wait until the daemon stored every engine's last step.
    bool stored = WaitFor(
        [&] {
          auto reader = storage::Reader::Open(db);
          if (!reader.ok()) return false;
          auto engines = (*reader)->Engines();
          if (!engines.ok() || static_cast<int>(engines->size()) < count) return false;
          return std::all_of(engines->begin(), engines->end(),
                             [&](const storage::EngineRow& e) { return e.last_step >= steps; });
        },
        milliseconds(60'000), std::chrono::microseconds(100'000));
    if (!stored) return Status::Timeout("moectld did not store the engines' steps within 60 s");
    std::this_thread::sleep_for(milliseconds(300));
    points.push_back({{"engines", count}, {"rss_mib", RssKib(daemon.pid) / 1024.0}});
  }
  links.clear();
  const int rc = daemon.Stop();
  if (rc != 0) return Status::Internal(fmt::format("moectld exited with status {}", rc));

  // Least-squares slope of RSS over engines.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const json& p : points) {
    double x = p["engines"].get<double>(), y = p["rss_mib"].get<double>();
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double m = static_cast<double>(points.size());
  const double slope = (m * sxy - sx * sy) / std::max(1e-9, m * sxx - sx * sx);
  return json({{"window_steps", window_steps},
               {"steps_per_engine", steps},
               {"points", points},
               {"rss_start_mib", rss_start / 1024.0},
               {"rss_mib_per_engine", slope}});
}

}  // namespace moe::bench

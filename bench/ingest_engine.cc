// RunIngestEngine (see ingest_engine.h).

#include "ingest_engine.h"

#include <time.h>

#include <thread>
#include <utility>
#include <vector>

#include "moe/common/clock.h"
#include "moe/telemetry/transport.h"

namespace moe::bench {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Distinct step records each ingest engine cycles through (generated before
// the clock starts, so the engines spend their time publishing).
constexpr int kRingSteps = 16;
// An ingest engine takes its commands this often (in steps).
constexpr uint64_t kCommandPollSteps = 16;

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

void RunIngestEngine(const std::string& id, const ModelShape& shape, uint64_t seed,
                     const std::string& telemetry_endpoint, const std::string& command_endpoint,
                     double steps_per_s, double seconds, SteadyClock::time_point start,
                     std::atomic<int>* finished, const std::atomic<bool>* close,
                     IngestEngineResult* out) {
  // Counts this engine as finished once: after its last step, or on an early return.
  struct Finish {
    std::atomic<int>* finished;
    bool counted = false;
    void Now() {
      if (!counted) ++*finished;
      counted = true;
    }
    ~Finish() { Now(); }
  } finish{finished};
  SyntheticEngine engine(id, shape, seed);
  std::vector<telemetry::StepRecord> ring;
  for (int i = 0; i < kRingSteps; ++i)
    ring.push_back(engine.NextStep(0));
  telemetry::EngineLinkOptions o;
  o.engine_id = id;
  o.telemetry_endpoint = telemetry_endpoint;
  o.command_endpoint = command_endpoint;
  o.linger = milliseconds(10'000);
  auto link = telemetry::EngineLink::Connect(o, engine.Hello());
  if (!link.ok()) {
    out->status = link.status();
    return;
  }
  const auto period = std::chrono::duration_cast<SteadyClock::duration>(
      std::chrono::duration<double>(1.0 / steps_per_s));
  const auto num_steps = static_cast<uint64_t>(steps_per_s * seconds);
  uint64_t epoch = 0;
  std::this_thread::sleep_until(start);
  for (uint64_t k = 0; k < num_steps; ++k) {
    std::this_thread::sleep_until(start + period * static_cast<int64_t>(k));
    telemetry::StepRecord r = ring[k % kRingSteps];
    r.step = k + 1;
    r.epoch = epoch;
    r.timestamp_ns = SystemClock()->NowNanos();
    if (Status s = (*link)->Publish(std::move(r)); !s.ok()) {
      out->status = s;
      return;
    }
    ++out->sent;
    if (k % kCommandPollSteps == 0) {
      auto commands = (*link)->PollCommands();
      if (!commands.ok()) {
        out->status = commands.status();
        return;
      }
      for (const telemetry::Command& cmd : *commands) {
        telemetry::Ack ack = engine.Apply(cmd, SystemClock()->NowNanos());
        if (ack.applied) epoch = cmd.epoch;
        (void)(*link)->SendAck(ack);
        ++out->commands;
      }
    }
  }
  out->dropped = (*link)->dropped();
  out->cpu_s = ThreadCpuSeconds();
  finish.Now();
  while (!close->load())
    std::this_thread::sleep_for(milliseconds(5));
}

}  // namespace moe::bench

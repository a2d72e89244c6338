// MetricsServer: moectld's HTTP endpoint (cpp-httplib, on threads of its own)
// for Prometheus and for health checks.
//
//   GET /metrics  the latest snapshot as Prometheus text (0.0.4)
//   GET /healthz  200 "ok" while the loop runs and the database accepts
//                 writes; 503 with the reason otherwise
//
// The controller is not thread safe, so the server never touches it: the
// loop takes a snapshot (Controller::metrics) and Publish()es a copy; the
// server renders the latest copy. A loop that stops publishing for longer
// than `loop_timeout` makes /healthz fail, so a hung loop shows.
//
// Thread safety: Publish and the accessors may be called from any thread.

#ifndef MOE_APPS_MOECTLD_METRICS_SERVER_H_
#define MOE_APPS_MOECTLD_METRICS_SERVER_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "moe/common/status.h"
#include "moe/controller/metrics.h"
#include "moe/controller/options.h"

namespace moe::controller {

struct Health {
  bool ok = false;
  std::string reason;  // "ok", or why not
};

// The health verdict for the latest snapshot (none yet: not ok), published
// `age` ago, against `loop_timeout`.
Health CheckHealth(const MetricsSnapshot* latest, std::chrono::steady_clock::duration age,
                   std::chrono::milliseconds loop_timeout);

class MetricsServer {
 public:
  // Binds `options.listen` (validated as CheckListenAddress does) and starts
  // serving. kInvalidArgument for a bad address, kUnavailable when it cannot
  // be bound (in use, no such host).
  static Result<std::unique_ptr<MetricsServer>> Start(const MetricsOptions& options);
  virtual ~MetricsServer() = default;  // stops serving and joins its threads

  // Replaces the snapshot served. Called by the loop.
  virtual void Publish(MetricsSnapshot snapshot) = 0;
  // Takes a reload's per_layer and loop_timeout (the address needs a restart).
  virtual void Update(const MetricsOptions& options) = 0;
  // "host:port" as bound.
  virtual std::string address() const = 0;
};

}  // namespace moe::controller

#endif  // MOE_APPS_MOECTLD_METRICS_SERVER_H_

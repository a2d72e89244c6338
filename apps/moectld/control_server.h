// ControlServer: moectld's local control socket for operator levers.
//
// A Unix stream socket at ControlOptions::socket, created with the configured
// group and permission bits, so the file system decides who may connect. The
// server checks the caller again by its peer credentials (SO_PEERCRED): root,
// the daemon's own user and the members of the socket's group are served;
// anyone else gets a refusal that names the group. The caller's uid, pid and
// user name go into every audit row.
//
// Protocol: one request per connection, one JSON object on one line (at most
// kMaxRequestBytes); the reply is one JSON object on one line:
// {"ok": true, ...} or {"ok": false, "error": "...", "code": "..."}.
// docs/levers.md lists the requests.
//
// Threads: the server's own thread accepts and reads; requests are answered
// on the daemon's loop thread by Serve(), so the controller stays single
// threaded. A request waits at most kReplyTimeout for the loop.

#ifndef MOE_APPS_MOECTLD_CONTROL_SERVER_H_
#define MOE_APPS_MOECTLD_CONTROL_SERVER_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "moe/common/status.h"
#include "moe/controller/levers.h"
#include "moe/controller/options.h"

namespace moe::controller {

inline constexpr size_t kMaxRequestBytes = 64 * 1024;
inline constexpr std::chrono::seconds kReplyTimeout{10};

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request, const Caller&)>;

  // Creates the socket (replacing a stale one nobody listens on; refusing
  // one in use: kAlreadyExists), sets its group and mode, and starts the
  // accepting thread. kInvalidArgument for an unknown group; kIoError for
  // the system calls, naming the path.
  static Result<std::unique_ptr<ControlServer>> Start(const ControlOptions& options);
  // Stops the thread and removes the socket file.
  virtual ~ControlServer() = default;

  // Answers every request waiting, with `handle`, on the caller's thread.
  virtual void Serve(const Handler& handle) = 0;
  virtual const std::string& path() const = 0;
};

}  // namespace moe::controller

#endif  // MOE_APPS_MOECTLD_CONTROL_SERVER_H_

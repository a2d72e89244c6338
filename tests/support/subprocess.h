// Subprocess: starts a program for an integration test and ends it by its pid.
//
// Output goes to a file (so a failing test can print it). The destructor kills
// a child that is still running (SIGKILL) and reaps it: tests never leave
// processes behind.

#ifndef MOE_TESTS_SUPPORT_SUBPROCESS_H_
#define MOE_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace moe::testing {

class Subprocess {
 public:
  // Starts `argv[0]` with `argv`, the current environment plus `extra_env`
  // ("NAME=value"), and stdout+stderr appended to `log_path`.
  Subprocess(std::vector<std::string> argv, std::string log_path,
             std::vector<std::string> extra_env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool Signal(int signal);
  // Waits up to `timeout` for the child to exit. Returns its exit status (or
  // 128 + signal number if a signal ended it); std::nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool running();
  // The log so far.
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// Binds a Unix datagram socket at a fresh path and reads sd_notify messages
// sent to it (as systemd does for Type=notify services).
class NotifySocket {
 public:
  explicit NotifySocket(std::string path);
  ~NotifySocket();
  const std::string& path() const { return path_; }
  // Waits up to `timeout` for a datagram containing `line` (e.g. "READY=1").
  bool WaitFor(const std::string& line, std::chrono::milliseconds timeout);
  // Waits up to `timeout` for a line starting with `prefix`; returns it.
  std::optional<std::string> WaitForPrefix(const std::string& prefix,
                                           std::chrono::milliseconds timeout);

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_SUPPORT_SUBPROCESS_H_

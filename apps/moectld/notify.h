// Notify: systemd's notify protocol (READY=1, STATUS=..., WATCHDOG=1) without
// ever blocking the loop.
//
// sd_notify() sends on a datagram socket and blocks while the receiver's queue
// is full (net.unix.max_dgram_qlen, 10 by default): a NOTIFY_SOCKET nobody
// reads would stop the loop, its watchdog pings included. This sends with
// MSG_DONTWAIT and drops a message the queue cannot take, counting it.

#ifndef MOE_APPS_MOECTLD_NOTIFY_H_
#define MOE_APPS_MOECTLD_NOTIFY_H_

#include <cstdint>
#include <string>

namespace moe::controller {

class Notifier {
 public:
  // Reads $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace);
  // without it every Send is a no-op.
  Notifier();
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Sends `message` ("READY=1", "STATUS=...", several lines at once); false
  // when it was dropped (no socket, queue full, or an error).
  bool Send(const std::string& message);
  uint64_t dropped() const { return dropped_; }

 private:
  int fd_ = -1;
  std::string address_;  // sockaddr_un.sun_path bytes ('\0'-led when abstract)
  uint64_t dropped_ = 0;
};

}  // namespace moe::controller

#endif  // MOE_APPS_MOECTLD_NOTIFY_H_

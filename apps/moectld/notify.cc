#include "notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace moe::controller {

Notifier::Notifier() {
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (env == nullptr || env[0] == '\0') return;
  address_ = env;
  if (address_[0] == '@') address_[0] = '\0';  // abstract namespace
  if (address_.size() >= sizeof(sockaddr_un::sun_path)) {
    spdlog::warn("NOTIFY_SOCKET is too long for a Unix socket address; systemd is not told");
    address_.clear();
    return;
  }
  fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) spdlog::warn("notify socket: {}", std::strerror(errno));
}

Notifier::~Notifier() {
  if (fd_ >= 0) close(fd_);
}

bool Notifier::Send(const std::string& message) {
  if (fd_ < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address_.data(), address_.size());
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
  if (sendto(fd_, message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
             reinterpret_cast<const sockaddr*>(&addr),
             len) == static_cast<ssize_t>(message.size())) {
    return true;
  }
  ++dropped_;
  // The first and then every power of two.
  if ((dropped_ & (dropped_ - 1)) == 0) {
    spdlog::warn("notify socket: {} message(s) to systemd dropped ({}); the loop goes on", dropped_,
                 std::strerror(errno));
  }
  return false;
}

}  // namespace moe::controller

#include "control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::controller {
namespace {

// How long a client may take to send its request.
constexpr int kReadTimeoutMs = 2000;
// Requests queued for the loop at once; more wait in the listen backlog.
constexpr size_t kMaxQueued = 16;

std::string Errno(std::string_view what, const std::string& path) {
  return fmt::format("{} {}: {}", what, path, std::strerror(errno));
}

std::string UserName(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return "";
}

std::string GroupName(gid_t gid) {
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  if (getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_name;
  }
  return std::to_string(gid);
}

// True when the user `uid` (primary group `gid`) is a member of `group`.
bool InGroup(uid_t uid, gid_t gid, gid_t group) {
  if (gid == group) return true;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) return false;
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) < 0) return false;
  }
  groups.resize(static_cast<size_t>(n));
  return std::find(groups.begin(), groups.end(), group) != groups.end();
}

struct Pending {
  nlohmann::json request;
  Caller caller;
  std::promise<nlohmann::json> reply;
};

class ControlServerImpl final : public ControlServer {
 public:
  ControlServerImpl(std::string path, int listen_fd, int wake_read, int wake_write, gid_t group)
      : path_(std::move(path)),
        listen_fd_(listen_fd),
        wake_read_(wake_read),
        wake_write_(wake_write),
        group_(group) {
    thread_ = std::thread([this] { Run(); });
  }

  ~ControlServerImpl() override {
    stop_ = true;
    char byte = 1;
    (void)!write(wake_write_, &byte, 1);
    thread_.join();
    close(listen_fd_);
    close(wake_read_);
    close(wake_write_);
    unlink(path_.c_str());
    std::lock_guard lock(mu_);
    for (auto& p : queue_)
      p->reply.set_value(
          {{"ok", false}, {"error", "moectld is stopping"}, {"code", "unavailable"}});
  }

  void Serve(const Handler& handle) override {
    std::deque<std::shared_ptr<Pending>> taken;
    {
      std::lock_guard lock(mu_);
      taken.swap(queue_);
    }
    for (auto& p : taken) {
      nlohmann::json reply;
      try {
        reply = handle(p->request, p->caller);
      } catch (const std::exception& e) {
        reply = {{"ok", false},
                 {"error", fmt::format("bad request: {}", e.what())},
                 {"code", "invalid_argument"}};
      }
      p->reply.set_value(std::move(reply));
    }
  }

  const std::string& path() const override { return path_; }

 private:
  void Run() {
    while (!stop_) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
      if (poll(fds, 2, 1000) < 0) {
        if (errno == EINTR) continue;
        spdlog::error("control socket: poll: {}", std::strerror(errno));
        return;
      }
      if (stop_ || (fds[1].revents & POLLIN) != 0) continue;
      if ((fds[0].revents & POLLIN) == 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      Answer(fd);
      close(fd);
    }
  }

  static void Reply(int fd, const nlohmann::json& reply) {
    std::string line = reply.dump() + "\n";
    size_t off = 0;
    while (off < line.size()) {
      ssize_t n = send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

  void Answer(int fd) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;
    Caller caller;
    caller.uid = cred.uid;
    caller.pid = cred.pid;
    caller.user = UserName(cred.uid);
    if (cred.uid != 0 && cred.uid != geteuid() && !InGroup(cred.uid, cred.gid, group_)) {
      ++refused_;
      if ((refused_ & (refused_ - 1)) == 0) {
        spdlog::warn("control socket: refused {} (not in group {}); {} refused so far",
                     caller.Describe(), GroupName(group_), refused_);
      }
      Reply(fd, {{"ok", false},
                 {"error", fmt::format("permission denied: {} is not in group {}, whose members "
                                       "may use moectld's control socket",
                                       caller.Describe(), GroupName(group_))},
                 {"code", "permission_denied"}});
      return;
    }
    std::string text;
    char buf[4096];
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kReadTimeoutMs);
    while (text.find('\n') == std::string::npos && text.size() <= kMaxRequestBytes) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      pollfd p{fd, POLLIN, 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) {
        Reply(fd, {{"ok", false},
                   {"error", "no complete request line within 2 s"},
                   {"code", "invalid_argument"}});
        return;
      }
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    if (text.size() > kMaxRequestBytes) {
      Reply(fd, {{"ok", false},
                 {"error", fmt::format("request longer than {} bytes", kMaxRequestBytes)},
                 {"code", "invalid_argument"}});
      return;
    }
    nlohmann::json request = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (request.is_discarded() || !request.is_object()) {
      Reply(fd, {{"ok", false},
                 {"error", "the request is not one JSON object on one line"},
                 {"code", "invalid_argument"}});
      return;
    }
    auto pending = std::make_shared<Pending>();
    pending->request = std::move(request);
    pending->caller = caller;
    std::future<nlohmann::json> reply = pending->reply.get_future();
    {
      std::lock_guard lock(mu_);
      if (queue_.size() >= kMaxQueued) {
        Reply(fd, {{"ok", false},
                   {"error", "busy: too many requests queued; try again"},
                   {"code", "unavailable"}});
        return;
      }
      queue_.push_back(pending);
    }
    if (reply.wait_for(kReplyTimeout) != std::future_status::ready) {
      Reply(fd, {{"ok", false},
                 {"error", "moectld's loop did not answer within 10 s (see its log)"},
                 {"code", "unavailable"}});
      return;
    }
    Reply(fd, reply.get());
  }

  const std::string path_;
  const int listen_fd_;
  const int wake_read_;
  const int wake_write_;
  const gid_t group_;
  std::atomic<bool> stop_{false};
  uint64_t refused_ = 0;  // server thread only
  std::mutex mu_;
  std::deque<std::shared_ptr<Pending>> queue_;
  std::thread thread_;
};

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const ControlOptions& options) {
  const std::string& path = options.socket;
  if (path.empty()) return Status::InvalidArgument("control.socket: empty");
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument(
        fmt::format("control.socket: {} is longer than a Unix socket path may be", path));
  }
  gid_t gid = getegid();
  if (!options.group.empty()) {
    std::vector<char> buf(16384);
    group gr{};
    group* found = nullptr;
    if (getgrnam_r(options.group.c_str(), &gr, buf.data(), buf.size(), &found) != 0 ||
        found == nullptr) {
      return Status::InvalidArgument(fmt::format(
          "control.group: no group named '{}' (create it with `groupadd {}`, or leave group "
          "empty for the daemon's own)",
          options.group, options.group));
    }
    gid = found->gr_gid;
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists(
          fmt::format("control.socket: {} exists and is not a socket; remove it or choose "
                      "another path",
                      path));
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live =
        probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) close(probe);
    if (live) {
      return Status::AlreadyExists(
          fmt::format("control.socket: {} is in use by another process (another moectld?)", path));
    }
    unlink(path.c_str());  // stale: nobody listens
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IoError(Errno("creating the control socket", path));
  // Created owner-only, then opened to the group: never wider than asked.
  const mode_t old_mask = umask(0177);
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old_mask);
  if (bound != 0) {
    Status s = Status::IoError(Errno("binding the control socket", path));
    close(fd);
    return s;
  }
  if (chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0 ||
      chmod(path.c_str(), static_cast<mode_t>(options.socket_mode)) != 0 || listen(fd, 16) != 0) {
    Status s = Status::IoError(Errno("setting up the control socket", path));
    close(fd);
    unlink(path.c_str());
    return s;
  }
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    Status s = Status::IoError(Errno("creating a pipe for the control socket", path));
    close(fd);
    unlink(path.c_str());
    return s;
  }
  return std::unique_ptr<ControlServer>(
      std::make_unique<ControlServerImpl>(path, fd, wake[0], wake[1], gid));
}

}  // namespace moe::controller

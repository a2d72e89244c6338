#include "metrics_server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "controller_config.h"

namespace moe::controller {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Threads that answer requests (scrapes, health checks). An idle keep-alive
// connection holds one for at most kKeepAliveSeconds.
constexpr size_t kServerThreads = 4;
constexpr time_t kKeepAliveSeconds = 1;

class HttpMetricsServer final : public MetricsServer {
 public:
  explicit HttpMetricsServer(const MetricsOptions& options) { Update(options); }

  ~HttpMetricsServer() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  Status Bind(const std::string& listen) {
    const size_t colon = listen.rfind(':');
    std::string host = listen.substr(0, colon);
    const int port = std::stoi(listen.substr(colon + 1));
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    server_.new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
    server_.set_keep_alive_timeout(kKeepAliveSeconds);
    // SO_REUSEADDR only: a restart binds at once, but a second daemon on the
    // same address fails instead of sharing it (httplib's default is SO_REUSEPORT).
    server_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_.Get("/metrics",
                [this](const httplib::Request&, httplib::Response& res) { ServeMetrics(res); });
    server_.Get("/healthz",
                [this](const httplib::Request&, httplib::Response& res) { ServeHealth(res); });
    if (!server_.bind_to_port(host.c_str(), port)) {
      return Status::Unavailable(
          fmt::format("cannot listen on {} for metrics (address in use, or no such host)", listen));
    }
    address_ = listen;
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return Status::Ok();
  }

  void Publish(MetricsSnapshot snapshot) override {
    auto shared = std::make_shared<const MetricsSnapshot>(std::move(snapshot));
    std::lock_guard lock(mu_);
    latest_ = std::move(shared);
    published_ = SteadyClock::now();
  }

  void Update(const MetricsOptions& options) override {
    per_layer_ = options.per_layer;
    loop_timeout_ms_ = options.loop_timeout_ms;
  }

  std::string address() const override { return address_; }

 private:
  std::pair<std::shared_ptr<const MetricsSnapshot>, SteadyClock::duration> Latest() const {
    std::lock_guard lock(mu_);
    return {latest_, SteadyClock::now() - published_};
  }

  void ServeMetrics(httplib::Response& res) const {
    auto [snapshot, age] = Latest();
    if (!snapshot) {
      res.status = 503;
      res.set_content("no figures yet: the controller loop has not published any\n", "text/plain");
      return;
    }
    Result<std::string> text =
        RenderMetrics(*snapshot, per_layer_, std::chrono::duration<double>(age).count());
    if (!text.ok()) {
      spdlog::error("metrics: cannot render: {}", text.status().ToString());
      res.status = 500;
      res.set_content(text.status().ToString() + "\n", "text/plain");
      return;
    }
    res.set_content(*text, std::string(prometheus::kPrometheusContentType));
  }

  void ServeHealth(httplib::Response& res) const {
    auto [snapshot, age] = Latest();
    Health health =
        CheckHealth(snapshot.get(), age, std::chrono::milliseconds(loop_timeout_ms_.load()));
    res.status = health.ok ? 200 : 503;
    res.set_content(health.reason + "\n", "text/plain");
  }

  httplib::Server server_;
  std::thread thread_;
  std::string address_;
  std::atomic<bool> per_layer_{false};
  std::atomic<int64_t> loop_timeout_ms_{10'000};
  mutable std::mutex mu_;
  std::shared_ptr<const MetricsSnapshot> latest_;  // guarded by mu_
  SteadyClock::time_point published_{};            // guarded by mu_
};

}  // namespace

Health CheckHealth(const MetricsSnapshot* latest, std::chrono::steady_clock::duration age,
                   std::chrono::milliseconds loop_timeout) {
  if (latest == nullptr) return {false, "starting: the controller loop has not run yet"};
  if (age > loop_timeout) {
    return {false, fmt::format("the controller loop has not run for {:.1f} s (limit {:.1f} s)",
                               std::chrono::duration<double>(age).count(),
                               std::chrono::duration<double>(loop_timeout).count())};
  }
  if (latest->db_failing) {
    return {false, fmt::format("the database does not accept writes ({} pending): {}",
                               latest->db_pending, latest->db_last_error)};
  }
  return {true, "ok"};
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const MetricsOptions& options) {
  if (Status s = CheckListenAddress(options.listen); !s.ok()) {
    return Status::InvalidArgument(
        fmt::format("metrics listen \"{}\": {}", options.listen, s.message()));
  }
  auto server = std::make_unique<HttpMetricsServer>(options);
  MOE_RETURN_IF_ERROR(server->Bind(options.listen));
  return std::unique_ptr<MetricsServer>(std::move(server));
}

}  // namespace moe::controller

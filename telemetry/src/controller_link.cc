// ControllerLink over ZeroMQ: PULL for telemetry, ROUTER for commands and
// acks, and (with CURVE) a ZAP handler thread enforcing the engine allow-list.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <iterator>
#include <map>
#include <set>
#include <thread>
#include <utility>
#include <zmq_addon.hpp>

#include "moe/telemetry/transport.h"
#include "zmq_util.h"

namespace moe::telemetry {
namespace {

using internal::ShouldLog;
using Clock = std::chrono::steady_clock;
using Key = std::array<uint8_t, 32>;

// Most engines with a command route; Hellos for further engine ids on the
// command channel are skipped ("routes") until one's route is gone.
constexpr size_t kMaxRoutedEngines = 65536;

// The ZAP endpoint libzmq asks (RFC 27), per context.
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

// Engine ids each allowed key may speak for, by binary key (ZAP) and by its
// Z85 text (the User-Id ZAP hands to every message from that connection).
struct AllowList {
  std::map<Key, std::set<std::string>> ids_by_key;
  std::map<std::string, std::set<std::string>> ids_by_user;
};

std::string_view ChannelName(Channel c) {
  return c == Channel::kTelemetry ? "telemetry" : "command";
}

std::string Printable(std::string_view id) {
  std::string out;
  for (char ch : id.substr(0, 64)) {
    out += (ch >= 0x20 && ch < 0x7f) ? ch : '?';
  }
  return out;
}

// Answers ZAP requests until the context shuts down: 200 with the key's Z85
// text as User-Id for an allowed CURVE client key, 400 otherwise.
void ServeZap(zmq::socket_t socket, AllowList allowed, std::atomic<uint64_t>* denied) {
  for (;;) {
    try {
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(socket, std::back_inserter(request))) continue;
      // version, request id, domain, address, routing id, mechanism, credentials...
      std::string status_code = "400";
      std::string status_text = "engine key not allowed";
      std::string user_id;
      if (request.size() < 6 || request[0].to_string_view() != "1.0") {
        status_code = "500";
        status_text = "malformed ZAP request";
      } else if (request[5].to_string_view() == "CURVE" && request.size() >= 7 &&
                 request[6].size() == 32) {
        Key key;
        std::memcpy(key.data(), request[6].data(), key.size());
        // The peer's routing id is not known yet at the handshake (libzmq
        // sends the server's own), so the ids are checked per message.
        if (allowed.ids_by_key.count(key) > 0) {
          status_code = "200";
          status_text = "OK";
          char z85[41] = {};
          zmq_z85_encode(z85, key.data(), key.size());
          user_id = z85;
        }
      }
      if (status_code != "200") {
        const uint64_t n = denied->fetch_add(1, std::memory_order_relaxed) + 1;
        if (ShouldLog(n)) {
          spdlog::warn("telemetry: refused connection #{} from {}: {}", n,
                       request.size() > 3 ? request[3].to_string() : "?", status_text);
        }
      }
      std::array<zmq::const_buffer, 6> reply = {
          zmq::str_buffer("1.0"),
          zmq::buffer(request.size() > 1 ? request[1].to_string_view() : std::string_view()),
          zmq::buffer(status_code),
          zmq::buffer(status_text),
          zmq::buffer(user_id),
          zmq::str_buffer("")};
      zmq::send_multipart(socket, reply);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      spdlog::error("telemetry: ZAP handler: {}", e.what());
    } catch (const std::exception& e) {
      spdlog::error("telemetry: ZAP handler: {}", e.what());
    }
  }
  socket.close();
}

// Whether a command-channel routing id may speak for `engine_id`: the id
// itself, or the id (cut to fit) + '#' + a 16-digit tag, as engines set it.
bool RoutingIdNames(std::string_view routing_id, std::string_view engine_id) {
  if (routing_id == engine_id) return true;
  constexpr size_t kTag = 17;  // '#' and 16 hex digits
  if (routing_id.size() <= kTag || routing_id[routing_id.size() - kTag] != '#') return false;
  return routing_id.substr(0, routing_id.size() - kTag) == engine_id.substr(0, kMaxIdBytes - kTag);
}

class ZmqControllerLink final : public ControllerLink {
 public:
  explicit ZmqControllerLink(ControllerLinkOptions options) : options_(std::move(options)) {}

  ~ZmqControllerLink() override {
    pull_.close();
    router_.close();
    // Wakes the ZAP thread (its recv fails with ETERM); the context itself is
    // terminated by its destructor once every socket is closed.
    context_.shutdown();
    if (zap_thread_.joinable()) zap_thread_.join();
  }

  Status Start(AllowList allowed);

  Result<std::optional<Inbound>> Receive(std::chrono::milliseconds timeout) override {
    try {
      return ReceiveImpl(timeout);
    } catch (const zmq::error_t& e) {
      return internal::ZmqError("ControllerLink::Receive", __FILE__, __LINE__, e.num());
    } catch (const std::exception& e) {
      return Status::Internal(fmt::format("ControllerLink::Receive: {}", e.what()));
    }
  }

  Status SendCommand(const Command& command) override {
    return Guarded("ControllerLink::SendCommand", __LINE__,
                   [&] { return SendToEngine(command.engine_id, command); });
  }

  Status SendSync(const Sync& sync) override {
    return Guarded("ControllerLink::SendSync", __LINE__,
                   [&] { return SendToEngine(sync.engine_id, sync); });
  }

  // Runs `send`, turning a ZeroMQ or other exception into a Status named `what`.
  template <typename F>
  static Status Guarded(const char* what, int line, F&& send) {
    try {
      return send();
    } catch (const zmq::error_t& e) {
      return internal::ZmqError(what, __FILE__, line, e.num());
    } catch (const std::exception& e) {
      return Status::Internal(fmt::format("{}: {}", what, e.what()));
    }
  }

  LinkStats stats() const override {
    LinkStats s = stats_;
    s.auth_denied = auth_denied_.load(std::memory_order_relaxed);
    return s;
  }

  std::string telemetry_endpoint() const override { return telemetry_endpoint_; }
  std::string command_endpoint() const override { return command_endpoint_; }

 private:
  enum class ReadKind { kNothing, kSkipped, kGood };
  struct Read {
    ReadKind kind = ReadKind::kNothing;
    std::optional<Inbound> inbound;
  };

  Result<std::optional<Inbound>> ReceiveImpl(std::chrono::milliseconds timeout) {
    if (!read_ahead_.empty()) {  // read by SendCommand looking for a route
      Inbound inbound = std::move(read_ahead_.front());
      read_ahead_.pop_front();
      ++stats_.received;
      return std::optional<Inbound>(std::move(inbound));
    }
    const Clock::time_point deadline = Clock::now() + timeout;
    for (;;) {
      for (int k = 0; k < 2; ++k) {
        const Channel channel = (k == 0) == (next_first_ == Channel::kTelemetry)
                                    ? Channel::kTelemetry
                                    : Channel::kCommand;
        for (;;) {
          MOE_ASSIGN_OR_RETURN(Read read, ReadOne(channel));
          if (read.kind == ReadKind::kNothing) break;
          if (read.kind == ReadKind::kGood) {
            // Alternate which channel is read first, so neither starves.
            next_first_ = channel == Channel::kTelemetry ? Channel::kCommand : Channel::kTelemetry;
            ++stats_.received;
            return std::move(read.inbound);
          }
          // A flood of bad messages must not stretch the wait past its deadline.
          if (Clock::now() >= deadline) return std::optional<Inbound>();
        }
      }
      const auto remaining =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (remaining.count() <= 0) return std::optional<Inbound>();
      zmq::pollitem_t items[] = {{pull_.handle(), 0, ZMQ_POLLIN, 0},
                                 {router_.handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, remaining);
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) {
          return internal::ZmqError("zmq::poll(items, 2, remaining)", __FILE__, __LINE__, e.num());
        }
      }
    }
  }

  // Reads one message from `channel` without blocking.
  Result<Read> ReadOne(Channel channel) {
    zmq::socket_t& socket = channel == Channel::kTelemetry ? pull_ : router_;
    zmq::message_t first;
    zmq::recv_result_t got;
    MOE_ZMQ_CHECK(got = socket.recv(first, zmq::recv_flags::dontwait));
    if (!got) return Read{};

    std::string routing_id;
    zmq::message_t payload;
    size_t num_frames = 1;
    bool more = false;
    if (channel == Channel::kCommand) {
      routing_id = first.to_string();
      if (first.more()) {
        MOE_ZMQ_CHECK(got = socket.recv(payload, zmq::recv_flags::none));
        ++num_frames;
        more = payload.more();
      }
    } else {
      more = first.more();
      payload = std::move(first);
    }
    while (more) {  // parts of a message arrive together: this cannot block
      zmq::message_t rest;
      MOE_ZMQ_CHECK(got = socket.recv(rest, zmq::recv_flags::none));
      ++num_frames;
      more = rest.more();
    }
    const size_t expected = channel == Channel::kCommand ? 2 : 1;
    if (num_frames != expected) {
      return Skip(channel, routing_id, "frames",
                  fmt::format("{} frames, expected {}", num_frames, expected));
    }

    auto decoded = Decode(std::string_view(payload.data<char>(), payload.size()));
    if (!decoded.ok()) return Skip(channel, routing_id, "decode", decoded.status().ToString());

    Inbound inbound{std::move(*decoded), {}, channel};
    if (channel == Channel::kTelemetry) {
      uint64_t seq = 0;
      if (auto* m = std::get_if<StepRecord>(&inbound.message)) {
        inbound.peer = m->engine_id;
        seq = m->seq;
      } else if (auto* h = std::get_if<Hello>(&inbound.message)) {
        inbound.peer = h->engine_id;
        seq = h->seq;
      } else if (auto* b = std::get_if<Heartbeat>(&inbound.message)) {
        inbound.peer = b->engine_id;
        seq = b->seq;
      } else {
        return Skip(channel, routing_id, "channel", "Command or Ack on the telemetry channel");
      }
      tracker_.Observe(inbound.peer, seq);
      const uint64_t gaps = tracker_.total_gaps(inbound.peer);
      const uint64_t restarts = tracker_.restarts(inbound.peer);
      if (gaps > 0) stats_.gaps[inbound.peer] = gaps;
      if (restarts > 0) stats_.restarts[inbound.peer] = restarts;
    } else {
      std::string engine_id;
      if (auto* h = std::get_if<Hello>(&inbound.message)) {
        engine_id = h->engine_id;
      } else if (auto* a = std::get_if<Ack>(&inbound.message)) {
        engine_id = a->engine_id;
      } else {
        return Skip(channel, routing_id, "channel",
                    "only Hello and Ack may use the command channel");
      }
      if (!RoutingIdNames(routing_id, engine_id)) {
        return Skip(
            channel, routing_id, "identity",
            fmt::format("engine_id '{}' does not match the routing id", Printable(engine_id)));
      }
      const auto bound = engine_of_route_.find(routing_id);
      if (bound != engine_of_route_.end() && bound->second != engine_id) {
        return Skip(channel, routing_id, "identity",
                    fmt::format("engine_id '{}' on a connection that speaks for '{}'",
                                Printable(engine_id), Printable(bound->second)));
      }
      inbound.peer = std::move(engine_id);
    }
    if (options_.curve) {
      // ZAP named the connection's key (User-Id); it must be listed for the
      // engine id the message claims.
      const char* user = nullptr;
      try {
        user = payload.gets("User-Id");
      } catch (const zmq::error_t&) {
        user = nullptr;
      }
      const auto it =
          user != nullptr ? allowed_.ids_by_user.find(user) : allowed_.ids_by_user.end();
      if (it == allowed_.ids_by_user.end() || it->second.count(inbound.peer) == 0) {
        // A connection that held a route and now fails the check (someone
        // who learned its routing id took it over) loses the route.
        if (channel == Channel::kCommand) Unbind(routing_id);
        return Skip(channel, routing_id, "identity",
                    fmt::format("engine id '{}' is not listed for the key that sent it",
                                Printable(inbound.peer)));
      }
    }
    if (channel == Channel::kCommand && !BindRoute(inbound.peer, routing_id)) {
      return Skip(channel, routing_id, "routes",
                  fmt::format("{} engines already have command routes", kMaxRoutedEngines));
    }
    return Read{ReadKind::kGood, std::move(inbound)};
  }

  Read Skip(Channel channel, const std::string& routing_id, const char* reason,
            const std::string& why) {
    const uint64_t n = ++stats_.malformed;
    ++stats_.skipped_by_reason[reason];
    if (ShouldLog(n)) {
      spdlog::warn("telemetry: skipped malformed message #{} on the {} channel{}: {}", n,
                   ChannelName(channel),
                   routing_id.empty() ? "" : fmt::format(" from '{}'", Printable(routing_id)), why);
    }
    return Read{ReadKind::kSkipped, std::nullopt};
  }

  // Records that `routing_id` speaks for `engine_id`. The first connection of
  // an engine holds its route; a later one (a restarted engine whose old
  // connection has not been dropped yet, or a rogue) waits as the candidate
  // and takes over only once the route in use is gone, so a live engine's
  // commands cannot be diverted. False if the table is full.
  bool BindRoute(const std::string& engine_id, const std::string& routing_id) {
    auto it = routes_.find(engine_id);
    if (it == routes_.end()) {
      if (routes_.size() >= kMaxRoutedEngines) return false;
      it = routes_.emplace(engine_id, Route{}).first;
    }
    Route& route = it->second;
    if (route.current == routing_id || route.candidate == routing_id) return true;
    if (route.current.empty()) {
      route.current = routing_id;
    } else {
      if (!route.candidate.empty()) engine_of_route_.erase(route.candidate);
      route.candidate = routing_id;
    }
    engine_of_route_[routing_id] = engine_id;
    return true;
  }

  // Forgets `routing_id`; when it was its engine's route, the candidate (if
  // any) steps up.
  void Unbind(const std::string& routing_id) {
    const auto bound = engine_of_route_.find(routing_id);
    if (bound == engine_of_route_.end()) return;
    const auto it = routes_.find(bound->second);
    engine_of_route_.erase(bound);
    if (it == routes_.end()) return;
    Route& route = it->second;
    if (route.candidate == routing_id) {
      route.candidate.clear();
    } else if (route.current == routing_id) {
      route.current = std::move(route.candidate);
      route.candidate.clear();
    }
    if (route.current.empty()) routes_.erase(it);
  }

  // Sends a Command or a Sync to `engine_id` on its route.
  Status SendToEngine(const std::string& engine_id, const Message& message) {
    MOE_ASSIGN_OR_RETURN(std::string bytes, Encode(message));
    if (routes_.count(engine_id) == 0) {
      // The engine's command-channel Hello may be waiting behind its steps
      // (the channels are read in turn): read what the channel holds, keep
      // it for Receive, and look again.
      while (read_ahead_.size() < kMaxReadAhead) {
        MOE_ASSIGN_OR_RETURN(Read read, ReadOne(Channel::kCommand));
        if (read.kind == ReadKind::kNothing) break;
        if (read.kind == ReadKind::kGood) read_ahead_.push_back(std::move(*read.inbound));
      }
    }
    // A connection gone since its last message fails with EHOSTUNREACH; the
    // engine's newer connection, if one said Hello, is tried next.
    for (;;) {
      const auto it = routes_.find(engine_id);
      if (it == routes_.end()) {
        return Status::Unavailable(
            options_.curve
                ? fmt::format("engine '{}' has not proven its identity on the command channel",
                              Printable(engine_id))
                : fmt::format("engine '{}' is not connected to the command channel",
                              Printable(engine_id)));
      }
      const std::string route = it->second.current;
      zmq::send_result_t sent;
      try {
        sent =
            router_.send(zmq::buffer(route), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      } catch (const zmq::error_t& e) {
        if (e.num() == EHOSTUNREACH) {
          Unbind(route);
          continue;
        }
        return internal::ZmqError("router_.send(route, sndmore | dontwait)", __FILE__, __LINE__,
                                  e.num());
      }
      if (!sent) {
        return Status::Unavailable(
            fmt::format("command queue to engine '{}' is full", Printable(engine_id)));
      }
      // The routing frame was accepted, so the payload frame goes to the same pipe.
      MOE_ZMQ_CHECK(sent = router_.send(zmq::buffer(bytes), zmq::send_flags::dontwait));
      return Status::Ok();
    }
  }

  Status ConfigureAndBind(zmq::socket_t& socket, const std::string& endpoint, std::string* bound) {
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::rcvhwm, options_.receive_queue));
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::sndhwm, options_.receive_queue));
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::linger, static_cast<int>(options_.linger.count())));
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::maxmsgsize, options_.max_message_bytes));
    if (options_.curve) {
      MOE_ZMQ_CHECK(socket.set(zmq::sockopt::curve_server, true));
      MOE_ZMQ_CHECK(socket.set(zmq::sockopt::curve_secretkey, options_.curve->secret_key));
      MOE_ZMQ_CHECK(socket.set(zmq::sockopt::zap_domain, "moectl"));
    }
    MOE_ZMQ_CHECK(socket.bind(endpoint));
    MOE_ZMQ_CHECK(*bound = socket.get(zmq::sockopt::last_endpoint));
    return Status::Ok();
  }

  ControllerLinkOptions options_;
  zmq::context_t context_;  // declared before the sockets: destroyed after them
  zmq::socket_t pull_;
  zmq::socket_t router_;
  std::thread zap_thread_;
  AllowList allowed_;  // the ZAP thread has its own copy
  // Command routes by engine id, and the engine each known routing id speaks
  // for (every routing id here is some engine's current or candidate route).
  // With CURVE only connections whose messages passed the key check appear.
  struct Route {
    std::string current;    // where commands go
    std::string candidate;  // the engine's newest other connection, if any
  };
  std::map<std::string, Route> routes_;
  std::map<std::string, std::string> engine_of_route_;
  // Command-channel messages SendCommand read while looking for a route,
  // returned by Receive first (at most kMaxReadAhead).
  static constexpr size_t kMaxReadAhead = 1024;
  std::deque<Inbound> read_ahead_;
  std::atomic<uint64_t> auth_denied_{0};
  std::string telemetry_endpoint_;
  std::string command_endpoint_;
  SequenceTracker tracker_;
  LinkStats stats_;
  Channel next_first_ = Channel::kTelemetry;
};

Status ZmqControllerLink::Start(AllowList allowed) {
  allowed_ = allowed;
  if (options_.curve) {
    // The handler must be bound before any CURVE socket takes a connection,
    // or libzmq would let handshakes through unchecked.
    zmq::socket_t zap;
    MOE_ZMQ_CHECK(zap = zmq::socket_t(context_, zmq::socket_type::rep));
    MOE_ZMQ_CHECK(zap.set(zmq::sockopt::linger, 0));
    MOE_ZMQ_CHECK(zap.bind(kZapEndpoint));
    zap_thread_ = std::thread(ServeZap, std::move(zap), std::move(allowed), &auth_denied_);
  }
  MOE_ZMQ_CHECK(pull_ = zmq::socket_t(context_, zmq::socket_type::pull));
  MOE_ZMQ_CHECK(router_ = zmq::socket_t(context_, zmq::socket_type::router));
  // Unknown or gone engines fail loudly (EHOSTUNREACH) instead of silently
  // dropping. Handover: every engine connection has its own random routing
  // id, so a second connection with the same id is that socket reconnecting
  // before its old connection was dropped; without handover libzmq would
  // ignore it, and the engine would never be heard on this channel again.
  // Which connection gets an engine's commands is decided by BindRoute.
  MOE_ZMQ_CHECK(router_.set(zmq::sockopt::router_mandatory, true));
  MOE_ZMQ_CHECK(router_.set(zmq::sockopt::router_handover, true));
  MOE_ZMQ_CHECK(router_.set(zmq::sockopt::heartbeat_ivl, 1000));
  MOE_ZMQ_CHECK(router_.set(zmq::sockopt::heartbeat_timeout, 3000));
  MOE_RETURN_IF_ERROR(ConfigureAndBind(pull_, options_.telemetry_endpoint, &telemetry_endpoint_)
                          .WithContext("binding the telemetry channel"));
  MOE_RETURN_IF_ERROR(ConfigureAndBind(router_, options_.command_endpoint, &command_endpoint_)
                          .WithContext("binding the command channel"));
  return Status::Ok();
}

// Loopback or local: tcp://127.x.y.z:P, tcp://localhost:P, tcp://[::1]:P,
// ipc://..., inproc://...
bool IsLocalEndpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  if (host.starts_with("[::1]:")) return true;
  const size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = host.substr(0, colon);
  return host == "localhost" || (host.starts_with("127.") &&
                                 host.find_first_not_of("0123456789.") == std::string_view::npos);
}

Result<AllowList> ValidateOptions(const ControllerLinkOptions& o) {
  if (o.telemetry_endpoint.empty() || o.command_endpoint.empty()) {
    return Status::InvalidArgument(
        "ControllerLinkOptions: telemetry_endpoint and "
        "command_endpoint are required");
  }
  if (o.receive_queue < 1 || o.linger.count() < 0 || o.max_message_bytes < 1) {
    return Status::InvalidArgument(
        "ControllerLinkOptions: receive_queue and max_message_bytes must be >= 1, linger >= 0");
  }
  AllowList allowed;
  if (!o.curve) {
    if (!o.engine_keys.empty()) {
      return Status::InvalidArgument(
          "ControllerLinkOptions.engine_keys is set but curve is not: the allow-list "
          "would not be enforced");
    }
    for (const std::string* endpoint : {&o.telemetry_endpoint, &o.command_endpoint}) {
      if (IsLocalEndpoint(*endpoint)) continue;
      if (!o.insecure) {
        return Status::InvalidArgument(fmt::format(
            "endpoint '{}' is not loopback, and without CURVE nothing authenticates the engines "
            "that reach it: bind 127.0.0.1 or ipc://, turn CURVE on, or set insecure = true",
            *endpoint));
      }
      spdlog::warn(
          "telemetry: INSECURE: binding {} without CURVE; anyone who can reach it can send "
          "telemetry for any engine id and take an engine id's command route",
          *endpoint);
    }
    return allowed;
  }
  if (!zmq_has("curve")) {
    return Status::Unsupported("CURVE requested but libzmq was built without CURVE support");
  }
  MOE_RETURN_IF_ERROR(
      internal::DecodeCurveKey("ControllerLinkOptions.curve.public_key", o.curve->public_key)
          .status());
  MOE_RETURN_IF_ERROR(
      internal::DecodeCurveKey("ControllerLinkOptions.curve.secret_key", o.curve->secret_key)
          .status());
  if (o.engine_keys.empty()) {
    return Status::InvalidArgument("ControllerLinkOptions.engine_keys is required with curve");
  }
  for (const auto& [engine_id, z85] : o.engine_keys) {
    MOE_ASSIGN_OR_RETURN(
        Key key, internal::DecodeCurveKey(fmt::format("engine_keys['{}']", engine_id), z85));
    allowed.ids_by_key[key].insert(engine_id);
    char text[41] = {};
    zmq_z85_encode(text, key.data(), key.size());
    allowed.ids_by_user[text].insert(engine_id);
  }
  return allowed;
}

}  // namespace

Result<std::unique_ptr<ControllerLink>> ControllerLink::Bind(const ControllerLinkOptions& options) {
  MOE_ASSIGN_OR_RETURN(AllowList allowed, ValidateOptions(options));
  try {
    auto link = std::make_unique<ZmqControllerLink>(options);
    MOE_RETURN_IF_ERROR(link->Start(std::move(allowed)).WithContext("ControllerLink::Bind"));
    return std::unique_ptr<ControllerLink>(std::move(link));
  } catch (const zmq::error_t& e) {
    return internal::ZmqError("zmq::context_t()", __FILE__, __LINE__, e.num());
  } catch (const std::exception& e) {
    return Status::Internal(fmt::format("ControllerLink::Bind: {}", e.what()));
  }
}

}  // namespace moe::telemetry

// ControllerLink over ZeroMQ: PULL for telemetry, ROUTER for commands and
// acks, and (with CURVE) a ZAP handler thread enforcing the engine allow-list.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <iterator>
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

// The ZAP endpoint libzmq asks (RFC 27), per context.
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

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

// Answers ZAP requests until the context shuts down: 200 for an allowed CURVE
// client key, 400 otherwise.
void ServeZap(zmq::socket_t socket, std::set<Key> allowed, std::atomic<uint64_t>* denied) {
  for (;;) {
    try {
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(socket, std::back_inserter(request))) continue;
      // version, request id, domain, address, routing id, mechanism, credentials...
      std::string status_code = "400";
      std::string status_text = "engine key not allowed";
      if (request.size() < 6 || request[0].to_string_view() != "1.0") {
        status_code = "500";
        status_text = "malformed ZAP request";
      } else if (request[5].to_string_view() == "CURVE" && request.size() >= 7 &&
                 request[6].size() == 32) {
        Key key;
        std::memcpy(key.data(), request[6].data(), key.size());
        if (allowed.count(key) > 0) {
          status_code = "200";
          status_text = "OK";
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
          zmq::str_buffer(""),
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

  Status Start(std::set<Key> allowed);

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
    try {
      return SendCommandImpl(command);
    } catch (const zmq::error_t& e) {
      return internal::ZmqError("ControllerLink::SendCommand", __FILE__, __LINE__, e.num());
    } catch (const std::exception& e) {
      return Status::Internal(fmt::format("ControllerLink::SendCommand: {}", e.what()));
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
      return Skip(channel, routing_id, fmt::format("{} frames, expected {}", num_frames, expected));
    }

    auto decoded = Decode(std::string_view(payload.data<char>(), payload.size()));
    if (!decoded.ok()) return Skip(channel, routing_id, decoded.status().ToString());

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
        return Skip(channel, routing_id, "Command or Ack on the telemetry channel");
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
        return Skip(channel, routing_id, "only Hello and Ack may use the command channel");
      }
      if (engine_id != routing_id) {
        return Skip(
            channel, routing_id,
            fmt::format("engine_id '{}' differs from the routing id", Printable(engine_id)));
      }
      inbound.peer = std::move(routing_id);
    }
    return Read{ReadKind::kGood, std::move(inbound)};
  }

  Read Skip(Channel channel, const std::string& routing_id, const std::string& why) {
    const uint64_t n = ++stats_.malformed;
    if (ShouldLog(n)) {
      spdlog::warn("telemetry: skipped malformed message #{} on the {} channel{}: {}", n,
                   ChannelName(channel),
                   routing_id.empty() ? "" : fmt::format(" from '{}'", Printable(routing_id)), why);
    }
    return Read{ReadKind::kSkipped, std::nullopt};
  }

  Status SendCommandImpl(const Command& command) {
    MOE_ASSIGN_OR_RETURN(std::string bytes, Encode(command));
    zmq::send_result_t sent;
    try {
      sent = router_.send(zmq::buffer(command.engine_id),
                          zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) {
        return Status::Unavailable(fmt::format(
            "engine '{}' is not connected to the command channel", Printable(command.engine_id)));
      }
      return internal::ZmqError("router_.send(engine_id, sndmore | dontwait)", __FILE__, __LINE__,
                                e.num());
    }
    if (!sent) {
      return Status::Unavailable(
          fmt::format("command queue to engine '{}' is full", Printable(command.engine_id)));
    }
    // The routing frame was accepted, so the payload frame goes to the same pipe.
    MOE_ZMQ_CHECK(sent = router_.send(zmq::buffer(bytes), zmq::send_flags::dontwait));
    return Status::Ok();
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
  std::atomic<uint64_t> auth_denied_{0};
  std::string telemetry_endpoint_;
  std::string command_endpoint_;
  SequenceTracker tracker_;
  LinkStats stats_;
  Channel next_first_ = Channel::kTelemetry;
};

Status ZmqControllerLink::Start(std::set<Key> allowed) {
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
  // dropping; a restarted engine takes its routing id over from the old
  // connection; ZMTP heartbeats drop dead engines' routes within seconds.
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

Result<std::set<Key>> ValidateOptions(const ControllerLinkOptions& o) {
  if (o.telemetry_endpoint.empty() || o.command_endpoint.empty()) {
    return Status::InvalidArgument(
        "ControllerLinkOptions: telemetry_endpoint and "
        "command_endpoint are required");
  }
  if (o.receive_queue < 1 || o.linger.count() < 0 || o.max_message_bytes < 1) {
    return Status::InvalidArgument(
        "ControllerLinkOptions: receive_queue and max_message_bytes must be >= 1, linger >= 0");
  }
  std::set<Key> allowed;
  if (!o.curve) {
    if (!o.allowed_engine_keys.empty()) {
      return Status::InvalidArgument(
          "ControllerLinkOptions.allowed_engine_keys is set but curve is not: the allow-list "
          "would not be enforced");
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
  if (o.allowed_engine_keys.empty()) {
    return Status::InvalidArgument(
        "ControllerLinkOptions.allowed_engine_keys is required with curve");
  }
  for (size_t i = 0; i < o.allowed_engine_keys.size(); ++i) {
    MOE_ASSIGN_OR_RETURN(Key key,
                         internal::DecodeCurveKey(fmt::format("allowed_engine_keys[{}]", i),
                                                  o.allowed_engine_keys[i]));
    allowed.insert(key);
  }
  return allowed;
}

}  // namespace

Result<std::unique_ptr<ControllerLink>> ControllerLink::Bind(const ControllerLinkOptions& options) {
  MOE_ASSIGN_OR_RETURN(std::set<Key> allowed, ValidateOptions(options));
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

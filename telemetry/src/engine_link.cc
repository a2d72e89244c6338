// EngineLink over ZeroMQ: PUSH for telemetry, DEALER for commands and acks.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <utility>

#include "moe/telemetry/transport.h"
#include "zmq_util.h"

namespace moe::telemetry {
namespace {

using internal::ShouldLog;

// libzmq's monitor endpoint is per context, and each link owns its context.
constexpr const char* kMonitorEndpoint = "inproc://moe-engine-link-monitor";

class ZmqEngineLink final : public EngineLink {
 public:
  ZmqEngineLink(EngineLinkOptions options, Hello hello)
      : options_(std::move(options)), hello_(std::move(hello)) {}

  ~ZmqEngineLink() override {
    // Sockets close with the configured linger; the context then terminates
    // within that bound (no blocking on an absent controller).
    monitor_.close();
    push_.close();
    dealer_.close();
  }

  Status Start();

  Status Publish(StepRecord record) override {
    return Guard("Publish", [&]() -> Status {
      MOE_RETURN_IF_ERROR(ClaimEngineId(record.engine_id));
      MOE_RETURN_IF_ERROR(PumpMonitor());
      record.telemetry_dropped = dropped_.load(std::memory_order_relaxed);
      return SendTelemetry(std::move(record));
    });
  }

  Status PublishHeartbeat(Heartbeat heartbeat) override {
    return Guard("PublishHeartbeat", [&]() -> Status {
      MOE_RETURN_IF_ERROR(ClaimEngineId(heartbeat.engine_id));
      MOE_RETURN_IF_ERROR(PumpMonitor());
      return SendTelemetry(std::move(heartbeat));
    });
  }

  Result<std::vector<Command>> PollCommands() override {
    std::vector<Command> commands;
    Status s = Guard("PollCommands", [&]() -> Status {
      MOE_RETURN_IF_ERROR(PumpMonitor());
      return DrainCommands(commands);
    });
    if (!s.ok()) return s;
    return commands;
  }

  std::optional<uint64_t> synced_step() const override { return synced_step_; }
  bool command_channel_up() const override { return num_handshakes_ > 0; }

  Status WaitForCommands(std::chrono::milliseconds timeout) override {
    return Guard("WaitForCommands", [&]() -> Status {
      zmq::pollitem_t items[] = {{dealer_.handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 1, timeout);
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;  // a signal only ends the wait early
      }
      return Status::Ok();
    });
  }

  Status SendAck(const Ack& ack) override {
    return Guard("SendAck", [&]() -> Status {
      Ack copy = ack;
      MOE_RETURN_IF_ERROR(ClaimEngineId(copy.engine_id));
      MOE_ASSIGN_OR_RETURN(std::string bytes, Encode(copy));
      return SendOrDrop(dealer_, bytes);
    });
  }

  void UpdateHello(Hello hello) override {
    if (hello.engine_id.empty()) hello.engine_id = options_.engine_id;
    hello_ = std::move(hello);
  }

  Status PublishHello(Hello hello) override {
    return Guard("PublishHello", [&]() -> Status {
      MOE_RETURN_IF_ERROR(ClaimEngineId(hello.engine_id));
      MOE_RETURN_IF_ERROR(PumpMonitor());
      hello_ = hello;
      hello.schema_version = kSchemaVersion;
      return SendTelemetry(std::move(hello));
    });
  }

  uint64_t dropped() const override { return dropped_.load(std::memory_order_relaxed); }
  uint64_t malformed() const override { return malformed_.load(std::memory_order_relaxed); }

 private:
  // Runs `body`, turning any escaping exception into a Status.
  template <typename F>
  Status Guard(const char* what, F&& body) {
    try {
      return body();
    } catch (const zmq::error_t& e) {
      return internal::ZmqError(what, __FILE__, __LINE__, e.num());
    } catch (const std::exception& e) {
      return Status::Internal(fmt::format("EngineLink::{}: {}", what, e.what()));
    }
  }

  Status ClaimEngineId(std::string& engine_id) const {
    if (engine_id.empty()) engine_id = options_.engine_id;
    if (engine_id != options_.engine_id) {
      return Status::InvalidArgument(fmt::format(
          "message engine_id '{}' differs from the link's '{}'", engine_id, options_.engine_id));
    }
    return Status::Ok();
  }

  // Stamps the next telemetry seq, encodes, and queues on the PUSH socket.
  template <typename T>
  Status SendTelemetry(T message) {
    message.seq = next_seq_;
    MOE_ASSIGN_OR_RETURN(std::string bytes, Encode(message));
    ++next_seq_;  // consumed even when the send is dropped: the controller sees the gap
    return SendOrDrop(push_, bytes);
  }

  Status SendOrDrop(zmq::socket_t& socket, const std::string& bytes) {
    zmq::send_result_t sent;
    MOE_ZMQ_CHECK(sent = socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait));
    if (!sent) {
      const uint64_t n = dropped_.fetch_add(1, std::memory_order_relaxed) + 1;
      if (ShouldLog(n)) {
        spdlog::warn("telemetry: engine '{}' dropped message #{} (send queue of {} full)",
                     options_.engine_id, n, options_.send_queue);
      }
    }
    return Status::Ok();
  }

  // Sends the Hello on both channels with a fresh seq (and, when re-sent after
  // a reconnect, a fresh timestamp).
  Status SendHello(bool restamp) {
    Hello hello = hello_;
    hello.seq = next_seq_;
    if (restamp) {
      hello.timestamp_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    }
    hello.schema_version = kSchemaVersion;
    MOE_ASSIGN_OR_RETURN(std::string bytes, Encode(hello));
    ++next_seq_;
    MOE_RETURN_IF_ERROR(SendOrDrop(push_, bytes));
    return SendOrDrop(dealer_, bytes);
  }

  // Reads pending monitor events; after the first successful command-channel
  // handshake, each further one means a (possibly new) controller: re-Hello.
  Status PumpMonitor() {
    bool reconnected = false;
    for (;;) {
      zmq::message_t event;
      zmq::recv_result_t got;
      MOE_ZMQ_CHECK(got = monitor_.recv(event, zmq::recv_flags::dontwait));
      if (!got) break;
      uint16_t event_id = 0;
      if (event.size() >= sizeof(event_id)) std::memcpy(&event_id, event.data(), sizeof(event_id));
      while (event.more()) {  // the endpoint frame
        MOE_ZMQ_CHECK(got = monitor_.recv(event, zmq::recv_flags::none));
      }
      if (event_id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && ++num_handshakes_ > 1) reconnected = true;
    }
    if (reconnected) {
      spdlog::info("telemetry: engine '{}' reconnected to the controller; re-sending Hello",
                   options_.engine_id);
      return SendHello(/*restamp=*/true);
    }
    return Status::Ok();
  }

  Status DrainCommands(std::vector<Command>& commands) {
    for (;;) {
      zmq::message_t frame;
      zmq::recv_result_t got;
      MOE_ZMQ_CHECK(got = dealer_.recv(frame, zmq::recv_flags::dontwait));
      if (!got) return Status::Ok();
      const bool multipart = frame.more();
      for (bool more = frame.more(); more;) {  // parts arrive together: cannot block
        zmq::message_t rest;
        MOE_ZMQ_CHECK(got = dealer_.recv(rest, zmq::recv_flags::none));
        more = rest.more();
      }
      if (multipart) {
        CountMalformed("multipart message");
        continue;
      }
      auto decoded = Decode(std::string_view(frame.data<char>(), frame.size()));
      if (!decoded.ok()) {
        CountMalformed(decoded.status().ToString());
        continue;
      }
      if (const Sync* sync = std::get_if<Sync>(&*decoded)) {
        if (sync->engine_id != options_.engine_id) {
          CountMalformed(fmt::format("Sync for engine '{}'", sync->engine_id));
        } else if (!synced_step_ || sync->step > *synced_step_) {
          synced_step_ = sync->step;
        }
        continue;
      }
      Command* command = std::get_if<Command>(&*decoded);
      if (command == nullptr) {
        CountMalformed("not a Command or Sync");
        continue;
      }
      if (command->engine_id != options_.engine_id) {
        CountMalformed(fmt::format("Command for engine '{}'", command->engine_id));
        continue;
      }
      commands.push_back(std::move(*command));
    }
  }

  void CountMalformed(const std::string& why) {
    const uint64_t n = malformed_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (ShouldLog(n)) {
      spdlog::warn("telemetry: engine '{}' skipped malformed command message #{}: {}",
                   options_.engine_id, n, why);
    }
  }

  Status ConfigureSocket(zmq::socket_t& socket, const std::string& endpoint);

  EngineLinkOptions options_;
  Hello hello_;
  zmq::context_t context_;  // declared before the sockets: destroyed after them
  zmq::socket_t push_;
  zmq::socket_t dealer_;
  zmq::socket_t monitor_;
  uint64_t next_seq_ = 1;
  std::optional<uint64_t> synced_step_;  // the newest step a Sync named
  int num_handshakes_ = 0;
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> malformed_{0};
};

Status ZmqEngineLink::ConfigureSocket(zmq::socket_t& socket, const std::string& endpoint) {
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::sndhwm, options_.send_queue));
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::rcvhwm, options_.send_queue));
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::linger, static_cast<int>(options_.linger.count())));
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::reconnect_ivl,
                           static_cast<int>(options_.reconnect_interval.count())));
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::reconnect_ivl_max,
                           static_cast<int>(options_.reconnect_interval_max.count())));
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::maxmsgsize, options_.max_message_bytes));
  // Queue to a connection that is not up yet, so the Hello and the first
  // steps wait for a controller that starts later (up to send_queue of them).
  MOE_ZMQ_CHECK(socket.set(zmq::sockopt::immediate, false));
  if (options_.curve) {
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::curve_serverkey, options_.controller_public_key));
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::curve_publickey, options_.curve->public_key));
    MOE_ZMQ_CHECK(socket.set(zmq::sockopt::curve_secretkey, options_.curve->secret_key));
  }
  MOE_ZMQ_CHECK(socket.connect(endpoint));
  return Status::Ok();
}

// `engine_id` (cut to fit ZeroMQ's 255 bytes) + '#' + 16 random hex digits.
std::string ConnectionRoutingId(const std::string& engine_id) {
  std::random_device entropy;
  const uint64_t tag = (uint64_t{entropy()} << 32) | entropy();
  return fmt::format("{}#{:016x}", engine_id.substr(0, kMaxIdBytes - 17), tag);
}

Status ZmqEngineLink::Start() {
  MOE_ZMQ_CHECK(push_ = zmq::socket_t(context_, zmq::socket_type::push));
  MOE_ZMQ_CHECK(dealer_ = zmq::socket_t(context_, zmq::socket_type::dealer));
  MOE_ZMQ_CHECK(monitor_ = zmq::socket_t(context_, zmq::socket_type::pair));
  MOE_ZMQ_CHECK(monitor_.set(zmq::sockopt::linger, 0));

  // A routing id of this connection's own (the engine id, for the logs, and
  // a random tag): a restarted engine is a new route, never a duplicate the
  // controller's ROUTER would ignore, and nobody else can name this one.
  MOE_ZMQ_CHECK(dealer_.set(zmq::sockopt::routing_id, ConnectionRoutingId(options_.engine_id)));
  // ZMTP heartbeats: a dead controller is noticed in seconds, not at TCP timeout.
  MOE_ZMQ_CHECK(dealer_.set(zmq::sockopt::heartbeat_ivl, 1000));
  MOE_ZMQ_CHECK(dealer_.set(zmq::sockopt::heartbeat_timeout, 3000));
  MOE_ZMQ_CHECK_RC(
      zmq_socket_monitor(dealer_.handle(), kMonitorEndpoint, ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
  MOE_ZMQ_CHECK(monitor_.connect(kMonitorEndpoint));

  MOE_RETURN_IF_ERROR(ConfigureSocket(push_, options_.telemetry_endpoint));
  MOE_RETURN_IF_ERROR(ConfigureSocket(dealer_, options_.command_endpoint));
  return SendHello(/*restamp=*/false);
}

Status ValidateOptions(const EngineLinkOptions& o) {
  if (o.engine_id.empty() || o.engine_id.size() > kMaxIdBytes || o.engine_id[0] == '\0') {
    return Status::InvalidArgument(
        fmt::format("EngineLinkOptions.engine_id must be 1..{} bytes, not starting with a zero "
                    "byte",
                    kMaxIdBytes));
  }
  if (o.telemetry_endpoint.empty() || o.command_endpoint.empty()) {
    return Status::InvalidArgument(
        "EngineLinkOptions: telemetry_endpoint and command_endpoint "
        "are required");
  }
  if (o.send_queue < 1) {
    return Status::InvalidArgument(
        fmt::format("EngineLinkOptions.send_queue must be >= 1, got {}", o.send_queue));
  }
  if (o.linger.count() < 0 || o.reconnect_interval.count() < 1 ||
      o.reconnect_interval_max < o.reconnect_interval || o.max_message_bytes < 1) {
    return Status::InvalidArgument(
        "EngineLinkOptions: linger must be >= 0, reconnect_interval >= 1 ms and <= "
        "reconnect_interval_max, max_message_bytes >= 1");
  }
  if (o.curve) {
    if (!zmq_has("curve")) {
      return Status::Unsupported("CURVE requested but libzmq was built without CURVE support");
    }
    MOE_RETURN_IF_ERROR(
        internal::DecodeCurveKey("EngineLinkOptions.curve.public_key", o.curve->public_key)
            .status());
    MOE_RETURN_IF_ERROR(
        internal::DecodeCurveKey("EngineLinkOptions.curve.secret_key", o.curve->secret_key)
            .status());
    MOE_RETURN_IF_ERROR(
        internal::DecodeCurveKey("EngineLinkOptions.controller_public_key", o.controller_public_key)
            .status());
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<EngineLink>> EngineLink::Connect(const EngineLinkOptions& options,
                                                        const Hello& hello) {
  MOE_RETURN_IF_ERROR(ValidateOptions(options));
  Hello first = hello;
  if (first.engine_id.empty()) first.engine_id = options.engine_id;
  if (first.engine_id != options.engine_id) {
    return Status::InvalidArgument(
        fmt::format("Hello.engine_id '{}' differs from '{}'", first.engine_id, options.engine_id));
  }
  try {
    auto link = std::make_unique<ZmqEngineLink>(options, std::move(first));
    MOE_RETURN_IF_ERROR(link->Start().WithContext("EngineLink::Connect"));
    return std::unique_ptr<EngineLink>(std::move(link));
  } catch (const zmq::error_t& e) {
    return internal::ZmqError("zmq::context_t()", __FILE__, __LINE__, e.num());
  } catch (const std::exception& e) {
    return Status::Internal(fmt::format("EngineLink::Connect: {}", e.what()));
  }
}

}  // namespace moe::telemetry

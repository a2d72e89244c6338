// ZeroMQ transport between engines and the controller.
//
// Two channels, both over ZeroMQ (tcp:// or ipc://):
//   - telemetry: engine PUSH (connects) -> controller PULL (binds). Carries
//     Hello, StepRecord and Heartbeat. Many engines may feed one controller.
//   - commands: controller ROUTER (binds) <-> engine DEALER (connects, with a
//     routing id of its own: "<engine id>#<16 random hex digits>"). Carries
//     Command (and Sync, the answer to a StepRecord that awaits the
//     controller) one way and Ack (and a Hello, so the controller learns the
//     route) the other.
//
// The engine never blocks on a slow or absent controller: every send is
// non-blocking into a bounded queue (`send_queue` messages); a message that
// does not fit is dropped and counted, and the count travels in the next
// StepRecord's `telemetry_dropped`.
//
// Sequence numbers: EngineLink stamps every telemetry-channel message (Hello,
// StepRecord, Heartbeat) with one per-link counter starting at 1; the
// controller counts gaps per engine with a SequenceTracker. The Hello that
// also travels on the command channel carries the same seq but is not counted.
// After the command channel reconnects (e.g. the controller restarted) the
// EngineLink sends its Hello again, with a fresh seq, on both channels.
//
// Errors: every ZeroMQ failure becomes a Status naming the failed call, its
// source position and errno text; no exception leaves these classes.
//
// Identity. With CURVE (`curve` set) the controller is the CURVE server, and
// its allow-list maps each engine id to that engine's public key: a
// connection is accepted only for a listed key (ZAP, RFC 27); every message on
// either channel must name an engine id listed for the key that sent it (ZAP's
// User-Id), so an allowed key cannot speak or ack for another engine, and a
// connection that fails the check is never a route for commands.
// Engines accept commands only from the controller's key.
// Without CURVE nothing authenticates a peer, so the controller binds only
// loopback or ipc:// endpoints unless `insecure` says otherwise.
// Routes. A command-channel connection's routing id must be its engine id or
// start with it (an engine sets "<engine id>#<tag>"), and the connection speaks
// for the one engine id its first accepted Hello or Ack named. An engine's first connection is its
// route; a later one (a restarted engine whose old connection is not dropped yet, or another
// process claiming the id) is held as the candidate, and takes over only when sending to the route
// fails because that connection is gone (closed by its process's exit, or dropped by the ZMTP
// heartbeat within seconds). So a live engine's commands cannot be diverted, and a restarted engine
// is never locked out. The same socket reconnecting keeps its routing id and its route
// (ZMQ_ROUTER_HANDOVER).
//
// Thread safety: each link object must be used from one thread at a time
// (ZeroMQ sockets are not thread safe). Links own their ZeroMQ context.

#ifndef MOE_TELEMETRY_TRANSPORT_H_
#define MOE_TELEMETRY_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/telemetry/codec.h"
#include "moe/telemetry/types.h"

namespace moe::telemetry {

// Z85-encoded CURVE keys (40 characters each).
struct CurveKeys {
  std::string public_key;
  std::string secret_key;
};

struct EngineLinkOptions {
  std::string engine_id;              // required (1..255 bytes); starts the DEALER routing id
  std::string telemetry_endpoint;     // required, e.g. "tcp://127.0.0.1:5555"
  std::string command_endpoint;       // required, e.g. "tcp://127.0.0.1:5556"
  int send_queue = 1000;              // messages queued per channel before drops (>= 1)
  std::optional<CurveKeys> curve;     // this engine's key pair
  std::string controller_public_key;  // Z85; required with `curve`
  // How long destruction may wait to flush queued messages; 0 drops them.
  std::chrono::milliseconds linger{100};
  // First reconnect delay after a lost or refused connection; doubles up to
  // `reconnect_interval_max`.
  std::chrono::milliseconds reconnect_interval{100};
  std::chrono::milliseconds reconnect_interval_max{2000};
  // Inbound messages larger than this close the connection (hostile peer).
  int64_t max_message_bytes = int64_t{64} << 20;
};

class EngineLink {
 public:
  // Connects both channels and sends a Hello on each (stamped with seq 1; the
  // Hello is queued and delivered once the controller is reachable; an empty
  // hello.engine_id is filled in from the options).
  // Connecting succeeds even when no controller is listening yet (ZeroMQ
  // reconnects in the background). kInvalidArgument for bad options (empty
  // id, malformed endpoint, bad CURVE key), kUnsupported for CURVE without
  // libzmq CURVE support.
  static Result<std::unique_ptr<EngineLink>> Connect(const EngineLinkOptions& options,
                                                     const Hello& hello);
  virtual ~EngineLink() = default;

  // Non-blocking. Stamps `seq` (and `telemetry_dropped`) and queues the
  // message; when the queue is full the message is dropped and counted.
  // Returns an error only for an encoding or socket failure, never for a drop.
  virtual Status Publish(StepRecord record) = 0;
  virtual Status PublishHeartbeat(Heartbeat heartbeat) = 0;

  // Non-blocking: every Command that arrived since the last call, in order.
  // Malformed command messages (undecodable, not a Command, or addressed to
  // another engine id) are counted in `malformed()`, logged and skipped. Also
  // notices command-channel reconnects and then re-sends the Hello.
  virtual Result<std::vector<Command>> PollCommands() = 0;

  // The newest step a Sync from the controller named (taken in by
  // PollCommands, in order with the commands: a command sent before the Sync
  // of step s has been returned by the PollCommands that takes that Sync in);
  // nullopt before the first.
  virtual std::optional<uint64_t> synced_step() const { return std::nullopt; }

  // True once the command channel's handshake with a controller succeeded
  // (seen by PollCommands): the Hello that tells the controller this
  // engine's route has left. Lockstep waits for it before the first step, so
  // the controller can answer that step.
  virtual bool command_channel_up() const { return false; }

  // Blocks until a message waits on the command channel or `timeout` passed
  // (a signal may end it early); PollCommands then takes it.
  virtual Status WaitForCommands(std::chrono::milliseconds timeout) = 0;

  // Non-blocking; dropped and counted if the queue is full. An empty
  // `engine_id` (here and in Publish/PublishHeartbeat) is filled in with the
  // link's; a different one is kInvalidArgument.
  virtual Status SendAck(const Ack& ack) = 0;

  // Replaces the Hello re-sent after a reconnect (call it after applying a
  // Command, so a restarted controller learns the epoch and knobs in force).
  virtual void UpdateHello(Hello hello) {}

  // Sends `hello` now on the telemetry channel (in order with the step
  // records, stamped with the next seq) and keeps it as the Hello re-sent
  // after a reconnect. Engines send it periodically, so a controller that
  // missed an ack learns the epoch and knobs in force. Non-blocking; dropped
  // and counted when the queue is full. kInvalidArgument for another engine
  // id (an empty one is filled in).
  virtual Status PublishHello(Hello hello) {
    UpdateHello(std::move(hello));
    return Status::Ok();
  }

  virtual uint64_t dropped() const = 0;    // messages dropped so far (all channels)
  virtual uint64_t malformed() const = 0;  // inbound messages that failed to decode
};

struct ControllerLinkOptions {
  std::string telemetry_endpoint;  // bound, e.g. "tcp://127.0.0.1:5555" or "tcp://127.0.0.1:*"
  std::string command_endpoint;    // bound, e.g. "tcp://127.0.0.1:5556" or "tcp://127.0.0.1:*"
  int receive_queue = 10000;       // messages queued per channel before senders see "full"
  std::optional<CurveKeys> curve;  // the controller's key pair
  // The allow-list, required with `curve`: engine id -> its public key (Z85).
  // One key may be listed for several engine ids.
  std::map<std::string, std::string> engine_keys;
  // Without `curve`: allow endpoints other than loopback (tcp://127.0.0.0/8,
  // tcp://localhost, tcp://[::1]) and ipc://. Anyone who can reach them can
  // then send telemetry for any engine id; Bind logs a warning.
  bool insecure = false;
  // How long destruction may wait to flush queued commands; 0 drops them.
  std::chrono::milliseconds linger{100};
  // Inbound messages larger than this close the connection (hostile peer).
  int64_t max_message_bytes = int64_t{64} << 20;
};

// Which channel a message arrived on.
enum class Channel : uint8_t { kTelemetry, kCommand };

// A message received by the controller, with the engine it came from.
struct Inbound {
  Message message;
  // Engine id: the message's engine_id (on the command channel, the id the
  // connection speaks for).
  std::string peer;
  Channel channel = Channel::kTelemetry;
};

// Per-engine receive statistics kept by the ControllerLink.
struct LinkStats {
  uint64_t received = 0;     // good messages
  uint64_t malformed = 0;    // messages skipped, all reasons (see skipped_by_reason)
  uint64_t auth_denied = 0;  // CURVE handshakes refused by the allow-list
  // Skipped messages by reason: "frames" (wrong frame count), "decode"
  // (undecodable or an invariant broken, codec.h), "channel" (a message type
  // the channel does not carry), "identity" (an engine id the sender may not
  // speak for).
  std::map<std::string, uint64_t> skipped_by_reason;
  std::map<std::string, uint64_t> gaps;      // per engine: telemetry messages missing by seq
  std::map<std::string, uint64_t> restarts;  // per engine: seq restarts seen
};

class ControllerLink {
 public:
  // Binds both channels. Fails with kUnavailable if an endpoint is in use.
  static Result<std::unique_ptr<ControllerLink>> Bind(const ControllerLinkOptions& options);
  virtual ~ControllerLink() = default;

  // Waits up to `timeout` for the next good message from either channel.
  // Returns std::nullopt on timeout. A malformed message is counted, logged,
  // and skipped: it never ends the wait with an error. Errors are reserved for
  // the sockets themselves failing. Accepted: Hello, StepRecord, Heartbeat on
  // the telemetry channel; Hello and Ack on the command channel, whose
  // engine_id must be the one its connection speaks for (see Routes above;
  // skipped as "identity" otherwise, or as "routes" when 65,536 engines hold
  // routes already). A Hello arrives once per channel per connection; treat
  // it as idempotent.
  virtual Result<std::optional<Inbound>> Receive(std::chrono::milliseconds timeout) = 0;

  // Sends `command` to engine `command.engine_id` on the command channel, on
  // its route (see Routes above). Never blocks. Fails with kUnavailable if
  // that engine is not connected (or its queue is full), kInvalidArgument if
  // the command does not encode.
  virtual Status SendCommand(const Command& command) = 0;

  // Sends `sync` to engine `sync.engine_id` on the command channel, behind
  // every command sent to it before; as SendCommand otherwise.
  virtual Status SendSync(const Sync& sync) = 0;

  virtual LinkStats stats() const = 0;

  // The endpoints actually bound (resolves "tcp://127.0.0.1:*" wildcards).
  virtual std::string telemetry_endpoint() const = 0;
  virtual std::string command_endpoint() const = 0;
};

// Detects gaps and restarts in a per-engine sequence of seq numbers. Pure.
// Sequences start at 1. The first seq seen from an engine sets the baseline
// (a controller that starts late counts nothing missing).
class SequenceTracker {
 public:
  // Records `seq` from `engine_id`; returns how many messages were skipped
  // since the previous one (0 when in order). A seq at or below the previous
  // one is taken as an engine restart and resets the tracker for that engine;
  // the messages 1 .. seq-1 of the new run count as skipped.
  uint64_t Observe(const std::string& engine_id, uint64_t seq);
  uint64_t total_gaps(const std::string& engine_id) const;
  uint64_t restarts(const std::string& engine_id) const;

 private:
  std::map<std::string, uint64_t> last_;
  std::map<std::string, uint64_t> gaps_;
  std::map<std::string, uint64_t> restarts_;
};

// Generates a CURVE key pair (for `moectl keygen`-style tooling and tests).
// kUnsupported when libzmq was built without CURVE.
Result<CurveKeys> GenerateCurveKeys();

}  // namespace moe::telemetry

#endif  // MOE_TELEMETRY_TRANSPORT_H_

// Codec: telemetry values <-> versioned protobuf bytes (telemetry/moe_telemetry.proto).
//
// Every message on either channel is one `Envelope` carrying the schema
// version and exactly one payload. Decoding never crashes: garbage, truncated
// or wrong-version bytes give a kCorruption (or kUnsupported for another major
// version, or a payload type this build does not know) Status that says what
// was wrong.
//
// Both directions enforce the same invariants, so what Encode accepts Decode
// accepts too: engine ids are 1..kMaxIdBytes bytes, strings are valid UTF-8 and
// at most kMaxTextBytes, every array and declared count is at most
// kMaxArrayLength, enum values are known. A hostile peer therefore cannot make
// a decoder hold absurd amounts of memory beyond the bytes it sent. Values are
// checked against each other too: every floating-point field is finite (times,
// sizes and rates also >= 0, gate mass <= 1), a layer's counts nest
// (dropped + rerouted <= overflowed <= num_token_slots), a step names each
// layer once, timestamps lie in [0, kMaxTimestampNs] and epochs in
// [0, kMaxEpoch]. Checks that need the engine's declared shape (layer index
// below the Hello's num_layers, array lengths) belong to the receiver.
//
// Thread safety: free functions without shared state.

#ifndef MOE_TELEMETRY_CODEC_H_
#define MOE_TELEMETRY_CODEC_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

#include "moe/common/status.h"
#include "moe/telemetry/types.h"

namespace moe::telemetry {

// Longest engine id (also the ZeroMQ routing id, which allows 255 bytes).
inline constexpr std::size_t kMaxIdBytes = 255;
// Longest free-text field (backend, reason, error).
inline constexpr std::size_t kMaxTextBytes = 4096;
// Largest array length (experts, slots, devices, layers, layer overrides,
// k_histogram) and largest declared count (Hello's num_* fields, layer index).
inline constexpr std::size_t kMaxArrayLength = std::size_t{1} << 20;

// Largest epoch on the wire: far beyond any real run (one new epoch a
// microsecond for 140,000 years), yet `epoch + 1` never overflows, so a peer
// cannot push a counter to its end and lock the controller or engine out.
inline constexpr uint64_t kMaxEpoch = uint64_t{1} << 62;
// Latest timestamp on the wire (year 2116 in Unix nanoseconds).
inline constexpr int64_t kMaxTimestampNs = int64_t{1} << 62;

// Any message that travels on a channel.
using Message = std::variant<StepRecord, Hello, Heartbeat, Command, Ack, Sync>;

// Serialises `message` into an Envelope. Fails with kInvalidArgument, naming
// the field, if the message breaks one of the invariants above (never for
// well-formed input).
Result<std::string> Encode(const Message& message);

// Parses bytes produced by Encode (by this or another engine implementation).
// kCorruption: not a parseable Envelope, no schema version, no payload, or an
// invariant broken. kUnsupported: another major schema version, or a payload
// type unknown to this build (a newer minor schema).
Result<Message> Decode(std::string_view bytes);

}  // namespace moe::telemetry

#endif  // MOE_TELEMETRY_CODEC_H_

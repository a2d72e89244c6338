// Codec: telemetry values <-> versioned protobuf bytes (telemetry/moe_telemetry.proto).
//
// Every message on either channel is one `Envelope` carrying the schema
// version and exactly one payload. Decoding never crashes: garbage, truncated
// or wrong-version bytes give a kCorruption (or kUnsupported for a newer major
// version) Status that says what was wrong.
//
// Thread safety: free functions without shared state.

#ifndef MOE_TELEMETRY_CODEC_H_
#define MOE_TELEMETRY_CODEC_H_

#include <string>
#include <string_view>
#include <variant>

#include "moe/common/status.h"
#include "moe/telemetry/types.h"

namespace moe::telemetry {

// Any message that travels on a channel.
using Message = std::variant<StepRecord, Hello, Heartbeat, Command, Ack>;

// Serialises `message` into an Envelope. Fails only if a value cannot be
// represented (never for well-formed input).
Result<std::string> Encode(const Message& message);

// Parses bytes produced by Encode (by this or another engine implementation).
Result<Message> Decode(std::string_view bytes);

}  // namespace moe::telemetry

#endif  // MOE_TELEMETRY_CODEC_H_

// Fuzz target: the envelope decoder every message on both channels passes
// through (telemetry::Decode), on arbitrary bytes.
//
// Properties checked on every input:
//   - Decode never crashes, hangs or allocates beyond what the bytes declare
//     (the sanitizers and libFuzzer's -rss_limit_mb watch the last two);
//   - what Decode accepts, Encode accepts (codec.h: both directions enforce
//     the same invariants), and the encoding is a fixed point: decoding it and
//     encoding again gives the same bytes.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "moe/telemetry/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moe::telemetry::Decode;
  using moe::telemetry::Encode;
  auto message = Decode(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!message.ok()) return 0;
  auto bytes = Encode(*message);
  MOE_FUZZ_CHECK(bytes.ok(),
                 "Decode accepted a message Encode refuses: " + bytes.status().ToString());
  auto again = Decode(*bytes);
  MOE_FUZZ_CHECK(again.ok(), "Decode refused Encode's own bytes: " + again.status().ToString());
  auto bytes_again = Encode(*again);
  MOE_FUZZ_CHECK(bytes_again.ok() && *bytes_again == *bytes,
                 "encoding is not a fixed point of decode + encode");
  return 0;
}

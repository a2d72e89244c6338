// Codec tests: round trips of every message type and hostile input.
//
// Sentences quoted from docs/telemetry.md are the ones each test checks.

#include "moe/telemetry/codec.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "telemetry/sample_messages.h"

namespace moe::telemetry {
namespace {

using testing::FullAck;
using testing::FullCommand;
using testing::FullHeartbeat;
using testing::FullHello;
using testing::FullKnobs;
using testing::FullStep;
using testing::FullSync;

std::vector<Message> AllSamples() {
  return {FullStep(), FullHello(), FullHeartbeat(), FullCommand(), FullAck(), FullSync()};
}

std::string EncodeOk(const Message& m) {
  auto bytes = Encode(m);
  REQUIRE(bytes.ok());
  return *bytes;
}

// Minimal protobuf wire-format writer, to craft messages Encode refuses to make.
void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void PutVarintField(std::string& out, int field, uint64_t v) {
  PutVarint(out, static_cast<uint64_t>(field) << 3);
  PutVarint(out, v);
}
void PutBytesField(std::string& out, int field, const std::string& bytes) {
  PutVarint(out, (static_cast<uint64_t>(field) << 3) | 2);
  PutVarint(out, bytes.size());
  out += bytes;
}
std::string EnvelopeWith(int payload_field, const std::string& payload, uint64_t version = 1) {
  std::string out;
  PutVarintField(out, 1, version);
  PutBytesField(out, payload_field, payload);
  return out;
}

TEST_CASE("every message type round-trips with every field set", "[codec]") {
  // "Every message on either channel is exactly one serialised Envelope"
  for (const Message& m : AllSamples()) {
    const std::string bytes = EncodeOk(m);
    auto decoded = Decode(bytes);
    REQUIRE(decoded.ok());
    CHECK(decoded->index() == m.index());
    CHECK(*decoded == m);
  }
}

TEST_CASE("a StepRecord from an engine without the placement fields decodes as no move",
          "[codec]") {
  // Fields 10..12 were added later; a sender that does not know them sends
  // none, which reads as the zero defaults.
  StepRecord old = FullStep();
  old.placement_moved_bytes = 0;
  old.placement_copy_us = 0;
  old.placement_move_us = 0;
  const std::string bytes = EncodeOk(old);
  CHECK(bytes.size() < EncodeOk(FullStep()).size());
  auto decoded = Decode(bytes);
  REQUIRE(decoded.ok());
  CHECK(std::get<StepRecord>(*decoded) == old);
}

TEST_CASE("absent optional fields stay absent and empty arrays stay present", "[codec]") {
  Command c = FullCommand();
  c.knobs = KnobSet{};
  c.knobs.top_p = 0.0;                        // present with the default value
  c.knobs.phy2log = std::vector<uint32_t>{};  // present but empty
  c.layer_knobs.clear();
  c.reason.clear();
  auto decoded = Decode(EncodeOk(c));
  REQUIRE(decoded.ok());
  const Command& got = std::get<Command>(*decoded);
  CHECK(got == c);
  CHECK(got.knobs.top_p.has_value());
  CHECK_FALSE(got.knobs.top_k.has_value());
  CHECK_FALSE(got.knobs.overflow_policy.has_value());
  CHECK_FALSE(got.knobs.expert_bias.has_value());
  REQUIRE(got.knobs.phy2log.has_value());
  CHECK(got.knobs.phy2log->empty());

  StepRecord s = FullStep();
  s.layers[0].quality_error.reset();
  s.layers[1].quality_error = 0.0;
  auto step = Decode(EncodeOk(s));
  REQUIRE(step.ok());
  CHECK_FALSE(std::get<StepRecord>(*step).layers[0].quality_error.has_value());
  CHECK(std::get<StepRecord>(*step).layers[1].quality_error == 0.0);

  for (OverflowPolicy p :
       {OverflowPolicy::kDrop, OverflowPolicy::kReroute, OverflowPolicy::kReplica}) {
    Hello h = FullHello();
    h.knobs.overflow_policy = p;
    auto got_hello = Decode(EncodeOk(h));
    REQUIRE(got_hello.ok());
    CHECK(std::get<Hello>(*got_hello).knobs.overflow_policy == p);
  }
}

TEST_CASE("empty and truncated bytes are corruption", "[codec]") {
  auto empty = Decode("");
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.status().code() == StatusCode::kCorruption);

  for (const Message& m : AllSamples()) {
    const std::string bytes = EncodeOk(m);
    for (size_t len = 0; len < bytes.size(); ++len) {
      auto got = Decode(std::string_view(bytes).substr(0, len));
      INFO("message type " << m.index() << ", prefix of " << len << " of " << bytes.size());
      REQUIRE_FALSE(got.ok());
      CHECK(got.status().code() == StatusCode::kCorruption);
      CHECK_FALSE(got.status().message().empty());
    }
  }
}

TEST_CASE("random garbage never crashes the decoder", "[codec]") {
  std::mt19937_64 rng(20240601);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> length(0, 300);
  int num_rejected = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string buf(length(rng), '\0');
    for (char& ch : buf)
      ch = static_cast<char>(byte(rng));
    auto got = Decode(buf);
    if (got.ok()) {
      // Whatever decodes must hold the invariants, so it encodes again.
      CHECK(Encode(*got).ok());
    } else {
      ++num_rejected;
      CHECK((got.status().code() == StatusCode::kCorruption ||
             got.status().code() == StatusCode::kUnsupported));
    }
  }
  CHECK(num_rejected > 4900);

  // Single-byte corruptions of valid messages.
  for (const Message& m : AllSamples()) {
    const std::string bytes = EncodeOk(m);
    for (size_t pos = 0; pos < bytes.size(); ++pos) {
      std::string bad = bytes;
      bad[pos] = static_cast<char>(byte(rng));
      auto got = Decode(bad);
      if (got.ok()) CHECK(Encode(*got).ok());
    }
  }
}

TEST_CASE("schema version rule", "[codec]") {
  // "A decoder accepts an envelope only if its schema_version equals its own
  // major version"
  const std::string payload = EncodeOk(FullHeartbeat());
  // Encode writes field 1 (schema_version) first: 0x08 <varint>.
  REQUIRE(payload.size() > 2);
  REQUIRE(payload[0] == 0x08);
  REQUIRE(payload[1] == static_cast<char>(kSchemaVersion));

  std::string newer = payload;
  newer[1] = static_cast<char>(kSchemaVersion + 1);
  auto got = Decode(newer);
  REQUIRE_FALSE(got.ok());
  CHECK(got.status().code() == StatusCode::kUnsupported);
  CHECK_THAT(got.status().message(), Catch::Contains("version 2"));

  auto missing = Decode(payload.substr(2));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kCorruption);
  CHECK_THAT(missing.status().message(), Catch::Contains("schema_version"));

  // "fields it does not know are ignored"
  std::string extended = payload;
  PutVarintField(extended, 99, 12345);
  auto ok = Decode(extended);
  REQUIRE(ok.ok());
  CHECK(std::get<Heartbeat>(*ok) == FullHeartbeat());

  // A payload type from a newer minor schema.
  std::string unknown_payload;
  PutVarintField(unknown_payload, 1, kSchemaVersion);
  PutBytesField(unknown_payload, 15, "\x08\x01");
  auto unknown = Decode(unknown_payload);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().code() == StatusCode::kUnsupported);

  std::string version_only;
  PutVarintField(version_only, 1, kSchemaVersion);
  auto no_payload = Decode(version_only);
  REQUIRE_FALSE(no_payload.ok());
  CHECK(no_payload.status().code() == StatusCode::kCorruption);
  CHECK_THAT(no_payload.status().message(), Catch::Contains("no payload"));
}

TEST_CASE("decode enforces the invariants a hostile peer could break", "[codec]") {
  SECTION("empty engine id") {
    std::string hb;
    PutVarintField(hb, 2, 5);  // seq only
    auto got = Decode(EnvelopeWith(4, hb));
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kCorruption);
    CHECK_THAT(got.status().message(), Catch::Contains("engine_id is empty"));
  }
  SECTION("absurd declared count") {
    std::string hello;
    PutBytesField(hello, 1, "e");
    PutVarintField(hello, 6, (uint64_t{1} << 20) + 1);  // num_experts
    auto got = Decode(EnvelopeWith(3, hello));
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kCorruption);
    CHECK_THAT(got.status().message(), Catch::Contains("num_experts"));
  }
  SECTION("array longer than the limit") {
    std::string layer;
    PutBytesField(layer, 4, std::string((size_t{1} << 20) + 1, '\0'));  // packed zeros
    std::string step;
    PutBytesField(step, 1, "e");
    PutBytesField(step, 9, layer);
    auto got = Decode(EnvelopeWith(2, step));
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kCorruption);
    CHECK_THAT(got.status().message(), Catch::Contains("expert_tokens"));
  }
  SECTION("unknown enum value") {
    // (KnobSet field, value): overflow_policy = 9, capacity_scope = 4.
    for (const auto& [field, value, name] :
         {std::tuple{5, 9, "overflow_policy has unknown value 9"},
          std::tuple{11, 4, "capacity_scope has unknown value 4"}}) {
      std::string knobs;
      PutVarintField(knobs, field, value);
      std::string cmd;
      PutBytesField(cmd, 1, "e");
      PutBytesField(cmd, 4, knobs);
      auto got = Decode(EnvelopeWith(5, cmd));
      REQUIRE_FALSE(got.ok());
      CHECK(got.status().code() == StatusCode::kCorruption);
      CHECK_THAT(got.status().message(), Catch::Contains(name));
    }
  }
  SECTION("engine id too long or not UTF-8") {
    std::string ack;
    PutBytesField(ack, 1, std::string(kMaxIdBytes + 1, 'x'));
    auto got = Decode(EnvelopeWith(6, ack));
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kCorruption);

    std::string bad_utf8;
    PutBytesField(bad_utf8, 1, "\xff\xfe");
    CHECK(Decode(EnvelopeWith(6, bad_utf8)).status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("values are checked against each other, in both directions", "[codec]") {
  auto refused = [](const Message& m, const std::string& field) {
    auto got = Encode(m);
    INFO(field);
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(got.status().message(), Catch::Contains(field));
  };
  SECTION("counts nest: dropped + rerouted <= overflowed <= num_token_slots") {
    StepRecord s = FullStep();
    s.layers[0].dropped = s.layers[0].overflowed + 1;
    refused(s, "exceed overflowed");
    s = FullStep();
    s.layers[0].overflowed = static_cast<uint32_t>(s.layers[0].num_token_slots + 1);
    s.layers[0].dropped = 0;
    s.layers[0].rerouted = 0;
    refused(s, "exceeds num_token_slots");
  }
  SECTION("floating-point fields are finite, times and sizes >= 0") {
    StepRecord s = FullStep();
    s.step_us = std::nan("");
    refused(s, "StepRecord.step_us");
    s = FullStep();
    s.layers[0].timing.device_expert_us.push_back(-1.0);
    refused(s, "device_expert_us");
    s = FullStep();
    s.layers[0].quality_error = INFINITY;
    refused(s, "quality_error");
    s = FullStep();
    s.layers[0].gate_mass = 1.5;
    refused(s, "gate_mass");
    Command c = FullCommand();
    c.knobs.capacity_factor = std::nan("");
    refused(c, "Command.knobs.capacity_factor");
    c = FullCommand();
    c.knobs.expert_bias = std::vector<float>{0, INFINITY};
    refused(c, "expert_bias[1]");
  }
  SECTION("a step names each layer once") {
    StepRecord s = FullStep();
    s.layers.push_back(s.layers[0]);
    refused(s, "twice");
  }
  SECTION("epochs and timestamps cannot run a counter to its end") {
    Command c = FullCommand();
    c.epoch = kMaxEpoch + 1;
    refused(c, "Command.epoch");
    Hello h = FullHello();
    h.timestamp_ns = -5;
    refused(h, "Hello.timestamp_ns");
    Ack a = FullAck();
    a.epoch = ~uint64_t{0};
    refused(a, "Ack.epoch");
    c = FullCommand();
    c.epoch = kMaxEpoch;  // the limit itself is allowed
    CHECK(Encode(c).ok());
  }
  SECTION("decode refuses an epoch bomb from the wire") {
    std::string hb;
    PutBytesField(hb, 1, "e");
    PutVarintField(hb, 4, ~uint64_t{0} - 1);  // epoch 2^64 - 2
    auto got = Decode(EnvelopeWith(4, hb));
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().code() == StatusCode::kCorruption);
    CHECK_THAT(got.status().message(), Catch::Contains("Heartbeat.epoch"));
  }
}

TEST_CASE("encode refuses what decode would reject", "[codec]") {
  StepRecord no_id = FullStep("");
  CHECK(Encode(no_id).status().code() == StatusCode::kInvalidArgument);

  Ack long_error = FullAck();
  long_error.error = std::string(kMaxTextBytes + 1, 'e');
  CHECK(Encode(long_error).status().code() == StatusCode::kInvalidArgument);

  Command bad_policy = FullCommand();
  bad_policy.layer_knobs[0].knobs.overflow_policy = static_cast<OverflowPolicy>(7);
  auto got = Encode(bad_policy);
  REQUIRE_FALSE(got.ok());
  CHECK_THAT(got.status().message(), Catch::Contains("layer_knobs[0]"));

  Command bad_scope = FullCommand();
  bad_scope.knobs.capacity_scope = static_cast<CapacityScope>(3);
  CHECK_THAT(Encode(bad_scope).status().message(), Catch::Contains("capacity_scope"));

  Heartbeat bad_utf8 = FullHeartbeat("engine\xc0\xaf");  // overlong '/'
  CHECK(Encode(bad_utf8).status().code() == StatusCode::kInvalidArgument);

  Hello utf8 = FullHello("engine-\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80");  // é € 😀
  auto ok = Decode(EncodeOk(utf8));
  REQUIRE(ok.ok());
  CHECK(std::get<Hello>(*ok) == utf8);
}

}  // namespace
}  // namespace moe::telemetry

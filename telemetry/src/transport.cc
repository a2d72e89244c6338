// Transport pieces that are not a link: SequenceTracker and CURVE key generation.

#include "moe/telemetry/transport.h"

#include "zmq_util.h"

namespace moe::telemetry {

uint64_t SequenceTracker::Observe(const std::string& engine_id, uint64_t seq) {
  auto it = last_.find(engine_id);
  uint64_t skipped = 0;
  if (it == last_.end()) {
    last_.emplace(engine_id, seq);  // baseline: nothing known to be missing
  } else if (seq > it->second) {
    skipped = seq - it->second - 1;
    it->second = seq;
  } else {
    // A new run of the engine: its sequence started again at 1.
    ++restarts_[engine_id];
    skipped = seq > 0 ? seq - 1 : 0;
    it->second = seq;
  }
  if (skipped > 0) gaps_[engine_id] += skipped;
  return skipped;
}

uint64_t SequenceTracker::total_gaps(const std::string& engine_id) const {
  auto it = gaps_.find(engine_id);
  return it == gaps_.end() ? 0 : it->second;
}

uint64_t SequenceTracker::restarts(const std::string& engine_id) const {
  auto it = restarts_.find(engine_id);
  return it == restarts_.end() ? 0 : it->second;
}

Result<CurveKeys> GenerateCurveKeys() {
  if (!zmq_has("curve")) {
    return Status::Unsupported("libzmq was built without CURVE support");
  }
  char public_key[41] = {};
  char secret_key[41] = {};
  MOE_ZMQ_CHECK_RC(zmq_curve_keypair(public_key, secret_key));
  return CurveKeys{public_key, secret_key};
}

}  // namespace moe::telemetry

// Checks of a decoded message against the rest of what the controller knows:
// a Hello against the shape budget ([limits]), a StepRecord against its
// engine's Hello. The codec (telemetry/codec.h) has already checked what a
// message says of itself (finite values, nested counts, unique layers,
// bounded lengths); these checks need the engine's declared shape.
//
// A message that fails is refused whole: counted by reason, logged
// rate-limited, and dropped before it touches any state.

#ifndef MOE_CONTROLLER_SRC_MESSAGE_CHECKS_H_
#define MOE_CONTROLLER_SRC_MESSAGE_CHECKS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "moe/common/status.h"
#include "moe/controller/options.h"
#include "moe/telemetry/types.h"

namespace moe::controller {

// Why a message was refused. `reason` is one of the short names below (the
// label of moectl_messages_refused_total); `detail` is for the log.
//   shape_budget    a Hello whose shape exceeds [limits]
//   hello_mismatch  a Hello whose knobs do not fit its own shape
//   no_hello        a StepRecord from an engine that sent no Hello yet
//   layer_index     a StepRecord layer at or above the Hello's num_layers
//   array_length    a StepRecord array whose length is not the declared one
//   epoch_range     an epoch so close to telemetry::kMaxEpoch that the
//                   controller could not issue the next ones
struct Refusal {
  std::string reason;
  std::string detail;
};

// Highest epoch a message may carry: room is left for 2^32 more commands
// below telemetry::kMaxEpoch, so the next epoch can always be issued.
uint64_t MaxMessageEpoch();

// The Hello within the budget, and its knob vectors of its declared shape.
std::optional<Refusal> CheckHello(const telemetry::Hello& hello, const LimitsOptions& limits);
// The step against `hello`, the engine's accepted Hello: layer indices below
// num_layers; expert_tokens of num_experts elements; expert_demand,
// slot_tokens, device_tokens and timing.device_expert_us empty or of the
// declared length (num_experts, num_replicas or num_experts when that is 0,
// num_devices); k_histogram at most num_experts + 1 long.
std::optional<Refusal> CheckStep(const telemetry::StepRecord& step, const telemetry::Hello& hello);

// Every limit positive and the products consistent with the factors.
Status Validate(const LimitsOptions& limits);

// True for the 1st, 2nd, 4th, 8th ... event: log then, not every time.
inline bool LogThisOne(uint64_t count) {
  return count != 0 && (count & (count - 1)) == 0;
}

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_MESSAGE_CHECKS_H_

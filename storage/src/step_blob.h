// Private: one step's layers packed into two BLOBs of table `steps`
// (migration 5), so a step of L layers is one row instead of 2 L.
//
// `layers` (format 1): the per-layer figures, fixed width so one layer is
// found without reading the others:
//   u8 version (= 1), u32 num_layers, then per layer (kLayerBytes):
//     u32 layer, u32 num_tokens, u64 num_token_slots, u32 overflowed,
//     u32 rerouted, u32 dropped, u8 flags (bit 0: quality_error present),
//     f64 drop_rate, max_over_mean, router_entropy, gate_mass, quality_error
//         (0 when absent), router_us, dispatch_us, expert_us, combine_us,
//         all_to_all_us, layer_us
// `loads` (format 1): routed token-slots per logical expert
// (LayerRecord::expert_tokens), LEB128 varints (a count of a few hundred
// takes two bytes):
//   u8 version (= 1), varint num_layers, then per layer:
//     varint layer, varint num_experts, num_experts varints
// Integers and doubles are little-endian (NaN kept as is). drop_rate and
// max_over_mean are derived at packing time exactly as the step_layers
// columns were. `loads` is the row's last column, so reading the figures
// never touches it.

#ifndef MOE_STORAGE_SRC_STEP_BLOB_H_
#define MOE_STORAGE_SRC_STEP_BLOB_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"
#include "moe/storage/rows.h"
#include "moe/telemetry/types.h"

namespace moe::storage::internal {

// What a queued StepRecord keeps: the `steps` row, its layers packed.
struct PackedStep {
  std::string engine_id;
  uint64_t step = 0;
  uint64_t seq = 0;
  int64_t timestamp_ns = 0;
  uint64_t epoch = 0;
  double step_us = 0;
  bool timing_on_device = false;
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;  // of the first layer (for the engines row)
  std::string layers;        // the figures BLOB
  std::string loads;         // the expert tokens BLOB
};

PackedStep PackStep(const telemetry::StepRecord& record);

// Calls `visit` for every layer of the figures blob `layers` (or only layer
// `only_layer`), in the blob's order, with a StepRow whose step fields come
// from `step` and whose layer fields from the blob. kCorruption for a blob
// that does not parse (the message names the step).
Status UnpackLayers(std::string_view layers, const StepRow& step,
                    std::optional<uint32_t> only_layer, const std::function<void(StepRow&)>& visit);

// Calls `visit(layer, tokens)` for every layer of the loads blob (or only
// `only_layer`); the vector is reused between calls. kCorruption as above.
Status UnpackLoads(std::string_view loads, const StepRow& step, std::optional<uint32_t> only_layer,
                   const std::function<void(uint32_t, const std::vector<uint64_t>&)>& visit);

}  // namespace moe::storage::internal

#endif  // MOE_STORAGE_SRC_STEP_BLOB_H_

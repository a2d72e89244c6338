#include "moe/engine/backend.h"

#include <algorithm>

#include <string>

namespace moe::engine {

std::string_view FeatureName(Feature feature) {
  switch (feature) {
    case Feature::kSoftmaxScoring:
      return "softmax_scoring";
    case Feature::kSigmoidScoring:
      return "sigmoid_scoring";
    case Feature::kGroupedExpertFfn:
      return "grouped_expert_ffn";
    case Feature::kHostRouting:
      return "host_routing";
    case Feature::kDeviceRouting:
      return "device_routing";
    case Feature::kHostMemory:
      return "host_memory";
  }
  return "unknown_feature";
}

Status Backend::RouteOnDevice(const DeviceRoutingArgs& /*args*/) {
  return Status::Unsupported(std::string(FeatureName(Feature::kDeviceRouting)) +
                             " unsupported on backend " + std::string(name()));
}

size_t Backend::PackedExpertFloats(int /*hidden*/, int /*ffn*/) const {
  return 0;
}

Status Backend::PackExpert(const ExpertWeights& /*weights*/, int /*hidden*/, float* /*packed*/) {
  return Status::Unsupported("packed expert weights unsupported on backend " + std::string(name()));
}

size_t ExpertWorkspaceFloats(int max_rows, int max_ffn, int hidden) {
  // [rows, 2F] gate/up activations (SwiGLU in place), then room for the CPU
  // kernels' packed copy of the rows (rows rounded up to 8, max(H, F) wide).
  const size_t rows = static_cast<size_t>(max_rows);
  return rows * 2 * static_cast<size_t>(max_ffn) +
         (rows + 8) * static_cast<size_t>(std::max(hidden, max_ffn));
}

Status RequireFeature(const Backend& backend, Feature feature) {
  if (backend.Supports(feature)) return Status::Ok();
  return Status::Unsupported(std::string(FeatureName(feature)) + " unsupported on backend " +
                             std::string(backend.name()));
}

}  // namespace moe::engine

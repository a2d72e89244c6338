// The one place that knows every backend.

#include <string>
#include <vector>

#include "backend_factories.h"
#include "moe/engine/backend.h"

namespace moe::engine {
namespace {

struct Registration {
  const char* name;
  Result<std::unique_ptr<Backend>> (*create)(const BackendOptions&);
};

constexpr Registration kBackends[] = {
    {"cpu", &CreateCpuBackend},
    {"cuda", &CreateCudaBackend},
};

}  // namespace

Result<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                               const BackendOptions& options) {
  for (const Registration& reg : kBackends) {
    if (name == reg.name) return reg.create(options);
  }
  std::string known;
  for (const Registration& reg : kBackends)
    known += (known.empty() ? "" : ", ") + std::string(reg.name);
  return Status::NotFound("unknown backend '" + std::string(name) + "' (known: " + known + ")");
}

std::vector<std::string> BackendNames() {
  std::vector<std::string> names;
  for (const Registration& reg : kBackends)
    names.emplace_back(reg.name);
  return names;
}

}  // namespace moe::engine

// Fuzz target: the configuration loaders an operator's files go through. The
// first byte picks the loader, the rest is the file's text:
//   0 controller.toml (LoadControllerConfig), 1 engine.toml (LoadEngineConfig),
//   2 a scenario (LoadScenario), 3 a model preset (LoadModelPreset),
//   4 a routing trace, JSON lines (LoadRoutingTrace).
//
// Properties checked on every input:
//   - nothing crashes, whatever the text;
//   - a refusal says where: its message names the file (configs report
//     file:line:column, DESIGN.md "Configuration").

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "controller_config.h"
#include "engine_config.h"
#include "fuzz_util.h"
#include "moe/engine/options.h"
#include "routing_trace.h"

namespace {

// Removes its file when the process exits.
struct RemoveAtExit {
  std::string path;
  ~RemoveAtExit() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

// One file per process, rewritten for every input (the loaders read paths).
const std::string& InputPath() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return (std::filesystem::path(dir != nullptr && *dir != '\0' ? dir : "/tmp") /
            ("moe_fuzz_config_" + std::to_string(::getpid()) + ".toml"))
        .string();
  }();
  // Constructed after `path`, so destroyed before it.
  static const RemoveAtExit remover{path};
  return path;
}

void CheckSaysWhere(const moe::Status& status) {
  if (status.ok()) return;
  MOE_FUZZ_CHECK(status.ToString().find(InputPath()) != std::string::npos,
                 "a refusal that does not name the file: " + status.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int loader = data[0] % 5;
  {
    std::ofstream out(InputPath(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
    MOE_FUZZ_CHECK(out.good(), "cannot write " + InputPath());
  }
  const std::string& path = InputPath();
  switch (loader) {
    case 0:
      CheckSaysWhere(moe::controller::LoadControllerConfig(path).status());
      break;
    case 1:
      CheckSaysWhere(moe::engine_app::LoadEngineConfig(path).status());
      break;
    case 2:
      CheckSaysWhere(moe::engine_app::LoadScenario(path).status());
      break;
    case 3: {
      moe::engine::Options options;
      CheckSaysWhere(moe::engine_app::LoadModelPreset(path, &options));
      break;
    }
    case 4:
      CheckSaysWhere(moe::engine_app::LoadRoutingTrace(path).status());
      break;
  }
  return 0;
}

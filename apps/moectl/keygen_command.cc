#include "keygen_command.h"

#include <cstdio>

#include "moe/telemetry/transport.h"

namespace moe::cli {

void AddKeygenCommand(CLI::App& app) {
  CLI::App* keygen = app.add_subcommand(
      "keygen",
      "print a new CURVE key pair (Z85) as TOML, for [transport.curve] in controller.toml "
      "or [telemetry.curve] in engine.toml");
  keygen->callback([] {
    Result<telemetry::CurveKeys> keys = telemetry::GenerateCurveKeys();
    if (!keys.ok()) {
      std::fprintf(stderr, "moectl: %s\n", keys.status().message().c_str());
      throw CLI::RuntimeError(1);
    }
    std::printf(
        "# A CURVE key pair. Keep secret_key on this host only; give public_key to the peer\n"
        "# (an engine's: the controller's [transport.curve.engines] as ID = \"KEY\";\n"
        "# the controller's: each engine's controller_public_key).\n"
        "public_key = \"%s\"\nsecret_key = \"%s\"\n",
        keys->public_key.c_str(), keys->secret_key.c_str());
  });
}

}  // namespace moe::cli

// Reads configs/controller.toml (and the policies file it names) into
// ControllerOptions, checking every key. See configs/controller.toml for the
// documented keys.

#ifndef MOE_APPS_MOECTLD_CONTROLLER_CONFIG_H_
#define MOE_APPS_MOECTLD_CONTROLLER_CONFIG_H_

#include <string>
#include <string_view>

#include "moe/common/status.h"
#include "moe/controller/options.h"

namespace moe::controller {

// Loads `path`. A relative `policies_file` inside it is resolved against the
// directory of `path`. Every problem is reported as "file:line:col: key: message",
// one per line, in a kInvalidArgument status; the options are also validated
// as a whole (Validate()).
Result<ControllerOptions> LoadControllerConfig(const std::string& path);

// Checks a [metrics] listen address: "host:port" with a port in [1, 65535]
// and an IPv6 host in brackets. kInvalidArgument saying what is wrong.
Status CheckListenAddress(std::string_view listen);

}  // namespace moe::controller

#endif  // MOE_APPS_MOECTLD_CONTROLLER_CONFIG_H_

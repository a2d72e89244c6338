#include "moe/common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <string>

namespace moe {

Status InitLogging(std::string_view program, std::string_view level, bool journal_style) {
  spdlog::level::level_enum lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return Status::InvalidArgument("unknown log level '" + std::string(level) +
                                   "'; use one of trace, debug, info, warn, error, critical, off");
  }
  auto logger = spdlog::stderr_color_mt(std::string(program));
  logger->set_level(lvl);
  logger->set_pattern(journal_style ? "[%l] %v" : "%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %n: %v");
  spdlog::set_default_logger(std::move(logger));
  return Status::Ok();
}

}  // namespace moe

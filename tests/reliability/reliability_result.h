// ReliabilityResult: one row of docs/reliability.md, written by the test that
// backs it as one JSON file in $MOE_RELIABILITY_OUT (scripts/reliability sets
// it; when unset, nothing is written and the test only passes or fails).
//
// Schema (a field that does not apply is null):
//   {"attack": "...", "test": "<file>: <test name>", "tries": N, "refused": N,
//    "committed_lost": 0, "daemon_serving": true, "engine_serving": true,
//    "rss_mb_before": x, "rss_mb_max": y, "rss_bound_mb": z, "notes": "...",
//    "figures": {...}}
// "figures" holds test-specific numbers (e.g. steps/s) and may be absent.
//
// Header-only (tests/reliability/ tests share it); not thread safe.

#ifndef MOE_TESTS_RELIABILITY_RELIABILITY_RESULT_H_
#define MOE_TESTS_RELIABILITY_RELIABILITY_RESULT_H_

#include <sys/types.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace moe::testing {

struct ReliabilityResult {
  std::string attack;  // what was done, e.g. "crash loop: SIGKILL of moectld under load"
  std::string test;    // "<file>: <test name>"
  std::optional<uint64_t> tries;
  std::optional<uint64_t> refused;         // messages or writes refused (counted, not lost)
  std::optional<uint64_t> committed_lost;  // committed rows missing afterwards (must be 0)
  std::optional<bool> daemon_serving;
  std::optional<bool> engine_serving;
  std::optional<double> rss_mb_before;
  std::optional<double> rss_mb_max;
  std::optional<double> rss_bound_mb;
  std::string notes;
  nlohmann::json figures = nlohmann::json::object();

  nlohmann::json ToJson() const {
    auto opt = [](const auto& v) -> nlohmann::json {
      if (v) return nlohmann::json(*v);
      return nullptr;
    };
    nlohmann::json j = {{"attack", attack},
                        {"test", test},
                        {"tries", opt(tries)},
                        {"refused", opt(refused)},
                        {"committed_lost", opt(committed_lost)},
                        {"daemon_serving", opt(daemon_serving)},
                        {"engine_serving", opt(engine_serving)},
                        {"rss_mb_before", opt(rss_mb_before)},
                        {"rss_mb_max", opt(rss_mb_max)},
                        {"rss_bound_mb", opt(rss_bound_mb)},
                        {"notes", notes}};
    if (!figures.empty()) j["figures"] = figures;
    return j;
  }

  // Writes $MOE_RELIABILITY_OUT/<name>.json, <name> being `attack` reduced to
  // [a-z0-9_]. Returns false when the variable is set and the file cannot be
  // written; true otherwise (also when the variable is unset).
  bool Write() const {
    const char* dir = std::getenv("MOE_RELIABILITY_OUT");
    if (dir == nullptr || *dir == '\0') return true;
    std::string name;
    for (char c : attack) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (std::isalnum(u)) {
        name += static_cast<char>(std::tolower(u));
      } else if (!name.empty() && name.back() != '_') {
        name += '_';
      }
    }
    while (!name.empty() && name.back() == '_')
      name.pop_back();
    std::ofstream out(std::string(dir) + "/" + name + ".json");
    out << ToJson().dump(2) << "\n";
    return static_cast<bool>(out);
  }
};

// VmRSS of process `pid` in MiB; 0 when it cannot be read.
inline double RssMiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

}  // namespace moe::testing

#endif  // MOE_TESTS_RELIABILITY_RELIABILITY_RESULT_H_

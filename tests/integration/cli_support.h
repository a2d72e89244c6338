// Running the programs the way an operator's shell does, for the CLI tests:
// stdout and stderr captured apart, the exit status, a bound on the time.

#ifndef MOE_TESTS_INTEGRATION_CLI_SUPPORT_H_
#define MOE_TESTS_INTEGRATION_CLI_SUPPORT_H_

#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace moe::cli_testing {

struct Run {
  int status = -1;  // exit status; -1 if it did not end within the bound
  std::string out;
  std::string err;
};

// Runs `argv` (no shell involved in its words) with stdout and stderr to
// files of `dir`, the environment plus `extra_env` ("NAME=value"); waits up
// to 60 s.
Run Exec(const testing::TempDir& dir, const std::vector<std::string>& argv,
         const std::vector<std::string>& extra_env = {});

std::string ReadFile(const std::string& path);

// The names CLI11's --help lists under `section` ("Options", "Subcommands",
// "Positionals"): the first word of each entry, options split at ','.
std::vector<std::string> HelpSection(const std::string& help, const std::string& section);

}  // namespace moe::cli_testing

#endif  // MOE_TESTS_INTEGRATION_CLI_SUPPORT_H_

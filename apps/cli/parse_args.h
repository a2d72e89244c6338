// ParseArgs: the command-line conventions all three programs share.
//
//   --help            prints the help, exit 0
//   --version         prints "<program> <version>" (CMake's project version), exit 0
//   a usage error     (unknown flag, bad value, missing argument, unknown
//                     command) prints what is wrong and "Run with --help", exit 2
//   a failure         a CLI::RuntimeError(code) thrown by a command's callback
//                     (1 for failures, 2 for a value found bad only later)
//   --generate-completion bash, --generate-man (first and only arguments,
//                     not in --help): print the bash completion script or
//                     the man page made from `app` (cli_docs.h), exit 0
//
// Exit codes: 0 ok, 1 failure, 2 usage. The daemons add sysexits codes of
// their own for a bad configuration (78).

#ifndef MOE_APPS_CLI_PARSE_ARGS_H_
#define MOE_APPS_CLI_PARSE_ARGS_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace moe::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Adds --version to `app`; call before ParseArgs.
void AddVersionFlag(CLI::App& app, const std::string& program);

// Parses (running the subcommands' callbacks). Returns std::nullopt when the
// program should go on, else the exit code to return from main.
std::optional<int> ParseArgs(CLI::App& app, int argc, char** argv);

}  // namespace moe::cli

#endif  // MOE_APPS_CLI_PARSE_ARGS_H_

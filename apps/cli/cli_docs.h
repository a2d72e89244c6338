// Bash completion scripts and man pages generated from a program's CLI11
// definition, so neither can drift from what the parser accepts.
//
// Both walk the same tree: the app's options (flags, options with a value,
// positionals), its subcommands, recursively, with their descriptions;
// options and subcommands in no group (CLI11's "hidden") are left out. The
// values an option accepts are listed where CLI11 knows them (an
// `IsMember` check: `--status {rejected,advisory,...}`).
//
// Each program prints them through ParseArgs (parse_args.h):
//   PROGRAM --generate-completion bash   the completion script
//   PROGRAM --generate-man               the man page (section 1, roff -man)
// and the build runs those after linking (apps/CMakeLists.txt).

#ifndef MOE_APPS_CLI_CLI_DOCS_H_
#define MOE_APPS_CLI_CLI_DOCS_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace moe::cli {

// One option of a command as the generators see it.
struct OptionDoc {
  std::vector<std::string> names;    // "-c", "--config"; empty for a positional
  std::string positional;            // the positional's name ("id"), else empty
  std::string value_name;            // "TEXT", "INT", ...; empty for a flag
  std::vector<std::string> choices;  // the values an IsMember check accepts
  char delimiter = '\0';             // splits one word into several values (',')
  std::string description;
  std::string default_value;  // as CLI11 captured it; often empty
  bool required = false;
};

// A command (the program itself, or a subcommand) and what lies below it.
struct CommandDoc {
  std::vector<std::string> path;  // {"moectl", "bench", "closed-loop"}
  std::string description;
  std::string footer;
  std::vector<OptionDoc> options;
  std::vector<CommandDoc> commands;
  bool requires_command = false;  // a subcommand must follow
};

// The visible tree of `app`, named after app.get_name().
CommandDoc DescribeApp(const CLI::App& app);

// A bash script that defines the completion function and registers it
// (`complete -F _PROGRAM PROGRAM`, '-' and other non-identifier characters
// of the name turned into '_'). It completes subcommands, options (when the
// word starts with '-'), the choices of an option that has them, file names
// for other text values, and nothing for numbers.
std::string BashCompletion(const CLI::App& app);

// A man page (roff, -man macros): NAME, SYNOPSIS, DESCRIPTION, OPTIONS,
// COMMANDS (one subsection per subcommand, nested ones included), EXIT STATUS.
// `version_line` goes to the .TH footer ("moectl 0.1.0").
std::string ManPage(const CLI::App& app, const std::string& version_line);

}  // namespace moe::cli

#endif  // MOE_APPS_CLI_CLI_DOCS_H_

#include "parse_args.h"

#include <iostream>
#include <string_view>

#include "cli_docs.h"
#include "moe/common/version.h"

namespace moe::cli {

void AddVersionFlag(CLI::App& app, const std::string& program) {
  app.set_version_flag("--version", VersionLine(program), "print the version and exit");
}

std::optional<int> ParseArgs(CLI::App& app, int argc, char** argv) {
  const std::string program = app.get_name().empty() ? "program" : app.get_name();
  // The hidden generators: no CLI11 options, so that --help stays as it was
  // and a program whose command line requires a subcommand still answers.
  if (argc > 1 && std::string_view(argv[1]) == "--generate-completion") {
    if (argc != 3 || std::string_view(argv[2]) != "bash") {
      std::cerr << program << ": --generate-completion takes one shell: bash\n";
      return kExitUsage;
    }
    std::cout << BashCompletion(app);
    return kExitOk;
  }
  if (argc > 1 && std::string_view(argv[1]) == "--generate-man") {
    if (argc != 2) {
      std::cerr << program << ": --generate-man takes no arguments\n";
      return kExitUsage;
    }
    std::cout << ManPage(app, VersionLine(program));
    return kExitOk;
  }
  // A first word that is no flag and names no command: say so, with the list.
  std::vector<CLI::App*> commands = app.get_subcommands([](CLI::App*) { return true; });
  if (argc > 1 && !commands.empty() && argv[1][0] != '-') {
    const std::string_view word = argv[1];
    std::string names;
    bool known = false;
    for (CLI::App* c : commands) {
      if (c->check_name(std::string(word))) known = true;
      names += (names.empty() ? "" : ", ") + c->get_name();
    }
    if (!known) {
      std::cerr << program << ": unknown command \"" << word << "\" (commands: " << names
                << ")\nRun with --help for more information.\n";
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const std::string name = e.get_name();
    if (name == "RuntimeError") return e.get_exit_code();
    const int code = app.exit(e);  // prints help, the version, or the error
    if (name == "CallForHelp" || name == "CallForAllHelp" || name == "CallForVersion") {
      return kExitOk;
    }
    return code == kExitOk ? kExitOk : kExitUsage;
  }
  return std::nullopt;
}

}  // namespace moe::cli

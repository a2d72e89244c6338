#include "cli_support.h"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "support/subprocess.h"

namespace moe::cli_testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Run Exec(const testing::TempDir& dir, const std::vector<std::string>& argv,
         const std::vector<std::string>& extra_env) {
  static int n = 0;
  const std::string base = dir.File(fmt::format("exec{}", n++));
  // sh only redirects; the words reach the program as "$@".
  std::vector<std::string> command = {"/bin/sh", "-c", "exec \"$@\" > \"$0.out\" 2> \"$0.err\"",
                                      base};
  command.insert(command.end(), argv.begin(), argv.end());
  testing::Subprocess p(command, dir.File("exec.log"), extra_env);
  std::optional<int> status = p.Wait(std::chrono::seconds(60));
  Run r;
  r.status = status.value_or(-1);
  r.out = ReadFile(base + ".out");
  r.err = ReadFile(base + ".err");
  return r;
}

std::vector<std::string> HelpSection(const std::string& help, const std::string& section) {
  std::vector<std::string> names;
  std::stringstream lines(help);
  std::string line;
  bool inside = false;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] != ' ') {
      inside = line == section + ":";
      continue;
    }
    if (!inside || line.size() < 3 || line.compare(0, 2, "  ") != 0 || line[2] == ' ') continue;
    std::string first = line.substr(2, line.find(' ', 2) - 2);
    std::stringstream parts(first);
    std::string part;
    while (std::getline(parts, part, ','))
      if (!part.empty()) names.push_back(part);
  }
  return names;
}

}  // namespace moe::cli_testing

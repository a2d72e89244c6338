// The bash completion scripts and man pages the build generates from the
// three programs' CLI11 definitions (build/share/...): checked against what
// the same definitions print for --help (CLI11's own formatter), so a
// command or option added to a program is checked without editing this test.

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli_support.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using cli_testing::Exec;
using cli_testing::HelpSection;
using cli_testing::ReadFile;
using cli_testing::Run;
using testing::TempDir;

struct Program {
  std::string name;
  std::string bin;
};

const std::vector<Program>& Programs() {
  static const std::vector<Program> programs = {
      {"moectl", MOECTL_BIN}, {"moectld", MOECTLD_BIN}, {"moe-engine", MOE_ENGINE_BIN}};
  return programs;
}

std::string CompletionFile(const std::string& program) {
  return std::string(MOE_BINARY_DIR) + "/share/bash-completion/completions/" + program;
}

std::string ManFile(const std::string& program) {
  return std::string(MOE_BINARY_DIR) + "/share/man/man1/" + program + ".1";
}

std::string ShellWord(const std::string& w) {
  std::string out = "'";
  for (char c : w)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// What the completion function offers for the command line `words`, the
// last word being the one under the cursor (bash's COMP_WORDS/COMP_CWORD).
std::set<std::string> Complete(const TempDir& dir, const std::string& program,
                               const std::vector<std::string>& words) {
  std::string array;
  for (const std::string& w : words)
    array += ShellWord(w) + " ";
  const std::string script = "source " + ShellWord(CompletionFile(program)) +
                             " && fn=$(complete -p " + program +
                             " | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p') && COMP_WORDS=(" + array +
                             ") && COMP_CWORD=" + std::to_string(words.size() - 1) +
                             " && \"$fn\" && printf '%s\\n' \"${COMPREPLY[@]}\"";
  Run r = Exec(dir, {"/bin/bash", "--norc", "--noprofile", "-c", script});
  INFO(script << "\n" << r.err);
  REQUIRE(r.status == 0);
  std::set<std::string> offered;
  size_t start = 0;
  while (start < r.out.size()) {
    size_t end = r.out.find('\n', start);
    if (end == std::string::npos) end = r.out.size();
    if (end > start) offered.insert(r.out.substr(start, end - start));
    start = end + 1;
  }
  return offered;
}

std::set<std::string> Set(const std::vector<std::string>& v) {
  return {v.begin(), v.end()};
}

// Every command path of `bin` from --help: {} (the program), {"history"},
// {"bench"}, {"bench", "closed-loop"}, ...
void CommandPaths(const TempDir& dir, const std::string& bin, std::vector<std::string> path,
                  std::vector<std::vector<std::string>>* out) {
  out->push_back(path);
  std::vector<std::string> argv = {bin};
  argv.insert(argv.end(), path.begin(), path.end());
  argv.push_back("--help");
  Run help = Exec(dir, argv);
  REQUIRE(help.status == 0);
  for (const std::string& sub : HelpSection(help.out, "Subcommands")) {
    std::vector<std::string> next = path;
    next.push_back(sub);
    CommandPaths(dir, bin, next, out);
  }
}

std::string HelpOf(const TempDir& dir, const std::string& bin,
                   const std::vector<std::string>& path) {
  std::vector<std::string> argv = {bin};
  argv.insert(argv.end(), path.begin(), path.end());
  argv.push_back("--help");
  Run help = Exec(dir, argv);
  REQUIRE(help.status == 0);
  return help.out;
}

std::string RoffName(const std::string& text) {
  std::string out;
  for (char c : text)
    out += c == '-' ? std::string("\\-") : std::string(1, c);
  return out;
}

TEST_CASE("The build writes a completion script and a man page per program", "[integration][cli]") {
  TempDir dir;
  for (const Program& p : Programs()) {
    INFO(p.name);
    CHECK(access(CompletionFile(p.name).c_str(), R_OK) == 0);
    CHECK(access(ManFile(p.name).c_str(), R_OK) == 0);
    // What the build installed is what the program prints now.
    Run completion = Exec(dir, {p.bin, "--generate-completion", "bash"});
    CHECK(completion.status == 0);
    CHECK(completion.out == ReadFile(CompletionFile(p.name)));
    Run man = Exec(dir, {p.bin, "--generate-man"});
    CHECK(man.status == 0);
    CHECK(man.out == ReadFile(ManFile(p.name)));
    // Hidden: not in --help.
    Run help = Exec(dir, {p.bin, "--help"});
    CHECK(help.out.find("--generate") == std::string::npos);
  }
  Run bad_shell = Exec(dir, {MOECTL_BIN, "--generate-completion", "fish"});
  CHECK(bad_shell.status == 2);
  CHECK(bad_shell.err.find("bash") != std::string::npos);
  CHECK(Exec(dir, {MOECTL_BIN, "--generate-completion"}).status == 2);
  CHECK(Exec(dir, {MOECTL_BIN, "--generate-man", "extra"}).status == 2);
}

TEST_CASE("Completion offers what the command line accepts", "[integration][cli]") {
  TempDir dir;
  // Registered under the program's name.
  Run registered =
      Exec(dir, {"/bin/bash", "--norc", "-c",
                 "source " + ShellWord(CompletionFile("moectl")) + " && complete -p moectl"});
  CHECK(registered.status == 0);
  CHECK(registered.out == "complete -F _moectl moectl\n");

  // The cases an operator types.
  CHECK(Complete(dir, "moectl", {"moectl", "hi"}) == std::set<std::string>{"history"});
  CHECK(Complete(dir, "moectl", {"moectl", "decisions", "--st"}) ==
        std::set<std::string>{"--status"});
  CHECK(Complete(dir, "moectl", {"moectl", "decisions", "--status", ""}) ==
        std::set<std::string>{"rejected", "advisory", "sent", "acked", "failed", "measured",
                              "unknown"});
  CHECK(Complete(dir, "moectl", {"moectl", "decisions", "--status", "ac"}) ==
        std::set<std::string>{"acked"});
  CHECK(Complete(dir, "moectl", {"moectl", "decisions", "--status", "=", "re"}) ==
        std::set<std::string>{"rejected"});
  CHECK(Complete(dir, "moectl", {"moectl", "history", "--plot", "max"}) ==
        std::set<std::string>{"max_over_mean"});
  CHECK(Complete(dir, "moectl", {"moectl", "history", "--limit", ""}).empty());  // a number
  // A list in one word: the item after the last comma.
  CHECK(Complete(dir, "moectl", {"moectl", "plot", "--field", "drop_rate,ma"}) ==
        std::set<std::string>{"drop_rate,max_over_mean"});
  CHECK(Complete(dir, "moectl", {"moectl", "plot", "--field", "s"}) ==
        std::set<std::string>{"step_us"});
  CHECK(Complete(dir, "moectl", {"moectl", "bench", ""}) == std::set<std::string>{"closed-loop"});
  CHECK(Complete(dir, "moectl", {"moectl", "bench", "closed-loop", "--step"}) ==
        std::set<std::string>{"--steps", "--step-interval-ms"});
  // A value is not taken for a command: "history" here is the --db file.
  CHECK(Complete(dir, "moectld", {"moectld", "--db", "history", "--check"}) ==
        std::set<std::string>{"--check-config"});
  CHECK(Complete(dir, "moe-engine", {"moe-engine", "--backend", ""}) ==
        std::set<std::string>{"cpu", "cuda"});
  // A file name for a text value.
  const std::string file = dir.Write("some.db", "");
  CHECK(Complete(dir, "moectl", {"moectl", "history", "--db", dir.File("some.")}) ==
        std::set<std::string>{file});

  // Every command and option of every program, as --help lists them.
  for (const Program& p : Programs()) {
    std::vector<std::vector<std::string>> paths;
    CommandPaths(dir, p.bin, {}, &paths);
    for (const std::vector<std::string>& path : paths) {
      const std::string help = HelpOf(dir, p.bin, path);
      std::vector<std::string> words = {p.name};
      words.insert(words.end(), path.begin(), path.end());
      INFO(p.name << " " << words.size() << " words:\n" << help);
      std::vector<std::string> with_dash = words;
      with_dash.push_back("-");
      CHECK(Complete(dir, p.name, with_dash) == Set(HelpSection(help, "Options")));
      const std::vector<std::string> subs = HelpSection(help, "Subcommands");
      if (!subs.empty()) {
        std::vector<std::string> empty = words;
        empty.push_back("");
        CHECK(Complete(dir, p.name, empty) == Set(subs));
      }
    }
  }
}

TEST_CASE("Man pages have the sections and every command and option", "[integration][cli]") {
  TempDir dir;
  for (const Program& p : Programs()) {
    INFO(p.name);
    const std::string man = ReadFile(ManFile(p.name));
    std::string upper = p.name;
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    CHECK(man.find(".TH " + RoffName(upper) + " 1 ") != std::string::npos);
    for (const char* section : {".SH NAME\n", ".SH SYNOPSIS\n", ".SH DESCRIPTION\n",
                                ".SH OPTIONS\n", ".SH EXIT STATUS\n"})
      CHECK(man.find(section) != std::string::npos);
    CHECK(man.find(".SH NAME\n" + RoffName(p.name) + " \\- ") != std::string::npos);

    std::vector<std::vector<std::string>> paths;
    CommandPaths(dir, p.bin, {}, &paths);
    CHECK((man.find(".SH COMMANDS\n") != std::string::npos) == (paths.size() > 1));
    for (const std::vector<std::string>& path : paths) {
      std::string title = p.name;
      for (const std::string& w : path)
        title += " " + w;
      // The command's own subsection, and the options and positionals under it.
      size_t at = 0;
      if (!path.empty()) {
        at = man.find(".SS \"" + RoffName(title) + "\"\n");
        INFO(title);
        REQUIRE(at != std::string::npos);
      }
      const size_t end = man.find(".SS ", at + 1);
      const std::string part = man.substr(at, end == std::string::npos ? end : end - at);
      const std::string help = HelpOf(dir, p.bin, path);
      for (const std::string& option : HelpSection(help, "Options")) {
        INFO(title << ": " << option);
        CHECK(part.find("\\fB" + RoffName(option) + "\\fR") != std::string::npos);
      }
      for (const std::string& positional : HelpSection(help, "Positionals")) {
        INFO(title << ": " << positional);
        CHECK(part.find("\\fI" + RoffName(positional) + "\\fR") != std::string::npos);
      }
    }
    // The choices of a checked option are listed.
    if (p.name == "moectl") {
      CHECK(man.find("One of: rejected, advisory, sent, acked, failed, measured, unknown.") !=
            std::string::npos);
    }

    // It is well-formed roff: groff reads it without a warning, man shows it.
    if (access("/usr/bin/groff", X_OK) == 0) {
      Run groff = Exec(dir, {"/usr/bin/groff", "-man", "-Tutf8", "-ww", "-z", ManFile(p.name)});
      CHECK(groff.status == 0);
      CHECK(groff.err.empty());
    } else {
      WARN("groff not installed: the roff is not checked by a formatter");
    }
    if (access("/usr/bin/man", X_OK) == 0) {
      Run shown = Exec(dir, {"/usr/bin/man", "-l", ManFile(p.name)},
                       {"MANPAGER=cat", "PAGER=cat", "MANWIDTH=100"});
      CHECK(shown.status == 0);
      CHECK(shown.out.find("EXIT STATUS") != std::string::npos);
      CHECK(shown.out.find("--version") != std::string::npos);
    }
  }
}

}  // namespace
}  // namespace moe

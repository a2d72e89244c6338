// cli_docs on a made-up command line: what is hidden stays out, nested
// commands and positionals are described, text that roff or bash would
// misread is escaped, and both outputs pass their own tools (bash -n,
// groff -ww).

#include "cli_docs.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "support/temp_dir.h"

namespace moe::cli {
namespace {

struct Toy {
  CLI::App app{"toy: a made-up tool", "toy"};
  std::string mode, secret, file;
  int count = 3;
  bool verbose = false;
  std::vector<std::string> items;

  Toy() {
    app.add_flag("-v,--verbose", verbose, "say more");
    app.add_option("--secret", secret, "not for operators")->group("");
    CLI::App* run = app.add_subcommand("run", ".starts with a dot and has a \\ backslash");
    run->add_option("--mode", mode, "how")->check(CLI::IsMember({"fast", "it's-safe"}));
    run->add_option("--count", count, "how many")->capture_default_str();
    run->add_option("file", file, "input file")->required();
    CLI::App* deep = run->add_subcommand("deep", "nested \u2192 deeper");
    deep->add_option("--items", items, "a list")->delimiter(',')->check(CLI::IsMember({"a", "b"}));
    app.add_subcommand("ghost", "hidden command")->group("");
  }
};

int RunShell(const std::string& command) {
  return std::system(command.c_str());
}

TEST_CASE("DescribeApp keeps what --help shows and leaves the hidden out", "[cli_docs]") {
  Toy toy;
  const CommandDoc root = DescribeApp(toy.app);
  REQUIRE(root.path == std::vector<std::string>{"toy"});
  std::vector<std::string> names;
  for (const OptionDoc& o : root.options)
    names.insert(names.end(), o.names.begin(), o.names.end());
  CHECK(names == std::vector<std::string>{"-h", "--help", "-v", "--verbose"});
  REQUIRE(root.commands.size() == 1);  // ghost is hidden
  const CommandDoc& run = root.commands[0];
  CHECK(run.path == std::vector<std::string>{"toy", "run"});
  bool saw_mode = false, saw_file = false, saw_count = false;
  for (const OptionDoc& o : run.options) {
    if (!o.names.empty() && o.names.back() == "--mode") {
      saw_mode = true;
      CHECK(o.value_name == "TEXT");
      CHECK(o.choices == std::vector<std::string>{"fast", "it's-safe"});
    }
    if (!o.names.empty() && o.names.back() == "--count") {
      saw_count = true;
      CHECK(o.value_name == "INT");
      CHECK(o.default_value == "3");
    }
    if (o.positional == "file") {
      saw_file = true;
      CHECK(o.required);
    }
  }
  CHECK(saw_mode);
  CHECK(saw_count);
  CHECK(saw_file);
  REQUIRE(run.commands.size() == 1);
  CHECK(run.commands[0].options.back().delimiter == ',');
}

TEST_CASE("The completion script is valid bash and completes the made-up tool", "[cli_docs]") {
  Toy toy;
  testing::TempDir dir;
  const std::string script = dir.Write("toy.bash", BashCompletion(toy.app));
  CHECK(script.find("--secret") == std::string::npos);
  REQUIRE(RunShell("bash -n '" + script + "'") == 0);
  auto complete = [&](const std::string& words, int cword) {
    const std::string out = dir.File("reply.txt");
    const std::string cmd = "bash --norc -c \"source '" + script + "'; COMP_WORDS=(" + words +
                            "); COMP_CWORD=" + std::to_string(cword) +
                            "; _toy; printf '%s\\n' \\\"\\${COMPREPLY[@]}\\\"\" > '" + out + "'";
    REQUIRE(RunShell(cmd) == 0);
    std::ifstream in(out);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  CHECK(complete("toy ''", 1) == "run\n");
  CHECK(complete("toy run --mode it", 3) == "it's-safe\n");  // a quote in a choice
  CHECK(complete("toy run --count 5 de", 4) == "deep\n");    // 5 is --count's value
  CHECK(complete("toy run deep --items a,", 4) == "a,a\na,b\n");
}

TEST_CASE("The man page escapes roff and passes groff without warnings", "[cli_docs]") {
  Toy toy;
  const std::string man = ManPage(toy.app, "toy 1.2.3");
  CHECK(man.find(".TH TOY 1 \"\" \"toy 1.2.3\" \"User Commands\"\n") != std::string::npos);
  CHECK(man.find(".SH NAME\ntoy \\- a made\\-up tool\n") != std::string::npos);
  CHECK(man.find("\n\\&.starts with a dot and has a \\e backslash\n") != std::string::npos);
  CHECK(man.find("nested \\[u2192] deeper") != std::string::npos);
  CHECK(man.find(".SS \"toy run deep\"\n") != std::string::npos);
  CHECK(man.find("\\fBtoy run\\fR [\\fIOPTIONS\\fR] \\fIfile\\fR [\\fICOMMAND\\fR") !=
        std::string::npos);
  CHECK(man.find("One of: fast, it's\\-safe.") != std::string::npos);
  CHECK(man.find("Default: 3.") != std::string::npos);
  CHECK(man.find("secret") == std::string::npos);
  CHECK(man.find("ghost") == std::string::npos);
  if (access("/usr/bin/groff", X_OK) != 0) {
    WARN("groff not installed: the roff is not checked by a formatter");
    return;
  }
  testing::TempDir dir;
  const std::string page = dir.Write("toy.1", man);
  const std::string warnings = dir.File("warnings.txt");
  REQUIRE(RunShell("/usr/bin/groff -man -Tutf8 -ww -z '" + page + "' 2> '" + warnings + "'") == 0);
  std::ifstream in(warnings);
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str().empty());
}

}  // namespace
}  // namespace moe::cli

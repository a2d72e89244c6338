// The daemon's log lines as journald and a terminal get them: a real
// moectld whose stderr is a file, once with $JOURNAL_STREAM naming that
// file's device and inode (what systemd sets when stderr is the journal),
// once without, and once with a stale $JOURNAL_STREAM (a process whose
// stderr went elsewhere).

#include <signal.h>
#include <sys/stat.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using testing::Subprocess;
using testing::TempDir;

// Runs moectld until it serves, stops it, and returns its log's lines.
std::vector<std::string> DaemonLines(const TempDir& dir, const std::string& name,
                                     bool journal_matches, bool journal_stale) {
  const std::string config = dir.Write(
      name + ".toml",
      fmt::format("[transport]\ntelemetry = \"{}\"\ncommands = \"{}\"\n[storage]\npath = \"{}\"\n",
                  testing::FreeLoopbackEndpoint(), testing::FreeLoopbackEndpoint(),
                  dir.File(name + ".db")));
  const std::string log = dir.Write(name + ".log", "");  // its inode is stderr's
  std::vector<std::string> env;
  struct stat st {};
  if (journal_matches) {
    REQUIRE(stat(log.c_str(), &st) == 0);
    env.push_back(fmt::format("JOURNAL_STREAM={}:{}", st.st_dev, st.st_ino));
  } else if (journal_stale) {
    const std::string other = dir.Write(name + ".other", "");
    REQUIRE(stat(other.c_str(), &st) == 0);
    env.push_back(fmt::format("JOURNAL_STREAM={}:{}", st.st_dev, st.st_ino));
  }
  Subprocess daemon({MOECTLD_BIN, "--config", config, "--log-level", "debug"}, log, env);
  for (int i = 0; i < 150 && daemon.Log().find("serving:") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  INFO(daemon.Log());
  REQUIRE(daemon.Log().find("serving:") != std::string::npos);
  REQUIRE(daemon.Signal(SIGTERM));
  REQUIRE(daemon.Wait(std::chrono::seconds(15)) == std::optional<int>(0));
  std::vector<std::string> lines;
  std::stringstream text(daemon.Log());
  std::string line;
  while (std::getline(text, line))
    lines.push_back(line);
  REQUIRE(lines.size() >= 2);
  return lines;
}

TEST_CASE("moectld writes sd-daemon priorities when stderr is the journal", "[integration][cli]") {
  TempDir dir;
  const std::regex journal_line(R"(<[2-7]>moectld: .+)");
  bool saw_info = false;
  for (const std::string& l : DaemonLines(dir, "journal", true, false)) {
    INFO(l);
    CHECK(std::regex_match(l, journal_line));
    if (l.rfind("<6>moectld: serving:", 0) == 0) saw_info = true;
  }
  CHECK(saw_info);
}

TEST_CASE("moectld stamps its lines in UTC with the offset otherwise", "[integration][cli]") {
  TempDir dir;
  const std::regex stamped(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \w+ +moectld: .+)");
  for (bool stale : {false, true}) {
    for (const std::string& l : DaemonLines(dir, stale ? "stale" : "plain", false, stale)) {
      INFO((stale ? "stale JOURNAL_STREAM: " : "no JOURNAL_STREAM: ") << l);
      CHECK(std::regex_match(l, stamped));
    }
  }
}

}  // namespace
}  // namespace moe

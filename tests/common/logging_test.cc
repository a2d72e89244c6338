// Logging lines as journald and a terminal see them: the real stderr (file
// descriptor 2) redirected to a file, spdlog's default logger as the
// libraries use it.

#include "moe/common/logging.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "support/temp_dir.h"

namespace moe {
namespace {

// Points fd 2 at `path` for its lifetime.
class StderrToFile {
 public:
  explicit StderrToFile(const std::string& path) {
    saved_ = dup(2);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(dup2(fd, 2) == 2);
    close(fd);
  }
  ~StderrToFile() {
    dup2(saved_, 2);
    close(saved_);
  }

 private:
  int saved_ = -1;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string DevIno(int fd) {
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

// Logs one line of each level through the default logger into `path`.
std::string LogEveryLevel(const std::string& path, bool journal) {
  {
    StderrToFile redirect(path);
    REQUIRE(InitLogging("logtest", "trace", journal).ok());
    spdlog::trace("t-line");
    spdlog::debug("d-line");
    spdlog::info("i-line");
    spdlog::warn("w-line");
    spdlog::error("e-line");
    spdlog::critical("c-line");
    spdlog::default_logger()->flush();
  }
  REQUIRE(InitLogging("logtest", "info", false).ok());  // back to the real stderr
  return ReadAll(path);
}

TEST_CASE("Terminal lines carry the time in UTC with the offset written out", "[logging]") {
  testing::TempDir dir;
  const std::time_t before = std::time(nullptr);
  const std::string text = LogEveryLevel(dir.File("term.log"), false);
  const std::time_t after = std::time(nullptr);
  const std::regex line(
      R"((\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.\d{3}\+00:00 (\w+) +logtest: (\w)-line)");
  std::stringstream lines(text);
  std::string l;
  int n = 0;
  while (std::getline(lines, l)) {
    std::smatch m;
    INFO(l);
    REQUIRE(std::regex_match(l, m, line));
    // The clock fields are UTC: they read back (as UTC) to the time of the call.
    std::tm tm{};
    tm.tm_year = std::stoi(m[1]) - 1900;
    tm.tm_mon = std::stoi(m[2]) - 1;
    tm.tm_mday = std::stoi(m[3]);
    tm.tm_hour = std::stoi(m[4]);
    tm.tm_min = std::stoi(m[5]);
    tm.tm_sec = std::stoi(m[6]);
    const std::time_t t = timegm(&tm);
    CHECK(t >= before);
    CHECK(t <= after);
    ++n;
  }
  CHECK(n == 6);
  CHECK(text.find("info  logtest: i-line") != std::string::npos);
  CHECK(text.find("<6>") == std::string::npos);
}

TEST_CASE("Journal lines start with the sd-daemon priority and carry no time", "[logging]") {
  testing::TempDir dir;
  const std::string text = LogEveryLevel(dir.File("journal.log"), true);
  CHECK(text ==
        "<7>logtest: t-line\n<7>logtest: d-line\n<6>logtest: i-line\n<4>logtest: w-line\n"
        "<3>logtest: e-line\n<2>logtest: c-line\n");
}

TEST_CASE("Stderr is the journal only when JOURNAL_STREAM names fd 2's device and inode",
          "[logging]") {
  testing::TempDir dir;
  const std::string target = dir.File("stream");
  const char* old = std::getenv("JOURNAL_STREAM");
  const std::string saved = old ? old : "";
  bool unset = false, matching = false, other_file = false, garbage = false;
  {
    StderrToFile redirect(target);
    unsetenv("JOURNAL_STREAM");
    unset = StderrIsJournal();
    setenv("JOURNAL_STREAM", DevIno(2).c_str(), 1);
    matching = StderrIsJournal();
    // The variable inherited by a process whose stderr went elsewhere.
    const int other = open(dir.Write("other", "").c_str(), O_RDONLY);
    REQUIRE(other >= 0);
    setenv("JOURNAL_STREAM", DevIno(other).c_str(), 1);
    close(other);
    other_file = StderrIsJournal();
    setenv("JOURNAL_STREAM", (DevIno(2) + "x").c_str(), 1);
    garbage = StderrIsJournal();
  }
  if (old) {
    setenv("JOURNAL_STREAM", saved.c_str(), 1);
  } else {
    unsetenv("JOURNAL_STREAM");
  }
  CHECK_FALSE(unset);
  CHECK(matching);
  CHECK_FALSE(other_file);
  CHECK_FALSE(garbage);
}

TEST_CASE("An unknown log level is refused", "[logging]") {
  Status s = InitLogging("logtest", "loud", false);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("trace, debug, info") != std::string::npos);
}

}  // namespace
}  // namespace moe

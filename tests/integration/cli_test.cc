// The three programs' command lines as an operator meets them: --version,
// unknown commands, exit codes (0 ok, 1 failure, 2 usage), values checked
// against the database (--engine, --layer, --status), and truncation said on
// stderr while stdout keeps only the data. Real processes, a real SQLite file.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "moe/common/clock.h"
#include "moe/storage/store.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using moe::testing::Subprocess;
using moe::testing::TempDir;
using std::chrono::seconds;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};

// Runs `argv` with stdout and stderr to files of their own.
Run Exec(const TempDir& dir, std::vector<std::string> argv) {
  static int n = 0;
  const std::string out = dir.File(fmt::format("out{}.txt", n));
  const std::string err = dir.File(fmt::format("err{}.txt", n));
  ++n;
  std::string command;
  for (const std::string& a : argv)
    command += "'" + a + "' ";
  Subprocess p({"/bin/sh", "-c", command + "> '" + out + "' 2> '" + err + "'"}, dir.File("sh.log"));
  std::optional<int> status = p.Wait(seconds(30));
  REQUIRE(status.has_value());
  return {*status, ReadAll(out), ReadAll(err)};
}

// A database with engine "c1" (2 layers, 30 steps) and 5 decisions.
std::string MakeDb(const TempDir& dir) {
  storage::StoreOptions o;
  o.path = dir.File("moectl.db");
  auto store = storage::Store::Open(o, SystemClock());
  REQUIRE(store.ok());
  const int64_t now = SystemClock()->NowNanos();
  telemetry::Hello hello;
  hello.engine_id = "c1";
  hello.backend = "cpu";
  hello.num_layers = 2;
  hello.num_experts = 4;
  hello.timestamp_ns = now;
  (*store)->UpsertEngine(hello);
  for (uint64_t step = 1; step <= 30; ++step) {
    telemetry::StepRecord r;
    r.engine_id = "c1";
    r.seq = step;
    r.step = step;
    r.timestamp_ns = now - static_cast<int64_t>(31 - step) * 1'000'000;
    for (uint32_t layer = 0; layer < 2; ++layer) {
      telemetry::LayerRecord l;
      l.layer = layer;
      l.num_tokens = 10;
      l.num_token_slots = 20;
      l.expert_tokens = {5, 5, 5, 5};
      r.layers.push_back(l);
    }
    (*store)->AppendStep(r);
  }
  for (int i = 0; i < 5; ++i) {
    storage::DecisionRow d;
    d.engine_id = "c1";
    d.created_ns = now - (5 - i) * 1'000'000;
    d.policy = "capacity";
    d.knob = "capacity_factor";
    d.verdict = "rejected";
    d.status = "rejected";
    (*store)->RecordDecision(d);
  }
  REQUIRE((*store)->Close().ok());
  return o.path;
}

TEST_CASE("--version prints one version string in all three programs", "[integration][cli]") {
  TempDir dir;
  for (const std::string& bin :
       {std::string(MOECTL_BIN), std::string(MOECTLD_BIN), std::string(MOE_ENGINE_BIN)}) {
    Run r = Exec(dir, {bin, "--version"});
    INFO(bin << ": " << r.out << r.err);
    CHECK(r.status == 0);
    const std::string program = bin.substr(bin.rfind('/') + 1);
    CHECK(r.out == program + " " + MOE_PROJECT_VERSION + "\n");
  }
}

TEST_CASE("Usage errors exit 2 in all three programs; --help exits 0", "[integration][cli]") {
  TempDir dir;
  for (const std::string& bin :
       {std::string(MOECTL_BIN), std::string(MOECTLD_BIN), std::string(MOE_ENGINE_BIN)}) {
    std::vector<std::string> args = {bin, "--no-such-flag"};
    if (bin == MOECTL_BIN)
      args.insert(args.begin() + 1, "history");  // moectl wants a command first
    Run bad = Exec(dir, args);
    INFO(bin << ": " << bad.err);
    CHECK(bad.status == 2);
    CHECK(bad.err.find("--no-such-flag") != std::string::npos);
    Run help = Exec(dir, {bin, "--help"});
    CHECK(help.status == 0);
    CHECK(help.out.find("--version") != std::string::npos);
  }
  Run bogus = Exec(dir, {MOECTL_BIN, "bogus"});
  CHECK(bogus.status == 2);
  CHECK(bogus.err.find("moectl: unknown command \"bogus\" (commands: engines, history,") !=
        std::string::npos);
  Run none = Exec(dir, {MOECTL_BIN});
  CHECK(none.status == 2);
  Run missing_id = Exec(dir, {MOECTL_BIN, "explain"});
  CHECK(missing_id.status == 2);
  Run bad_number = Exec(dir, {MOE_ENGINE_BIN, "--steps", "many"});
  CHECK(bad_number.status == 2);
}

TEST_CASE("Values are checked: --status, --engine and --layer", "[integration][cli]") {
  TempDir dir;
  const std::string db = MakeDb(dir);

  Run status = Exec(dir, {MOECTL_BIN, "decisions", "--db", db, "--status", "bogus"});
  CHECK(status.status == 2);
  CHECK(status.err.find("bogus") != std::string::npos);
  CHECK(status.err.find("measured") != std::string::npos);  // the accepted values
  CHECK(Exec(dir, {MOECTL_BIN, "decisions", "--db", db, "--status", "rejected"}).status == 0);

  for (const char* command : {"history", "decisions", "experts", "engines"}) {
    Run engine = Exec(dir, {MOECTL_BIN, command, "--db", db, "--engine", "nope"});
    INFO(command << ": " << engine.err);
    CHECK(engine.status == 2);
    CHECK(engine.err.find("--engine nope: unknown engine; known engines: c1") != std::string::npos);
    CHECK(engine.out.empty());
  }
  Run layer = Exec(dir, {MOECTL_BIN, "history", "--db", db, "--engine", "c1", "--layer", "2"});
  CHECK(layer.status == 2);
  CHECK(layer.err.find("--layer 2: out of range; engine c1 has layers 0 to 1") !=
        std::string::npos);
  Run any_layer = Exec(dir, {MOECTL_BIN, "experts", "--db", db, "--layer", "7"});
  CHECK(any_layer.status == 2);
  Run negative = Exec(dir, {MOECTL_BIN, "history", "--db", db, "--layer", "-1"});
  CHECK(negative.status == 2);
  Run good = Exec(dir, {MOECTL_BIN, "history", "--db", db, "--engine", "c1", "--layer", "1",
                        "--format", "csv", "--limit", "0"});
  CHECK(good.status == 0);
  CHECK(good.err.empty());
  CHECK(std::count(good.out.begin(), good.out.end(), '\n') == 31);  // header + 30 steps

  // A failure that is no usage error exits 1.
  Run no_db = Exec(dir, {MOECTL_BIN, "history", "--db", dir.File("absent.db")});
  CHECK(no_db.status == 1);
  CHECK_FALSE(no_db.err.empty());
}

TEST_CASE("Truncation is said on stderr; stdout holds the rows alone", "[integration][cli]") {
  TempDir dir;
  const std::string db = MakeDb(dir);
  Run cut = Exec(dir, {MOECTL_BIN, "history", "--db", db, "--format", "csv", "--limit", "10"});
  CHECK(cut.status == 0);
  CHECK(std::count(cut.out.begin(), cut.out.end(), '\n') == 11);
  CHECK(cut.err.find("showing the newest 10 rows only; older ones match too") != std::string::npos);
  // The newest rows are the ones kept: step 30 is there, step 1 is not.
  CHECK(cut.out.find(",c1,30,") != std::string::npos);
  CHECK(cut.out.find(",c1,1,") == std::string::npos);

  Run exact = Exec(dir, {MOECTL_BIN, "history", "--db", db, "--format", "csv", "--limit", "60"});
  CHECK(exact.status == 0);
  CHECK(exact.err.empty());  // 60 rows match: nothing left out
  CHECK(std::count(exact.out.begin(), exact.out.end(), '\n') == 61);

  Run decisions =
      Exec(dir, {MOECTL_BIN, "decisions", "--db", db, "--format", "csv", "--limit", "3"});
  CHECK(decisions.status == 0);
  CHECK(std::count(decisions.out.begin(), decisions.out.end(), '\n') == 4);
  CHECK(decisions.err.find("showing the newest 3 decisions only") != std::string::npos);
  Run all = Exec(dir, {MOECTL_BIN, "decisions", "--db", db, "--format", "csv"});
  CHECK(all.err.empty());
}

// The unit runs moectld as user moectld, group moectl, with UMask=0027; the
// operators of group moectl read its database with moectl, others do not.
// Played here with made-up ids through setpriv (needs root).
TEST_CASE("Operators in the daemon's group read the live database; others are refused",
          "[integration][cli]") {
  if (geteuid() != 0 || access("/usr/bin/setpriv", X_OK) != 0) {
    WARN("needs root and setpriv: not run");
    return;
  }
  constexpr int kDaemonUid = 64301, kGroup = 64302, kOperatorUid = 64303;
  TempDir dir;
  REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
  const std::string state = dir.File("state");
  std::filesystem::create_directory(state);
  REQUIRE(chown(state.c_str(), kDaemonUid, kGroup) == 0);
  REQUIRE(chmod(state.c_str(), 0750) == 0);
  const std::string db = state + "/moectl.db";
  const std::string config = dir.Write(
      "controller.toml",
      fmt::format("[transport]\ntelemetry = \"{}\"\ncommands = \"{}\"\n[storage]\npath = \"{}\"\n",
                  moe::testing::FreeLoopbackEndpoint(), moe::testing::FreeLoopbackEndpoint(), db));
  Subprocess daemon({"/usr/bin/setpriv", fmt::format("--reuid={}", kDaemonUid),
                     fmt::format("--regid={}", kGroup), "--clear-groups", "/bin/sh", "-c",
                     std::string("umask 0027; exec ") + MOECTLD_BIN + " --config " + config},
                    dir.File("moectld.log"));
  for (int i = 0; i < 150 && daemon.Log().find("serving:") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO(daemon.Log());
  REQUIRE(daemon.Log().find("serving:") != std::string::npos);
  struct stat st {};
  REQUIRE(stat(db.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  CHECK(st.st_gid == static_cast<gid_t>(kGroup));

  const std::vector<std::string> as_operator = {"/usr/bin/setpriv",
                                                fmt::format("--reuid={}", kOperatorUid),
                                                fmt::format("--regid={}", kOperatorUid)};
  std::vector<std::string> member = as_operator;
  member.push_back(fmt::format("--groups={}", kGroup));
  for (const std::string& a :
       {std::string(MOECTL_BIN), std::string("engines"), std::string("--db"), db})
    member.push_back(a);
  Run read = Exec(dir, member);
  INFO(read.err);
  CHECK(read.status == 0);
  CHECK(read.out.find("engine") != std::string::npos);

  std::vector<std::string> stranger = as_operator;
  stranger.push_back("--clear-groups");
  for (const std::string& a :
       {std::string(MOECTL_BIN), std::string("engines"), std::string("--db"), db})
    stranger.push_back(a);
  Run refused = Exec(dir, stranger);
  CHECK(refused.status == 1);
  CHECK_FALSE(refused.err.empty());

  REQUIRE(daemon.Signal(SIGTERM));
  CHECK(daemon.Wait(std::chrono::seconds(15)) == std::optional<int>(0));
}

}  // namespace
}  // namespace moe

#include "matplotlib_figure.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#ifndef MOE_PYTHON
#define MOE_PYTHON "/usr/bin/python3"
#endif

namespace moe::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kScript = "plot_series.py";

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

Result<fs::path> FindScript() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) {
    candidates.push_back(self.parent_path() / "../../../scripts" / kScript);  // build tree
    candidates.push_back(self.parent_path() / "../share/moectl" / kScript);   // installed
  }
  candidates.push_back(fs::current_path(ec) / "scripts" / kScript);
  for (const fs::path& c : candidates) {
    if (fs::exists(c, ec)) return fs::weakly_canonical(c, ec);
  }
  return Status::FailedPrecondition(
      fmt::format("cannot find {} (looked beside the build tree, in <prefix>/share/moectl and in "
                  "./scripts)",
                  kScript));
}

// Runs `argv` with stdout and stderr inherited; its exit status (-1 if it
// could not run or died of a signal).
int Run(const std::vector<std::string>& argv, bool quiet) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (quiet) {
      std::FILE* null = std::freopen("/dev/null", "w", stderr);
      (void)null;
    }
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

bool IsFigurePath(const std::string& path) {
  const std::string ext = Lower(fs::path(path).extension().string());
  return ext == ".png" || ext == ".svg";
}

Status DrawFigure(const nlohmann::json& figure, const std::string& out_path) {
  if (!IsFigurePath(out_path)) {
    return Status::InvalidArgument(
        fmt::format("{}: the figure's file must end in .png or .svg", out_path));
  }
  const char* env_python = std::getenv("MOECTL_PYTHON");
  const std::string python = env_python && *env_python ? env_python : MOE_PYTHON;
  if (access(python.c_str(), X_OK) != 0) {
    return Status::FailedPrecondition(fmt::format(
        "no Python at {} to draw with; install Debian's python3-matplotlib (or set MOECTL_PYTHON)",
        python));
  }
  if (Run({python, "-c", "import matplotlib"}, /*quiet=*/true) != 0) {
    return Status::FailedPrecondition(
        fmt::format("{} has no matplotlib; install Debian's python3-matplotlib (apt-get install "
                    "python3-matplotlib) or set MOECTL_PYTHON to a Python that has it",
                    python));
  }
  MOE_ASSIGN_OR_RETURN(const fs::path script, FindScript());

  std::string doc_path = (fs::temp_directory_path() / "moectl-figure-XXXXXX.json").string();
  const int fd = mkstemps(doc_path.data(), 5);
  if (fd < 0) return Status::IoError("cannot create a temporary file for the figure's data");
  close(fd);
  {
    std::ofstream doc(doc_path);
    doc << figure.dump();
    if (!doc) {
      std::remove(doc_path.c_str());
      return Status::IoError("cannot write " + doc_path);
    }
  }
  const int rc = Run({python, script.string(), doc_path, out_path}, /*quiet=*/false);
  std::remove(doc_path.c_str());
  if (rc != 0) {
    return Status::Internal(
        fmt::format("{} {} failed (exit {}) writing {}", python, script.string(), rc, out_path));
  }
  return Status::Ok();
}

}  // namespace moe::cli

// TempDir: a fresh directory under $TMPDIR, removed with its contents when the
// object is destroyed.

#ifndef MOE_TESTS_SUPPORT_TEMP_DIR_H_
#define MOE_TESTS_SUPPORT_TEMP_DIR_H_

#include <filesystem>
#include <string>

namespace moe::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // path() / name, as a string.
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  // Writes `contents` to path() / name and returns the full path.
  std::string Write(const std::string& name, const std::string& contents) const;

 private:
  std::filesystem::path path_;
};

// A loopback endpoint "tcp://127.0.0.1:PORT" on a port that was free a moment
// ago (bound and released by the OS's ephemeral allocator).
std::string FreeLoopbackEndpoint();

}  // namespace moe::testing

#endif  // MOE_TESTS_SUPPORT_TEMP_DIR_H_

// The C++ side of the Python client's codec tests (test_wire.py):
//
//   wire_samples write DIR        writes the sample messages of
//                                 tests/telemetry/sample_messages.h, encoded
//                                 by the C++ codec, to DIR/<kind>.bin
//   wire_samples reencode IN OUT  decodes IN with the C++ codec and writes the
//                                 message encoded again to OUT; prints
//                                 "<kind>" on success, or the Status
//                                 ("corruption: ...") and exits 1
//
// Exit status: 0 ok, 1 the codec refused the input, 2 usage or I/O error.

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>

#include "moe/telemetry/codec.h"
#include "telemetry/sample_messages.h"

namespace {

using moe::telemetry::Message;

bool WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

bool ReadFile(const std::string& path, std::string* bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream buffer;
  buffer << in.rdbuf();
  *bytes = buffer.str();
  return true;
}

const char* KindOf(const Message& message) {
  return std::visit(
      [](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, moe::telemetry::StepRecord>) return "step";
        if constexpr (std::is_same_v<T, moe::telemetry::Hello>) return "hello";
        if constexpr (std::is_same_v<T, moe::telemetry::Heartbeat>) return "heartbeat";
        if constexpr (std::is_same_v<T, moe::telemetry::Command>) return "command";
        if constexpr (std::is_same_v<T, moe::telemetry::Sync>) return "sync";
        return "ack";
      },
      message);
}

int Write(const std::string& dir) {
  namespace samples = moe::telemetry::testing;
  const Message messages[] = {samples::FullStep(),      samples::FullHello(),
                              samples::FullHeartbeat(), samples::FullCommand(),
                              samples::FullAck(),       samples::FullSync()};
  for (const Message& m : messages) {
    auto bytes = moe::telemetry::Encode(m);
    if (!bytes.ok()) {
      std::cerr << "encode " << KindOf(m) << ": " << bytes.status().ToString() << "\n";
      return 2;
    }
    if (!WriteFile(dir + "/" + KindOf(m) + ".bin", *bytes)) {
      std::cerr << "cannot write " << dir << "/" << KindOf(m) << ".bin\n";
      return 2;
    }
  }
  return 0;
}

int Reencode(const std::string& in, const std::string& out) {
  std::string bytes;
  if (!ReadFile(in, &bytes)) {
    std::cerr << "cannot read " << in << "\n";
    return 2;
  }
  auto decoded = moe::telemetry::Decode(bytes);
  if (!decoded.ok()) {
    std::cout << decoded.status().ToString() << "\n";
    return 1;
  }
  auto again = moe::telemetry::Encode(*decoded);
  if (!again.ok()) {
    std::cout << again.status().ToString() << "\n";
    return 1;
  }
  if (!WriteFile(out, *again)) {
    std::cerr << "cannot write " << out << "\n";
    return 2;
  }
  std::cout << KindOf(*decoded) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "write" && argc == 3) return Write(argv[2]);
  if (mode == "reencode" && argc == 4) return Reencode(argv[2], argv[3]);
  std::cerr << "usage: wire_samples write DIR | wire_samples reencode IN OUT\n";
  return 2;
}

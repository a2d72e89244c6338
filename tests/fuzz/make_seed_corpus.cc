// Writes the seed corpora of the fuzz targets: valid and hostile-but-valid
// encodings of every message kind (envelope, command), and the shipped
// configuration files with their loader's selector byte (config).
//
//   build/tests/fuzz/make_seed_corpus tests/fuzz/corpus
//
// The seeds are checked in (tests/fuzz/corpus/); rerun this after a schema
// change. libFuzzer grows its own corpus from them (scripts/fuzz).

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "moe/telemetry/codec.h"
#include "telemetry/sample_messages.h"

namespace {

namespace fs = std::filesystem;
using namespace moe::telemetry;

bool Write(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) std::fprintf(stderr, "cannot write %s\n", path.c_str());
  return out.good();
}

bool WriteMessage(const fs::path& dir, const std::string& name, const Message& message) {
  auto bytes = Encode(message);
  if (!bytes.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), bytes.status().ToString().c_str());
    return false;
  }
  return Write(dir / name, *bytes);
}

Command BaseCommand(uint64_t epoch) {
  Command c;
  c.engine_id = "e1";
  c.epoch = epoch;
  c.issued_ns = 1'700'000'000'000'000'000;
  c.reason = "seed";
  return c;
}

std::vector<std::pair<std::string, Command>> SampleCommands() {
  std::vector<std::pair<std::string, Command>> out;
  auto add = [&](std::string name, Command c) { out.emplace_back(std::move(name), c); };
  Command c = BaseCommand(1);
  c.knobs.capacity_factor = 1.5;
  add("capacity", c);
  c = BaseCommand(1);
  c.knobs.top_k = 3;
  c.knobs.noise_std = 0.1;
  c.knobs.overflow_policy = OverflowPolicy::kReroute;
  c.knobs.shortlist = 4;
  c.knobs.availability_weight = 0.3;
  add("routing", c);
  c = BaseCommand(1);
  c.knobs.top_p = 0.9;
  c.knobs.k_min = 1;
  add("dynamic_k", c);
  c = BaseCommand(1);
  c.knobs.expert_bias = std::vector<float>{0.1f, 0, 0, -0.1f, 0, 0, 0, 0.05f};
  c.knobs.phy2log = std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 0, 3};
  add("bias_placement", c);
  c = BaseCommand(1);
  c.layer_knobs.push_back({1, {}});
  c.layer_knobs.back().knobs.capacity_factor = 2.0;
  c.layer_knobs.back().knobs.phy2log = std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 1, 1};
  add("layer_override", c);
  // Hostile but well-formed: every one must be refused or survived.
  c = BaseCommand(1);
  c.knobs.capacity_factor = 1e30;
  add("capacity_huge", c);
  c = BaseCommand(1);
  c.knobs.capacity_factor = 1e-9;
  add("capacity_tiny", c);
  c = BaseCommand(1);
  c.knobs.top_k = 1000;
  add("top_k_huge", c);
  c = BaseCommand(1);
  c.knobs.top_k = 0;
  add("top_k_zero", c);
  c = BaseCommand(1);
  c.knobs.phy2log = std::vector<uint32_t>{9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  add("placement_bad_expert", c);
  c = BaseCommand(1);
  c.knobs.phy2log = std::vector<uint32_t>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  add("placement_missing_experts", c);
  c = BaseCommand(1);
  c.knobs.expert_bias = std::vector<float>{1e38f, -1e38f, 3e38f, 0, 0, 0, 0, 0};
  add("bias_extreme", c);
  c = BaseCommand(1);
  c.knobs.expert_bias = std::vector<float>{0.1f};
  add("bias_short", c);
  c = BaseCommand(1);
  c.layer_knobs.push_back({1u << 20, {}});
  c.layer_knobs.back().knobs.top_k = 1;
  add("layer_index_bomb", c);
  c = BaseCommand(kMaxEpoch);
  c.knobs.capacity_factor = 1.0;
  add("epoch_max", c);
  c = BaseCommand(0);
  c.knobs.capacity_factor = 1.0;
  add("epoch_zero", c);
  c = BaseCommand(1);
  c.knobs.noise_std = -1;
  c.knobs.top_p = 7;
  c.knobs.availability_weight = -3;
  add("ranges", c);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (e.g. tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const fs::path root(argv[1]);
  for (const char* t : {"envelope", "command", "config"})
    fs::create_directories(root / t);
  bool ok = true;

  // Envelope seeds: every message kind with every field set (the telemetry
  // tests' samples).
  const fs::path env = root / "envelope";
  ok &= WriteMessage(env, "step", testing::FullStep());
  ok &= WriteMessage(env, "hello", testing::FullHello());
  ok &= WriteMessage(env, "heartbeat", testing::FullHeartbeat());
  ok &= WriteMessage(env, "ack", testing::FullAck());
  ok &= WriteMessage(env, "command", testing::FullCommand());
  ok &= WriteMessage(env, "sync", testing::FullSync());
  const auto commands = SampleCommands();
  for (const auto& [name, command] : commands) {
    ok &= WriteMessage(root / "command", name, command);
  }

  // Config seeds: the shipped files, each behind its loader's selector byte
  // (fuzz_config.cc), plus a few broken ones.
  const std::vector<std::pair<char, std::string>> files = {
      {0, "configs/controller.toml"},
      {1, "configs/engine.toml"},
      {2, "configs/scenarios/shift.toml"},
      {3, "configs/models/mixtral_like.toml"},
      {4, "configs/scenarios/traces/recorded_shift.jsonl"}};
  for (const auto& [selector, file] : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "skipping %s (run from the repository root)\n", file.c_str());
      continue;
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (selector == 4 && text.size() > 4096) text.resize(text.rfind('\n', 4096) + 1);
    ok &= Write(root / "config" / fs::path(file).filename(), std::string(1, selector) + text);
  }
  ok &= Write(root / "config" / "bad_syntax", std::string(1, 0) + "cadence_ms = [\n");
  ok &= Write(root / "config" / "bad_type", std::string(1, 1) + "[engine]\nlayers = \"x\"\n");
  ok &= Write(root / "config" / "bad_trace", std::string(1, 4) + "{\"step\": -1}\nnot json\n");
  std::printf("%s\n", ok ? "seed corpus written" : "some seeds failed");
  return ok ? 0 : 1;
}

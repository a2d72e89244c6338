#include <catch2/catch.hpp>

#include "moe/config/toml_reader.h"
#include "support/temp_dir.h"

namespace moe::config {
namespace {

struct Sample {
  int64_t cadence_ms = 1000;
  double target = 0.01;
  std::string mode = "auto";
  bool enabled = false;
  uint32_t layers = 4;
  std::vector<double> weights;
};

Status ReadSample(TomlDocument& doc, Sample* s) {
  TableReader root = doc.Root();
  root.ReadDurationMs("cadence", &s->cadence_ms, {10, 60000});
  root.ReadChoice("mode", &s->mode, {"auto", "global"});
  TableReader policy = root.Table("policy");
  policy.Read("target", &s->target, Range<double>{0, 1});
  policy.Read("enabled", &s->enabled);
  policy.Read("layers", &s->layers, {1, 128});
  policy.Read("weights", &s->weights, Range<double>{0, 10});
  return doc.Finish();
}

TEST_CASE("Values are read with defaults kept for absent keys", "[config]") {
  auto doc = TomlDocument::Parse("cadence = \"2s\"\n[policy]\ntarget = 0.05\nweights = [1, 2.5]\n",
                                 "test.toml");
  REQUIRE(doc.ok());
  Sample s;
  REQUIRE(ReadSample(*doc, &s).ok());
  CHECK(s.cadence_ms == 2000);
  CHECK(s.target == 0.05);
  CHECK(s.mode == "auto");
  CHECK(s.layers == 4);
  CHECK(s.weights == std::vector<double>{1, 2.5});
}

TEST_CASE("Every problem names file, line, column and key", "[config]") {
  auto doc = TomlDocument::Parse(
      "cadence = 5\nmode = \"fast\"\n[policy]\ntarget = 1.5\nlayers = -1\ntypo_key = 3\n",
      "configs/c.toml");
  REQUIRE(doc.ok());
  Sample s;
  Status st = ReadSample(*doc, &s);
  REQUIRE_FALSE(st.ok());
  const std::string& m = st.message();
  INFO(m);
  CHECK(m.find("configs/c.toml:1:11: cadence: expected a duration in [10, 60000] ms") !=
        std::string::npos);
  CHECK(m.find("configs/c.toml:2:8: mode: expected one of \"auto\", \"global\", got the string "
               "\"fast\"") != std::string::npos);
  CHECK(m.find("configs/c.toml:4:10: policy.target: expected a number in [0, 1], got the number "
               "1.5") != std::string::npos);
  CHECK(m.find("policy.layers: expected an integer in [1, 128], got the integer -1") !=
        std::string::npos);
  CHECK(m.find("configs/c.toml:6:1: policy.typo_key: unknown key") != std::string::npos);
  // Bad values leave the defaults in place.
  CHECK(s.target == 0.01);
  CHECK(s.layers == 4);
}

TEST_CASE("Syntax errors and missing files are reported with their position", "[config]") {
  auto bad = TomlDocument::Parse("a = [1, 2\n", "x.toml");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().rfind("x.toml:", 0) == 0);
  CHECK(bad.status().message().find("TOML syntax error") != std::string::npos);

  auto missing = TomlDocument::Load("/nonexistent/dir/controller.toml");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
}

TEST_CASE("Files load from disk; tables of arrays and required keys", "[config]") {
  moe::testing::TempDir dir;
  std::string path = dir.Write("e.toml", "[[layer]]\nid = 1\n[[layer]]\nid = 2\nextra = 1\n");
  auto doc = TomlDocument::Load(path);
  REQUIRE(doc.ok());
  TableReader root = doc->Root();
  std::vector<int64_t> ids;
  for (TableReader layer : root.Tables("layer")) {
    int64_t id = 0;
    layer.Read("id", &id);
    ids.push_back(id);
  }
  root.Require("name");
  CHECK(ids == std::vector<int64_t>{1, 2});
  Status st = doc->Finish();
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("layer[1].extra: unknown key") != std::string::npos);
  CHECK(st.message().find("name: required key is missing") != std::string::npos);
}

}  // namespace
}  // namespace moe::config

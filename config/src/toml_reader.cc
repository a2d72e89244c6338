#include "moe/config/toml_reader.h"

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "moe/common/time_format.h"

namespace moe::config {

struct TomlDocumentState {
  std::string source_name;
  toml::table root;
  std::vector<std::string> errors;
  // Keys asked for, per table that was read; Finish() reports the rest.
  std::map<const toml::table*, std::set<std::string, std::less<>>> used;
  std::map<const toml::table*, std::string> table_paths;

  std::string Where(const toml::source_region& region) const {
    if (region.begin.line == 0) return source_name;
    return fmt::format("{}:{}:{}", source_name, region.begin.line, region.begin.column);
  }
};

namespace {

const toml::table* AsTable(const void* p) {
  return static_cast<const toml::table*>(p);
}

std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return fmt::format("the string \"{}\"", *node.value<std::string>());
    case toml::node_type::integer:
      return fmt::format("the integer {}", *node.value<int64_t>());
    case toml::node_type::floating_point:
      return fmt::format("the number {}", *node.value<double>());
    case toml::node_type::boolean:
      return *node.value<bool>() ? "true" : "false";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "a date/time";
  }
}

template <typename T>
std::string RangeText(Range<T> range) {
  bool has_min = range.min != std::numeric_limits<T>::lowest();
  bool has_max = range.max != std::numeric_limits<T>::max();
  if (has_min && has_max) return fmt::format(" in [{}, {}]", range.min, range.max);
  if (has_min) return fmt::format(" >= {}", range.min);
  if (has_max) return fmt::format(" <= {}", range.max);
  return "";
}

}  // namespace

std::string TableReader::KeyPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

const void* TableReader::Lookup(std::string_view key) const {
  if (table_ == nullptr) return nullptr;
  const toml::table* table = AsTable(table_);
  doc_->used[table].emplace(key);
  return table->get(key);
}

bool TableReader::Has(std::string_view key) const {
  return table_ != nullptr && AsTable(table_)->contains(key);
}

void TableReader::Fail(std::string_view key, std::string_view message) {
  const toml::node* node = table_ ? AsTable(table_)->get(key) : nullptr;
  std::string where = node ? doc_->Where(node->source())
                           : (table_ ? doc_->Where(AsTable(table_)->source()) : doc_->source_name);
  doc_->errors.push_back(fmt::format("{}: {}: {}", where, KeyPath(key), message));
}

void TableReader::Require(std::string_view key) {
  if (!Has(key)) Fail(key, "required key is missing; add it to the file");
}

void TableReader::Read(std::string_view key, bool* out) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  if (auto v = node->value_exact<bool>()) {
    *out = *v;
  } else {
    Fail(key, fmt::format("expected true or false, got {}", Describe(*node)));
  }
}

void TableReader::Read(std::string_view key, int64_t* out, Range<int64_t> range) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  auto v = node->value_exact<int64_t>();
  if (!v || *v < range.min || *v > range.max) {
    Fail(key, fmt::format("expected an integer{}, got {}", RangeText(range), Describe(*node)));
    return;
  }
  *out = *v;
}

void TableReader::Read(std::string_view key, uint32_t* out, Range<int64_t> range) {
  int64_t value = *out;
  range.min = std::max<int64_t>(range.min, 0);
  range.max = std::min<int64_t>(range.max, UINT32_MAX);
  size_t errors_before = doc_->errors.size();
  Read(key, &value, range);
  if (doc_->errors.size() == errors_before) *out = static_cast<uint32_t>(value);
}

void TableReader::Read(std::string_view key, double* out, Range<double> range) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  std::optional<double> v;
  if (node->is_integer()) v = static_cast<double>(*node->value_exact<int64_t>());
  if (node->is_floating_point()) v = *node->value_exact<double>();
  if (!v || !(*v >= range.min && *v <= range.max)) {
    Fail(key, fmt::format("expected a number{}, got {}", RangeText(range), Describe(*node)));
    return;
  }
  *out = *v;
}

void TableReader::Read(std::string_view key, std::string* out) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  if (auto v = node->value_exact<std::string>()) {
    *out = *v;
  } else {
    Fail(key, fmt::format("expected a string, got {}", Describe(*node)));
  }
}

void TableReader::ReadChoice(std::string_view key, std::string* out,
                             const std::vector<std::string>& choices) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  auto v = node->value_exact<std::string>();
  if (v && std::find(choices.begin(), choices.end(), *v) != choices.end()) {
    *out = *v;
    return;
  }
  Fail(key, fmt::format("expected one of \"{}\", got {}", fmt::join(choices, "\", \""),
                        Describe(*node)));
}

void TableReader::ReadDurationMs(std::string_view key, int64_t* out_ms, Range<int64_t> range_ms) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  std::optional<int64_t> ms;
  if (auto i = node->value_exact<int64_t>()) ms = *i;
  if (auto s = node->value_exact<std::string>()) {
    Result<int64_t> nanos = ParseDuration(*s);
    if (nanos.ok()) ms = *nanos / 1'000'000;
  }
  if (!ms || *ms < range_ms.min || *ms > range_ms.max) {
    Fail(key, fmt::format("expected a duration{} ms (milliseconds as an integer, or a string "
                          "like \"250ms\", \"5s\", \"2m\"), got {}",
                          RangeText(range_ms), Describe(*node)));
    return;
  }
  *out_ms = *ms;
}

namespace {

template <typename T, typename Convert>
void ReadArray(TableReader* reader, const toml::node* node, std::string_view key,
               std::vector<T>* out, std::string_view what, Convert convert) {
  const toml::array* array = node->as_array();
  if (!array) {
    reader->Fail(key, fmt::format("expected an array of {}, got {}", what, Describe(*node)));
    return;
  }
  std::vector<T> values;
  for (size_t i = 0; i < array->size(); ++i) {
    std::optional<T> v = convert((*array)[i]);
    if (!v) {
      reader->Fail(key, fmt::format("element {} of the array: expected {}, got {}", i, what,
                                    Describe((*array)[i])));
      return;
    }
    values.push_back(*v);
  }
  *out = std::move(values);
}

}  // namespace

void TableReader::Read(std::string_view key, std::vector<double>* out, Range<double> range) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  std::string what = "numbers" + RangeText(range);
  ReadArray<double>(this, node, key, out, what, [&](const toml::node& n) -> std::optional<double> {
    std::optional<double> v;
    if (n.is_integer()) v = static_cast<double>(*n.value_exact<int64_t>());
    if (n.is_floating_point()) v = *n.value_exact<double>();
    if (v && !(*v >= range.min && *v <= range.max)) v.reset();
    return v;
  });
}

void TableReader::Read(std::string_view key, std::vector<int64_t>* out, Range<int64_t> range) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  std::string what = "integers" + RangeText(range);
  ReadArray<int64_t>(this, node, key, out, what,
                     [&](const toml::node& n) -> std::optional<int64_t> {
                       auto v = n.value_exact<int64_t>();
                       if (v && (*v < range.min || *v > range.max)) v.reset();
                       return v;
                     });
}

void TableReader::Read(std::string_view key, std::vector<std::string>* out) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  if (!node) return;
  ReadArray<std::string>(this, node, key, out, "strings",
                         [](const toml::node& n) { return n.value_exact<std::string>(); });
}

TableReader TableReader::Table(std::string_view key) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  std::string path = KeyPath(key);
  if (!node) return TableReader(doc_, nullptr, path);
  const toml::table* table = node->as_table();
  if (!table) {
    Fail(key, fmt::format("expected a table ([{}]), got {}", path, Describe(*node)));
    return TableReader(doc_, nullptr, path);
  }
  doc_->used.try_emplace(table);
  doc_->table_paths[table] = path;
  return TableReader(doc_, table, path);
}

std::vector<TableReader> TableReader::Tables(std::string_view key) {
  auto node = static_cast<const toml::node*>(Lookup(key));
  std::vector<TableReader> out;
  if (!node) return out;
  const toml::array* array = node->as_array();
  if (!array || !array->is_array_of_tables()) {
    Fail(key, fmt::format("expected an array of tables ([[{}]]), got {}", KeyPath(key),
                          Describe(*node)));
    return out;
  }
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::table* table = (*array)[i].as_table();
    std::string path = fmt::format("{}[{}]", KeyPath(key), i);
    doc_->used.try_emplace(table);
    doc_->table_paths[table] = path;
    out.push_back(TableReader(doc_, table, path));
  }
  return out;
}

std::vector<std::string> TableReader::Keys() const {
  std::vector<std::string> keys;
  if (table_ == nullptr) return keys;
  for (auto&& [k, v] : *AsTable(table_))
    keys.emplace_back(k.str());
  return keys;
}

TomlDocument::TomlDocument(std::unique_ptr<TomlDocumentState> state) : state_(std::move(state)) {}
TomlDocument::TomlDocument(TomlDocument&&) noexcept = default;
TomlDocument& TomlDocument::operator=(TomlDocument&&) noexcept = default;
TomlDocument::~TomlDocument() = default;

Result<TomlDocument> TomlDocument::Parse(std::string_view text, std::string source_name) {
  // Debian's toml++ is built with exceptions; they stop here.
  auto state = std::make_unique<TomlDocumentState>();
  try {
    state->root = toml::parse(text, source_name);
  } catch (const toml::parse_error& error) {
    return Status::InvalidArgument(fmt::format("{}:{}:{}: TOML syntax error: {}", source_name,
                                               error.source().begin.line,
                                               error.source().begin.column, error.description()));
  }
  state->source_name = std::move(source_name);
  return TomlDocument(std::move(state));
}

Result<TomlDocument> TomlDocument::Load(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status::NotFound(
        fmt::format("cannot open config file {}: {}", path, std::strerror(errno)));
  }
  std::string text;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0)
    text.append(buffer, n);
  std::fclose(f);
  return Parse(text, path);
}

TableReader TomlDocument::Root() {
  state_->used.try_emplace(&state_->root);
  state_->table_paths[&state_->root] = "";
  return TableReader(state_.get(), &state_->root, "");
}

Status TomlDocument::Finish() {
  for (const auto& [table, used] : state_->used) {
    const std::string& path = state_->table_paths[table];
    for (auto&& [k, v] : *table) {
      if (used.count(k.str()) == 0) {
        std::string key = path.empty() ? std::string(k.str()) : fmt::format("{}.{}", path, k.str());
        state_->errors.push_back(
            fmt::format("{}: {}: unknown key; check its spelling against "
                        "the documented keys",
                        state_->Where(k.source()), key));
      }
    }
  }
  state_->used.clear();
  if (state_->errors.empty()) return Status::Ok();
  return Status::InvalidArgument(fmt::format("{}", fmt::join(state_->errors, "\n")));
}

const std::vector<std::string>& TomlDocument::errors() const {
  return state_->errors;
}

}  // namespace moe::config

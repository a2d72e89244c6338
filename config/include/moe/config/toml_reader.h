// TomlReader: reads a TOML file into plain Options structs, checking every key.
//
// This is the only place in moectl that sees TOML. Programs' config loaders
// read each key into a field with a type and a range; the reader collects every
// problem with its position, and at the end refuses keys nobody asked for (a
// misspelt key is an error, not a silent default). Errors read:
//
//   configs/controller.toml:12:18: policy.capacity.target_drop_rate: expected a
//   number in [0, 1], got 1.5
//
// Usage:
//   MOE_ASSIGN_OR_RETURN(auto doc, config::TomlDocument::Load(path));
//   config::TableReader root = doc.Root();
//   root.Read("cadence_ms", &opts.cadence_ms, config::Range<int64_t>{10, 60000});
//   config::TableReader guard = root.Table("guard");
//   guard.Read("max_step", &opts.guard.max_step, config::Range<double>{0, 10});
//   MOE_RETURN_IF_ERROR(doc.Finish());   // unknown keys + collected errors
//
// A key that is absent leaves the field at its default (Options structs carry
// defaults); Require() makes a key mandatory.
//
// Thread safety: a document and its readers belong to one thread.

#ifndef MOE_CONFIG_TOML_READER_H_
#define MOE_CONFIG_TOML_READER_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"

namespace moe::config {

template <typename T>
struct Range {
  T min = std::numeric_limits<T>::lowest();
  T max = std::numeric_limits<T>::max();
};

struct TomlDocumentState;  // private

// A view of one TOML table (the root, a sub-table, or one element of an array
// of tables). Cheap to copy; valid while its TomlDocument lives.
class TableReader {
 public:
  // Scalars. Integers accept TOML integers only; doubles accept integers and
  // floats; strings accept strings. Out of range or of the wrong type records
  // an error naming the key and the accepted values.
  void Read(std::string_view key, bool* out);
  void Read(std::string_view key, int64_t* out, Range<int64_t> range = {});
  void Read(std::string_view key, uint32_t* out, Range<int64_t> range = {0, UINT32_MAX});
  void Read(std::string_view key, double* out, Range<double> range = {});
  void Read(std::string_view key, std::string* out);
  // A string that must be one of `choices`.
  void ReadChoice(std::string_view key, std::string* out, const std::vector<std::string>& choices);
  // A duration: an integer of milliseconds or a string like "250ms", "5s", "2m".
  void ReadDurationMs(std::string_view key, int64_t* out_ms, Range<int64_t> range_ms = {});
  // Arrays of numbers or strings.
  void Read(std::string_view key, std::vector<double>* out, Range<double> range = {});
  void Read(std::string_view key, std::vector<int64_t>* out, Range<int64_t> range = {});
  void Read(std::string_view key, std::vector<std::string>* out);

  // Records an error if `key` is absent.
  void Require(std::string_view key);
  bool Has(std::string_view key) const;

  // A sub-table; when absent, a reader over an empty table (every Read keeps
  // defaults). A value of another type records an error.
  TableReader Table(std::string_view key);
  // Elements of an array of tables ([[key]]); empty when absent.
  std::vector<TableReader> Tables(std::string_view key);
  // Keys of this table, in file order (for maps such as per-layer overrides).
  std::vector<std::string> Keys() const;

  // Records a caller-detected error about `key` (e.g. a cross-field rule), with
  // the key's position when it exists, else the table's.
  void Fail(std::string_view key, std::string_view message);

  // Dotted path of this table from the root ("" for the root).
  const std::string& path() const { return path_; }

 private:
  friend class TomlDocument;
  TableReader(TomlDocumentState* doc, const void* table, std::string path)
      : doc_(doc), table_(table), path_(std::move(path)) {}
  const void* Lookup(std::string_view key) const;  // marks the key used
  std::string KeyPath(std::string_view key) const;

  TomlDocumentState* doc_;
  const void* table_;  // const toml::table*, or nullptr for an absent table
  std::string path_;
};

class TomlDocument {
 public:
  // Parses `path`. A syntax error gives kInvalidArgument "path:line:col: ...".
  static Result<TomlDocument> Load(const std::string& path);
  // Parses `text`; `source_name` stands in for the file name in errors.
  static Result<TomlDocument> Parse(std::string_view text, std::string source_name);

  TomlDocument(TomlDocument&&) noexcept;
  TomlDocument& operator=(TomlDocument&&) noexcept;
  ~TomlDocument();

  TableReader Root();

  // Records an error for every key present in a table that was read but never
  // asked for, then returns every recorded error as one kInvalidArgument Status
  // (one problem per line), or OK.
  Status Finish();

  // Errors recorded so far (each "file:line:col: key: message").
  const std::vector<std::string>& errors() const;

 private:
  explicit TomlDocument(std::unique_ptr<TomlDocumentState> state);
  std::unique_ptr<TomlDocumentState> state_;
};

}  // namespace moe::config

#endif  // MOE_CONFIG_TOML_READER_H_

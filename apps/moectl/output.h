// Output for operators: one table model rendered as an aligned text table,
// CSV (RFC 4180) or JSON (an array of objects).

#ifndef MOE_APPS_MOECTL_OUTPUT_H_
#define MOE_APPS_MOECTL_OUTPUT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "moe/common/status.h"

namespace moe::cli {

// A cell: empty (null), text, integer or real number.
using Cell = std::variant<std::monostate, std::string, int64_t, double>;

struct TableData {
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;
};

enum class Format { kTable, kCsv, kJson };

// "table", "csv" or "json"; anything else is kInvalidArgument.
Result<Format> ParseFormat(const std::string& text);

// Renders `data`. Doubles print with up to `precision` significant digits in
// tables and CSV, and as full-precision numbers in JSON. Null cells are empty
// (table, CSV) or null (JSON).
void Render(const TableData& data, Format format, std::ostream& out, int precision = 6);

// A cell from an optional number.
template <typename T>
Cell OptionalCell(const std::optional<T>& value) {
  if (!value) return std::monostate{};
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<double>(*value);
  } else {
    return static_cast<int64_t>(*value);
  }
}

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_OUTPUT_H_

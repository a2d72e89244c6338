#include "output.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace moe::cli {
namespace {

std::string Text(const Cell& cell, int precision) {
  if (std::holds_alternative<std::string>(cell)) return std::get<std::string>(cell);
  if (std::holds_alternative<int64_t>(cell)) return std::to_string(std::get<int64_t>(cell));
  if (std::holds_alternative<double>(cell)) {
    return fmt::format("{:.{}g}", std::get<double>(cell), precision);
  }
  return "";
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace

Result<Format> ParseFormat(const std::string& text) {
  if (text == "table") return Format::kTable;
  if (text == "csv") return Format::kCsv;
  if (text == "json") return Format::kJson;
  return Status::InvalidArgument("--format must be table, csv or json, got '" + text + "'");
}

void Render(const TableData& data, Format format, std::ostream& out, int precision) {
  if (format == Format::kJson) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& row : data.rows) {
      nlohmann::json object = nlohmann::json::object();
      for (size_t i = 0; i < data.columns.size() && i < row.size(); ++i) {
        const Cell& cell = row[i];
        nlohmann::json& value = object[data.columns[i]];
        if (std::holds_alternative<std::string>(cell)) value = std::get<std::string>(cell);
        if (std::holds_alternative<int64_t>(cell)) value = std::get<int64_t>(cell);
        if (std::holds_alternative<double>(cell)) value = std::get<double>(cell);
      }
      array.push_back(std::move(object));
    }
    out << array.dump(2) << "\n";
    return;
  }
  if (format == Format::kCsv) {
    for (size_t i = 0; i < data.columns.size(); ++i) {
      out << (i ? "," : "") << CsvField(data.columns[i]);
    }
    out << "\n";
    for (const auto& row : data.rows) {
      for (size_t i = 0; i < row.size(); ++i)
        out << (i ? "," : "") << CsvField(Text(row[i], 10));
      out << "\n";
    }
    return;
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> widths(data.columns.size());
  for (size_t i = 0; i < data.columns.size(); ++i)
    widths[i] = data.columns[i].size();
  for (const auto& row : data.rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < row.size(); ++i) {
      line.push_back(Text(row[i], precision));
      if (i < widths.size()) widths[i] = std::max(widths[i], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto print_line = [&](const std::vector<std::string>& line) {
    std::string text;
    for (size_t i = 0; i < line.size(); ++i) {
      text += fmt::format("{:<{}}", line[i], i + 1 < line.size() ? widths[i] + 2 : 0);
    }
    out << text << "\n";
  };
  print_line(data.columns);
  std::vector<std::string> rule;
  for (size_t w : widths)
    rule.push_back(std::string(w, '-'));
  print_line(rule);
  for (const auto& line : cells)
    print_line(line);
  if (data.rows.empty()) out << "(no rows)\n";
}

}  // namespace moe::cli

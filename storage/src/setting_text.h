// The `setting` column of learning_samples: a learnt setting's values as a
// JSON array of numbers ("[2,6]"), shortest round-trip text, so a value read
// back is the double that was written.
//
// Thread safety: pure functions.

#ifndef MOE_STORAGE_SRC_SETTING_TEXT_H_
#define MOE_STORAGE_SRC_SETTING_TEXT_H_

#include <fmt/format.h>

#include <charconv>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"

namespace moe::storage::internal {

// "[v0,v1,...]"; "" for no values.
inline std::string SettingJson(const std::vector<double>& setting) {
  if (setting.empty()) return "";
  return fmt::format("[{}]", fmt::join(setting, ","));
}

// The values of `text` (SettingJson's form); `value` alone when `text` is
// empty (a one-knob row written before the column existed). kCorruption
// naming the text when it is not an array of finite numbers.
inline Result<std::vector<double>> SettingOf(std::string_view text, double value) {
  if (text.empty()) return std::vector<double>{value};
  auto bad = [&] {
    return Status::Corruption(fmt::format(
        "learning_samples.setting '{}' is not a JSON array of numbers; the row was not written "
        "by moectld",
        text));
  };
  if (text.size() < 2 || text.front() != '[' || text.back() != ']') return bad();
  std::vector<double> values;
  std::string_view rest = text.substr(1, text.size() - 2);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    double v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || end != item.data() + item.size()) return bad();
    values.push_back(v);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
    if (rest.empty()) return bad();
  }
  if (values.empty()) return bad();
  return values;
}

}  // namespace moe::storage::internal

#endif  // MOE_STORAGE_SRC_SETTING_TEXT_H_

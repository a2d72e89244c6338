#include "moe/common/time_format.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <ctime>

namespace moe {
namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;

bool ParseInt(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// Parses exactly `width` digits at text[pos...], advancing pos.
bool TakeDigits(std::string_view text, size_t* pos, size_t width, int* out) {
  if (*pos + width > text.size()) return false;
  int value = 0;
  for (size_t i = 0; i < width; ++i) {
    char c = text[*pos + i];
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    value = value * 10 + (c - '0');
  }
  *pos += width;
  *out = value;
  return true;
}

bool TakeChar(std::string_view text, size_t* pos, char c) {
  if (*pos < text.size() && text[*pos] == c) {
    ++*pos;
    return true;
  }
  return false;
}

Result<int64_t> ParseIso(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(fmt::format(
        "cannot read time '{}': {}; use ISO 8601 like 2026-11-23T01:27:30Z, or a relative "
        "time like -10m",
        text, why));
  };
  std::tm tm{};
  size_t pos = 0;
  int year, month, day, hour = 0, minute = 0, second = 0;
  if (!TakeDigits(text, &pos, 4, &year) || !TakeChar(text, &pos, '-') ||
      !TakeDigits(text, &pos, 2, &month) || !TakeChar(text, &pos, '-') ||
      !TakeDigits(text, &pos, 2, &day)) {
    return bad("expected a date YYYY-MM-DD");
  }
  int64_t frac_nanos = 0;
  if (TakeChar(text, &pos, 'T') || TakeChar(text, &pos, ' ')) {
    if (!TakeDigits(text, &pos, 2, &hour) || !TakeChar(text, &pos, ':') ||
        !TakeDigits(text, &pos, 2, &minute)) {
      return bad("expected a time hh:mm after the date");
    }
    if (TakeChar(text, &pos, ':')) {
      if (!TakeDigits(text, &pos, 2, &second)) return bad("expected seconds after hh:mm:");
      if (TakeChar(text, &pos, '.')) {
        int64_t scale = kNanosPerSecond / 10;
        size_t start = pos;
        while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
          frac_nanos += (text[pos] - '0') * scale;
          scale /= 10;
          ++pos;
        }
        if (pos == start) return bad("expected digits after the decimal point");
      }
    }
  }
  int64_t offset_seconds = 0;
  if (pos < text.size()) {
    if (TakeChar(text, &pos, 'Z') || TakeChar(text, &pos, 'z')) {
    } else if (text[pos] == '+' || text[pos] == '-') {
      int sign = text[pos] == '-' ? -1 : 1;
      ++pos;
      int oh, om = 0;
      if (!TakeDigits(text, &pos, 2, &oh)) return bad("expected an offset +hh:mm");
      TakeChar(text, &pos, ':');
      if (pos < text.size() && !TakeDigits(text, &pos, 2, &om)) {
        return bad("expected an offset +hh:mm");
      }
      offset_seconds = sign * (oh * 3600 + om * 60);
    }
  }
  if (pos != text.size()) return bad("unexpected text after the time");
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return bad("a field is out of range");
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  int64_t seconds = static_cast<int64_t>(timegm(&tm)) - offset_seconds;
  return seconds * kNanosPerSecond + frac_nanos;
}

}  // namespace

std::string FormatIsoTime(int64_t unix_nanos) {
  int64_t seconds = unix_nanos / kNanosPerSecond;
  int64_t nanos = unix_nanos % kNanosPerSecond;
  if (nanos < 0) {
    seconds -= 1;
    nanos += kNanosPerSecond;
  }
  std::tm tm{};
  time_t t = static_cast<time_t>(seconds);
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", tm, nanos / 1'000'000);
}

Result<int64_t> ParseDuration(std::string_view text) {
  struct Unit {
    std::string_view suffix;
    int64_t nanos;
  };
  static constexpr Unit kUnits[] = {{"ms", 1'000'000},
                                    {"us", 1'000},
                                    {"s", kNanosPerSecond},
                                    {"m", 60 * kNanosPerSecond},
                                    {"h", 3600 * kNanosPerSecond},
                                    {"d", 86400 * kNanosPerSecond}};
  for (const Unit& unit : kUnits) {
    if (text.size() > unit.suffix.size() && text.ends_with(unit.suffix)) {
      int64_t count;
      if (ParseInt(text.substr(0, text.size() - unit.suffix.size()), &count) && count >= 0) {
        return count * unit.nanos;
      }
    }
  }
  int64_t seconds;
  if (ParseInt(text, &seconds) && seconds >= 0) return seconds * kNanosPerSecond;
  return Status::InvalidArgument(fmt::format(
      "cannot read duration '{}'; use a number with a unit: 250ms, 90s, 10m, 2h, 1d", text));
}

Result<int64_t> ParseTimeArg(std::string_view text, int64_t now_unix_nanos) {
  if (text == "now") return now_unix_nanos;
  if (text.size() > 1 && text[0] == '-') {
    Result<int64_t> ago = ParseDuration(text.substr(1));
    if (!ago.ok()) {
      return Status::InvalidArgument(fmt::format(
          "cannot read relative time '{}'; use a minus sign and a duration: -90s, -10m, -2h, -1d",
          text));
    }
    return now_unix_nanos - *ago;
  }
  int64_t raw;
  if (text.size() >= 16 && ParseInt(text, &raw)) return raw;
  return ParseIso(text);
}

}  // namespace moe

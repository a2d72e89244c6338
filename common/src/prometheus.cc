#include "moe/common/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe::prometheus {
namespace {

bool IsNameStart(char c, bool colon_ok) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
}

bool IsValidName(std::string_view name, bool colon_ok) {
  if (name.empty() || !IsNameStart(name[0], colon_ok)) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return IsNameStart(c, colon_ok) || (c >= '0' && c <= '9'); });
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), bucket_counts_(upper_bounds_.size(), 0) {}

void Histogram::Observe(double value) {
  ++count_;
  sum_ += value;
  auto it = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value);
  if (it != upper_bounds_.end()) ++bucket_counts_[static_cast<size_t>(it - upper_bounds_.begin())];
}

std::vector<uint64_t> Histogram::CumulativeCounts() const {
  std::vector<uint64_t> out(bucket_counts_.size());
  uint64_t running = 0;
  for (size_t i = 0; i < bucket_counts_.size(); ++i) {
    running += bucket_counts_[i];
    out[i] = running;
  }
  return out;
}

std::vector<double> ExponentialBounds(double start, double factor, int count) {
  std::vector<double> out;
  double bound = start;
  for (int i = 0; i < count; ++i) {
    out.push_back(bound);
    bound *= factor;
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void TextWriter::Fail(std::string message) {
  if (status_.ok()) status_ = Status::InvalidArgument(std::move(message));
}

void TextWriter::Family(std::string_view name, MetricType type, std::string_view help) {
  in_family_ = false;
  if (!status_.ok()) return;
  if (!IsValidName(name, /*colon_ok=*/true)) {
    return Fail(fmt::format("metric name \"{}\" is not [a-zA-Z_:][a-zA-Z0-9_:]*", name));
  }
  if (type == MetricType::kCounter && !name.ends_with("_total")) {
    return Fail(fmt::format("counter \"{}\" must end in _total", name));
  }
  if (!families_.insert(std::string(name)).second) {
    return Fail(fmt::format("metric family \"{}\" written twice", name));
  }
  family_ = std::string(name);
  type_ = type;
  in_family_ = true;
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, EscapeHelp(help), name, TypeName(type));
}

bool TextWriter::CheckLabels(const Labels& labels, std::string_view reserved) {
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    if (!IsValidName(label, /*colon_ok=*/false) || label.starts_with("__")) {
      Fail(fmt::format("{}: label name \"{}\" is not [a-zA-Z_][a-zA-Z0-9_]* (or starts with __)",
                       family_, label));
      return false;
    }
    if (label == reserved) {
      Fail(fmt::format("{}: label \"{}\" is reserved here", family_, label));
      return false;
    }
    for (size_t j = 0; j < i; ++j) {
      if (labels[j].first == label) {
        Fail(fmt::format("{}: label \"{}\" given twice", family_, label));
        return false;
      }
    }
  }
  return true;
}

void TextWriter::WriteSample(std::string_view name, const Labels& labels, const std::string* le,
                             double value) {
  out_ += name;
  if (!labels.empty() || le != nullptr) {
    out_ += '{';
    bool first = true;
    for (const auto& [label, label_value] : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += fmt::format("{}=\"{}\"", label, EscapeLabelValue(label_value));
    }
    if (le != nullptr) out_ += fmt::format("{}le=\"{}\"", first ? "" : ",", *le);
    out_ += '}';
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void TextWriter::Sample(const Labels& labels, double value) {
  if (!status_.ok()) return;
  if (!in_family_) return Fail("a sample before its family");
  if (type_ == MetricType::kHistogram) {
    return Fail(fmt::format("{}: a histogram takes HistogramSample", family_));
  }
  if (!CheckLabels(labels, "")) return;
  WriteSample(family_, labels, nullptr, value);
}

void TextWriter::HistogramSample(const Labels& labels, const Histogram& histogram) {
  if (!status_.ok()) return;
  if (!in_family_) return Fail("a sample before its family");
  if (type_ != MetricType::kHistogram) {
    return Fail(fmt::format("{}: HistogramSample needs a histogram family", family_));
  }
  if (!CheckLabels(labels, "le")) return;
  const std::vector<double>& bounds = histogram.upper_bounds();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      return Fail(
          fmt::format("{}: histogram bounds must be finite and strictly increasing", family_));
    }
  }
  const std::vector<uint64_t> cumulative = histogram.CumulativeCounts();
  const std::string bucket = family_ + "_bucket";
  for (size_t i = 0; i < bounds.size(); ++i) {
    const std::string le = FormatValue(bounds[i]);
    WriteSample(bucket, labels, &le, static_cast<double>(cumulative[i]));
  }
  const std::string inf = "+Inf";
  WriteSample(bucket, labels, &inf, static_cast<double>(histogram.count()));
  WriteSample(family_ + "_sum", labels, nullptr, histogram.sum());
  WriteSample(family_ + "_count", labels, nullptr, static_cast<double>(histogram.count()));
}

Result<std::string> TextWriter::Finish() const {
  if (!status_.ok()) return status_;
  return out_;
}

}  // namespace moe::prometheus

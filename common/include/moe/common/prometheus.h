// Prometheus text exposition format (version 0.0.4), written by hand.
//
// A TextWriter collects metric families, each with its # HELP and # TYPE lines
// and its samples, and renders them as the text a Prometheus server scrapes
// from /metrics (Content-Type kPrometheusContentType):
//
//   # HELP moectl_steps_total Steps received.
//   # TYPE moectl_steps_total counter
//   moectl_steps_total{engine="e1"} 42
//
// The writer checks what it is given: metric and label names against the
// format's grammar ([a-zA-Z_:][a-zA-Z0-9_:]* for metrics, [a-zA-Z_][a-zA-Z0-9_]*
// for labels, no label starting with "__"), a counter's name ending in
// "_total", each family named once, a sample given only after its family and
// with no label twice, a histogram's bounds strictly increasing and finite.
// The first problem is kept and returned by Finish(); samples after it are
// ignored. Label values and help texts are escaped as the format requires
// (backslash, double quote in label values, newline).
//
// Values are written in the shortest form that reads back to the same double
// ("0.25", "42", "1e-07"), and non-finite values as "+Inf", "-Inf", "NaN".
//
// Thread safety: TextWriter and Histogram are values; distinct objects may be
// used from different threads.

#ifndef MOE_COMMON_PROMETHEUS_H_
#define MOE_COMMON_PROMETHEUS_H_

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/common/status.h"

namespace moe::prometheus {

inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Label name/value pairs of one sample, in the order they are written.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge, kHistogram };

// A cumulative histogram with fixed upper bounds (the "le" labels), e.g.
// latencies in seconds. Observations above the last bound land in +Inf only.
class Histogram {
 public:
  Histogram() = default;
  // `upper_bounds` must be finite and strictly increasing (TextWriter checks).
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double value);

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // Observations <= upper_bounds()[i], cumulative: one entry per bound.
  std::vector<uint64_t> CumulativeCounts() const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> upper_bounds_;
  std::vector<uint64_t> bucket_counts_;  // per bound, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

// `count` bounds from `start`, each `factor` times the one before.
std::vector<double> ExponentialBounds(double start, double factor, int count);

class TextWriter {
 public:
  // Starts a family. Every Sample/HistogramSample until the next Family
  // belongs to it.
  void Family(std::string_view name, MetricType type, std::string_view help);
  // A sample of the current counter or gauge family.
  void Sample(const Labels& labels, double value);
  // The _bucket, _sum and _count samples of the current histogram family.
  void HistogramSample(const Labels& labels, const Histogram& histogram);

  // The text (ends with a newline when not empty), or the first problem
  // (kInvalidArgument naming the metric).
  Result<std::string> Finish() const;

 private:
  void Fail(std::string message);
  bool CheckLabels(const Labels& labels, std::string_view reserved);
  void WriteSample(std::string_view name, const Labels& labels, const std::string* le,
                   double value);

  std::string out_;
  std::string family_;
  MetricType type_ = MetricType::kGauge;
  bool in_family_ = false;
  std::set<std::string, std::less<>> families_;
  Status status_;
};

// The value as the format writes it: shortest round-trip text, or +Inf/-Inf/NaN.
std::string FormatValue(double value);

// A label value escaped for the format (\\, \", \n).
std::string EscapeLabelValue(std::string_view value);

}  // namespace moe::prometheus

#endif  // MOE_COMMON_PROMETHEUS_H_

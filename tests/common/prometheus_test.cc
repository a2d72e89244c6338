// The exposition-format writer: the text it renders, what it refuses, and
// (where Debian's promtool is installed) that promtool's linter accepts it.

#include "moe/common/prometheus.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <limits>

namespace moe::prometheus {
namespace {

std::string Rendered(const TextWriter& w) {
  Result<std::string> text = w.Finish();
  INFO(text.status().ToString());
  REQUIRE(text.ok());
  return *text;
}

std::string Problem(const TextWriter& w) {
  Result<std::string> text = w.Finish();
  REQUIRE_FALSE(text.ok());
  CHECK(text.status().code() == StatusCode::kInvalidArgument);
  return text.status().message();
}

TEST_CASE("Counters and gauges render with HELP, TYPE and labels", "[prometheus]") {
  TextWriter w;
  w.Family("moectl_steps_total", MetricType::kCounter, "Steps received.");
  w.Sample({{"engine", "e1"}}, 42);
  w.Sample({{"engine", "e2"}}, 0);
  w.Family("moectl_drop_ratio", MetricType::kGauge, "Dropped over requested token-slots.");
  w.Sample({{"engine", "e1"}, {"layer", "3"}}, 0.25);
  w.Family("moectl_engines", MetricType::kGauge, "Engines seen.");
  w.Sample({}, 2);
  CHECK(Rendered(w) ==
        "# HELP moectl_steps_total Steps received.\n"
        "# TYPE moectl_steps_total counter\n"
        "moectl_steps_total{engine=\"e1\"} 42\n"
        "moectl_steps_total{engine=\"e2\"} 0\n"
        "# HELP moectl_drop_ratio Dropped over requested token-slots.\n"
        "# TYPE moectl_drop_ratio gauge\n"
        "moectl_drop_ratio{engine=\"e1\",layer=\"3\"} 0.25\n"
        "# HELP moectl_engines Engines seen.\n"
        "# TYPE moectl_engines gauge\n"
        "moectl_engines 2\n");
}

TEST_CASE("Values: shortest round-trip text, and the format's spelling of non-finite",
          "[prometheus]") {
  CHECK(FormatValue(0) == "0");
  CHECK(FormatValue(3) == "3");
  CHECK(FormatValue(0.1) == "0.1");
  CHECK(FormatValue(-2.5) == "-2.5");
  CHECK(std::stod(FormatValue(1e-7)) == 1e-7);
  CHECK(std::stod(FormatValue(1.0 / 3.0)) == 1.0 / 3.0);
  CHECK(FormatValue(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(FormatValue(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(FormatValue(std::nan("")) == "NaN");
}

TEST_CASE("Label values and help texts are escaped", "[prometheus]") {
  CHECK(EscapeLabelValue(R"(a"b\c)") == R"(a\"b\\c)");
  CHECK(EscapeLabelValue("two\nlines") == "two\\nlines");
  TextWriter w;
  w.Family("x_total", MetricType::kCounter, "Back\\slash and\nnewline; \"quotes\" stay.");
  w.Sample({{"engine", "we\"ird\n"}}, 1);
  CHECK(Rendered(w) ==
        "# HELP x_total Back\\\\slash and\\nnewline; \"quotes\" stay.\n"
        "# TYPE x_total counter\n"
        "x_total{engine=\"we\\\"ird\\n\"} 1\n");
}

TEST_CASE("Histograms: cumulative buckets, +Inf, _sum and _count", "[prometheus]") {
  Histogram h({0.001, 0.01, 0.1});
  for (double v : {0.0005, 0.001, 0.005, 0.05, 0.05, 2.0})
    h.Observe(v);
  CHECK(h.count() == 6);
  CHECK(h.CumulativeCounts() == std::vector<uint64_t>{2, 3, 5});
  TextWriter w;
  w.Family("lat_seconds", MetricType::kHistogram, "Latency.");
  w.HistogramSample({{"engine", "e1"}}, h);
  const std::string text = Rendered(w);
  CHECK(text.find("lat_seconds_bucket{engine=\"e1\",le=\"0.001\"} 2\n") != std::string::npos);
  CHECK(text.find("lat_seconds_bucket{engine=\"e1\",le=\"0.01\"} 3\n") != std::string::npos);
  CHECK(text.find("lat_seconds_bucket{engine=\"e1\",le=\"0.1\"} 5\n") != std::string::npos);
  CHECK(text.find("lat_seconds_bucket{engine=\"e1\",le=\"+Inf\"} 6\n") != std::string::npos);
  CHECK(text.find("lat_seconds_sum{engine=\"e1\"} 2.1065\n") != std::string::npos);
  CHECK(text.find("lat_seconds_count{engine=\"e1\"} 6\n") != std::string::npos);

  std::vector<double> bounds = ExponentialBounds(0.0001, 2, 4);
  REQUIRE(bounds.size() == 4);
  CHECK(bounds[3] == Approx(0.0008));
}

TEST_CASE("Bad names, duplicate families and misplaced samples are refused", "[prometheus]") {
  SECTION("metric name") {
    TextWriter w;
    w.Family("9lives", MetricType::kGauge, "x");
    CHECK(Problem(w).find("9lives") != std::string::npos);
  }
  SECTION("counter without _total") {
    TextWriter w;
    w.Family("moectl_steps", MetricType::kCounter, "x");
    CHECK(Problem(w).find("_total") != std::string::npos);
  }
  SECTION("family twice") {
    TextWriter w;
    w.Family("a", MetricType::kGauge, "x");
    w.Family("a", MetricType::kGauge, "x");
    CHECK(Problem(w).find("twice") != std::string::npos);
  }
  SECTION("label names") {
    TextWriter w;
    w.Family("a", MetricType::kGauge, "x");
    w.Sample({{"bad-label", "v"}}, 1);
    CHECK(Problem(w).find("bad-label") != std::string::npos);
    TextWriter reserved;
    reserved.Family("a", MetricType::kGauge, "x");
    reserved.Sample({{"__name__", "v"}}, 1);
    CHECK(Problem(reserved).find("__name__") != std::string::npos);
    TextWriter twice;
    twice.Family("a", MetricType::kGauge, "x");
    twice.Sample({{"engine", "v"}, {"engine", "w"}}, 1);
    CHECK(Problem(twice).find("twice") != std::string::npos);
  }
  SECTION("histogram misuse") {
    TextWriter le;
    le.Family("h_seconds", MetricType::kHistogram, "x");
    le.HistogramSample({{"le", "1"}}, Histogram({1}));
    CHECK(Problem(le).find("reserved") != std::string::npos);
    TextWriter order;
    order.Family("h_seconds", MetricType::kHistogram, "x");
    order.HistogramSample({}, Histogram({1, 1}));
    CHECK(Problem(order).find("increasing") != std::string::npos);
    TextWriter plain;
    plain.Family("h_seconds", MetricType::kHistogram, "x");
    plain.Sample({}, 1);
    CHECK(Problem(plain).find("HistogramSample") != std::string::npos);
  }
  SECTION("sample before any family") {
    TextWriter w;
    w.Sample({}, 1);
    CHECK(Problem(w).find("before") != std::string::npos);
  }
  SECTION("the first problem is kept") {
    TextWriter w;
    w.Family("first bad", MetricType::kGauge, "x");
    w.Family("second_bad", MetricType::kCounter, "x");
    CHECK(Problem(w).find("first bad") != std::string::npos);
  }
}

#ifdef MOE_PROMTOOL
TEST_CASE("promtool check metrics accepts what the writer renders", "[prometheus]") {
  Histogram h(ExponentialBounds(0.0001, 2.5, 8));
  h.Observe(0.0002);
  h.Observe(0.3);
  TextWriter w;
  w.Family("moectl_steps_total", MetricType::kCounter, "Steps received.");
  w.Sample({{"engine", "e\"1"}}, 7);
  w.Family("moectl_step_critical_path_seconds", MetricType::kHistogram, "Critical path.");
  w.HistogramSample({{"engine", "e\"1"}}, h);
  w.Family("moectl_drop_ratio", MetricType::kGauge, "Drop ratio.");
  w.Sample({{"engine", "e\"1"}}, std::nan(""));
  const std::string text = Rendered(w);
  FILE* pipe = popen(MOE_PROMTOOL " check metrics 2>&1", "w");
  REQUIRE(pipe != nullptr);
  REQUIRE(std::fwrite(text.data(), 1, text.size(), pipe) == text.size());
  int status = pclose(pipe);
  INFO(text);
  CHECK(status == 0);

  // And promtool does fail on what the writer would refuse to render.
  FILE* bad = popen(MOE_PROMTOOL " check metrics >/dev/null 2>&1", "w");
  REQUIRE(bad != nullptr);
  const std::string wrong = "# TYPE moectl_steps counter\nmoectl_steps 1\n";
  REQUIRE(std::fwrite(wrong.data(), 1, wrong.size(), bad) == wrong.size());
  CHECK(pclose(bad) != 0);
}
#endif

}  // namespace
}  // namespace moe::prometheus

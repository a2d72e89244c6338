#include "plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe::cli {

std::string RenderChart(const Series& s, int width, int height) {
  if (s.x.empty() || s.x.size() != s.y.size()) return s.title + ": no data in the window\n";
  double x_min = s.x.front(), x_max = s.x.back();
  double span = std::max(x_max - x_min, 1e-9);
  std::vector<double> sums(width, 0);
  std::vector<int> counts(width, 0);
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (!std::isfinite(s.y[i])) continue;
    int col = std::min(width - 1, static_cast<int>((s.x[i] - x_min) / span * width));
    sums[col] += s.y[i];
    ++counts[col];
  }
  std::vector<double> col_values(width, NAN);
  double y_max = 0, y_min = 0;
  bool any = false;
  for (int c = 0; c < width; ++c) {
    if (counts[c] == 0) continue;
    col_values[c] = sums[c] / counts[c];
    y_max = any ? std::max(y_max, col_values[c]) : col_values[c];
    y_min = any ? std::min(y_min, col_values[c]) : std::min(0.0, col_values[c]);
    any = true;
  }
  if (!any) return s.title + ": no finite values in the window\n";
  if (y_max <= y_min) y_max = y_min + 1;

  std::string out = s.title + "\n";
  for (int row = height; row >= 1; --row) {
    double level = y_min + (y_max - y_min) * (row - 0.5) / height;
    std::string label = std::string(10, ' ');
    if (row == height) label = fmt::format("{:>10.4g}", y_max);
    if (row == (height + 1) / 2) label = fmt::format("{:>10.4g}", (y_max + y_min) / 2);
    if (row == 1) label = fmt::format("{:>10.4g}", y_min);
    std::string line;
    for (int c = 0; c < width; ++c) {
      if (std::isnan(col_values[c])) {
        line += ' ';
      } else {
        line += col_values[c] >= level ? '#' : ' ';
      }
    }
    out += label + " |" + line + "\n";
  }
  out += std::string(11, ' ') + "+" + std::string(width, '-') + "\n";
  if (!s.markers.empty()) {
    std::string marks(width, ' ');
    for (double m : s.markers) {
      if (m < x_min || m > x_max) continue;
      marks[std::min(width - 1, static_cast<int>((m - x_min) / span * width))] = '^';
    }
    out += std::string(12, ' ') + marks + "  " + s.marker_legend + "\n";
  }
  std::string left = fmt::format("{:.0f}", x_min), right = fmt::format("{:.0f}", x_max);
  int gap = std::max(1, width - static_cast<int>(left.size() + right.size()));
  out += std::string(12, ' ') + left + std::string(gap, ' ') + right + "\n";
  return out;
}

}  // namespace moe::cli

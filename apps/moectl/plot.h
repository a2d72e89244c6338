// Terminal charts: a series drawn as columns of characters, for trends that a
// table of numbers hides (drop rate falling after a decision, a latency step).

#ifndef MOE_APPS_MOECTL_PLOT_H_
#define MOE_APPS_MOECTL_PLOT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace moe::cli {

struct Series {
  std::string title;            // e.g. "drop_rate (mean over layers)"
  std::vector<double> x;        // e.g. step numbers, increasing
  std::vector<double> y;        // same length as x
  std::vector<double> markers;  // x positions to mark below the axis (e.g. new epochs)
  std::string marker_legend;    // what a marker means
};

// Renders `series` into `width` x `height` character cells plus axes: each
// column shows the mean of the points that fall in it ('#' filled up to the
// value). Empty series render a one-line notice.
std::string RenderChart(const Series& series, int width = 72, int height = 12);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_PLOT_H_

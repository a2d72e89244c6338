// Figures drawn by matplotlib: moectl writes what to draw as one JSON
// document and runs scripts/plot_series.py on it with Debian's Python
// (python3-matplotlib). `moectl plot` and `moectl bench closed-loop --plot`
// both draw this way.
//
// The document (plot_series.py's docstring is the reference):
//   {"title": "...", "xlabel": "engine step",
//    "panels": [{"ylabel": "drop_rate",
//                "lines": [{"label": "moectl", "x": [...], "y": [...]}]}],
//    "markers": [{"x": 120, "label": "epoch 2: capacity_factor=1.5",
//                 "id": "epoch-2"}]}
// Panels are stacked and share the x axis; each marker is a vertical line
// across every panel (its id becomes the SVG element's id), labelled where
// labels fit. A null y is a gap.

#ifndef MOE_APPS_MOECTL_MATPLOTLIB_FIGURE_H_
#define MOE_APPS_MOECTL_MATPLOTLIB_FIGURE_H_

#include <nlohmann/json.hpp>
#include <string>

#include "moe/common/status.h"

namespace moe::cli {

// Draws `figure` into `out_path`, whose extension (.png or .svg) picks the
// format. The script is found beside the build tree moectl runs from
// (build/apps/moectl/moectl -> scripts/), under the working directory's
// scripts/, or installed (<prefix>/share/moectl/); Python is $MOECTL_PYTHON,
// else the one the build was configured with (MOE_PYTHON, /usr/bin/python3).
// Errors: kInvalidArgument for another extension; kFailedPrecondition when
// that Python has no matplotlib (naming the Debian package) or the script
// is not found; kInternal when the script fails.
Status DrawFigure(const nlohmann::json& figure, const std::string& out_path);

// True for a path ending in .png or .svg (either case).
bool IsFigurePath(const std::string& path);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_MATPLOTLIB_FIGURE_H_

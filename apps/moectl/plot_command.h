// `moectl plot`: one engine's per-step figures from the database, drawn as a
// PNG or SVG file (matplotlib_figure.h), one panel per field, with a
// vertical line at every epoch change labelled with the setting it brought.
// (`moectl history --plot FIELD` draws one figure in the terminal instead.)

#ifndef MOE_APPS_MOECTL_PLOT_COMMAND_H_
#define MOE_APPS_MOECTL_PLOT_COMMAND_H_

#include <CLI/CLI.hpp>

namespace moe::cli {

void AddPlotCommand(CLI::App& app);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_PLOT_COMMAND_H_

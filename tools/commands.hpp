// The subcommands implemented in tools/ (the rest live with their subsystem, e.g. cache/).
#pragma once

#include <CLI/CLI.hpp>

namespace kjit::tools {

void add_info_command(CLI::App& app, int* exit_code);
void add_precompile_command(CLI::App& app, int* exit_code);

}  // namespace kjit::tools

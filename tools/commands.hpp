// The `kjit` subcommands, one file each in tools/.
#pragma once

#include <CLI/CLI.hpp>

namespace kjit::tools {

void add_info_command(CLI::App& app, int* exit_code);
void add_precompile_command(CLI::App& app, int* exit_code);
void add_tune_command(CLI::App& app, int* exit_code);
void add_cache_command(CLI::App& app, int* exit_code);
void add_moe_command(CLI::App& app, int* exit_code);

}  // namespace kjit::tools

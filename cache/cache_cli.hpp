// `kjit cache ...`: inspect and clear the kernel store (the tuning database joins later).
#pragma once

#include <CLI/CLI.hpp>

namespace kjit::cache {

// Adds the `cache` subcommand tree to `app`; the chosen command's exit code goes to *exit_code.
void add_cache_commands(CLI::App& app, int* exit_code);

}  // namespace kjit::cache

// kjit: the command-line entry point. Exit codes: 0 ok, 1 user error (one-line reason on stderr),
// 2 internal error.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "kjit/error.hpp"
#include "tools/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"kjit: JIT-compiled CUDA kernel runtime"};
  app.require_subcommand(1);
  int exit_code = 0;
  kjit::tools::add_info_command(app, &exit_code);
  kjit::tools::add_precompile_command(app, &exit_code);
  kjit::tools::add_cache_command(app, &exit_code);
  kjit::tools::add_tune_command(app, &exit_code);
  kjit::tools::add_moe_command(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  } catch (const kjit::Error& e) {
    std::fprintf(stderr, "kjit: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kjit: internal error: %s\n", e.what());
    return 2;
  }
  return exit_code;
}

"""python -m kjit info|tune|cache|precompile ...: the kjit command line (the same arguments).

The `kjit` executable is found through KJIT_CLI, beside libkjit.so (an install's bin/, a build
tree's tools/), or on PATH."""

import os
import shutil
import sys

from ._library import library_path


def _cli() -> str:
    explicit = os.environ.get("KJIT_CLI")
    if explicit:
        return explicit
    try:
        lib_dir = library_path().resolve().parent
    except ImportError:
        lib_dir = None
    if lib_dir is not None:
        for candidate in (lib_dir.parent / "bin" / "kjit", lib_dir.parent / "tools" / "kjit"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    on_path = shutil.which("kjit")
    if on_path:
        return on_path
    sys.exit("kjit: the kjit command line was not found; set KJIT_CLI to its path")


def main() -> None:
    cli = _cli()
    os.execv(cli, [cli, *sys.argv[1:]])


if __name__ == "__main__":
    main()

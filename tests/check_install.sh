#!/usr/bin/env bash
# Installs kjit into a scratch prefix and builds two consumers the way users do: examples/c_api.c
# with `pkg-config --cflags --libs kjit`, and a CMake project with find_package(kjit) linking
# kjit::kjit_shared. Both run (without a GPU they say so and exit 0). Also checks that
# libkjit.so exports only the C ABI and the kjit:: API.
#   check_install.sh <build dir> <source dir> [sanitized]
set -euo pipefail
build="$1" src="$2"
if [ "${3:-}" = sanitized ]; then
  echo "install check skipped: a sanitizer build's libkjit.so needs the sanitizer runtime linked" \
       "into every consumer; the default preset runs this check"
  exit 77
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
lib="$scratch/prefix/lib"
[ -d "$lib" ] || lib="$(dirname "$(find "$scratch/prefix" -name libkjit.so | head -1)")"
export PKG_CONFIG_PATH="$lib/pkgconfig" LD_LIBRARY_PATH="$lib:${CUDA_HOME:-/usr/local/cuda}/lib64:${LD_LIBRARY_PATH:-}"
readelf -d "$lib/libkjit.so" | grep -q 'SONAME.*libkjit.so.0' || { echo "no soname libkjit.so.0"; exit 1; }
leaked="$(nm -D --defined-only "$lib/libkjit.so" | c++filt | awk '{$1="";$2="";print}' |
          grep -vE '^ *(kjit::|kjit_|typeinfo (name )?for kjit::|vtable for kjit::)' || true)"
[ -z "$leaked" ] || { echo "libkjit.so exports more than the kjit API:"; echo "$leaked" | head; exit 1; }
nm -D --defined-only "$lib/libkjit.so" | c++filt | grep -qE 'kjit::(ops|tuning|store|detail)::' &&
  { echo "libkjit.so exports internal namespaces"; exit 1; }

cc -std=c11 -Wall -Wextra -Werror "$src/examples/c_api.c" $(pkg-config --cflags --libs kjit) -lm \
  -o "$scratch/c_api"
"$scratch/c_api"

mkdir -p "$scratch/consumer"
cat > "$scratch/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(consumer LANGUAGES C CXX)
find_package(kjit REQUIRED)
add_executable(c_api c_api.c)
target_link_libraries(c_api PRIVATE kjit::kjit_shared m)
CMAKE
cp "$src/examples/c_api.c" "$scratch/consumer/"
cmake -S "$scratch/consumer" -B "$scratch/consumer/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/consumer/build" >/dev/null
"$scratch/consumer/build/c_api"
echo "install check: ok"

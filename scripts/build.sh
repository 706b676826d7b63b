#!/usr/bin/env bash
# Configures and builds xy into ./build (Release with debug info, Ninja, ccache when present).
# Two jobs at most: a LibTorch translation unit needs ~1.5 GB of memory to compile.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${XY_JOBS:-2}
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${XY_CMAKE_ARGS:-} >/dev/null
fi
cmake --build build -j "$JOBS"

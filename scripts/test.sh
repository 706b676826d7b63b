#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, and runs every test with CTest.
# GPU tests (label gpu) are skipped on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
start=$(date +%s)
bash scripts/build.sh
echo "xy: build took $(( $(date +%s) - start )) s"
exclude=()
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || exclude=(-LE gpu)
# --timeout: the harness's own hard limit, so that a hang fails its test instead of the run.
ctest --test-dir build --output-on-failure -j 2 --timeout 600 "${exclude[@]}"
echo "xy: build and tests took $(( $(date +%s) - start )) s"

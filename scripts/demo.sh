#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds, and trains the tiny
# LLaMA on the bundled sample corpus on CPU (config/tiny.toml). Extra arguments go to xy-node train.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec ./build/bin/xy-node train --config config/tiny.toml "$@"

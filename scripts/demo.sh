#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds, and trains the tiny
# LLaMA on the bundled sample corpus on CPU (config/tiny.toml). Extra arguments go to xy-node train.
# Run again, the demo starts over in runs/tiny (--overwrite-checkpoints), unless given --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
fresh=(--overwrite-checkpoints)
for a in "$@"; do case "$a" in --resume*) fresh=() ;; esac; done
exec ./build/bin/xy-node train --config config/tiny.toml "${fresh[@]}" "$@"

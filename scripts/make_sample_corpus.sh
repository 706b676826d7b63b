#!/usr/bin/env bash
# Regenerates data/sample/fincorpus_sample.jsonl.gz: FinCorpus-shaped gzipped JSONL made from the
# Chinese fortunes of Debian's fortunes-zh package (GPL-3+), one fortune per document.
#
# Each line is {"text": "...", "meta": {"source": "fortunes-zh"}}; ANSI colour codes are stripped,
# surrounding blank lines trimmed, empty fortunes dropped. Files are read in name order (chinese,
# song100, tang300) and gzip -n omits the name and time stamp, so the output is byte-identical on
# every run from the same package version. Prints the document and byte counts for the README.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/data/sample/fincorpus_sample.jsonl.gz"

need=()
dpkg-query -W -f='${Status}' fortunes-zh 2>/dev/null | grep -q "install ok installed" || need+=(fortunes-zh)
command -v python3 >/dev/null || need+=(python3)
command -v gzip >/dev/null || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The fortune files (not the .dat indexes, not the .u8 links), e.g. /usr/share/games/fortunes/chinese.
mapfile -t FILES < <(dpkg -L fortunes-zh | grep '^/usr/share/games/fortunes/' |
                     while read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && case "$f" in *.dat) ;; *) echo "$f";; esac; done |
                     LC_ALL=C sort)
if [ ${#FILES[@]} -eq 0 ]; then echo "make_sample_corpus: no fortune files in fortunes-zh" >&2; exit 1; fi
echo "make_sample_corpus: fortunes-zh $(dpkg-query -W -f='${Version}' fortunes-zh): ${FILES[*]}" >&2

mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp)"; trap 'rm -f "$TMP"' EXIT
python3 - "${FILES[@]}" >"$TMP" <<'PY'
import json, re, sys
ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
docs = 0
nbytes = 0
out = sys.stdout
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    # A fortune file is a list of entries separated by lines holding a single '%'.
    for entry in re.split(r"^%[ \t]*$", raw, flags=re.M):
        # Strip until nothing changes: a few entries nest one code inside another ("\x1b[;\x1b[34;1mm").
        text = entry
        while True:
            stripped = ansi.sub("", text)
            if stripped == text:
                break
            text = stripped
        text = text.replace("\x1b", "")
        text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
        if not text.strip():
            continue
        out.write(json.dumps({"text": text, "meta": {"source": "fortunes-zh"}}, ensure_ascii=False))
        out.write("\n")
        docs += 1
        nbytes += len(text.encode("utf-8"))
print(f"documents={docs} text_bytes={nbytes}", file=sys.stderr)
PY
echo "make_sample_corpus: jsonl_bytes=$(wc -c <"$TMP")" >&2
gzip -n -9 -c "$TMP" >"$OUT"
echo "make_sample_corpus: wrote $OUT ($(wc -c <"$OUT") bytes)" >&2

#!/usr/bin/env bash
# Benchmark of `xy-node preprocess` on a FinCorpus-shaped corpus (>= 500 MB of gzipped JSONL made
# from the npm package chinese-poetry, MIT), against its floor: Debian's `spm_encode` (the same
# SentencePiece library, single-threaded) on the same text.
#
# Prints, for 1, 2 and all threads: wall time, MB/s of document text, tokens/s, MB/s per thread
# relative to spm_encode (target >= 0.85), and peak RSS; and the peak RSS on a quarter of the
# corpus (it must not grow with the corpus). Everything it downloads or makes lives under
# $BUILD/bench_data (git-ignored); rerunning reuses it.
#   MB/s = bytes of the documents' text (what spm_encode reads) / wall seconds, MB = 10^6 bytes.
# Usage: bash bench/preprocess_bench.sh [BUILD_DIR]   (after scripts/build.sh or building xy-node)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
DATA=$BUILD/bench_data
[ -x "$BUILD/bin/xy-node" ] || { echo "build xy-node first: cmake --build $BUILD --target xy-node"; exit 1; }
command -v spm_encode >/dev/null || { echo "spm_encode missing (Debian package sentencepiece)"; exit 1; }
mkdir -p "$DATA/bin"
# A private copy, so that a rebuild during the benchmark does not pull the binary away.
cp "$BUILD/bin/xy-node" "$BUILD/bin/libxy_spm.so" "$DATA/bin/"
XY=$DATA/bin/xy-node

if [ ! -d "$DATA/npm/node_modules/chinese-poetry/dist" ]; then
  echo "== npm install chinese-poetry (~350 MB) into $DATA/npm"
  mkdir -p "$DATA/npm"
  (cd "$DATA/npm" && npm install --no-audit --no-fund --ignore-scripts chinese-poetry@2.0.1 >/dev/null)
fi
if [ ! -f "$DATA/corpus.txt" ]; then
  echo "== making the corpus (520 MB of JSONL in 8 gzip files)"
  python3 bench/make_fincorpus_like.py "$DATA/npm/node_modules/chinese-poetry/dist" "$DATA/corpus" \
    --mb 520 --files 8 --text-out "$DATA/corpus.txt"
fi
if [ ! -f "$DATA/tok.model" ]; then
  echo "== training a 16000-piece BPE tokenizer on 8 MB of it (spm_train)"
  head -c 8000000 "$DATA/corpus.txt" > "$DATA/train.txt"
  spm_train --input="$DATA/train.txt" --model_prefix="$DATA/tok" --vocab_size=16000 --model_type=bpe \
    --byte_fallback=true --character_coverage=0.9995 --split_digits=true \
    --normalization_rule_name=identity --remove_extra_whitespaces=false \
    --allow_whitespace_only_pieces=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
    --num_threads="$(nproc)" --input_sentence_size=300000 --shuffle_input_sentence=true \
    --minloglevel=2 >/dev/null 2>&1
fi

TEXT_BYTES=$(stat -c %s "$DATA/corpus.txt")
JSONL_GZ=$(du -cb "$DATA"/corpus/*.jsonl.gz | tail -1 | cut -f1)
NPROC=$(nproc)
echo "== corpus: $(ls "$DATA"/corpus/*.jsonl.gz | wc -l) files, $((JSONL_GZ / 1000000)) MB gzipped," \
     "$((TEXT_BYTES / 1000000)) MB of document text; $NPROC cores; $(date -u +%F)"

# timed CMD...: sets WALL (s), CPU (user + system s) and RSS (MiB) from /usr/bin/time. CPU time
# is what a shared machine does not distort: MB per CPU-second is the per-thread speed.
timed() {
  /usr/bin/time -f "%e %U %S %M" -o "$DATA/time.txt" "$@"
  WALL=$(cut -d' ' -f1 "$DATA/time.txt")
  CPU=$(awk '{print $2 + $3}' "$DATA/time.txt")
  RSS=$(awk '{printf "%.0f", $4 / 1024}' "$DATA/time.txt")
}

echo "== spm_encode (1 thread) on the same text"
timed spm_encode --model="$DATA/tok.model" --output_format=id --input="$DATA/corpus.txt" --output=/dev/null
SPM_WALL=$WALL
SPM_CPU=$CPU
SPM_MBS=$(python3 -c "print(f'{$TEXT_BYTES / 1e6 / $SPM_WALL:.2f}')")
SPM_MBC=$(python3 -c "print(f'{$TEXT_BYTES / 1e6 / $SPM_CPU:.2f}')")
echo "spm_encode: ${SPM_WALL} s wall, ${SPM_CPU} s CPU, ${SPM_MBS} MB/s, peak RSS ${RSS} MiB"

ROWS=()
run() {  # run THREADS INPUT... : one preprocess from scratch
  local threads=$1; shift
  rm -rf "$DATA/out"
  timed "$XY" preprocess --tokenizer "$DATA/tok.model" --output "$DATA/out" --threads "$threads" \
    --progress lines --progress-every 20 "$@"
  TOKENS=$(python3 -c "import json; print(json.load(open('$DATA/out/manifest.json'))['counts']['tokens'])")
}
THREADS=(1 2)
[ "$NPROC" -gt 2 ] && THREADS+=("$NPROC")
for t in "${THREADS[@]}"; do
  echo "== xy-node preprocess --threads $t"
  run "$t" "$DATA/corpus"
  ROWS+=("$(python3 -c "
w=$WALL; c=$CPU; mbs=$TEXT_BYTES/1e6/w; mbc=$TEXT_BYTES/1e6/c
print(f'| $t | {w:.1f} | {c:.1f} | {mbs:.2f} | {$TOKENS/w/1e6:.3f} | {mbs/$t/$SPM_MBS:.2f} | {mbc:.2f} | {mbc/$SPM_MBC:.2f} | $RSS |')")")
  [ "$t" = "$NPROC" ] && RSS_ALL=$RSS
done
WHOLE_TOKENS=$TOKENS
echo "== peak RSS on a quarter of the corpus (2 of 8 files), --threads $NPROC"
run "$NPROC" "$DATA"/corpus/fincorpus_like_00.jsonl.gz "$DATA"/corpus/fincorpus_like_01.jsonl.gz
QUARTER_RSS=$RSS
rm -rf "$DATA/out"

echo
echo "| threads | wall s | CPU s | MB/s of text | Mtokens/s | MB/s per thread / spm_encode | MB per CPU-s | per CPU-s / spm_encode | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| spm_encode | ${SPM_WALL} | ${SPM_CPU} | ${SPM_MBS} | - | 1.00 | ${SPM_MBC} | 1.00 | - |"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
echo "tokens: $WHOLE_TOKENS (whole corpus); peak RSS with $NPROC threads: whole corpus ${RSS_ALL} MiB, quarter ${QUARTER_RSS} MiB; load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"

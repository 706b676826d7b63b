#!/usr/bin/env bash
# Benchmark of `xy-node preprocess` on a FinCorpus-shaped corpus (>= 500 MB of gzipped JSONL made
# from the npm package chinese-poetry, MIT), against its floor: Debian's `spm_encode` (the same
# SentencePiece library, single-threaded) on the same text.
#
# Prints, for 1, 2 and all threads: wall time, MB/s of document text, tokens/s, MB/s per thread
# relative to spm_encode (target >= 0.85), and peak RSS; and the peak RSS on a quarter of the
# corpus and on the corpus twice (it must not grow with the corpus). Everything it downloads or makes lives under
# $BUILD/bench_data (git-ignored); rerunning reuses it.
#   MB/s = bytes of the documents' text (what spm_encode reads) / wall seconds, MB = 10^6 bytes.
# Usage: bash bench/preprocess_bench.sh [BUILD_DIR]   (after scripts/build.sh or building xy-node)
# Environment (all optional):
#   POEMS=FILE       the poems from a dump (make_fincorpus_like.py --dump-poems; ~30 MB) instead of
#                    npm's chinese-poetry: no network needed. Same poems, so the same corpus bytes
#   TOK=FILE         a trained tokenizer (.model) instead of training one with spm_train
#   SPM_ENCODE=PATH  the spm_encode to compare with (default: spm_encode on the PATH)
#   CORPUS_MB=520 CORPUS_FILES=8   the corpus's size (MB of JSONL) and gzip files; other sizes get
#                    their own directory (corpus-<MB>mb-<FILES>f), for trying the flow quickly
# On a machine without network access (the GPU machine: scripts/gpu_run.sh prep):
#   POEMS=.device/bench/poems.txt.xz TOK=.device/bench/tok.model \
#   SPM_ENCODE=/opt/deps/usr/bin/spm_encode bash bench/preprocess_bench.sh build-cuda
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
DATA=$BUILD/bench_data
SPM_ENCODE=${SPM_ENCODE:-spm_encode}
CORPUS_MB=${CORPUS_MB:-520}
CORPUS_FILES=${CORPUS_FILES:-8}
if [ "$CORPUS_MB" = 520 ] && [ "$CORPUS_FILES" = 8 ]; then
  CORPUS=$DATA/corpus
else
  CORPUS=$DATA/corpus-${CORPUS_MB}mb-${CORPUS_FILES}f
fi
[ -x "$BUILD/bin/xy-node" ] || { echo "build xy-node first: cmake --build $BUILD --target xy-node"; exit 1; }
command -v "$SPM_ENCODE" >/dev/null ||
  { echo "spm_encode missing: $SPM_ENCODE (Debian package sentencepiece, or set SPM_ENCODE)"; exit 1; }
[ -z "${POEMS:-}" ] || [ -f "$POEMS" ] || { echo "POEMS=$POEMS: no such file"; exit 1; }
[ -z "${TOK:-}" ] || [ -f "$TOK" ] || { echo "TOK=$TOK: no such file"; exit 1; }
mkdir -p "$DATA/bin"
# A private copy, so that a rebuild during the benchmark does not pull the binary away.
cp "$BUILD/bin/xy-node" "$BUILD/bin/libxy_spm.so" "$DATA/bin/"
XY=$DATA/bin/xy-node

if [ ! -f "$CORPUS.txt" ]; then
  if [ -n "${POEMS:-}" ]; then
    SOURCE=$POEMS
  else
    SOURCE=$DATA/npm/node_modules/chinese-poetry/dist
    if [ ! -d "$SOURCE" ]; then
      echo "== npm install chinese-poetry (~350 MB) into $DATA/npm"
      mkdir -p "$DATA/npm"
      (cd "$DATA/npm" && npm install --no-audit --no-fund --ignore-scripts chinese-poetry@2.0.1 >/dev/null)
    fi
  fi
  echo "== making the corpus ($CORPUS_MB MB of JSONL in $CORPUS_FILES gzip files) from $SOURCE"
  rm -rf "$CORPUS"
  python3 bench/make_fincorpus_like.py "$SOURCE" "$CORPUS" --mb "$CORPUS_MB" --files "$CORPUS_FILES" \
    --text-out "$CORPUS.txt.tmp"
  mv "$CORPUS.txt.tmp" "$CORPUS.txt"  # last: its presence means the corpus is complete
fi
if [ -n "${TOK:-}" ]; then
  TOKM=$TOK
  echo "== tokenizer: $TOK"
else
  TOKM=$DATA/tok.model
fi
if [ ! -f "$TOKM" ]; then
  echo "== training a 16000-piece BPE tokenizer on 8 MB of it (spm_train)"
  head -c 8000000 "$CORPUS.txt" > "$DATA/train.txt"
  spm_train --input="$DATA/train.txt" --model_prefix="$DATA/tok" --vocab_size=16000 --model_type=bpe \
    --byte_fallback=true --character_coverage=0.9995 --split_digits=true \
    --normalization_rule_name=identity --remove_extra_whitespaces=false \
    --allow_whitespace_only_pieces=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
    --num_threads="$(nproc)" --input_sentence_size=300000 --shuffle_input_sentence=true \
    --minloglevel=2 >/dev/null 2>&1
fi

TEXT_BYTES=$(stat -c %s "$CORPUS.txt")
JSONL_GZ=$(du -cb "$CORPUS"/*.jsonl.gz | tail -1 | cut -f1)
NPROC=$(nproc)
echo "== corpus: $(ls "$CORPUS"/*.jsonl.gz | wc -l) files, $((JSONL_GZ / 1000000)) MB gzipped," \
     "$((TEXT_BYTES / 1000000)) MB of document text; $NPROC cores; $(date -u +%F)"

# timed CMD...: sets WALL (s), CPU (user + system s) and RSS (MiB) from /usr/bin/time, or where
# that is missing from the same figures taken by Python (wall clock and the child's rusage). CPU
# time is what a shared machine does not distort: MB per CPU-second is the per-thread speed.
timed() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%e %U %S %M" -o "$DATA/time.txt" "$@"
  else
    python3 -c '
import os, sys, time
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
open(sys.argv[1], "w").write(f"{wall:.2f} {ru.ru_utime:.2f} {ru.ru_stime:.2f} {ru.ru_maxrss}\n")
sys.exit(os.waitstatus_to_exitcode(status))' "$DATA/time.txt" "$@"
  fi
  read -r WALL USR SYS MAXRSS < "$DATA/time.txt"
  CPU=$(python3 -c "print(round($USR + $SYS, 2))")
  RSS=$(python3 -c "print(round($MAXRSS / 1024))")
}

echo "== spm_encode (1 thread) on the same text"
timed "$SPM_ENCODE" --model="$TOKM" --output_format=id --input="$CORPUS.txt" --output=/dev/null
SPM_WALL=$WALL
SPM_CPU=$CPU
SPM_MBS=$(python3 -c "print(f'{$TEXT_BYTES / 1e6 / $SPM_WALL:.2f}')")
SPM_MBC=$(python3 -c "print(f'{$TEXT_BYTES / 1e6 / $SPM_CPU:.2f}')")
echo "spm_encode: ${SPM_WALL} s wall, ${SPM_CPU} s CPU, ${SPM_MBS} MB/s, peak RSS ${RSS} MiB"

ROWS=()
run() {  # run THREADS INPUT... : one preprocess from scratch
  local threads=$1; shift
  rm -rf "$DATA/out"
  timed "$XY" preprocess --tokenizer "$TOKM" --output "$DATA/out" --threads "$threads" \
    --progress lines --progress-every 20 "$@"
  TOKENS=$(python3 -c "import json; print(json.load(open('$DATA/out/manifest.json'))['counts']['tokens'])")
}
THREADS=(1 2)
[ "$NPROC" -gt 2 ] && THREADS+=("$NPROC")
for t in "${THREADS[@]}"; do
  echo "== xy-node preprocess --threads $t"
  run "$t" "$CORPUS"
  ROWS+=("$(python3 -c "
w=$WALL; c=$CPU; mbs=$TEXT_BYTES/1e6/w; mbc=$TEXT_BYTES/1e6/c
print(f'| $t | {w:.1f} | {c:.1f} | {mbs:.2f} | {$TOKENS/w/1e6:.3f} | {mbs/$t/$SPM_MBS:.2f} | {mbc:.2f} | {mbc/$SPM_MBC:.2f} | $RSS |')")")
  [ "$t" = "$NPROC" ] && RSS_ALL=$RSS
done
WHOLE_TOKENS=$TOKENS
QUARTER=("$CORPUS"/fincorpus_like_0[01].jsonl.gz)
echo "== peak RSS on a part of the corpus (${#QUARTER[@]} of $CORPUS_FILES files), --threads $NPROC"
run "$NPROC" "${QUARTER[@]}"
QUARTER_RSS=$RSS
# The whole corpus twice (16 inputs: symbolic links to the 8 files): peak RSS must not grow with it.
rm -rf "$DATA/twice" && mkdir -p "$DATA/twice"
for k in 0 1; do for f in "$CORPUS"/*.jsonl.gz; do ln -s "$(realpath "$f")" "$DATA/twice/${k}_$(basename "$f")"; done; done
echo "== peak RSS on the corpus twice ($((2 * CORPUS_FILES)) inputs), --threads $NPROC"
run "$NPROC" "$DATA/twice"
TWICE_RSS=$RSS
rm -rf "$DATA/out" "$DATA/twice"

echo
echo "| threads | wall s | CPU s | MB/s of text | Mtokens/s | MB/s per thread / spm_encode | MB per CPU-s | per CPU-s / spm_encode | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| spm_encode | ${SPM_WALL} | ${SPM_CPU} | ${SPM_MBS} | - | 1.00 | ${SPM_MBC} | 1.00 | - |"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
echo "tokens: $WHOLE_TOKENS (whole corpus); peak RSS with $NPROC threads: ${#QUARTER[@]} of $CORPUS_FILES files ${QUARTER_RSS} MiB, whole corpus ${RSS_ALL} MiB, the corpus twice ${TWICE_RSS} MiB; load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"

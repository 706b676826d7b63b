#!/usr/bin/env bash
# The watchdog's overhead on training: train_bench on one config, alternately with the watchdog on
# and off ([deadlines] watchdog = true / false in two temporary copies of the config), each run a
# fresh process, the pairs interleaved in the order on-off, off-on, on-off, ... so that a drift of
# the machine's speed cancels. Operations are registered in both (the registry feeds
# `xy-node status`); what differs is the watchdog's polling of the registry and its watcher thread.
#
# Per run: the mean step time over the steps after the warm-up (each step's time from its tokens/s,
# which the step line prints with more digits than its milliseconds). Per pair: on / off. Prints
# every run, the ratio of each pair, their mean, spread (min..max) and standard deviation, and
#     watchdog overhead: X% (target <= 1%)
# with X = (mean of the pairs' ratios - 1) x 100.
#
# usage: bash bench/watchdog_overhead.sh [CONFIG] [BUILD_DIR] [--pairs N] [--steps N] [--warmup N]
#   CONFIG     default <root>/config/tiny.toml (CPU ranks); on the GPU machine e.g. bench/configs/tiny-gpu.toml
#   BUILD_DIR  default <root>/build (needs BUILD_DIR/bin/train_bench: cmake --build BUILD_DIR --target train_bench)
#   --pairs 3 --steps 20 --warmup 3 (steps per run, and the first steps left out of the mean)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=$ROOT/config/tiny.toml
BUILD=$ROOT/build
PAIRS=3
STEPS=20
WARMUP=3
pos=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "watchdog_overhead.sh: unknown option $1" >&2; exit 2 ;;
    *) if [ $pos -eq 0 ]; then CONFIG=$1; else BUILD=$1; fi; pos=$((pos + 1)); shift ;;
  esac
done
# CONFIG and BUILD_DIR as given are relative to the current directory; the runs go in the root.
CONFIG=$(realpath -m "$CONFIG"); BUILD=$(realpath -m "$BUILD")
cd "$ROOT"
[ -f "$CONFIG" ] || { echo "watchdog_overhead.sh: no config $CONFIG" >&2; exit 2; }
[ -x "$BUILD/bin/train_bench" ] || {
  echo "watchdog_overhead.sh: build train_bench first: cmake --build $BUILD --target train_bench" >&2; exit 2; }
[ "$STEPS" -gt "$WARMUP" ] || { echo "watchdog_overhead.sh: --steps must exceed --warmup" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/xy-watchdog-overhead.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# A private copy, so that a rebuild during the benchmark does not pull the binary away.
cp "$BUILD/bin/train_bench" "$TMP/train_bench"

# The two configs: the same file with `watchdog = true|false` under [deadlines] (replacing a
# watchdog key there, or adding the table when the config has none).
for flag in true false; do
  python3 - "$CONFIG" "$flag" > "$TMP/watchdog-$flag.toml" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
flag = sys.argv[2]
out, table, done = [], None, False
for line in lines:
    m = re.match(r"\s*\[\s*([A-Za-z0-9_.]+)\s*\]\s*(#.*)?$", line)
    if m:
        table = m.group(1)
        out.append(line)
        if table == "deadlines":
            out.append(f"watchdog = {flag}")
            done = True
        continue
    if table == "deadlines" and re.match(r"\s*watchdog\s*=", line):
        continue  # the one added above replaces it
    out.append(line)
if not done:
    out += ["", "[deadlines]", f"watchdog = {flag}"]
print("\n".join(out))
PY
done

echo "watchdog overhead: $CONFIG, $PAIRS pairs of runs (on/off interleaved), $STEPS steps each, mean of steps $((WARMUP + 1))..$STEPS"
echo "machine: $(nproc) cores, $(uname -n), $(date -u +%Y-%m-%dT%H:%MZ)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | sed 's/^/GPU: /' || true

# One run: prints the mean step time (s) over the steps after the warm-up.
run() {
  local flag=$1 log=$TMP/run-$2-$1.log
  if ! "$TMP/train_bench" --config "$TMP/watchdog-$flag.toml" --steps "$STEPS" --warmup "$WARMUP" > "$log" 2>&1; then
    echo "watchdog_overhead.sh: train_bench failed (watchdog = $flag); its output:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  python3 - "$log" "$WARMUP" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
warm = int(sys.argv[2])
m = re.search(r"RESULT .*world=(\d+) seq=(\d+) micro_batch=(\d+) grad_accum=(\d+)", text)
tokens = 1
for g in m.groups():
    tokens *= int(g)
steps = [(int(s), tokens / float(t)) for s, t in
         re.findall(r"^step\s+(\d+) \|.*\|\s+([0-9.]+) tok/s \|", text, re.M)]
after = [t for s, t in steps if s > warm]
if not after:
    sys.exit("no step lines after the warm-up in " + sys.argv[1])
print("%.6f %d" % (sum(after) / len(after), len(after)))
PY
}

RES=$TMP/results.txt
: > "$RES"
for ((i = 1; i <= PAIRS; i++)); do
  if [ $((i % 2)) -eq 1 ]; then order="true false"; else order="false true"; fi
  for flag in $order; do
    read -r mean n < <(run "$flag" "$i")
    label=$([ "$flag" = true ] && echo on || echo off)
    printf "pair %d  watchdog %-3s  mean step %.4f s  (%d steps)\n" "$i" "$label" "$mean" "$n"
    echo "$i $label $mean" >> "$RES"
  done
done

python3 - "$RES" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    i, label, mean = line.split()
    runs.setdefault(int(i), {})[label] = float(mean)
ratios = [runs[i]["on"] / runs[i]["off"] for i in sorted(runs)]
for i, r in zip(sorted(runs), ratios):
    print("pair %d  on/off %.4f  (on %.4f s, off %.4f s)" % (i, r, runs[i]["on"], runs[i]["off"]))
on = [runs[i]["on"] for i in runs]
off = [runs[i]["off"] for i in runs]
mean = statistics.mean(ratios)
sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
print("step time: on %.4f s (runs %.4f..%.4f), off %.4f s (runs %.4f..%.4f)"
      % (statistics.mean(on), min(on), max(on), statistics.mean(off), min(off), max(off)))
print("on/off ratio: mean %.4f, spread %.4f..%.4f, standard deviation %.4f over %d pairs"
      % (mean, min(ratios), max(ratios), sd, len(ratios)))
print("watchdog overhead: %+.2f%% (target <= 1%%); pairs %+.2f%%..%+.2f%%"
      % (100 * (mean - 1), 100 * (min(ratios) - 1), 100 * (max(ratios) - 1)))
PY

#!/usr/bin/env bash
# kill -9 of a training node at random moments, 20 times, while it checkpoints every step: after
# each kill, `latest` (when there is one) must verify, and no published checkpoint may be partial.
# Each round resumes from `latest`, so resuming after a crash is exercised as well.
# usage: checkpoint_kill_test.sh XY_NODE WORK_DIR [ROUNDS]   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
ROUNDS=${3:-20}
rm -rf "$W" && mkdir -p "$W"
cat > "$W/kill.toml" <<EOF2
[model]
preset = "tiny"
vocab_size = 8000
[data]
seq_len = 64
[train]
steps = 100000
micro_batch = 2
log_every = 1
[optimizer]
warmup_steps = 2
[checkpoint]
dir = "$W/ckpt"
every_steps = 1
keep_last = 2
EOF2
# A first short run prepares the tokenizer and the token cache.
"$XY" train --config "$W/kill.toml" --work-dir "$W/work" --steps 1 > "$W/prep.log" 2>&1 || { cat "$W/prep.log"; exit 1; }
rm -rf "$W/ckpt"
source "$(dirname "$0")/lib.sh"
kills_in_write=0
RANDOM=7
for round in $(seq 1 "$ROUNDS"); do
  resume=()
  [ -f "$W/ckpt/latest" ] && resume=(--resume latest)
  "$XY" train --config "$W/kill.toml" --work-dir "$W/work" "${resume[@]}" > "$W/round$round.log" 2>&1 &
  pid=$!
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 1.0 + (r % 250) / 100 }')"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  # An unpublished .tmp-step-N left behind means the kill landed during a write.
  ls -a "$W/ckpt" 2>/dev/null | grep -q '^\.tmp-step' && kills_in_write=$((kills_in_write + 1))
  ok=0
  if [ -f "$W/ckpt/latest" ]; then
    "$XY" verify latest --dir "$W/ckpt" > "$W/verify$round.log" 2>&1 || { ok=1; cat "$W/verify$round.log"; }
  fi
  for d in "$W"/ckpt/step-*; do
    [ -d "$d" ] || continue
    "$XY" verify "$d" > /dev/null 2>&1 || { ok=1; echo "partial checkpoint published: $d"; }
  done
  check "round $round: every published checkpoint verifies" $ok
  echo "round $round: latest = $(cat "$W/ckpt/latest" 2>/dev/null || echo none); $(grep -c '^step' "$W/round$round.log") steps this round"
done
echo "kills that landed while a checkpoint was being written: $kills_in_write of $ROUNDS"
finish

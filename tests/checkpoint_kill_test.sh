#!/usr/bin/env bash
# kill -9 of a training node, ROUNDS times (default 12), while it checkpoints every step: after each kill, `latest`
# (when there is one) must verify, and no published checkpoint may be partial. Each round resumes
# from `latest` and must reproduce the step lines that the killed round printed for the same steps
# (loss, grad norm, lr), so resuming after a crash is checked too. Odd rounds kill as soon as a
# checkpoint write has begun (a .tmp-step-N directory appeared), even rounds at a random moment
# after the first step; every round must have been ended by the kill (exit 137), at least one kill
# must have landed mid-write (its .tmp-step-N left behind, the log without "checkpoint step-N"),
# and a later round must have resumed from the newest published checkpoint and recomputed step N.
# usage: checkpoint_kill_test.sh XY_NODE WORK_DIR [ROUNDS]   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
ROUNDS=${3:-12}
rm -rf "$W" && mkdir -p "$W"
cat > "$W/kill.toml" <<EOF2
[model]
preset = "custom"
vocab_size = 8000
hidden = 64
intermediate = 160
layers = 2
heads = 4
kv_heads = 2
max_seq_len = 64
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
# wait_for SECONDS CMD...: polls CMD every 20 ms until it succeeds (0) or the time is up (1).
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.02; done
}
new_tmp() { [ -n "$(find "$W/ckpt" -maxdepth 1 -name '.tmp-step-*' -newer "$1" 2>/dev/null)" ]; }
steps_of() { grep '^step ' "$1" | sed 's/ | [0-9 ]* tok\/s.*//'; }  # without the timings
kills_in_write=0; recovered=0; compared=0; cut_step=0
: > "$W/seen.steps"
RANDOM=7
for round in $(seq 1 "$ROUNDS"); do
  resume=(); from=""
  [ -f "$W/ckpt/latest" ] && { resume=(--resume latest); from=$(cat "$W/ckpt/latest"); }
  touch "$W/round$round.start"
  log="$W/round$round.log"
  "$XY" train --config "$W/kill.toml" --work-dir "$W/work" --no-doctor "${resume[@]}" > "$log" 2>&1 &
  pid=$!
  wait_for 60 grep -q '^step ' "$log"  # the round trains (and makes progress) before it is killed
  if [ $((round % 2)) -eq 1 ]; then
    wait_for 30 new_tmp "$W/round$round.start"  # (a write takes ~70 ms: kill at once)
  else
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", (r % 150) / 100 }')"
  fi
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null; rc=$?
  check "round $round: ended by the kill (exit 137, got $rc)" $([ $rc -eq 137 ]; echo $?)
  [ $rc -eq 137 ] || tail -5 "$log"
  # A .tmp-step-N written this round whose publication the log does not report: cut mid-write.
  cut=""
  for d in $(find "$W/ckpt" -maxdepth 1 -name '.tmp-step-*' -newer "$W/round$round.start" 2>/dev/null); do
    n=${d##*.tmp-step-}
    grep -q "^xy: checkpoint step-$n:" "$log" || cut=$((10#$n))
  done
  [ -n "$cut" ] && { kills_in_write=$((kills_in_write + 1)); cut_step=$cut; }
  ok=0; latest=""
  if [ -f "$W/ckpt/latest" ]; then
    latest=$(cat "$W/ckpt/latest")
    "$XY" verify latest --dir "$W/ckpt" > "$W/verify$round.log" 2>&1 || { ok=1; cat "$W/verify$round.log"; }
  fi
  for d in "$W"/ckpt/step-*; do
    [ -d "$d" ] && [ "${d##*/}" != "$latest" ] || continue  # (latest was verified just above)
    "$XY" verify "$d" > /dev/null 2>&1 || { ok=1; echo "partial checkpoint published: $d"; }
  done
  check "round $round: every published checkpoint verifies" $ok
  if [ -n "$from" ]; then
    grep -q "^xy: resumed from $W/ckpt/$from (step $((10#${from#step-})))" "$log"
    check "round $round: resumed from latest ($from)" $?
  fi
  # Steps printed before (by a killed round) must come out the same after the resume.
  same=0
  while read -r line; do
    n=$(echo "$line" | awk '{ print $2 }')
    before=$(grep "^step  *$n |" "$W/seen.steps" | head -1)
    if [ -n "$before" ]; then
      compared=$((compared + 1))
      [ "$before" = "$line" ] || { same=1; echo "step $n differs after the resume: '$before' then '$line'"; }
      [ "$n" -eq "$cut_step" ] && [ "$same" -eq 0 ] && recovered=$((recovered + 1))
    else
      echo "$line" >> "$W/seen.steps"
    fi
  done < <(steps_of "$log")
  check "round $round: steps seen before are reproduced exactly" $same
  echo "round $round: latest = $(cat "$W/ckpt/latest" 2>/dev/null || echo none); $(grep -c '^step' "$log") steps this round${cut:+; killed while writing step $cut}"
done
echo "kills that landed while a checkpoint was being written: $kills_in_write of $ROUNDS; step lines compared after a resume: $compared"
check "at least one kill landed while a checkpoint was being written ($kills_in_write)" $([ $kills_in_write -ge 1 ]; echo $?)
check "a checkpoint cut mid-write was recomputed after resuming from the newest published one ($recovered times)" $([ $recovered -ge 1 ]; echo $?)
finish

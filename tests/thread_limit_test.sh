#!/usr/bin/env bash
# A thread the system refuses is one line naming what could not be started, exit 1, never
# "terminate called ..." (exit 134). The refusal is made real: thread stacks of ~1 GiB
# (ulimit -s) under a low address-space limit (ulimit -v), so that only a few threads can be
# mapped; `preprocess` with 8 encoding threads, and `train` with 16 CPU ranks at several limits
# (each fails at another stage).
# usage: thread_limit_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK"
source "$(dirname "$0")/lib.sh"
SAMPLE=data/sample/fincorpus_sample.jsonl.gz

# A tokenizer and shards, made without limits.
zcat "$SAMPLE" | python3 -c 'import sys, json
for l in sys.stdin:
    t = json.loads(l).get("text", "")
    if isinstance(t, str):
        for s in t.splitlines():
            s = s.strip()
            if s: print(s)' > "$WORK/text.txt"
spm_train --input="$WORK/text.txt" --model_prefix="$WORK/tok" --vocab_size=8000 --model_type=bpe \
  --num_threads=2 > "$WORK/spm.log" 2>&1
check "tokenizer trained" $?
"$XY" preprocess -t "$WORK/tok.model" -o "$WORK/shards" --progress none "$SAMPLE" > "$WORK/prep.log" 2>&1
check "preprocess without limits exits 0" $?

# expect_refused NAME LOG RC: exit 1, no terminate/abort, exactly one stderr line saying what
# could not be started.
expect_refused() {
  local name=$1 log=$2 rc=$3
  echo "--- $name (exit $rc):"; cat "$log"
  check "$name exits 1" $([ "$rc" -eq 1 ]; echo $?)
  ! grep -q "terminate called\|Aborted\|core dumped" "$log"; check "$name: no terminate/abort" $?
  grep -q "cannot start .*ulimit" "$log"; check "$name: says what could not be started" $?
  check "$name: the error is one line" $([ "$(grep -c "cannot start" "$log")" -eq 1 ]; echo $?)
}

(ulimit -s 1000000; ulimit -v 2000000
 exec "$XY" preprocess -t "$WORK/tok.model" -o "$WORK/limited" --progress none -j 8 "$SAMPLE") \
  > "$WORK/prep_limited.log" 2>&1
expect_refused "preprocess -j 8 under ulimit -v" "$WORK/prep_limited.log" $?
test ! -f "$WORK/limited/manifest.json"; check "... and marks nothing complete" $?

cat > "$WORK/job.toml" <<EOF
[[topology.nodes]]
host = "127.0.0.1"
devices = 16
[model]
preset = "tiny"
[data]
shards = "$WORK/shards"
seq_len = 32
work_dir = "$WORK/run"
[train]
steps = 2
micro_batch = 1
[optimizer]
warmup_steps = 1
[control]
doctor = false
EOF
# The limits (KiB of address space): LibTorch alone maps several GiB; each limit lets a
# different number of 1 GiB stacks through, so each run is refused at another stage (on the
# 2-core machine: a Gloo I/O thread; the Gloo process groups' threads, whose refusal inside c10d
# ended in std::terminate; the actors', whose refusal inside CAF did).
for v in 8000000 40000000 90000000; do
  (ulimit -s 1000000; ulimit -v $v; exec timeout 120 "$XY" train --config "$WORK/job.toml") \
    > "$WORK/train_$v.out" 2> "$WORK/train_$v.err"
  rc=$?
  grep -v "^xy: \|^step " "$WORK/train_$v.out" >> "$WORK/train_$v.err"
  expect_refused "train with 16 ranks under ulimit -v $v" "$WORK/train_$v.err" $rc
done

finish

#!/usr/bin/env bash
# "Leave it overnight", in a few minutes on CPU: the tiny model trains on the bundled sample with
# two held-out sets (the sample's last 300 documents, kept out of training, and its first 300 as a
# set seen in training), evaluated every 20 steps; at step 25 a rank sleeps past its deadline (an
# injected fault), the watchdog ends the job, and the supervisor (--restarts) starts it again from
# the last checkpoint; the job finishes, and `xy-node report` draws the run: runs/overnight/report.html.
# usage: scripts/demo_overnight.sh [STEPS]   (default 60; needs the build: scripts/demo.sh makes it)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-60}
XY=${XY_NODE:-./build/bin/xy-node}
W=${XY_DEMO_DIR:-runs/overnight}
rm -rf "$W" && mkdir -p "$W"
# Split the sample by document: training gets all but the last 300, "heldout" the last 300.
zcat data/sample/fincorpus_sample.jsonl.gz > "$W/all.jsonl"
n=$(wc -l < "$W/all.jsonl")
head -n $((n - 300)) "$W/all.jsonl" > "$W/train.jsonl"
tail -n 300 "$W/all.jsonl" > "$W/heldout.jsonl"
head -n 300 "$W/all.jsonl" > "$W/seen.jsonl"
rm "$W/all.jsonl"
cat > "$W/job.toml" <<EOF
[model]
preset = "tiny"
vocab_size = 0
max_seq_len = 256
[data]
inputs = ["$W/train.jsonl"]
tokenizer_vocab = 8000
seq_len = 128
[train]
steps = $STEPS
micro_batch = 8
log_every = 5
[optimizer]
lr = 3e-3
min_lr = 3e-4
warmup_steps = 10
[deadlines]
compute_s = 20
first_step_factor = 3
[checkpoint]
every_steps = 10
[control]
heartbeat_s = 10
[eval]
sets = ["heldout=$W/heldout.jsonl", "seen=$W/seen.jsonl"]
every_steps = 20
samples = 64
EOF
# The drill: rank 0 sleeps in the forward of unit 1 at step 25 (past compute_s); fault injection
# fires in the first attempt only, so the restarted job runs through.
XY_FAULT="sleep-compute:rank=0,step=25,unit=1" \
  "$XY" train --config "$W/job.toml" --work-dir "$W" --restarts 2 --restart-backoff 1
"$XY" report "$W"
echo "demo: the run's record is $W/metrics.jsonl (TensorBoard: $W/tb); its pictures: $W/report.html"

#!/usr/bin/env bash
# Mixed GPUs: per-node micro-batches and grad_accum ([[topology.nodes]] micro_batch, grad_accum)
# keep the global batch's mathematics. Two xy-node processes (two nodes on 127.0.0.1, one CPU rank
# each) reproduce a one-process run of one rank with micro-batch 4, to 1e-6 (fp32): every step's
# loss and the held-out losses, the gradient norms (to 1e-5), and the final parameters (fp32 exports compared by
# tests/compare_safetensors.py). Adam's eps is raised to 1e-3: with 1e-8 an element whose
# gradient nearly cancels moves by about lr either way on fp32 rounding alone (its update is
# g / |g|), which hides the gradients' agreement that the comparison is about.
#   global sharding, micro-batches 3 and 1, stopped at step 4 and resumed to 8 (the data
#     position of unequal splits), node 0 slowed down in steps 2-4: node 0 proposes a split
#   a resume under a split whose samples per step do not divide the consumed ones: refused
#   node sharding, micro-batches 3 and 1
#   node sharding, 1 x grad_accum 2 and 2 x grad_accum 1 (different accumulation)
# usage: mixed_batch_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
rm -rf "$W" && mkdir -p "$W"
STEPS=8

train_test_tokenizer "$XY" "$W/tok"; check "tokenizer trained" $?
# Tokenized once: every process maps the shards.
"$XY" preprocess --tokenizer "$W/tok/tokenizer.model" --output "$W/shards" --progress none \
  data/sample/fincorpus_sample.jsonl.gz > "$W/preprocess.log" 2>&1
check "corpus preprocessed" $?
common="[model]
preset = \"custom\"
vocab_size = 8000
hidden = 64
intermediate = 176
layers = 2
heads = 4
max_seq_len = 64
[data]
shards = \"$W/shards\"
seq_len = 64
[train]
steps = $STEPS
micro_batch = 4
precision = \"fp32\"
log_every = 1
threads = 1
[optimizer]
eps = 1e-3
warmup_steps = 2
schedule = \"constant\"
[eval]
holdout = 0.05
samples = 16
every_steps = 4
[control]
doctor = false
[checkpoint]
every_steps = 4"

# export NAME: the final checkpoint of run NAME as fp32 safetensors in $W/NAME.export.
export_run() {
  "$XY" export "$W/ckpt-$1/step-$(printf %08d $STEPS)" --out "$W/$1.export" --dtype fp32 > "$W/$1.export.log" 2>&1
  check "$1: export exits 0" $?
}

# One process, one rank, micro-batch 4: the reference.
printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 1\n%s\ndir = "%s"\n' \
  "$common" "$W/ckpt-one" > "$W/one.toml"
timeout 300 "$XY" train --config "$W/one.toml" --work-dir "$W/one" > "$W/one.log" 2>&1
check "one-rank run exits 0" $?
export_run one

# pair NAME SHARD MB0 ACC0 MB1 ACC1 [TRAIN FLAGS...]: the two-node job, node 0 on the first port.
pair() {
  local name=$1 shard=$2 mb0=$3 acc0=$4 mb1=$5 acc1=$6 P0 P1 pid0 rc0 rc1
  shift 6
  read -r P0 P1 < <(free_ports 2)
  printf '[topology]\ndevice = "cpu"\nshard = "%s"\n[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\ndevices = 1\nmicro_batch = %s\ngrad_accum = %s\n[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\ndevices = 1\nmicro_batch = %s\ngrad_accum = %s\n%s\ndir = "%s"\n' \
    "$shard" "$P0" "$mb0" "$acc0" "$P1" "$mb1" "$acc1" "$common" "$W/ckpt-$name" > "$W/$name.toml"
  timeout 300 "$XY" train --config "$W/$name.toml" --work-dir "$W/$name-0" --node-index 0 "$@" >> "$W/$name-0.log" 2>&1 &
  pid0=$!
  XY_FAULT= timeout 300 "$XY" train --config "$W/$name.toml" --work-dir "$W/$name-1" --node-index 1 "$@" >> "$W/$name-1.log" 2>&1
  rc1=$?
  wait $pid0; rc0=$?
  [ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] || tail -n 5 "$W/$name-0.log" "$W/$name-1.log"
  check "$name: both nodes exit 0 ($*)" $(( rc0 || rc1 ))
}

# compare NAME: losses and parameters of run NAME against the one-rank run.
compare() {
  python3 "$HERE/compare_metrics.py" "$W/$1-0/metrics.jsonl" "$W/one/metrics.jsonl" --keys loss --rtol 1e-6 --steps $STEPS
  check "$1: every step's loss and the held-out losses within 1e-6" $?
  python3 "$HERE/compare_metrics.py" "$W/$1-0/metrics.jsonl" "$W/one/metrics.jsonl" --keys grad_norm --rtol 1e-5
  check "$1: every step's gradient norm within 1e-5" $?
  export_run "$1"
  python3 "$HERE/compare_safetensors.py" "$W/$1.export" "$W/one.export" --rtol 1e-6
  check "$1: final parameters within 1e-6" $?
}

# Global sharding, 3 + 1, stopped after step 4 and resumed (a constant learning rate after the
# warm-up, so that --steps 4 does not change it); node 0's compute slowed in steps 2-4 (0.4 s
# each) so that its measured speed asks for a smaller share.
slow="sleep-compute:rank=0,step=2,seconds=0.4;sleep-compute:rank=0,step=3,seconds=0.4;sleep-compute:rank=0,step=4,seconds=0.4"
XY_FAULT=$slow pair global global 3 1 1 1 --steps 4
pair global global 3 1 1 1 --resume latest
grep -q "resumed from .*step-00000004 (step 4)" "$W/global-0.log"; check "global: the second run resumed from step 4" $?
compare global
line=$(grep "balanced: " "$W/global-0.log" | head -1)
echo "proposal: $line"
mb0=$(sed -n 's/.*topology.nodes\[0\].micro_batch = \([0-9]*\).*/\1/p' <<< "$line")
mb1=$(sed -n 's/.*topology.nodes\[1\].micro_batch = \([0-9]*\).*/\1/p' <<< "$line")
[ -n "$mb0" ] && [ -n "$mb1" ] && [ "$mb0" -lt 3 ] && [ $((mb0 + mb1)) -eq 4 ] && grep -q "same 4 samples per step" <<< "$line"
check "global: node 0 proposes a smaller share for the slowed node 0, 4 samples per step in all" $?
! grep -q "balanced: " "$W/global-1.log"; check "global: only node 0 prints the proposal" $?
grep -q '"event":"batch_split"' "$W/global-0/metrics.jsonl" || grep -q '"event": "batch_split"' "$W/global-0/metrics.jsonl"
check "global: the proposal is in the metrics log" $?

# A resume under a split whose samples per step (2 + 1) do not divide what the checkpoint consumed
# (8 steps x 4): refused on both nodes, one line naming the checkpoint and the numbers.
sed '0,/^micro_batch = 3$/s//micro_batch = 2/' "$W/global.toml" > "$W/refuse.toml"
timeout 120 "$XY" train --config "$W/refuse.toml" --work-dir "$W/refuse-0" --node-index 0 --resume latest --steps 12 > "$W/refuse-0.log" 2>&1 &
pid0=$!
timeout 120 "$XY" train --config "$W/refuse.toml" --work-dir "$W/refuse-1" --node-index 1 --resume latest --steps 12 > "$W/refuse-1.log" 2>&1
rc1=$?
wait $pid0; rc0=$?
for n in 0 1; do
  grep "consumed" "$W/refuse-$n.log"
  grep -q "checkpoint .*step-00000008 consumed 32 samples, not a whole number of steps of the 3 samples per step" "$W/refuse-$n.log" &&
    ! grep -qiE "terminate|backtrace|Aborted|Segmentation" "$W/refuse-$n.log"
  check "refused split: node $n names the checkpoint and the numbers, one line" $?
done
[ $rc0 -eq 2 ] && [ $rc1 -eq 2 ]; check "refused split: both nodes exit 2 ($rc0, $rc1)" $?

# Node sharding (each node holds the whole state; the gradients are all-reduced between nodes).
pair node node 3 1 1 1
compare node
pair accum node 1 2 2 1
compare accum

finish

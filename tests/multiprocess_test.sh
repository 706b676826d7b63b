#!/usr/bin/env bash
# Two xy-node processes (a topology of two nodes on 127.0.0.1, one CPU rank each) form one job over
# Gloo with a TCP-store rendezvous, and reproduce the one-process run (one node, two ranks)
# exactly: the same printed losses and byte-identical checkpoint shards.
# usage: multiprocess_test.sh XY_NODE WORK_DIR [DEVICE]   (run from the repository root)
#   DEVICE cuda (label gpu; a machine with an even number N >= 2 of GPUs): the simulated multi-node
#   job over NCCL: one process driving N GPUs against two processes of N/2 GPUs each (each sees its
#   own through CUDA_VISIBLE_DEVICES), fp32. On CPU, XY_TEST_PER_NODE=2 makes it two processes of
#   two ranks each against one process of four.
set -uo pipefail
XY=$1
W=$2
DEVICE=${3:-cpu}
PER=${XY_TEST_PER_NODE:-1}  # ranks per node in the two-process job
ENV0=(XY_GPU=any); ENV1=(XY_GPU=any)
source "$(dirname "$0")/lib.sh"
if [ "$DEVICE" = cuda ]; then
  need_gpus 2
  N=$(nvidia-smi -L | grep -c '^GPU ')
  PER=$((N / 2))
  ENV0=(CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((PER - 1))))
  ENV1=(CUDA_VISIBLE_DEVICES=$(seq -s, $PER $((2 * PER - 1))))
fi
RANKS=$((2 * PER))
rm -rf "$W" && mkdir -p "$W"
read -r P0 P1 < <(free_ports 2)  # (the store listens on node 0's port + 1)

common='[model]
preset = "tiny"
vocab_size = 8000
[data]
seq_len = 64
[train]
steps = 6
micro_batch = 2
log_every = 1
[optimizer]
warmup_steps = 2
[checkpoint]
every_steps = 3'

cat > "$W/one.toml" <<EOF2
[topology]
device = "$DEVICE"
[[topology.nodes]]
host = "127.0.0.1"
devices = $RANKS
$common
dir = "$W/ckpt-one"
EOF2
# Run 1 (one process, two ranks) also trains the tokenizer that run 2 reuses.
timeout 300 "$XY" train --config "$W/one.toml" --work-dir "$W/one" > "$W/one.log" 2>&1
check "one-process run exits 0" $?

cat > "$W/two.toml" <<EOF2
[topology]
device = "$DEVICE"
shard = "global"
[[topology.nodes]]
host = "127.0.0.1"
port = $P0
devices = $PER
[[topology.nodes]]
host = "127.0.0.1"
port = $P1
devices = $PER
$common
dir = "$W/ckpt-two"
EOF2
sed -i "s|^\[data\]|[data]\ntokenizer = \"$W/one/tokenizer.model\"|" "$W/two.toml"
sed -i "s|^\[data\]|[data]\ntokenizer = \"$W/one/tokenizer.model\"|" "$W/one.toml"  # for the record
env "${ENV0[@]}" timeout 300 "$XY" train --config "$W/two.toml" --work-dir "$W/node0" --node-index 0 > "$W/node0.log" 2>&1 &
pid0=$!
env "${ENV1[@]}" NODE_RANK=1 timeout 300 "$XY" train --config "$W/two.toml" --work-dir "$W/node1" > "$W/node1.log" 2>&1 &
pid1=$!
wait $pid0; rc0=$?
wait $pid1; rc1=$?
tail -3 "$W/node0.log"
check "node 0 exits 0" $rc0
check "node 1 exits 0 (node index from NODE_RANK)" $rc1
grep -q "node 1 of 2: ranks $PER-$((RANKS - 1))" "$W/node1.log"; check "node 1 knows its ranks ($PER-$((RANKS - 1)))" $?

losses() { grep '^step ' "$1" | sed 's/ | [0-9 ]* tok\/s.*//'; }
losses "$W/one.log" > "$W/one.losses"
losses "$W/node0.log" > "$W/two.losses"
cat "$W/two.losses"
[ -s "$W/one.losses" ] && cmp -s "$W/one.losses" "$W/two.losses"; check "identical step lines (loss, grad norm, lr)" $?
for s in step-00000003 step-00000006; do
  [ "$(ls "$W/ckpt-one/$s"/rank-*.bin 2>/dev/null | wc -l)" -eq $RANKS ]; check "$s has $RANKS rank files" $?
  for r in $(cd "$W/ckpt-one/$s" && ls rank-*.bin); do
    cmp -s "$W/ckpt-one/$s/$r" "$W/ckpt-two/$s/$r"; check "$s/$r byte-identical" $?
  done
done
grep -q '"nodes": 2' "$W/ckpt-two/step-00000006/manifest.json"; check "manifest written by node 0 lists both nodes" $?
test "$(cat "$W/ckpt-two/latest")" = "step-00000006"; check "latest published" $?

finish

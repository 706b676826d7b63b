#!/usr/bin/env bash
# Rehearses a two-machine job on one machine (docs/OPERATIONS.md, "Running on several machines"):
# two network namespaces stand for the two servers, joined by a veth pair whose ends are named as
# the servers' interfaces (bond0 on node 0, eno1 on node 1; a different name on each machine, as
# with the seed's cluster), with a decoy interface in each that sorts first and reaches nothing,
# and the link shaped with tc tbf (RATE, default 1gbit). Each node runs `xy-node doctor`, then
# `xy-node train` for STEPS steps of a small model on CPU ranks (DEVICES per node, default 2);
# everything xy prints about the cluster is kept in OUT_DIR (doctor.nN, train.nN).
# Root only; uses only the addresses 10.231.30.1-2 and 10.231.31.x inside the namespaces it makes,
# which are removed at the end.
# usage: scripts/cluster_rehearsal.sh XY_NODE OUT_DIR [RATE] [STEPS] [DEVICES]
set -uo pipefail
XY=$(realpath "$1")
OUT=$2
RATE=${3:-1gbit}
STEPS=${4:-6}
DEV=${5:-2}
[ "$(id -u)" -eq 0 ] || { echo "cluster_rehearsal.sh: needs root (network namespaces)" >&2; exit 2; }
mkdir -p "$OUT"
source "$(dirname "$0")/../tests/lib.sh"
two_namespaces xyr 10.231.30 10.231.31 bond0 eno1
shape_link "$RATE" || { echo "cluster_rehearsal.sh: cannot shape the link to $RATE with tc tbf" >&2; exit 1; }
cat > "$OUT/cluster.toml" <<EOF
$(two_node_topology 10.231.30 29800 "$DEV" auto)
[model]
preset = "custom"
vocab_size = 8000
hidden = 256
intermediate = 688
layers = 4
heads = 8
max_seq_len = 128
[data]
seq_len = 128
[train]
steps = $STEPS
micro_batch = 2
grad_accum = 4
precision = "bf16"
threads = 1
log_every = 1
[optimizer]
warmup_steps = 1
[checkpoint]
dir = "$OUT/checkpoints"
every_steps = 0
EOF
# The tokenizer, once, outside the cluster (on two machines each node reads its own copy).
train_test_tokenizer "$XY" "$OUT/tok" || { tail -5 "$OUT/tok/tok.log"; exit 1; }
sed -i "s|^seq_len = 128$|seq_len = 128\ntokenizer = \"$OUT/tok/tokenizer.model\"|" "$OUT/cluster.toml"
both() {  # both NAME ARGS...: `xy-node ARGS` on both nodes at once (@N@ = the node); OUT/NAME.nN
  local name=$1 pid rc=0; shift
  ip netns exec "$N1" env XY_SECRET=rehearsal XY_NODE_INDEX=1 timeout 600 "$XY" "${@//@N@/1}" > "$OUT/$name.n1" 2>&1 & pid=$!
  ip netns exec "$N0" env XY_SECRET=rehearsal XY_NODE_INDEX=0 timeout 600 "$XY" "${@//@N@/0}" > "$OUT/$name.n0" 2>&1 || rc=$?
  wait $pid || rc=$?
  return $rc
}
both doctor doctor --config "$OUT/cluster.toml" --wait 10; echo "doctor: exit $?"
both train train --config "$OUT/cluster.toml" --no-doctor --work-dir "$OUT/node@N@"; echo "train: exit $?"
grep -E "^xy: (network interface|sharding|nodes' compute|placement)" "$OUT/train.n0"

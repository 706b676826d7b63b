#!/usr/bin/env bash
# The bytes one training step moves between two machines, against ZeRO-3's arithmetic. Each node of
# a two-node CPU job (one rank each) runs in its own network namespace, joined by a veth pair; the
# bytes each end sends are read from /sys/class/net/<veth>/statistics before and after a job, for
# two jobs that differ only in their step count: the difference, over the difference in steps, is
# one step's traffic (start-up, rendezvous, the checkpoint at the end cancel out). Run in fp32 and
# bf16 under global sharding, and in fp32 under node sharding with grad_accum 1 and 4 (below);
# each direction must be within 5% of the prediction:
#   per optimizer step, each rank sends (N = 2 ranks, W = bytes of the working precision):
#     all-gathers:    (N-1)/N x W x (2 x embedding + 2 x blocks + head)
#                     (the forward gathers every unit; the backward every unit again except the
#                     head, which is gathered once for its loss and backward: actors/trainer.cpp)
#     reduce-scatter: (N-1)/N x W x every unit (the gradient travels in the working precision)
#     all-reduce:     the end-of-step facts, (4 + units) doubles (a few dozen bytes)
#   each unit's size padded to a multiple of N (model/layout.cpp).
# (tests/zero3_bytes.py computes it; the doctor's step traffic row, apps/doctor_links.cpp's
# step_traffic(), is checked against the same function by tests/doctor_cluster_test.sh.)
# The wire's own headers are taken out: 66 bytes (Ethernet 14 + IPv4 20 + TCP 32 with timestamps)
# per packet the interface counts (a segmentation-offloaded packet is counted once, headers once).
# Needs root (CI runs as root); skipped (77) when network namespaces cannot be made. Only addresses
# inside the namespaces made here are used, and the namespaces are removed at the end.
# usage: zero3_bytes_test.sh XY_NODE WORK_DIR   (run from the repository root)
# The model's shape can be set for a measurement (bench/RESULTS.md): XY_BYTES_MODEL="hidden layers
# intermediate heads" (default "128 2 344 4"), XY_BYTES_STEPS="short long" (default "2 6").
set -uo pipefail
XY=$1
W=$2
source "$(dirname "$0")/lib.sh"
read -r HIDDEN LAYERS INTER HEADS <<< "${XY_BYTES_MODEL:-128 2 344 4}"
read -r S1 S2 <<< "${XY_BYTES_STEPS:-2 6}"
VOCAB=8000
rm -rf "$W" && mkdir -p "$W"
two_namespaces xyb 10.231.7

train_test_tokenizer "$XY" "$W/tok"
check "the tokenizer is trained" $?

# job PRECISION STEPS [SHARD [GRAD_ACCUM]]: runs the two-node job; prints "node0_bytes
# node0_packets node1_bytes node1_packets" sent during it.
job() {
  local prec=$1 steps=$2 shard=${3:-global} accum=${4:-1} dir="$W/$1-$2-${3:-global}-${4:-1}"
  mkdir -p "$dir"
  cat > "$dir/job.toml" <<EOF
$(two_node_topology 10.231.7 29500 1 "$shard")
[model]
preset = "custom"
vocab_size = $VOCAB
hidden = $HIDDEN
intermediate = $INTER
layers = $LAYERS
heads = $HEADS
max_seq_len = 64
[data]
seq_len = 32
tokenizer = "$W/tok/tokenizer.model"
[train]
steps = $steps
micro_batch = 2
grad_accum = $accum
precision = "$prec"
log_every = 1000
threads = 1
[optimizer]
warmup_steps = 1
[checkpoint]
dir = "$dir/checkpoints"
every_steps = 0
[control]
doctor = false
EOF
  local rc=0
  two_node_job "$dir/job.toml" "$W/node" "$dir" bytes-test-secret 180 || rc=$?
  [ $rc -eq 0 ] || { echo "the $prec job of $steps steps failed (exit $rc):" >&2; tail -n 5 "$dir"/n0.log "$dir"/n1.log >&2; return 1; }
}

for prec in fp32 bf16; do
  short=$(job $prec "$S1") && long=$(job $prec "$S2")
  check "$prec: the jobs of $S1 and $S2 steps run" $?
  [ -n "$short" ] && [ -n "$long" ] || continue
  PYTHONPATH="$(dirname "$0")" python3 - "$prec" "$S1" "$S2" "$VOCAB" "$HIDDEN" "$LAYERS" "$INTER" $short $long <<'PY'
import sys
from zero3_bytes import predict  # tests/zero3_bytes.py: the arithmetic of the header above
prec, s1, s2, vocab, hidden, layers, inter = sys.argv[1], *map(int, sys.argv[2:8])
short, long = list(map(int, sys.argv[8:12])), list(map(int, sys.argv[12:16]))
gathers, reduce_scatter, all_reduce, params = predict(prec, 2, vocab, hidden, layers, inter, 1, 2)
predicted = gathers + reduce_scatter + all_reduce
print(f"{prec}: {params:,} parameters; predicted per step and rank: "
      f"all-gathers {gathers/1e6:.3f} MB + reduce-scatter {reduce_scatter/1e6:.3f} MB + "
      f"all-reduce {all_reduce:.0f} B = {predicted/1e6:.3f} MB")
worst = 0
for node in (0, 1):
    d_bytes = long[2 * node] - short[2 * node]
    d_packets = long[2 * node + 1] - short[2 * node + 1]
    wire = d_bytes / (s2 - s1)
    payload = (d_bytes - 66 * d_packets) / (s2 - s1)
    ratio = payload / predicted
    worst = max(worst, abs(ratio - 1))
    print(f"{prec}: node {node} sends {payload/1e6:.3f} MB per step ({wire/1e6:.3f} MB with "
          f"headers, {d_packets / (s2 - s1):.0f} packets): {ratio:.4f} x predicted "
          f"(jobs of {s1} and {s2} steps sent {short[2*node]/1e6:.2f} and {long[2*node]/1e6:.2f} MB)")
sys.exit(0 if worst <= 0.05 else 1)
PY
  check "$prec: each node's bytes per step are within 5% of ZeRO-3's" $?
done

# Node sharding (one rank a node, fp32): once per optimizer step each node all-reduces its
# gradient with the other (2 (nodes-1)/nodes of it in fp32: the whole model each way for two
# nodes), and nothing per micro-batch: with grad_accum 1 and 4 alike, within 5% of the arithmetic.
for accum in 1 4; do
  short=$(job fp32 "$S1" node $accum) && long=$(job fp32 "$S2" node $accum)
  check "node sharding, grad_accum $accum: the jobs of $S1 and $S2 steps run" $?
  [ -n "$short" ] && [ -n "$long" ] || continue
  grep -q "xy: sharding node" "$W/fp32-$S2-node-$accum/n0.log"
  check "node sharding, grad_accum $accum: node 0 says it shards by node" $?
  PYTHONPATH="$(dirname "$0")" python3 - "$S1" "$S2" "$VOCAB" "$HIDDEN" "$LAYERS" "$INTER" "$accum" $short $long <<'PY'
import sys
from zero3_bytes import predict_node
s1, s2, vocab, hidden, layers, inter, accum = map(int, sys.argv[1:8])
short, long = list(map(int, sys.argv[8:12])), list(map(int, sys.argv[12:16]))
g, r, ar, replica = predict_node("fp32", 1, 2, vocab, hidden, layers, inter, accum, 4)
predicted = g + r + ar + replica  # g = r = 0: one rank a node gathers nothing from the other
print(f"node sharding, grad_accum {accum}: predicted per step and node: gradient all-reduce "
      f"{replica/1e6:.3f} MB + facts {ar:.0f} B = {predicted/1e6:.3f} MB")
worst = 0
for node in (0, 1):
    d_bytes = long[2 * node] - short[2 * node]
    d_packets = long[2 * node + 1] - short[2 * node + 1]
    payload = (d_bytes - 66 * d_packets) / (s2 - s1)
    worst = max(worst, abs(payload / predicted - 1))
    print(f"node sharding, grad_accum {accum}: node {node} sends {payload/1e6:.3f} MB per step: "
          f"{payload / predicted:.4f} x predicted")
sys.exit(0 if worst <= 0.05 else 1)
PY
  check "node sharding, grad_accum $accum: each node's bytes per step are within 5% of its arithmetic" $?
done
finish

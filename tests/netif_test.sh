#!/usr/bin/env bash
# Two machines on one: each node of a two-node CPU job runs in its own network namespace, joined by
# a veth pair carrying the topology addresses (shaped to 1 Gbit/s with tc tbf); each namespace also
# has a decoy interface, created first, that cannot reach the other. The job must run, each node
# must point NCCL's and Gloo's socket interface at the interface owning its topology address (not
# the decoy, which comes first), and every connection seen between the namespaces must use the
# topology addresses. Needs root (CI runs as root); skipped (77) otherwise. Only addresses inside
# the namespaces made here are used, and the namespaces are removed at the end.
# usage: netif_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
source "$(dirname "$0")/lib.sh"
rm -rf "$W" && mkdir -p "$W"
two_namespaces xyt 10.231.8 10.231.9  # the decoys (10.231.9.x) come first in interface order
shape_link 1gbit 2>/dev/null

# The tokenizer, trained once outside the namespaces.
train_test_tokenizer "$XY" "$W/tok"
check "the tokenizer is trained" $?
cat > "$W/job.toml" <<EOF
$(two_node_topology 10.231.8 29400)
[model]
preset = "custom"
vocab_size = 8000
hidden = 64
intermediate = 160
layers = 2
heads = 4
max_seq_len = 64
[data]
seq_len = 32
tokenizer = "$W/tok/tokenizer.model"
[train]
steps = 40
micro_batch = 2
log_every = 10
threads = 1
[optimizer]
warmup_steps = 1
[checkpoint]
dir = "$W/checkpoints"
[control]
doctor = false
EOF
pids=()
for n in 0 1; do
  ns=$N0; [ $n = 1 ] && ns=$N1
  ip netns exec "$ns" env XY_NODE_INDEX=$n XY_SECRET=netif-test-secret NCCL_SOCKET_IFNAME= GLOO_SOCKET_IFNAME= \
    timeout 180 "$XY" train --config "$W/job.toml" --work-dir "$W/node$n" > "$W/n$n.log" 2>&1 &
  pids+=($!)
done
# Sample node 0's TCP connections while the job runs.
: > "$W/ss.txt"
while kill -0 "${pids[0]}" 2>/dev/null; do
  ip netns exec "$N0" ss -tnH state established >> "$W/ss.txt" 2>/dev/null
  sleep 0.2
done
wait "${pids[0]}"; rc0=$?
wait "${pids[1]}"; rc1=$?
grep -h "network interface" "$W/n0.log" "$W/n1.log"
check "both nodes finish (exit $rc0, $rc1)" $([ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]; echo $?)
grep -q "network interface $L0 owns 10.231.8.1 (topology.nodes\[0\].host): NCCL_SOCKET_IFNAME=$L0, GLOO_SOCKET_IFNAME=$L0" "$W/n0.log"
check "node 0 chose $L0, the interface of its topology address (not the decoy aadecoy0)" $?
grep -q "network interface $L1 owns 10.231.8.2 (topology.nodes\[1\].host): NCCL_SOCKET_IFNAME=$L1" "$W/n1.log"
check "node 1 chose $L1" $?
cross=$(awk '{print $3, $4}' "$W/ss.txt" | grep -c "10.231.8.1:.* 10.231.8.2:")
decoy=$(grep -c "10.231.9." "$W/ss.txt")
echo "node 0's established connections sampled: $(wc -l < "$W/ss.txt") lines, $cross between the topology addresses, $decoy on the decoy"
check "the nodes' connections run between the topology addresses" $([ "$cross" -gt 0 ]; echo $?)
check "no connection uses the decoy" $([ "$decoy" -eq 0 ]; echo $?)
finish

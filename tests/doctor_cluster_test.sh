#!/usr/bin/env bash
# `xy-node doctor` across two machines: each node's doctor runs in its own network namespace,
# joined by a veth pair shaped to 100 Mbit/s (tc tbf, both ends), with a decoy interface in each.
#   1. the link probe: bandwidth each way within 60-110 Mbit/s (the payload of a 100 Mbit/s wire
#      is ~96 Mbit/s), a latency row, and the step traffic row's bytes per rank equal to
#      tests/zero3_bytes.py's arithmetic for the job's model (which zero3_bytes_test.sh checks
#      against the bytes on the wire); both nodes print the same link;
#   2. transport settings that disagree (NCCL_IB_DISABLE=1 and GLOO_SOCKET_IFNAME=aadecoy0 on node
#      1 only) fail on both nodes, naming both nodes and both values, with the fix; --no-probe
#      skips the probe;
#   3. different job secrets: the probe's rendezvous is refused, a FAIL with the fix.
# Needs root (CI runs as root); skipped (77) otherwise. Only addresses inside the namespaces made
# here are used, and the namespaces are removed at the end.
# usage: doctor_cluster_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
source "$(dirname "$0")/lib.sh"
command -v tc >/dev/null || skip "needs iproute2 (tc)"
rm -rf "$W" && mkdir -p "$W"
two_namespaces xyd 10.231.6 10.231.5
shape_link 100mbit || skip "cannot shape the veth with tc tbf here"
# The zero3_bytes_test model (hidden 128, 2 layers, intermediate 344), bf16, two ranks.
cat > "$W/job.toml" <<EOF2
$(two_node_topology 10.231.6 29600)
[model]
preset = "custom"
vocab_size = 8000
hidden = 128
intermediate = 344
layers = 2
heads = 4
max_seq_len = 64
[data]
seq_len = 32
work_dir = "$W/run"
[train]
micro_batch = 2
precision = "bf16"
EOF2

# doctors NAME [ENV0] [ENV1] [FLAGS]: runs both nodes' doctors at once; "$W/NAME.n0" and .n1 hold
# their output; sets rc0 rc1.
doctors() {
  local name=$1 e0=${2:-} e1=${3:-} flags=${4:-} pid
  ip netns exec "$N1" env -u NCCL_SOCKET_IFNAME -u GLOO_SOCKET_IFNAME -u NCCL_IB_DISABLE -u XY_SECRET $e1 \
    timeout 60 "$XY" doctor --config "$W/${CONF:-job}.toml" --node-index 1 --wait 5 $flags > "$W/$name.n1" 2>&1 & pid=$!
  ip netns exec "$N0" env -u NCCL_SOCKET_IFNAME -u GLOO_SOCKET_IFNAME -u NCCL_IB_DISABLE -u XY_SECRET $e0 \
    timeout 60 "$XY" doctor --config "$W/${CONF:-job}.toml" --node-index 0 --wait 5 $flags > "$W/$name.n0" 2>&1
  rc0=$?
  wait $pid; rc1=$?
}

# 1. The probe on a sane pair.
t0=$(date +%s.%N)
doctors probe "XY_SECRET=s" "XY_SECRET=s"
t1=$(date +%s.%N)
cat "$W/probe.n0"
grep -E "^(latency|bandwidth|step traffic|link probe)" "$W/probe.n1"
echo "the two doctors took $(python3 -c "print(round($t1 - $t0, 1))") s"
check "probe: both doctors pass ($rc0, $rc1)" $([ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]; echo $?)
for n in 0 1; do
  f="$W/probe.n$n"
  read -r out in < <(sed -n 's/^bandwidth to node 1 .* PASS .*node 0 -> node 1 \([0-9.]*\) Mbit\/s, node 1 -> node 0 \([0-9.]*\) Mbit\/s.*/\1 \2/p' "$f")
  python3 -c "import sys; sys.exit(0 if 60 <= float('${out:-0}') <= 110 and 60 <= float('${in:-0}') <= 110 else 1)"
  check "node $n: bandwidth at 100 Mbit/s shaping: ${out:-none} and ${in:-none} Mbit/s (60-110)" $?
  grep -q "^latency to node 1 .* PASS .*[0-9.]* ms round trip" "$f"; check "node $n: a latency row" $?
done
b0=$(grep "^bandwidth to node 1" "$W/probe.n0" | sed 's/^bandwidth to node 1 *0 /X/'); b1=$(grep "^bandwidth to node 1" "$W/probe.n1" | sed 's/^bandwidth to node 1 *1 /X/')
check "both nodes print the same measured link" $([ -n "$b0" ] && [ "$b0" = "$b1" ]; echo $?)
want=$(python3 "$(dirname "$0")/zero3_bytes.py" bf16 2 8000 128 2 344 1 2)
read -r g r a total <<< "$want"
grep -q "^step traffic to node 1 .* PASS .*one step moves [0-9.]* MB ($total B) each way: [0-9.]* s at the measured bandwidth .*all-gathers $g B + reduce-scatter $r B + all-reduce $a B = $total B" "$W/probe.n0"
check "step traffic: $total B per rank and step, as tests/zero3_bytes.py ($g + $r + $a)" $?

# 1b. The same job under node sharding: the row prints the gradient all-reduce between the nodes
# (bf16 on CPU ranks: the gradients land in fp32, 4 bytes) instead of the gathers.
sed 's/^shard = "global"$/shard = "node"/' "$W/job.toml" > "$W/job-node.toml"
CONF=job-node doctors probe-node "XY_SECRET=s" "XY_SECRET=s"
grep "^step traffic" "$W/probe-node.n0"
want=$(python3 "$(dirname "$0")/zero3_bytes.py" --node bf16 1 2 8000 128 2 344 1 4)
read -r ng nr na nrep ntotal <<< "$want"
grep -q "^step traffic to node 1 .* PASS .*one step moves [0-9.]* MB ($ntotal B) each way: .*sharding node (topology.shard = \"node\").* all-reduce $na B within its node + gradient all-reduce $nrep B between nodes = $ntotal B" "$W/probe-node.n0"
check "node sharding's step traffic: $ntotal B, as tests/zero3_bytes.py --node ($na + $nrep)" $?
secs=$(sed -n 's/^step traffic to node 1 .* each way: \([0-9.]*\) s .*/\1/p' "$W/probe.n0")
python3 -c "
bw = min(float('$out'), float('$in')) * 1e6 / 8
want = $total / bw
print(f'step traffic time: {float(\"${secs:-0}\")} s printed, {want:.3f} s = bytes / the lower bandwidth')
import sys; sys.exit(0 if abs(float('${secs:-0}') - want) <= 0.01 * want + 0.002 else 1)"
check "step traffic: seconds = bytes / the measured bandwidth" $?
grep -q "^same transport as node 1 .* PASS .*NCCL_IB_DISABLE 0 on both; socket interface $L1 (xy's choice) on node 1, $L0 (xy's choice) on node 0" "$W/probe.n0"
check "transport agrees: PASS naming each node's interface (not the decoy)" $?

# 2. Transport settings that disagree; --no-probe.
doctors disagree "" "NCCL_IB_DISABLE=1 GLOO_SOCKET_IFNAME=aadecoy0" --no-probe
grep -A1 "^same transport" "$W/disagree.n0" "$W/disagree.n1"
check "disagreement: both doctors fail ($rc0, $rc1)" $([ $rc0 -eq 1 ] && [ $rc1 -eq 1 ]; echo $?)
grep -q "^same transport as node 1 .* FAIL .*NCCL_IB_DISABLE 1 on node 1, 0 on node 0" "$W/disagree.n0"
check "node 0: NCCL_IB_DISABLE named with both nodes and values" $?
grep -q "^same transport as node 0 .* FAIL .*NCCL_IB_DISABLE 0 on node 0, 1 on node 1" "$W/disagree.n1"
check "node 1: the same, from its side" $?
grep -q "^same transport as node 1 .* FAIL .*GLOO_SOCKET_IFNAME=aadecoy0 on node 1, but $L1 owns 10.231.6.2 (its topology address)" "$W/disagree.n0"
check "node 0: node 1's GLOO_SOCKET_IFNAME named against its topology interface" $?
grep -q "fix: set the same NCCL_IB_DISABLE, NCCL_NET, NCCL_PROTO and NCCL_ALGO .*; unset NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME .*node 1: $L1, node 0: $L0" "$W/disagree.n0"
check "disagreement: fix text" $?
grep -q "^link probe .* SKIP .*skipped: not asked for (--no-probe" "$W/disagree.n0"; check "--no-probe skips the probe" $?
[ "$(grep -c FAIL "$W/disagree.n0")" -eq 1 ]; check "disagreement: the only failure on node 0" $?

# 3. Different secrets: the probe's rendezvous is refused.
doctors secret "XY_SECRET=one" "XY_SECRET=two"
grep -A1 "^link probe" "$W/secret.n0" "$W/secret.n1"
check "different secrets: both doctors fail ($rc0, $rc1)" $([ $rc0 -eq 1 ] && [ $rc1 -eq 1 ]; echo $?)
grep -q "^link probe .* FAIL .*the Gloo exchange between the nodes (rendezvous at 10.231.6.1:29601) failed: .*secret" "$W/secret.n1"
check "node 1: the refusal names the secret" $?
grep -q "fix: run \`xy-node doctor\` on every node at the same time, with the same XY_SECRET" "$W/secret.n0"
check "node 0: the probe fails with the fix" $?
finish

#!/usr/bin/env bash
# Two xy-node processes (a topology of two nodes on 127.0.0.1, one CPU rank each) form one job over
# Gloo with a TCP-store rendezvous, and reproduce the one-process run (one node, two ranks)
# exactly: the same printed losses and byte-identical checkpoint shards.
# usage: multiprocess_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
rm -rf "$W" && mkdir -p "$W"
fail=0; passed=0
check() { if [ "$2" -eq 0 ]; then echo "ok: $1"; passed=$((passed + 1)); else echo "FAILED: $1"; fail=$((fail + 1)); fi; }
# Two free ports (the store listens on node 0's port + 1).
read -r P0 P1 < <(python3 -c 'import socket
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
a = free()
while True:
    b = free()
    if abs(a - b) > 2: break
print(a, b)')

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
device = "cpu"
[[topology.nodes]]
host = "127.0.0.1"
devices = 2
$common
dir = "$W/ckpt-one"
EOF2
# Run 1 (one process, two ranks) also trains the tokenizer that run 2 reuses.
timeout 300 "$XY" train --config "$W/one.toml" --work-dir "$W/one" > "$W/one.log" 2>&1
check "one-process run exits 0" $?

cat > "$W/two.toml" <<EOF2
[topology]
device = "cpu"
[[topology.nodes]]
host = "127.0.0.1"
port = $P0
devices = 1
[[topology.nodes]]
host = "127.0.0.1"
port = $P1
devices = 1
$common
dir = "$W/ckpt-two"
EOF2
sed -i "s|^\[data\]|[data]\ntokenizer = \"$W/one/tokenizer.model\"|" "$W/two.toml"
sed -i "s|^\[data\]|[data]\ntokenizer = \"$W/one/tokenizer.model\"|" "$W/one.toml"  # for the record
timeout 300 "$XY" train --config "$W/two.toml" --work-dir "$W/node0" --node-index 0 > "$W/node0.log" 2>&1 &
pid0=$!
NODE_RANK=1 timeout 300 "$XY" train --config "$W/two.toml" --work-dir "$W/node1" > "$W/node1.log" 2>&1 &
pid1=$!
wait $pid0; rc0=$?
wait $pid1; rc1=$?
tail -3 "$W/node0.log"
check "node 0 exits 0" $rc0
check "node 1 exits 0 (node index from NODE_RANK)" $rc1
grep -q "node 1 of 2: ranks 1-1" "$W/node1.log"; check "node 1 knows it is rank 1" $?

losses() { grep '^step ' "$1" | sed 's/ | [0-9 ]* tok\/s.*//'; }
losses "$W/one.log" > "$W/one.losses"
losses "$W/node0.log" > "$W/two.losses"
cat "$W/two.losses"
[ -s "$W/one.losses" ] && cmp -s "$W/one.losses" "$W/two.losses"; check "identical step lines (loss, grad norm, lr)" $?
for s in step-00000003 step-00000006; do
  for r in rank-00000.bin rank-00001.bin; do
    cmp -s "$W/ckpt-one/$s/$r" "$W/ckpt-two/$s/$r"; check "$s/$r byte-identical" $?
  done
done
grep -q '"nodes": 2' "$W/ckpt-two/step-00000006/manifest.json"; check "manifest written by node 0 lists both nodes" $?
test "$(cat "$W/ckpt-two/latest")" = "step-00000006"; check "latest published" $?

echo "$passed passed, $fail failed"
[ $fail -eq 0 ]

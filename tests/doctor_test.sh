#!/usr/bin/env bash
# `xy-node doctor`: every check fails on a planted fault with its promised fix text, and passes on
# a sane set-up (one node, and two real doctors talking to each other).
# usage: doctor_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
rm -rf "$W" && mkdir -p "$W"
source "$(dirname "$0")/lib.sh"
read -r P0 P1 P2 P3 < <(free_ports 4)

model='[model]
preset = "custom"
vocab_size = 8000
hidden = 64
intermediate = 160
layers = 2
heads = 4
[data]
seq_len = 32'
one() { printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "%s"\nport = %s\ndevices = 2\n%s\nwork_dir = "%s"\n' "$1" "$2" "$model" "$W/run"; }
two() { printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\ndevices = 1\n[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\ndevices = 1\n%s\nwork_dir = "%s"\n' "$1" "$2" "$model" "$W/run"; }
# A fake peer doctor on port $1 answering with the facts JSON $2 (time_us filled in unless given).
fake_peer() {
  python3 - "$1" "$2" <<'PY' &
import json, socket, sys, time
port, facts = int(sys.argv[1]), json.loads(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(4); s.settimeout(30)
end = time.time() + 30
while time.time() < end:
    try: c, _ = s.accept()
    except socket.timeout: break
    f = dict(facts); f.setdefault("time_us", int(time.time() * 1e6) + f.pop("skew_us", 0))
    c.sendall((json.dumps(f) + "\n").encode()); c.close()
PY
  FAKE=$!
  sleep 0.5
}
# This node's own facts (what its doctor tells peers), as a fake peer on node 1 would report them,
# with the given keys changed: facts KEY=VALUE ...
FACTS=$("$XY" doctor --facts)
facts() { python3 - "$FACTS" "$@" <<'PY'
import json, sys
f = json.loads(sys.argv[1]); f.pop("time_us"); f.update(node=1, hostname="fake")
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1); f[k] = int(v) if k == "skew_us" else v
print(json.dumps(f))
PY
}
fact() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$FACTS" "$1"; }
good=$(facts)
CPU_BUILD=0; [ "$(fact cuda)" = "none (CPU build)" ] && CPU_BUILD=1
echo "this xy-node: $FACTS (CPU build: $CPU_BUILD)"

# 1. A sane single node passes every check.
one 127.0.0.1 $P0 > "$W/one.toml"
out=$("$XY" doctor --config "$W/one.toml" 2>&1); rc=$?
echo "$out"
check "sane node: exit 0" $([ $rc -eq 0 ]; echo $?)
grep -q "doctor: [0-9]* passed, 0 failed" <<< "$out"; check "sane node: 0 failed" $?
for c in "versions" "one NCCL loaded" "one LibTorch loaded" "interface" "control port free" "ulimit -n" "ulimit -l" "host memory" "disk for checkpoints"; do
  grep -q "^$c .* PASS" <<< "$out"; check "sane node: '$c' passes" $?
done
grep -q "^GPU visible and responsive .* SKIP .*skipped (CPU ranks)" <<< "$out"; check "sane node: GPU check skipped for CPU ranks" $?
if [ $CPU_BUILD -eq 1 ]; then
  grep -q "^versions .* PASS .*CUDA runtime none (CPU build), CUDA driver none (CPU build), NCCL none (CPU build)" <<< "$out"
  check "CPU build: versions say none (CPU build)" $?
else
  grep -q "^versions .* PASS .*CUDA runtime [0-9][0-9]*\.[0-9], CUDA driver [0-9][0-9]*\.[0-9], NCCL [0-9]*\.[0-9]*\.[0-9]" <<< "$out"
  check "CUDA build: versions name CUDA runtime, driver and NCCL" $?
fi

# 2. The control port is in use.
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', $P0)); s.listen(1); time.sleep(30)" & HOLD=$!
sleep 0.5
out=$("$XY" doctor --config "$W/one.toml" 2>&1); rc=$?
kill $HOLD
echo "$out" | grep -A1 FAIL
check "port in use: exit 1" $([ $rc -eq 1 ]; echo $?)
grep -q "^control port free .* FAIL .*127.0.0.1:$P0 cannot be bound: Address already in use" <<< "$out"; check "port in use: FAIL names host:port" $?
grep -q "fix: another process holds it (see \`ss -ltnp 'sport = :$P0'\`)" <<< "$out"; check "port in use: fix text" $?

# 3. A low ulimit -n (set in a child shell only).
out=$(ulimit -n 256; "$XY" doctor --config "$W/one.toml" 2>&1); rc=$?
echo "$out" | grep -A1 FAIL
check "low ulimit -n: exit 1" $([ $rc -eq 1 ]; echo $?)
grep -q "^ulimit -n .* FAIL .*256 open files; at least 1024 needed" <<< "$out"; check "low ulimit -n: FAIL says what is needed" $?
grep -q "fix: raise it before starting xy-node: \`ulimit -n 65536\`" <<< "$out"; check "low ulimit -n: fix text" $?

# 4. The configured host is not an address of this machine.
one 192.0.2.7 $P0 > "$W/wrong-if.toml"
out=$("$XY" doctor --config "$W/wrong-if.toml" 2>&1)
echo "$out" | grep -A1 "^interface"
grep -q "^interface .* FAIL .*cannot bind 192.0.2.7" <<< "$out"; check "wrong interface: FAIL" $?
grep -q "fix: set topology.nodes\[0\].host to this node's address .*this machine has: .*127.0.0.1" <<< "$out"; check "wrong interface: fix lists this machine's addresses" $?

# 5. Host memory for the planned shards: a model whose host state (>= 14 bytes a parameter) exceeds
# this machine's memory (layers of 0.81 B parameters, hidden 8192, as many as it takes).
mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
layers=$(( mem_kb * 1024 / (14 * 809000000) + 2 ))
printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 1\n[model]\npreset = "custom"\nvocab_size = 32000\nhidden = 8192\nintermediate = 22016\nlayers = %s\nheads = 64\nkv_heads = 8\n' "$layers" > "$W/big.toml"
out=$("$XY" doctor --config "$W/big.toml" 2>&1)
echo "$out" | grep -A1 "^host memory"
grep -q "^host memory .* FAIL .*[0-9]* parameters; this node's share needs" <<< "$out" ; check "a model too big for this machine ($layers layers of hidden 8192): host memory FAIL with the arithmetic" $?
grep -q "fix: add nodes or ranks (each holds 1/world of the state)" <<< "$out"; check "host memory: fix text" $?

# 6. A fake peer reports other versions and a skewed clock.
two $P0 $P1 > "$W/two.toml"
fake_peer $P1 "$(facts xy=0.0.9 torch=2.1.0 skew_us=10000000)"
out=$("$XY" doctor --config "$W/two.toml" --node-index 0 --wait 5 2>&1); rc=$?
kill $FAKE 2>/dev/null
echo "$out" | grep -A1 "FAIL\|reach"
check "fake peer: exit 1" $([ $rc -eq 1 ]; echo $?)
grep -q "^reach node 1 .* PASS .*127.0.0.1:$P1 (fake)" <<< "$out"; check "fake peer reached" $?
grep -q "^same versions as node 1 .* FAIL .*xy 0.0.9 on node 1, $(fact xy) on node 0; torch 2.1.0 on node 1, $(fact torch) on node 0" <<< "$out"; check "mismatched versions named" $?
grep -q "fix: install the same xy build, LibTorch, CUDA runtime, CUDA driver and NCCL on every node" <<< "$out"; check "versions: fix text" $?
grep -q "^clock skew to node 1 .* FAIL .*(more than 1 s)" <<< "$out"; check "clock skew detected" $?
grep -q "fix: synchronise the clocks (chrony or systemd-timesyncd" <<< "$out"; check "clock skew: fix text" $?
grep -q "^rendezvous port free .* PASS" <<< "$out"; check "rendezvous port checked on node 0" $?

# 7. A peer that does not answer.
out=$("$XY" doctor --config "$W/two.toml" --node-index 0 --wait 1 2>&1)
echo "$out" | grep -A1 "^reach"
grep -q "^reach node 1 .* FAIL .*no doctor answered at 127.0.0.1:$P1" <<< "$out"; check "unreachable peer: FAIL" $?
grep -q "fix: run \`xy-node doctor\` on node 1 at the same time" <<< "$out"; check "unreachable peer: fix text" $?

# 8. The rendezvous port (node 0's port + 1) is in use.
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', $((P2 + 1)))); s.listen(1); time.sleep(30)" & HOLD=$!
sleep 0.5
two $P2 $P3 > "$W/two-b.toml"
fake_peer $P3 "$good"
out=$("$XY" doctor --config "$W/two-b.toml" --node-index 0 --wait 5 2>&1)
kill $HOLD $FAKE 2>/dev/null
echo "$out" | grep -A1 "^rendezvous"
grep -q "^rendezvous port free .* FAIL .*127.0.0.1:$((P2 + 1)) cannot be bound" <<< "$out"; check "rendezvous port in use: FAIL" $?
grep -q "fix: the store listens on topology.nodes\[0\].port + 1" <<< "$out"; check "rendezvous port: fix text" $?
grep -q "^same versions as node 1 .* PASS" <<< "$out"; check "matching versions pass" $?

# 9. Two real doctors on two 'nodes' pass together.
read -r P0 P1 P2 P3 < <(free_ports 4)
two $P0 $P1 > "$W/two-real.toml"
"$XY" doctor --config "$W/two-real.toml" --node-index 1 --wait 10 > "$W/d1.log" 2>&1 & D1=$!
"$XY" doctor --config "$W/two-real.toml" --node-index 0 --wait 10 > "$W/d0.log" 2>&1; rc0=$?
wait $D1; rc1=$?
cat "$W/d0.log"
check "two real doctors: both exit 0 ($rc0, $rc1)" $([ $rc0 -eq 0 ] && [ $rc1 -eq 0 ]; echo $?)
grep -q "^clock skew to node 0 .* PASS" "$W/d1.log"; check "node 1 checked its clock against node 0" $?
grep -q "^same transport as node 1 .* PASS .*NCCL_IB_DISABLE 0 on both; socket interface lo (xy's choice) on node 1" "$W/d0.log"
check "two real doctors: the same transport settings" $?
grep -q "^bandwidth to node 1 .* PASS .*node 0 -> node 1 [0-9.]* Mbit/s" "$W/d0.log" &&
  grep -q "^bandwidth to node 1 .* PASS" "$W/d1.log" && grep -q "^step traffic to node 1 .* PASS .*one step moves" "$W/d1.log"
check "two real doctors: the link probe ran on both (tests/doctor_cluster_test.sh checks its figures)" $?

# 11. Two NCCLs in one process: two (empty) libnccl libraries from two folders, LD_PRELOADed. (Not
# named libnccl.so.2: in a CUDA build one of that soname would stand in for the real NCCL and the
# binary would not start.)
mkdir -p "$W/nccl-a" "$W/nccl-b"
echo "int xy_fake_nccl;" > "$W/nccl.c"
cc -shared -fPIC -Wl,-soname,libnccl-fake.so -o "$W/nccl-a/libnccl-fake.so" "$W/nccl.c" &&
  cc -shared -fPIC -Wl,-soname,libnccl-fake.so -o "$W/nccl-b/libnccl-fake.so" "$W/nccl.c"
check "two fake NCCLs built" $?
NA=$(realpath "$W/nccl-a/libnccl-fake.so"); NB=$(realpath "$W/nccl-b/libnccl-fake.so")
out=$(LD_PRELOAD="$NA:$NB" "$XY" doctor --config "$W/one.toml" 2>&1); rc=$?
echo "$out" | grep -A1 "^one NCCL"
check "two NCCLs: exit 1" $([ $rc -eq 1 ]; echo $?)
grep -q "^one NCCL loaded .* FAIL .*NCCLs loaded in this process: .*$NA" <<< "$out" &&
  grep -q "^one NCCL loaded .* FAIL .*$NB" <<< "$out"
check "two NCCLs: FAIL names both paths" $?
grep -q "fix: one NCCL per process: point LD_LIBRARY_PATH at the NCCL that LibTorch loads .*unset LD_PRELOAD of another libnccl" <<< "$out"
check "two NCCLs: fix text" $?
if [ $CPU_BUILD -eq 1 ]; then
  # The same file twice (once through a symbolic link) is one NCCL; so is a single preloaded one.
  ln -sf "$NA" "$W/nccl-a/libnccl-link.so"
  out=$(LD_PRELOAD="$W/nccl-a/libnccl-link.so:$NA" "$XY" doctor --config "$W/one.toml" 2>&1)
  echo "$out" | grep "^one NCCL"
  grep -q "^one NCCL loaded .* PASS .*libnccl: $NA\$" <<< "$out"; check "one NCCL (loaded through a link too): PASS" $?
  out=$(LD_PRELOAD="$NB" "$XY" doctor --config "$W/one.toml" 2>&1); rc=$?
  grep -q "^one NCCL loaded .* PASS .*libnccl: $NB\$" <<< "$out"; check "one preloaded NCCL: PASS naming it" $?
  check "one preloaded NCCL: exit 0" $([ $rc -eq 0 ]; echo $?)
else
  # A CUDA build has LibTorch's NCCL loaded already: one more is a second NCCL.
  out=$(LD_PRELOAD="$NB" "$XY" doctor --config "$W/one.toml" 2>&1)
  echo "$out" | grep "^one NCCL"
  grep -q "^one NCCL loaded .* FAIL .*2 NCCLs loaded in this process: .*$NB" <<< "$out"
  check "a preloaded NCCL beside LibTorch's: FAIL" $?
fi

# 12. A peer with another CUDA runtime, CUDA driver or NCCL (each alone) fails with the fix.
read -r P0 P1 P2 P3 < <(free_ports 4)
two $P0 $P1 > "$W/two-v.toml"
for kv in "cuda=12.1|CUDA runtime 12.1 on node 1, $(fact cuda) on node 0" \
          "cuda_driver=535.54|CUDA driver 535.54 on node 1, $(fact cuda_driver) on node 0" \
          "nccl=2.18.1|NCCL 2.18.1 on node 1, $(fact nccl) on node 0"; do
  set_kv=${kv%%|*}; want=${kv#*|}
  fake_peer $P1 "$(facts "$set_kv")"
  out=$("$XY" doctor --config "$W/two-v.toml" --node-index 0 --wait 5 2>&1); rc=$?
  kill $FAKE 2>/dev/null; wait $FAKE 2>/dev/null
  echo "$out" | grep -A1 "^same versions"
  check "peer with $set_kv: exit 1" $([ $rc -eq 1 ]; echo $?)
  grep -qF "$want" <<< "$out" && grep -q "^same versions as node 1 .* FAIL" <<< "$out"
  check "peer with $set_kv: FAIL says '$want'" $?
  grep -q "fix: install the same xy build, LibTorch, CUDA runtime, CUDA driver and NCCL on every node" <<< "$out"
  check "peer with $set_kv: fix text" $?
  [ "$(echo "$out" | grep -c FAIL)" -eq 1 ]; check "peer with $set_kv: the only failure" $?
  grep -q "^same transport as node 1 .* SKIP .*did not report its transport settings" <<< "$out" &&
    grep -q "^link probe .* SKIP .*node 1's doctor runs no link probe" <<< "$out"
  check "peer with $set_kv (facts without transport or probe): those rows SKIP" $?
done

# 13. GPU ranks: a CPU build refuses them with the rebuild; a CUDA build probes each GPU.
sed 's/^device = "cpu"/device = "cuda"/' "$W/one.toml" > "$W/cuda.toml"
sed -i 's/^devices = 2/devices = 1/' "$W/cuda.toml"
if [ $CPU_BUILD -eq 1 ]; then
  out=$("$XY" doctor --config "$W/cuda.toml" 2>&1); rc=$?
  echo "$out" | grep -A1 "^versions\|^GPU"
  check "device = cuda in a CPU build: exit 1" $([ $rc -eq 1 ]; echo $?)
  grep -q "^versions .* FAIL .*CUDA runtime none (CPU build).*but topology.device = \"cuda\"" <<< "$out"
  check "device = cuda in a CPU build: versions FAIL" $?
  grep -q "fix: this xy-node was built without CUDA; rebuild with -DXY_CUDA=ON (README: Building with CUDA)" <<< "$out"
  check "device = cuda in a CPU build: rebuild fix text" $?
  grep -q "^GPU visible and responsive .* SKIP" <<< "$out"; check "device = cuda in a CPU build: GPU probe skipped" $?
else
  out=$("$XY" doctor --config "$W/cuda.toml" 2>&1)
  echo "$out" | grep -A1 "^versions\|^GPU"
  grep -q "^versions .* PASS" <<< "$out"; check "device = cuda in a CUDA build: versions PASS" $?
  grep -q "^GPU visible and responsive .* PASS .*1 of [0-9]* visible GPUs answered" <<< "$out"; check "GPU 0 answers" $?
  t0=$(date +%s)
  out=$(XY_DOCTOR_GPU_STALL=0 timeout 60 "$XY" doctor --config "$W/cuda.toml" --gpu-timeout 3 2>&1); rc=$?
  t1=$(date +%s)
  echo "$out" | grep -A1 "^GPU"
  check "hung GPU: exit 1 (not a hang: $rc after $((t1 - t0)) s)" $([ $rc -eq 1 ]; echo $?)
  grep -q "^GPU visible and responsive .* FAIL .*GPU 0 did not finish a small computation .*within 3 s" <<< "$out"
  check "hung GPU: FAIL names the device and the timeout" $?
  grep -q "fix: run \`nvidia-smi\`.*driver.*check CUDA_VISIBLE_DEVICES" <<< "$out"; check "hung GPU: fix text" $?
  sed 's/^devices = 1/devices = 64/' "$W/cuda.toml" > "$W/cuda64.toml"
  out=$("$XY" doctor --config "$W/cuda64.toml" 2>&1)
  echo "$out" | grep -A1 "^GPU"
  grep -q "^GPU visible and responsive .* FAIL .*GPUs visible; topology.nodes\[0\].devices = 64 needs 64" <<< "$out"
  check "too few GPUs: FAIL" $?
fi

# 10. train runs the doctor first and stops on a failure; the flag is named.
out=$(ulimit -n 256; "$XY" train --config "$W/one.toml" 2>&1); rc=$?
echo "$out" | tail -2
check "train with a failing doctor exits 2" $([ $rc -eq 2 ]; echo $?)
grep -q "the preflight checks failed .* pass --no-doctor" <<< "$out"; check "train names --no-doctor" $?

finish

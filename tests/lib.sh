# Shared by the shell tests (source it): counted checks and free local ports.

fail=0; passed=0
# check NAME STATUS: records NAME as passed when STATUS is 0, else as failed.
check() { if [ "$2" -eq 0 ]; then echo "ok: $1"; passed=$((passed + 1)); else echo "FAILED: $1"; fail=$((fail + 1)); fi; }
# finish: prints the counts and exits 0 only if no check failed.
finish() { echo "$passed passed, $fail failed"; [ $fail -eq 0 ]; exit $?; }
# skip WHY: this machine lacks what the test needs (GPUs, a tool): says so and exits 77, which
# CTest reports as Skipped (SKIP_RETURN_CODE 77), never as Passed.
skip() { echo "SKIPPED: $1"; exit 77; }
# need_gpus N: skips unless N or more GPUs are visible: those nvidia-smi lists, limited by
# CUDA_VISIBLE_DEVICES when it is set (an empty value hides them all).
need_gpus() {
  local n; n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    local v; v=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    [ "$v" -lt "$n" ] && n=$v
  fi
  [ "$n" -ge "$1" ] || skip "needs $1 or more GPUs; this machine has $n visible"
}
# free_ports [N]: N (default 1) free TCP ports on 127.0.0.1, ascending, each more than 2 from the
# others (a node's job store listens on its port + 1).
free_ports() { python3 - "${1:-1}" <<'PY'
import socket, sys
ps = set()
while len(ps) < int(sys.argv[1]):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if all(abs(p - q) > 2 for q in ps): ps.add(p)
print(*sorted(ps))
PY
}
# train_test_tokenizer XY_NODE DIR: trains the sample corpus's 8000-piece tokenizer into
# DIR/tokenizer.model (a one-step run of a tiny model, whose checkpoint and logs are removed).
train_test_tokenizer() {
  mkdir -p "$2"
  printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 1\n[data]\nseq_len = 32\n[train]\nsteps = 1\nmicro_batch = 2\nthreads = 1\n[model]\npreset = "custom"\nvocab_size = 8000\nhidden = 32\nintermediate = 64\nlayers = 1\nheads = 4\nmax_seq_len = 64\n[optimizer]\nwarmup_steps = 0\n[control]\ndoctor = false\n' > "$2/tok.toml"
  timeout 300 "$1" train --config "$2/tok.toml" --work-dir "$2" > "$2/tok.log" 2>&1
  local rc=$?
  rm -rf "$2/checkpoints" "$2/metrics.jsonl" "$2/tb"
  return $rc
}

# two_namespaces TAG SUBNET [DECOY_SUBNET [IF0 IF1]]: two machines on one. Makes network namespaces
# $N0 and $N1 (loopback up) joined by a veth pair $L0-$L1 holding SUBNET.1 and SUBNET.2 (/24),
# removed when the script exits; IF0 and IF1 name its ends inside the namespaces (as two machines'
# interfaces, e.g. bond0 and eno1; renamed there, so no name of this machine's is taken). With
# DECOY_SUBNET, each namespace first gets a decoy interface (a veth pair kept inside it, `aadecoy0`
# at DECOY_SUBNET.<n+1>, sorting before the real one) that reaches nothing. Skips (77) without
# root or iproute2, or where namespaces or veth pairs cannot be made. Use only addresses inside them.
two_namespaces() {
  local tag=$1 subnet=$2 decoy=${3:-} n ns
  [ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
  command -v ip >/dev/null || skip "needs iproute2 (ip)"
  N0=${tag}0_$$ N1=${tag}1_$$ L0=${tag}l0_$$ L1=${tag}l1_$$
  trap 'ip netns del "$N0" 2>/dev/null; ip netns del "$N1" 2>/dev/null' EXIT
  ip netns add "$N0" && ip netns add "$N1" || skip "cannot make network namespaces here"
  for n in 0 1; do
    ns=$N0; [ "$n" = 1 ] && ns=$N1
    ip -n "$ns" link set lo up
    if [ -n "$decoy" ]; then
      ip -n "$ns" link add aadecoy0 type veth peer name aadecoy1
      ip -n "$ns" addr add "$decoy.$((n + 1))/24" dev aadecoy0
      ip -n "$ns" link set aadecoy0 up && ip -n "$ns" link set aadecoy1 up
    fi
  done
  ip link add "$L0" type veth peer name "$L1" || skip "cannot make a veth pair here"
  ip link set "$L0" netns "$N0" && ip link set "$L1" netns "$N1"
  if [ -n "${4:-}" ]; then
    ip -n "$N0" link set "$L0" name "$4" && ip -n "$N1" link set "$L1" name "$5" && L0=$4 L1=$5
  fi
  ip -n "$N0" addr add "$subnet.1/24" dev "$L0" && ip -n "$N0" link set "$L0" up
  ip -n "$N1" addr add "$subnet.2/24" dev "$L1" && ip -n "$N1" link set "$L1" up
}

# shape_link RATE: both ends of two_namespaces' link send at most RATE (tc tbf; this kernel has no
# netem), replacing any shaping before; RATE "none" removes it. Non-zero where tc cannot.
shape_link() {
  local n ns dev
  for n in 0 1; do
    ns=$N0 dev=$L0; [ "$n" = 1 ] && ns=$N1 dev=$L1
    if [ "$1" = none ]; then
      ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null
    else
      ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$1" burst 256kb latency 50ms || return 1
    fi
  done
  return 0
}

# counters NS DEV: "tx_bytes tx_packets" of DEV inside NS.
counters() {
  ip netns exec "$1" sh -c "cat /sys/class/net/$2/statistics/tx_bytes /sys/class/net/$2/statistics/tx_packets" | tr '\n' ' '
}

# two_node_job CONFIG WORK LOGS SECRET TIMEOUT [PREFIX1]: runs the two-node job of CONFIG with the
# xy-node in $XY, node n in the namespace two_namespaces made for it, `--work-dir WORKn`, its output in LOGS/nN.log; PREFIX1
# (shell) runs in node 1's shell before it enters its namespace (a cgroup). Prints the bytes and
# packets each node sent on the link meanwhile ("bytes0 packets0 bytes1 packets1"); returns the
# first non-zero exit code of the two nodes.
two_node_job() {
  local config=$1 work=$2 logs=$3 secret=$4 limit=$5 prefix1=${6:-} b0 b1 a0 a1 pids=() rc=0 n ns pre
  b0=$(counters "$N0" "$L0") b1=$(counters "$N1" "$L1")
  for n in 0 1; do
    ns=$N0 pre=""; [ $n = 1 ] && ns=$N1 pre=$prefix1
    sh -c "${pre}exec ip netns exec $ns env XY_NODE_INDEX=$n XY_SECRET=$secret timeout $limit \"$XY\" train --config \"$config\" --work-dir \"$work$n\"" > "$logs/n$n.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[0]}" || rc=$?
  wait "${pids[1]}" || { local r=$?; [ $rc -ne 0 ] || rc=$r; }
  a0=$(counters "$N0" "$L0") a1=$(counters "$N1" "$L1")
  read -r x0 y0 <<< "$b0"; read -r u0 v0 <<< "$a0"; read -r x1 y1 <<< "$b1"; read -r u1 v1 <<< "$a1"
  echo "$((u0 - x0)) $((v0 - y0)) $((u1 - x1)) $((v1 - y1))"
  return $rc
}

# two_node_topology SUBNET PORT [DEVICES [SHARD]]: the [topology] table of a two-node CPU job,
# DEVICES ranks (default 1) at SUBNET.1 and as many at SUBNET.2 (the addresses two_namespaces
# gives), both on PORT, sharded SHARD (default "global").
two_node_topology() {
  printf '[topology]\ndevice = "cpu"\nshard = "%s"\n[[topology.nodes]]\nhost = "%s.1"\nport = %s\ndevices = %s\n[[topology.nodes]]\nhost = "%s.2"\nport = %s\ndevices = %s\n' \
    "${4:-global}" "$1" "$2" "${3:-1}" "$1" "$2" "${3:-1}"
}

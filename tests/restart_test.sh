#!/usr/bin/env bash
# Automatic restart (xy-node train --restarts N, docs/OPERATIONS.md): a two-node job (two processes,
# one CPU rank each, one checkpoint directory) meets a fault at step 5 — a skipped collective, a
# sleeping rank, a killed node (SIGKILL) or a frozen node (SIGSTOP) — and every node's supervisor
# starts it again from `latest`; the job finishes, its final parameters are bitwise those of an
# uninterrupted run of the same world size, and metrics.jsonl holds every step exactly once and
# the restart. One case per run; every process runs under `timeout`, so a hang fails the test.
# usage: restart_test.sh XY_NODE WORK_DIR CASE   (run from the repository root)
#   CASE: setup (tokenizer + the uninterrupted reference run) | skip-collective | sleep-compute |
#         kill-node | stop-node | supervisor-killed (the engine does not outlive its supervisor)
set -uo pipefail
XY=$1
ROOT=$2
CASE=$3
W="$ROOT/$CASE"
D=3    # every operation's deadline in these runs (step 1: 3x)
HB=3   # control.heartbeat_s
STEPS=12
source "$(dirname "$0")/lib.sh"

config() {  # config P0 P1
  cat <<EOF
[topology]
device = "cpu"
shard = "global"  # both nodes write their rank file (node sharding: node 0 writes the node's)
[[topology.nodes]]
host = "127.0.0.1"
port = $1
devices = 1
[[topology.nodes]]
host = "127.0.0.1"
port = $2
devices = 1
[model]
preset = "custom"
vocab_size = 8000
hidden = 64
intermediate = 160
layers = 2
heads = 4
kv_heads = 2
max_seq_len = 64
[data]
seq_len = 32
tokenizer = "$ROOT/setup/tokenizer.model"
[train]
steps = $STEPS
micro_batch = 2
log_every = 1
threads = 1
[optimizer]
warmup_steps = 1
[actors]
adam_threads = 1
[deadlines]
collective_s = $((D * 4))
compute_s = $D
optimizer_s = $D
batch_s = $D
checkpoint_s = $D
first_step_factor = 3
poll_ms = 50
[checkpoint]
dir = "$W/checkpoints"
every_steps = 3
keep_last = 10
[control]
heartbeat_s = $HB
doctor = false
EOF
}

# run_job NAME RESTARTS FAULT_NODE FAULT: both nodes under `timeout`; waits for both; rc in RC0 RC1
run_job() {
  local name=$1 restarts=$2 fnode=$3 fault=$4 n f pids=()
  for n in 0 1; do
    f=""; [ "$n" = "$fnode" ] && f="$fault"
    XY_NODE_INDEX=$n XY_FAULT="$f" timeout 240 "$XY" train --config "$W/job.toml" --work-dir "$W/node$n" \
      --restarts "$restarts" --restart-backoff 0.5 > "$W/$name-n$n.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[0]}"; RC0=$?
  wait "${pids[1]}"; RC1=$?
}

# The final checkpoint's rank files, by SHA-256 (the parameters, master, m and v of every rank).
final_sums() { (cd "$1/step-$(printf %08d $STEPS)" && sha256sum rank-*.bin); }

rm -rf "$W" && mkdir -p "$W"
read -r P0 P1 < <(free_ports 2)
config "$P0" "$P1" > "$W/job.toml"
case "$CASE" in
setup)
  # The tokenizer for every case, then the uninterrupted reference run of the same job.
  train_test_tokenizer "$XY" "$W"
  check "the tokenizer is trained" $?
  run_job ref 0 -1 ""
  check "the uninterrupted two-node run exits 0 on both nodes ($RC0, $RC1)" $([ $RC0 -eq 0 ] && [ $RC1 -eq 0 ]; echo $?)
  final_sums "$W/checkpoints" > "$ROOT/reference.sha256"
  check "its final checkpoint has both rank files" $([ "$(wc -l < "$ROOT/reference.sha256")" -eq 2 ]; echo $?)
  n=$(grep -c '"grad_norm":' "$W/node0/metrics.jsonl")
  check "its metrics.jsonl has $STEPS step lines (got $n)" $([ "$n" -eq $STEPS ]; echo $?)
  finish ;;
supervisor-killed)
  # Node 0 alone: its engine waits for node 1 at the rendezvous; the supervisor is SIGKILLed.
  XY_NODE_INDEX=0 "$XY" train --config "$W/job.toml" --work-dir "$W/node0" --restarts 2 > "$W/sup.log" 2>&1 &
  sup=$!
  eng=""
  for i in $(seq 1 100); do eng=$(pgrep -P "$sup" | head -1); [ -n "$eng" ] && break; sleep 0.1; done
  check "the supervisor runs the engine as its child (pid ${eng:-none})" $([ -n "$eng" ]; echo $?)
  sleep 1
  kill -9 "$sup"; wait "$sup" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$eng" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$eng" 2>/dev/null; check "the engine ended with its supervisor" $?
  [ -n "$eng" ] && kill -9 "$eng" 2>/dev/null
  finish ;;
skip-collective) fnode=1; F="skip-collective:rank=1,seq=60"; want="exit 3" ;;
sleep-compute) fnode=1; F="sleep-compute:rank=1,step=5,unit=1"; want="exit 3" ;;
kill-node) fnode=1; F="kill-node:rank=1,step=5"; want="killed by signal 9" ;;
stop-node) fnode=1; F="stop-node:rank=1,step=5"; want="a frozen node" ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac

[ -f "$ROOT/reference.sha256" ] || { echo "run the setup case first"; exit 1; }
run_job job 2 "$fnode" "$F"
for n in 0 1; do grep -v '^step ' "$W/job-n$n.log" | grep -v '^             ' | tail -8; done
check "both nodes finish after the restart ($RC0, $RC1)" $([ $RC0 -eq 0 ] && [ $RC1 -eq 0 ]; echo $?)
grep -q "fault injection: .* fires" "$W/job-n$fnode.log"; check "the fault fired on node $fnode" $?
grep -q "restart 1 of 2 from .*step-0000000[0-9]" "$W/job-n0.log"; check "node 0 restarted from a checkpoint" $?
grep -q "restart 1 of 2 from .*step-0000000[0-9]" "$W/job-n1.log"; check "node 1 restarted from a checkpoint" $?
grep -q "$want" "$W/job-n$fnode.log"; check "node $fnode's supervisor says why: $want" $?
final_sums "$W/checkpoints" > "$W/final.sha256"
diff "$ROOT/reference.sha256" "$W/final.sha256"
check "the final parameters, master, m and v are bitwise those of the uninterrupted run" $?
python3 - "$W/node0/metrics.jsonl" "$STEPS" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l["step"] for l in lines if "loss" in l and "eval" not in l]
restarts = [l for l in lines if l.get("event") == "restart"]
print("metrics.jsonl: %d lines, steps %s, %d restart(s): %s" % (len(lines), steps, len(restarts),
      [r["reason"] for r in restarts]))
ok = steps == list(range(1, int(sys.argv[2]) + 1)) and len(restarts) == 1
sys.exit(0 if ok else 1)
PY
check "metrics.jsonl holds every step once, in order, and the restart" $?
finish

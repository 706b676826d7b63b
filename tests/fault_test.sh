#!/usr/bin/env bash
# Injected faults end the job with the documented exit code and a report naming the culprit, within
# (deadline + 5 s) of the fault (docs/OPERATIONS.md). One case per run, so that CTest shows one
# test per fault; every process runs under `timeout` so that a hang fails the test, never CI.
# usage: fault_test.sh XY_NODE WORK_DIR CASE [DEVICE]   (run from the repository root)
#   DEVICE: cpu (default; Gloo) or cuda (NCCL, label gpu: the stuck collectives are also aborted,
#   and with two nodes each process sees one GPU of its own through CUDA_VISIBLE_DEVICES)
#   CASE: setup | skip-collective | sleep-compute | reorder | block-batch | block-adam |
#         block-checkpoint | block-watchdog | cross-node-stall | cross-node-stall0 | kill-node |
#         stop-node | stop-node0 |
#         secret-wrong | secret-missing | forged-stall
set -uo pipefail
XY=$1
ROOT=$2
CASE=$3
DEVICE=${4:-cpu}
W="$ROOT/$CASE"
[ "$DEVICE" = cpu ] || W="$ROOT/$CASE-$DEVICE"
D=3   # the deadline of every operation kind in these runs (step 1: 3x)
HB=3  # control.heartbeat_s
source "$(dirname "$0")/lib.sh"
# On GPUs every case runs two ranks, one GPU each.
[ "$DEVICE" = cuda ] && need_gpus 2

# A small model; every deadline D seconds; tokenizer shared by all cases (made by `setup`).
body() {  # body TOKENIZER_LINE
  cat <<EOF
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
$1
[train]
steps = ${STEPS:-12}
micro_batch = 2
log_every = 1
threads = 1
[optimizer]
warmup_steps = 1
[actors]
adam_threads = 1
[deadlines]
collective_s = ${COLL:-$D}
compute_s = $D
optimizer_s = $D
batch_s = $D
checkpoint_s = $D
first_step_factor = 3
poll_ms = 50
[checkpoint]
every_steps = 3
[control]
heartbeat_s = $HB
doctor = false
EOF
}
one_node() {  # a job of one process with two ranks
  printf '[topology]\ndevice = "%s"\n' "$DEVICE"
  printf '[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 2\n'
  body "tokenizer = \"$ROOT/setup/tokenizer.model\""
}
two_nodes() {  # two processes, one rank each
  printf '[topology]\ndevice = "%s"\n' "$DEVICE"
  printf '[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\ndevices = 1\n' "$P0"
  printf '[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\ndevices = 1\n' "$P1"
  body "tokenizer = \"$ROOT/setup/tokenizer.model\""
}

# start NAME [env...] -- args: runs xy-node in the background (pid in PID_<NAME>), log in $W/NAME.log
start() {
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  env "${envs[@]}" timeout 120 "$XY" train "$@" > "$W/$name.log" 2>&1 &
  eval "PID_$name=$!"
}
# fired_at LOG: waits until the log says the fault fired (or the process ended); prints epoch secs
fired_at() {
  local i
  for i in $(seq 1 900); do
    grep -q "fault injection: .* fires\|issues the collective after" "$1" 2>/dev/null && break
    sleep 0.1
  done
  date +%s.%N
}
within() {  # within START END LIMIT
  python3 -c "import sys; d = $2 - $1; print('took %.1f s after the fault (limit %s s)' % (d, $3)); sys.exit(0 if d <= $3 else 1)"
}

rm -rf "$W" && mkdir -p "$W"
case "$CASE" in
setup)
  # Trains the shared tokenizer once (and checks that a fault-free run passes with these deadlines).
  printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 2\n' > "$W/job.toml"
  STEPS=4 body "work_dir = \"$W\"" >> "$W/job.toml"
  timeout 300 "$XY" train --config "$W/job.toml" --work-dir "$W" > "$W/run.log" 2>&1
  check "fault-free run with ${D} s deadlines exits 0" $?
  test -f "$W/tokenizer.model"; check "tokenizer trained" $?
  out=$(XY_FAULT="sleep-compute:rank=1;bogus:step=2" "$XY" train --config "$W/job.toml" --work-dir "$W" 2>&1); rc=$?
  echo "$out" | tail -1
  check "a bad XY_FAULT exits 2" $([ $rc -eq 2 ]; echo $?)
  grep -q "XY_FAULT: fault injection: unknown fault 'bogus'; valid: block-adam, " <<< "$out"; check "... naming the fault and the valid ones" $?
  tail -3 "$W/run.log"
  finish ;;
skip-collective|sleep-compute|reorder|block-batch|block-adam|block-checkpoint|block-watchdog)
  one_node > "$W/job.toml"
  case "$CASE" in
    skip-collective) F="skip-collective:rank=1,seq=30"; want_rc=3
      want=("CULPRIT: rank 1 (node 0, 127.0.0.1:0) has not issued collective #30" "not issued by ranks \[1\]") ;;
    sleep-compute) F="sleep-compute:rank=1,step=4,unit=1"; want_rc=3
      want=("CULPRIT: rank 1 (node 0, 127.0.0.1:0): forward of unit 1 (step 4)") ;;
    reorder) F="reorder:rank=1,seq=30"; want_rc=3; want=("CULPRIT: ORDER MISMATCH") ;;
    block-batch) F="block-batch:rank=1,step=6"; want_rc=3
      want=("CULPRIT: rank 1 (node 0, 127.0.0.1:0): batch-read (step 6)") ;;
    block-adam) F="block-adam:rank=1,step=4,unit=2"; want_rc=3
      want=("CULPRIT: rank 1 (node 0, 127.0.0.1:0): adam of unit 2 (step 4)" "collective #[0-9]*: issued by ranks \[0\]; not issued by ranks \[1\]") ;;
    block-checkpoint) F="block-checkpoint:step=3"; want_rc=3
      want=("STALL: node 0: checkpoint (step 3)" "CULPRIT: node 0: checkpoint (step 3)") ;;
    block-watchdog) F="block-watchdog"; want_rc=5; want=("the watchdog has not run for") ;;
  esac
  if [ "$CASE" = block-adam ]; then  # this one from the config's [faults] table
    printf '[faults]\ninject = "%s"\n' "$F" >> "$W/job.toml"
    start n0 XY_FAULT= -- --config "$W/job.toml" --work-dir "$W/node0"
  else
    start n0 "XY_FAULT=$F" -- --config "$W/job.toml" --work-dir "$W/node0"
  fi
  t0=$(fired_at "$W/n0.log")
  wait "$PID_n0"; rc=$?
  t1=$(date +%s.%N)
  cat "$W/n0.log" | grep -v '^step ' | tail -25
  check "exit code $want_rc (got $rc)" $([ $rc -eq $want_rc ]; echo $?)
  limit=$((D + 5)); [ "$CASE" = block-watchdog ] && limit=$((10 + 5))
  within "$t0" "$t1" $limit; check "ended within the deadline + 5 s" $?
  report="$W/node0/stall-report.txt"
  [ "$CASE" = block-watchdog ] && report="$W/n0.log"
  for p in "${want[@]}"; do grep -q -- "$p" "$report"; check "report says: $p" $?; done
  if [ "$DEVICE" = cuda ] && [ $want_rc -eq 3 ]; then
    grep -q "NCCL communicator aborted" "$W/n0.log"; check "the NCCL communicators were aborted" $?
  fi
  if [ "$CASE" = reorder ]; then
    n=$(sed -n 's/.*issues the collective after #\([0-9]*\) in its place.*/\1/p' "$W/n0.log")
    grep -q "issued collective #$n differently" "$report"; check "report names collective #$n" $?
  fi
  finish ;;
cross-node-stall|cross-node-stall0|kill-node|stop-node|stop-node0)
  read -r P0 P1 < <(free_ports 2)
  COLL=$((D * 4)) two_nodes > "$W/job.toml"
  case "$CASE" in
    cross-node-stall) F="sleep-compute:rank=1,step=4,unit=1"; fnode=1; want_rc=3; limit=$((D + 5)) ;;
    cross-node-stall0) F="sleep-compute:rank=0,step=4,unit=1"; fnode=0; want_rc=3; limit=$((D + 5)) ;;
    kill-node) F="kill-node:rank=1,step=4"; fnode=1; want_rc=4; limit=$((HB + 5)) ;;
    stop-node) F="stop-node:rank=1,step=4"; fnode=1; want_rc=4; limit=$((HB + 5)) ;;
    stop-node0) F="stop-node:rank=0,step=4"; fnode=0; want_rc=4; limit=$((HB + 5)) ;;
  esac
  f0="XY_FAULT="; f1="XY_FAULT="; [ $fnode -eq 0 ] && f0="XY_FAULT=$F"; [ $fnode -eq 1 ] && f1="XY_FAULT=$F"
  g0="XY_GPU=any"; g1="XY_GPU=any"  # with GPUs, one each
  [ "$DEVICE" = cuda ] && { g0="CUDA_VISIBLE_DEVICES=0"; g1="CUDA_VISIBLE_DEVICES=1"; }
  start n0 XY_NODE_INDEX=0 "$f0" "$g0" -- --config "$W/job.toml" --work-dir "$W/node0"
  start n1 XY_NODE_INDEX=1 "$f1" "$g1" -- --config "$W/job.toml" --work-dir "$W/node1"
  t0=$(fired_at "$W/n$fnode.log")
  other=$((1 - fnode))
  eval "opid=\$PID_n$other"; eval "fpid=\$PID_n$fnode"
  wait "$opid"; rc=$?
  t1=$(date +%s.%N)
  grep -v '^step ' "$W/n$other.log" | tail -20
  within "$t0" "$t1" $limit; check "node $other ended within the limit" $?
  check "node $other exit code $want_rc (got $rc)" $([ $rc -eq $want_rc ]; echo $?)
  rep="$W/node$other/stall-report.txt"
  case "$CASE" in
    cross-node-stall)
      if [ "$DEVICE" = cuda ]; then
        grep -q "NCCL communicator aborted" "$W/n0.log"; check "node 0 aborted its NCCL communicator" $?
      fi
      wait "$fpid"; rc1=$?
      check "node 1 exit code 3 too (got $rc1)" $([ $rc1 -eq 3 ]; echo $?)
      for r in "$W/node0/stall-report.txt" "$W/node1/stall-report.txt"; do
        grep -q "CULPRIT: rank 1 (node 1, 127.0.0.1:$P1): forward of unit 1 (step 4)" "$r"; check "$(basename $(dirname $r)) report names rank 1 on node 1" $?
        grep -q "in forward of unit 1 (step 4)" "$r"; check "$(basename $(dirname $r)) report names the operation" $?
        grep -q "node 0 (127.0.0.1:$P0): reported" "$r" && grep -q "node 1 (127.0.0.1:$P1): reported" "$r"
        check "$(basename $(dirname $r)) report has both nodes' registries" $?
      done ;;
    cross-node-stall0)  # the culprit's node serves the store: the other must still get the report
      wait "$fpid"; rc0=$?
      check "node 0 exit code 3 too (got $rc0)" $([ $rc0 -eq 3 ]; echo $?)
      for r in "$W/node0/stall-report.txt" "$W/node1/stall-report.txt"; do
        grep -q "CULPRIT: rank 0 (node 0, 127.0.0.1:$P0): forward of unit 1 (step 4)" "$r"; check "$(basename $(dirname $r)) report names rank 0 on node 0" $?
        grep -q "node 1 (127.0.0.1:$P1): reported" "$r"; check "$(basename $(dirname $r)) report has node 1's registry" $?
      done ;;
    kill-node)
      wait "$fpid"; rc1=$?
      check "node 1 was killed (137, got $rc1)" $([ $rc1 -eq 137 ]; echo $?)
      grep -q "PEER LOST: node 1 (127.0.0.1:$P1)" "$rep"; check "report names node 1" $? ;;
    stop-node)
      grep -q "PEER LOST: node 1 (127.0.0.1:$P1) sent no heartbeat" "$rep"; check "report names the frozen node 1" $?
      pkill -CONT -P "$fpid"; wait "$fpid"; rc1=$?  # xy-node is the child of `timeout`
      check "node 1, continued, ends with 4 too (got $rc1)" $([ $rc1 -eq 4 ]; echo $?) ;;
    stop-node0)
      grep -q "PEER LOST: node 0 (127.0.0.1:$P0), which serves the job's store, has not answered" "$rep"
      check "report names the frozen node 0" $?
      pkill -KILL -P "$fpid"; wait "$fpid" 2>/dev/null ;;
  esac
  finish ;;
secret-wrong|secret-missing)
  read -r P0 P1 < <(free_ports 2)
  two_nodes > "$W/job.toml"
  s1="XY_SECRET=not-the-secret"; [ "$CASE" = secret-missing ] && s1="XY_SECRET="
  start n0 XY_NODE_INDEX=0 XY_SECRET=the-job-secret-1234 -- --config "$W/job.toml" --work-dir "$W/node0"
  start n1 XY_NODE_INDEX=1 "$s1" -- --config "$W/job.toml" --work-dir "$W/node1"
  wait "$PID_n0"; rc0=$?
  wait "$PID_n1"; rc1=$?
  cat "$W/n0.log" "$W/n1.log" | grep -v '^step '
  check "node 0 refuses (exit 2, got $rc0)" $([ $rc0 -eq 2 ]; echo $?)
  check "node 1 is refused (exit 2, got $rc1)" $([ $rc1 -eq 2 ]; echo $?)
  grep -q "refused node 1 (127.0.0.1:$P1): it presented a wrong or missing job secret" "$W/n0.log"; check "node 0 says whom it refused and why" $?
  grep -q "does not know this job's secret\|refused this node: wrong or missing job secret" "$W/n1.log"; check "node 1 says it was refused" $?
  ! grep -q "the-job-secret-1234\|not-the-secret" "$W/n0.log" "$W/n1.log"; check "the secret is never printed" $?
  ! grep -q "^step " "$W/n0.log"; check "no training happened" $?
  finish ;;
forged-stall)
  # A stranger without the job's secret tries to end a running job through its store (node 0's
  # port + 1): with c10d's own protocol (add "/xy/stall": what once ended a job with 3 and 4), then
  # with xy's, claiming to be node 1 but proving nothing. The job must finish; node 0 logs both.
  read -r P0 P1 < <(free_ports 2)
  STEPS=40 two_nodes > "$W/job.toml"
  start n0 XY_NODE_INDEX=0 XY_SECRET=the-job-secret-1234 -- --config "$W/job.toml" --work-dir "$W/node0"
  start n1 XY_NODE_INDEX=1 XY_SECRET=the-job-secret-1234 -- --config "$W/job.toml" --work-dir "$W/node1"
  for i in $(seq 1 900); do grep -q "^step " "$W/n0.log" 2>/dev/null && break; sleep 0.1; done
  python3 - "$((P0 + 1))" > "$W/stranger.log" 2>&1 <<'PY'
import os, socket, struct, sys
port = int(sys.argv[1])
def attempt(what, hello, then=b""):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(hello)
        got = s.recv(69)
        if then:
            s.sendall(then)
            got += s.recv(1)
            s.sendall(struct.pack(">I", 18) + b"\x01" + struct.pack(">I", 8) + b"xy/stall" + struct.pack(">I", 1) + b"1")
            got += s.recv(16)
        print(what, "->", got[:8], "(%d bytes)" % len(got))
    except OSError as e:
        print(what, "->", e)
for key in (b"/xy/stall", b"xy/stall"):  # c10d TCPStore (LibTorch 1.13): QueryType ADD, key, 1
    attempt("c10d add " + key.decode(), bytes([3]) + struct.pack("<Q", len(key)) + key + struct.pack("<q", 1))
attempt("xy store, no proof", b"XYS1" + b"\0" + os.urandom(32) + bytes([6]) + b"node 1", b"\0" * 32)
PY
  cat "$W/stranger.log"
  kill -0 "$PID_n0" 2>/dev/null && kill -0 "$PID_n1" 2>/dev/null
  check "the job was still running when the stranger was done" $?
  wait "$PID_n0"; rc0=$?
  wait "$PID_n1"; rc1=$?
  cat "$W/n0.log" "$W/n1.log" | grep -v '^step '
  check "node 0 finishes (exit 0, got $rc0)" $([ $rc0 -eq 0 ]; echo $?)
  check "node 1 finishes (exit 0, got $rc1)" $([ $rc1 -eq 0 ]; echo $?)
  grep -q "xy: store: refused a connection from 127.0.0.1:[0-9]*: not an xy store client" "$W/n0.log"
  check "node 0 logs the refused c10d client" $?
  grep -q "xy: store: refused a connection from 127.0.0.1:[0-9]* (says it is node 1): wrong or missing job secret" "$W/n0.log"
  check "node 0 logs the stranger that said it was node 1" $?
  ! grep -q "STALL\|PEER LOST" "$W/n0.log" "$W/n1.log"; check "no stall, no lost peer" $?
  grep -q "^step    40 " "$W/n0.log"; check "the job trained every step" $?
  finish ;;
*) echo "unknown case $CASE"; exit 2 ;;
esac

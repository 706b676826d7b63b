#!/usr/bin/env bash
# Node sharding (topology.shard = "node", HSDP) is exact: two machines of two CPU ranks each, each
# machine a network namespace joined by a veth pair, train 20 steps sharded over each node's ranks
# and replicated across the nodes, and again sharded over all four ranks (global); both must equal
# one process with one rank and the same global batch (micro-batch 8) to 1e-6: every step's loss
# and every final parameter (exported in fp32, compared by tests/compare_safetensors.py; see the
# note on eps below). Also:
# node sharding with the delayed update against one rank with it;
# node sharding's checkpoint is one layout (node 0 writes the node's 2 shard files, node 1 none;
# the manifest says 4 data ranks), and it resumes under global sharding on 4 ranks, exactly.
# Needs root (CI runs as root); skipped (77) when network namespaces cannot be made. Only addresses
# inside the namespaces made here are used, and they are removed at the end.
# usage: node_shard_test.sh XY_NODE WORK_DIR [cuda]   (run from the repository root)
#   cuda (label gpu; an even number N >= 2 of GPUs): over NCCL, two processes on 127.0.0.1 of N/2
#   GPUs each (CUDA_VISIBLE_DEVICES) against one process of N GPUs (micro-batch 2 everywhere),
#   with eps = 1e-3 only; skipped (77) with fewer GPUs.
set -uo pipefail
XY=$1
W=$2
DEVICE=${3:-cpu}
HERE=$(dirname "$0")
source "$HERE/lib.sh"
rm -rf "$W" && mkdir -p "$W"
if [ "$DEVICE" = cuda ]; then
  need_gpus 2
  N=$(nvidia-smi -L | grep -c '^GPU ')
  PER=$((N / 2)) REF_DEVICES=$((2 * (N / 2))) REF_MB=2 EPSES="1e-3"
  ENV0=(CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((PER - 1)))) ENV1=(CUDA_VISIBLE_DEVICES=$(seq -s, $PER $((2 * PER - 1))))
  read -r P0 P1 < <(free_ports 2)
  HOST0=127.0.0.1 HOST1=127.0.0.1
else
  PER=2 REF_DEVICES=1 REF_MB=8 EPSES="1e-8 1e-3"
  ENV0=() ENV1=()
  two_namespaces xyh 10.231.9
  P0=29700 P1=29700 HOST0=10.231.9.1 HOST1=10.231.9.2
fi
train_test_tokenizer "$XY" "$W/tok"
check "the tokenizer is trained" $?

# body STEPS CKPT_DIR: the job's tables after [topology].
body() {
  cat <<EOF
[model]
preset = "custom"
vocab_size = 8000
hidden = 64
intermediate = 172
layers = 2
heads = 4
max_seq_len = 32
[data]
seq_len = 32
tokenizer = "$W/tok/tokenizer.model"
[train]
steps = $1
micro_batch = MB
precision = "fp32"
log_every = 1
threads = 1
[optimizer]
warmup_steps = 2
eps = $EPS
delayed_update = ${DELAYED:-false}
[checkpoint]
dir = "$2"
every_steps = 10
[control]
doctor = false
EOF
}

# cluster NAME SHARD STEPS [RESUME]: the two-node job (2 ranks each, micro-batch 2 per rank).
cluster() {
  local name=$1 shard=$2 steps=$3 resume=${4:-} dir="$W/$1" pids=() rc=0 n ns
  mkdir -p "$dir"
  { printf '[topology]\ndevice = "%s"\nshard = "%s"\n' "$DEVICE" "$shard"
    printf '[[topology.nodes]]\nhost = "%s"\nport = %s\ndevices = %s\n' "$HOST0" "$P0" "$PER" "$HOST1" "$P1" "$PER"
    body "$steps" "$dir/ckpt" | sed 's/= MB/= 2/'; } > "$dir/job.toml"
  for n in 0 1; do
    local in=()
    if [ "$DEVICE" = cuda ]; then
      [ $n = 0 ] && in=(env "${ENV0[@]}") || in=(env "${ENV1[@]}")
    else
      ns=$N0; [ $n = 1 ] && ns=$N1
      in=(ip netns exec "$ns")
    fi
    "${in[@]}" env XY_NODE_INDEX=$n XY_SECRET=node-shard-test \
      timeout 300 "$XY" train --config "$dir/job.toml" --work-dir "$dir/w$n" ${resume:+--resume "$resume"} > "$dir/n$n.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[0]}" || rc=$?
  wait "${pids[1]}" || rc=$?
  [ $rc -eq 0 ] || { echo "$name failed (exit $rc):" >&2; tail -n 5 "$dir"/n0.log "$dir"/n1.log >&2; }
  return $rc
}

# losses METRICS: "step loss" per training step, from node 0's metrics.jsonl (full precision).
losses() {
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    if "event" not in j and "eval" not in j and "loss" in j:
        print(j["step"], repr(j["loss"]))' "$1"
}
# same_losses A B: every step's loss within 1e-6 relative.
same_losses() {
  python3 - "$1" "$2" <<'PY'
import sys
a = dict(l.split() for l in open(sys.argv[1]))
b = dict(l.split() for l in open(sys.argv[2]))
common = [s for s in b if s in a]
worst = max((abs(float(a[s]) - float(b[s])) / abs(float(a[s])) for s in common), default=1)
print(f"  {len(common)} steps; largest relative loss difference {worst:.3g}")
sys.exit(0 if common and len(common) == len(b) and worst <= 1e-6 else 1)
PY
}
# reference NAME: the one-process reference in $W/NAME (20 steps; on CPU one rank of micro-batch 8
# = 2 nodes x 2 ranks x 2, on GPUs all N GPUs of micro-batch 2); its losses in $W/NAME.losses.
reference() {
  local d="$W/$1" rc
  mkdir -p "$d"
  { printf '[topology]\ndevice = "%s"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = %s\n' "$DEVICE" "$REF_DEVICES"
    body 20 "$d/ckpt" | sed "s/= MB/= $REF_MB/"; } > "$d/job.toml"
  timeout 300 "$XY" train --config "$d/job.toml" --work-dir "$d/w" > "$d/log" 2>&1
  rc=$?
  losses "$d/w/metrics.jsonl" > "$W/$1.losses"
  return $rc
}
export_fp32() { "$XY" export "$1" --out "$2" --dtype fp32 > /dev/null 2>&1; }

# Twice: with AdamW's usual eps (1e-8) the losses are compared; the parameters are not, because
# Adam's normalisation turns a rounding-level difference in a gradient element that sums to about
# zero into a step of +-lr (at the first step the update is lr x sign(g)), so no two summation
# orders agree there to 1e-6 -- one rank against four under global sharding no more than under node
# sharding (printed, for the record). With eps = 1e-3 the update stays proportional to such small
# gradients, and the parameters are compared to 1e-6 too.
for EPS in $EPSES; do
  reference "one$EPS"
  check "eps $EPS: the one-rank reference runs" $?
  export_fp32 "$W/one$EPS/ckpt/step-00000020" "$W/one$EPS/hf"
  check "eps $EPS: the reference exports" $?
  for shard in node global; do
    run=$shard$EPS
    cluster "$run" "$shard" 20
    check "$run: the two-node job of 2 x $PER ranks runs" $?
    grep -q "xy: sharding $shard (topology.shard = \"$shard\")" "$W/$run/n0.log"
    check "$run: node 0 says how it shards" $?
    grep -q "\"event\":\"start\".*\"shard\":\"$shard\"" "$W/$run/w0/metrics.jsonl" ||
      grep -q "\"shard\":\"$shard\".*\"event\":\"start\"" "$W/$run/w0/metrics.jsonl"
    check "$run: the metrics log's start event records it" $?
    losses "$W/$run/w0/metrics.jsonl" > "$W/$run.losses"
    echo "$shard, eps $EPS, vs one rank:"
    same_losses "$W/one$EPS.losses" "$W/$run.losses"
    check "$run: every step's loss equals the one-rank run's (1e-6)" $?
    export_fp32 "$W/$run/ckpt/step-00000020" "$W/$run/hf"
    check "$run: exports" $?
    if [ "$EPS" = 1e-3 ]; then
      python3 "$HERE/compare_safetensors.py" "$W/one$EPS/hf" "$W/$run/hf" --rtol 1e-6
      check "$run: every final parameter equals the one-rank run's (1e-6)" $?
    else
      python3 "$HERE/compare_safetensors.py" "$W/one$EPS/hf" "$W/$run/hf" --rtol 1 | sed 's/^/  (for the record) /'
    fi
  done
done

# The delayed update (the optimizer of step s runs during step s + 1's forward, which computes with
# the parameters of step s - 1): node sharding against one rank with it, eps 1e-3.
EPS=1e-3 DELAYED=true
reference one-delayed
check "delayed update: the one-rank reference runs" $?
cluster node-delayed node 20
check "delayed update: the node-sharded job runs" $?
losses "$W/node-delayed/w0/metrics.jsonl" > "$W/node-delayed.losses"
echo "node, delayed update, vs one rank:"
same_losses "$W/one-delayed.losses" "$W/node-delayed.losses"
check "delayed update: every step's loss equals the one-rank run's (1e-6)" $?
export_fp32 "$W/one-delayed/ckpt/step-00000020" "$W/one-delayed/hf" &&
  export_fp32 "$W/node-delayed/ckpt/step-00000020" "$W/node-delayed/hf" &&
  python3 "$HERE/compare_safetensors.py" "$W/one-delayed/hf" "$W/node-delayed/hf" --rtol 1e-6
check "delayed update: every final parameter equals the one-rank run's (1e-6)" $?
DELAYED=false

# One layout: node 0 wrote its node's two shards, node 1 nothing; four data ranks.
ls "$W/node1e-3/ckpt/step-00000020/" | grep -c '^rank-' | grep -qx "$PER"
check "node sharding's checkpoint holds the node's $PER shard files" $?
grep -q "\"data_ranks\": $((2 * PER))" "$W/node1e-3/ckpt/step-00000020/manifest.json" && grep -q "\"world_size\": $PER" "$W/node1e-3/ckpt/step-00000020/manifest.json"
check "its manifest: world_size $PER (shards), data_ranks $((2 * PER))" $?
# ... and resumes under global sharding (4 shards) from step 10 to the same end.
cluster resumed global 20 "$W/node1e-3/ckpt/step-00000010"
check "node sharding's step-10 checkpoint resumes under global sharding" $?
losses "$W/resumed/w0/metrics.jsonl" > "$W/resumed.losses"
[ "$(head -c 3 "$W/resumed.losses")" = "11 " ]
check "the resumed job starts at step 11" $?
echo "resumed vs one rank:"
same_losses "$W/one1e-3.losses" "$W/resumed.losses"
check "resumed across shardings: steps 11-20's losses equal the one-rank run's (1e-6)" $?
export_fp32 "$W/resumed/ckpt/step-00000020" "$W/resumed/hf" &&
  python3 "$HERE/compare_safetensors.py" "$W/one1e-3/hf" "$W/resumed/hf" --rtol 1e-6
check "resumed across shardings: the final parameters equal the one-rank run's (1e-6)" $?
finish

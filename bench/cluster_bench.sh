#!/usr/bin/env bash
# Two machines over Ethernet, on one box: each node of a two-node CPU job (one rank each) runs in
# its own network namespace, joined by a veth pair shaped with tc tbf (both ends; this kernel has
# no netem) to 1 and 10 Gbit/s.
#
# 1. Sharding (topology.shard = global | node) x link (1g, 10g) x grad_accum (1, 8): the bytes
#    each node sends the other per optimizer step, counted on the veth
#    (/sys/class/net/<veth>/statistics: two jobs that differ only in their step count, the
#    difference over the difference in steps, 66 header bytes a packet taken out, as
#    tests/zero3_bytes_test.sh does), against what `xy-node doctor` prints beforehand as the step
#    traffic across the link (optim/sharding.cpp, the one arithmetic), with the doctor's measured
#    bandwidth; and the mean step time (step_s of node 0's metrics.jsonl, the long job's steps after
#    the first 2).
# 2. A throttled node: node 1 limited to a third of a core (a cpu cgroup: cpu.max on cgroup v2,
#    cpu.cfs_quota_us on v1), node sharding, unshaped veth: uniform micro-batches (2 and 2) against
#    the balanced split node 0 proposes after the uniform job's first steps (its batch_split event;
#    3 and 1 if it proposes none), same samples per step; the mean step time of each.
# Then the table and the targets (issue "two machines over Ethernet"): node's bytes within 10% of
# its arithmetic; node moves nothing per micro-batch (accumulation 8 sends what 1 does); at
# accumulation 8 node sends at most 1/8 of global's bytes; at 1 Gbit/s node's step is at least 2x
# faster than global's; balancing cuts the throttled job's step time by at least 30%.
#
# Needs root (network namespaces, tc, cgroups). Namespaces and the cgroup are removed on exit.
# Run it on an otherwise idle machine: both ranks share its cores.
# usage: bench/cluster_bench.sh XY_NODE OUT_DIR   (run from the repository root)
# Knobs (environment): XY_CB_PARTS ("shard throttle"), XY_CB_MODEL ("hidden layers intermediate
# heads", default "512 4 1376 8"), XY_CB_MB (micro-batch of the sharding part, default 1), XY_CB_STEPS1 / XY_CB_STEPS8
# (short and long step counts at grad_accum 1 / 8, default "2 6" / "2 4"), XY_CB_RATES ("1gbit
# 10gbit"), XY_CB_ACCUMS ("1 8"), XY_CB_THROTTLE ("steps grad_accum quota%", default "6 4 33"),
# XY_CB_TMODEL (the throttled part's "hidden layers intermediate heads seq_len", default
# "256 2 688 4 256").
set -uo pipefail
XY=$(readlink -f "$1")
OUT=$(mkdir -p "$2" && readlink -f "$2")
source "$(dirname "$0")/../tests/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "cluster_bench: needs root (network namespaces, tc, cgroups)" >&2; exit 2; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "cluster_bench: needs iproute2 (ip, tc)" >&2; exit 2; }
PARTS=${XY_CB_PARTS:-shard throttle}
read -r HIDDEN LAYERS INTER HEADS <<< "${XY_CB_MODEL:-512 4 1376 8}"
MB=${XY_CB_MB:-1}
RATES=${XY_CB_RATES:-1gbit 10gbit}
ACCUMS=${XY_CB_ACCUMS:-1 8}
read -r TSTEPS TACCUM TQUOTA <<< "${XY_CB_THROTTLE:-6 4 33}"
# The throttled part's model and sequence: compute per sample must outweigh what a step costs
# whatever its micro-batches (the optimizer, the gradient's all-reduce and accumulation over the
# whole model, which the quota slows as much), as on GPUs, where those are small next to it.
read -r T_HIDDEN T_LAYERS T_INTER T_HEADS T_SEQ <<< "${XY_CB_TMODEL:-256 2 688 4 256}"
VOCAB=8000 SEQ=64 SUBNET=10.231.20 PORT=29800
RES=$OUT/results.txt
: > "$RES"

two_namespaces xyc $SUBNET
CG=""
cleanup() {
  ip netns del "$N0" 2>/dev/null; ip netns del "$N1" 2>/dev/null
  [ -n "$CG" ] && [ -d "$CG" ] && rmdir "$CG" 2>/dev/null
}
trap cleanup EXIT

[ -f "$OUT/tok/tokenizer.model" ] || train_test_tokenizer "$XY" "$OUT/tok" ||
  { echo "cluster_bench: the tokenizer run failed ($OUT/tok/tok.log)" >&2; exit 1; }

# shape RATE: tbf at RATE on both ends of the veth ("none": no shaping).
shape() {
  shape_link "$1" || { echo "cluster_bench: cannot shape the veth to $1 with tc tbf" >&2; exit 1; }
}

# config SHARD ACCUM STEPS DIR [MB0 MB1]: the job's TOML (per-node micro-batches when given).
config() {
  local shard=$1 accum=$2 steps=$3 dir=$4 mb0=${5:-} mb1=${6:-}
  two_node_topology $SUBNET $PORT 1 "$shard" |
    awk -v a="$mb0" -v b="$mb1" '{print} /^devices/ && a != "" {print "micro_batch = " (n++ ? b : a)}'
  cat <<EOF
[model]
preset = "custom"
vocab_size = $VOCAB
hidden = $HIDDEN
intermediate = $INTER
layers = $LAYERS
heads = $HEADS
max_seq_len = $SEQ
[data]
seq_len = $SEQ
tokenizer = "$OUT/tok/tokenizer.model"
[train]
steps = $steps
micro_batch = $MB
grad_accum = $accum
precision = "fp32"
log_every = 1
threads = 1
[optimizer]
warmup_steps = 1
[checkpoint]
dir = "$dir/checkpoints"
every_steps = 0
[control]
doctor = false
EOF
}

# job DIR [THROTTLE]: runs the two-node job of DIR/job.toml; writes DIR/bytes ("node0_bytes
# node0_packets node1_bytes node1_packets" sent during it). THROTTLE=1 runs node 1 in $CG.
job() {
  local dir=$1 throttle=${2:-} bytes rc=0
  rm -rf "$dir/w0" "$dir/w1" "$dir/checkpoints"
  # (into the cgroup before `ip netns exec`, which mounts the namespace's own /sys: no cgroups)
  bytes=$(two_node_job "$dir/job.toml" "$dir/w" "$dir" cluster-bench 900 ${throttle:+"echo \$\$ > $CG/cgroup.procs && "}) || rc=$?
  [ $rc -eq 0 ] || { echo "cluster_bench: the job in $dir failed (exit $rc):" >&2; tail -n 5 "$dir"/n0.log "$dir"/n1.log >&2; return 1; }
  echo "$bytes" > "$dir/bytes"
}

# doctor DIR: both nodes' `xy-node doctor` on DIR/job.toml (the link probe needs both); prints
# "step_bytes_each_way mbit_0to1 mbit_1to0" from node 0's rows.
doctor() {
  local dir=$1 pid
  ip netns exec "$N1" env XY_SECRET=cluster-bench timeout 120 "$XY" doctor --config "$dir/job.toml" --node-index 1 --wait 20 > "$dir/doctor.n1" 2>&1 & pid=$!
  ip netns exec "$N0" env XY_SECRET=cluster-bench timeout 120 "$XY" doctor --config "$dir/job.toml" --node-index 0 --wait 20 > "$dir/doctor.n0" 2>&1
  wait $pid
  local b o i
  b=$(sed -n 's/^step traffic to node 1 .* MB (\([0-9]*\) B) each way.*/\1/p' "$dir/doctor.n0")
  read -r o i < <(sed -n 's/^bandwidth to node 1 .*node 0 -> node 1 \([0-9.]*\) Mbit\/s, node 1 -> node 0 \([0-9.]*\) Mbit\/s.*/\1 \2/p' "$dir/doctor.n0")
  echo "${b:-nan} ${o:-nan} ${i:-nan}"
}

# steps_s METRICS SKIP: the step_s of every step line after the first SKIP, space-separated.
steps_s() {
  python3 -c '
import json, sys
s = [j["step_s"] for j in map(json.loads, open(sys.argv[1])) if "event" not in j and "eval" not in j and "step_s" in j]
print(*s[int(sys.argv[2]):])' "$1" "$2"
}

failed=0
T0=$(date +%s)
if [[ " $PARTS " == *" shard "* ]]; then
  for rate in $RATES; do
    shape "$rate"
    for accum in $ACCUMS; do
      read -r S1 S2 <<< "${XY_CB_STEPS1:-2 6}"; [ "$accum" != 1 ] && read -r S1 S2 <<< "${XY_CB_STEPS8:-2 4}"
      for shard in global node; do
        name=$shard-$rate-a$accum d=$OUT/$shard-$rate-a$accum
        mkdir -p "$d/short" "$d/long"
        config "$shard" "$accum" "$S1" "$d/short" > "$d/short/job.toml"
        config "$shard" "$accum" "$S2" "$d/long" > "$d/long/job.toml"
        read -r pred mbit0 mbit1 < <(doctor "$d/long")
        echo "$name: doctor predicts $pred B each way per step; link $mbit0 / $mbit1 Mbit/s"
        if job "$d/short" && job "$d/long"; then
          times=$(steps_s "$d/long/w0/metrics.jsonl" 2)
          echo "shard $shard $rate $accum $S1 $S2 $pred $mbit0 $mbit1 $(cat "$d/short/bytes") $(cat "$d/long/bytes") | $times" >> "$RES"
          echo "$name: $(grep -h '^xy: sharding' "$d/long/n0.log" | head -1); step_s after 2: $times"
        else
          failed=1
        fi
      done
    done
  done
  shape none
fi

if [[ " $PARTS " == *" throttle "* ]]; then
  if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    CG=/sys/fs/cgroup/xybench_$$
    mkdir "$CG" && echo "$((TQUOTA * 1000)) 100000" > "$CG/cpu.max"
  else
    CG=/sys/fs/cgroup/cpu/xybench_$$
    mkdir "$CG" && echo 100000 > "$CG/cpu.cfs_period_us" && echo $((TQUOTA * 1000)) > "$CG/cpu.cfs_quota_us"
  fi || { echo "cluster_bench: cannot make the cpu cgroup $CG" >&2; exit 1; }
  echo "throttle: node 1 limited to $TQUOTA% of a core ($CG)"
  HIDDEN=$T_HIDDEN LAYERS=$T_LAYERS INTER=$T_INTER HEADS=$T_HEADS SEQ=$T_SEQ
  d=$OUT/throttle-uniform
  mkdir -p "$d"
  config node "$TACCUM" "$TSTEPS" "$d" 2 2 > "$d/job.toml"
  if job "$d" 1; then
    read -r p0 p1 < <(python3 -c '
import json, sys
e = [j for j in map(json.loads, open(sys.argv[1])) if j.get("event") == "batch_split"]
print(*(e[-1]["balanced_micro_batch"] if e else [3, 1]))' "$d/w0/metrics.jsonl")
    proposal=$(grep -h "balanced:" "$d/n0.log" | head -1)
    echo "throttle: uniform 2 and 2: step_s after 2: $(steps_s "$d/w0/metrics.jsonl" 2)"
    echo "throttle: ${proposal:-no proposal line; balancing 3 and 1}"
    echo "throttle uniform 2 2 | $(steps_s "$d/w0/metrics.jsonl" 2)" >> "$RES"
    d=$OUT/throttle-balanced
    mkdir -p "$d"
    config node "$TACCUM" "$TSTEPS" "$d" "$p0" "$p1" > "$d/job.toml"
    if job "$d" 1; then
      echo "throttle: balanced $p0 and $p1: step_s after 2: $(steps_s "$d/w0/metrics.jsonl" 2)"
      echo "throttle balanced $p0 $p1 | $(steps_s "$d/w0/metrics.jsonl" 2)" >> "$RES"
      echo "throttle proposal ${proposal#xy: }" >> "$RES"
    else
      failed=1
    fi
  else
    failed=1
  fi
fi
echo "cluster_bench: the runs took $(( $(date +%s) - T0 )) s"

python3 - "$RES" "$HIDDEN" "$LAYERS" "$INTER" "$HEADS" "$VOCAB" "$SEQ" "$MB" <<'PY'
import sys
res, hidden, layers, inter, heads, vocab, seq, mb = sys.argv[1], *map(int, sys.argv[2:])
params = 2 * vocab * hidden + hidden + layers * (2 * hidden + 4 * hidden * hidden + 3 * hidden * inter)
print(f"\nmodel: hidden {hidden}, {layers} layers, intermediate {inter}, heads {heads}, vocab {vocab} "
      f"({params:,} parameters), fp32, micro-batch {mb} x {seq} tokens, one CPU rank per node")
mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
rows, throttle, proposal = {}, {}, ""
for line in open(res):
    head, _, tail = line.partition("|")
    f = head.split()
    times = [float(x) for x in tail.split()]
    if f[0] == "shard":
        shard, rate, accum, s1, s2 = f[1], f[2], int(f[3]), int(f[4]), int(f[5])
        pred, m0, m1 = float(f[6]), f[7], f[8]
        short, long = list(map(int, f[9:13])), list(map(int, f[13:17]))
        sent = [((long[2*n] - short[2*n]) - 66 * (long[2*n+1] - short[2*n+1])) / (s2 - s1) for n in (0, 1)]
        rows[shard, rate, accum] = dict(pred=pred, link=(m0, m1), sent=sent, step=mean(times), n=len(times))
    elif f[0] == "throttle" and f[1] in ("uniform", "balanced"):
        throttle[f[1]] = (f"{f[2]} and {f[3]}", mean(times), len(times))
    elif f[0] == "throttle":
        proposal = head.split(None, 2)[2].strip() if len(f) > 2 else ""

checks = []
def check(name, ok, detail):
    checks.append(ok)
    print(f"{'MET' if ok else 'MISSED'}: {name}: {detail}")

if rows:
    print("\n| sharding | link | grad_accum | doctor: bytes each way per step | node 0 -> 1 | node 1 -> 0 | measured / doctor | probe Mbit/s (0->1, 1->0) | step s (mean) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (shard, rate, accum), r in rows.items():
        ratio = "/".join(f"{s / r['pred']:.3f}" for s in r["sent"])
        print(f"| {shard} | {rate} | {accum} | {r['pred']/1e6:.2f} MB | {r['sent'][0]/1e6:.2f} MB | "
              f"{r['sent'][1]/1e6:.2f} MB | {ratio} | {r['link'][0]}, {r['link'][1]} | {r['step']:.2f} ({r['n']} steps) |")
    print()
    for (shard, rate, accum), r in rows.items():
        if shard == "node":
            worst = max(abs(s / r["pred"] - 1) for s in r["sent"])
            check(f"node, {rate}, grad_accum {accum}: measured within 10% of the doctor's arithmetic", worst <= 0.10,
                  f"largest difference {100 * worst:.1f}%")
    for rate in dict.fromkeys(k[1] for k in rows):
        n1, n8 = rows.get(("node", rate, 1)), rows.get(("node", rate, 8))
        if n1 and n8:
            x = max(n8["sent"]) / max(n1["sent"])
            check(f"node, {rate}: nothing per micro-batch (grad_accum 8 sends what 1 does, within 10%)",
                  abs(x - 1) <= 0.10, f"{x:.3f}x")
        g8 = rows.get(("global", rate, 8))
        if g8 and n8:
            x = max(n8["sent"][n] / g8["sent"][n] for n in (0, 1))
            check(f"grad_accum 8, {rate}: node's bytes <= 1/8 of global's", x <= 1 / 8, f"{x:.4f} (1/{1/x:.1f})")
    for accum in dict.fromkeys(k[2] for k in rows):
        g, n = rows.get(("global", "1gbit", accum)), rows.get(("node", "1gbit", accum))
        if g and n:
            x = g["step"] / n["step"]
            if accum == 1:
                print(f"(grad_accum 1, 1gbit: node's step {n['step']:.2f} s vs global's {g['step']:.2f} s: {x:.2f}x)")
            else:
                check(f"grad_accum {accum}, 1gbit: node's step >= 2x faster than global's", x >= 2,
                      f"{n['step']:.2f} s vs {g['step']:.2f} s: {x:.2f}x")
if throttle:
    print(f"\nthrottled node 1: {proposal or 'no proposal line'}")
    for k, (split, t, n) in throttle.items():
        print(f"  {k}: micro-batches {split}: {t:.2f} s a step (mean of {n} steps)")
    if len(throttle) == 2:
        cut = 1 - throttle["balanced"][1] / throttle["uniform"][1]
        check("throttled node: balancing cuts the step time by >= 30%", cut >= 0.30, f"{100 * cut:.1f}%")
PY
exit $failed

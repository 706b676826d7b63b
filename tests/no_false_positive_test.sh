#!/usr/bin/env bash
# No false positive: 500 normal steps of a very small model on two CPU ranks, with the default
# deadlines, while two busy processes load both cores; the job must end with 0 and no stall
# report. Along the way the live diagnostics are read: `xy-node status --json` and /metrics.
# usage: no_false_positive_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
rm -rf "$W" && mkdir -p "$W"
source "$(dirname "$0")/lib.sh"
PORT=$(free_ports)

cat > "$W/job.toml" <<EOF
[topology]
device = "cpu"
[[topology.nodes]]
host = "127.0.0.1"
devices = 2
[model]
preset = "custom"
vocab_size = 8000
hidden = 32
intermediate = 64
layers = 2
heads = 4
kv_heads = 2
max_seq_len = 32
[data]
seq_len = 16
[train]
steps = 500
micro_batch = 2
log_every = 100
threads = 1
[optimizer]
warmup_steps = 10
[actors]
adam_threads = 1
[checkpoint]
every_steps = 100
[control]
http_port = $PORT
EOF

# Load on both cores for the whole run.
load=()
for i in 1 2; do python3 -c 'while True: pass' & load+=($!); done
trap 'kill "${load[@]}" 2>/dev/null' EXIT

start=$(date +%s)
timeout 600 "$XY" train --config "$W/job.toml" --work-dir "$W/run" > "$W/run.log" 2>&1 &
pid=$!
# Read the live state while it trains.
got_status=1; got_metrics=1
for i in $(seq 1 600); do
  if [ $got_status -ne 0 ] && grep -q '^step   100' "$W/run.log" 2>/dev/null; then
    "$XY" status --config "$W/job.toml" --json > "$W/status.json" 2>&1
    python3 - "$W/status.json" <<'PY' && got_status=0
import json, sys
s = json.load(open(sys.argv[1]))[0]
assert s["world"] == 2 and len(s["ranks"]) == 2, s
assert s["step"] >= 100 and s["loss"] is not None and s["tokens_per_s"] > 0, s
assert all(r["phase"] in ("forward", "backward", "optimizer", "done", "init") for r in s["ranks"]), s
assert s["resident_bytes"] > 0 and len(s["loss_curve"]) >= 100, s
print("status: step %d, loss %.3f, %d tok/s, ranks %s" % (s["step"], s["loss"], s["tokens_per_s"],
      [(r["rank"], r["step"], r["phase"], len(r["ops"])) for r in s["ranks"]]))
PY
    python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/metrics').read().decode())" > "$W/metrics.txt" 2>&1
    grep -q '^xy_loss{node="0"} ' "$W/metrics.txt" && grep -q '^xy_rank_step{node="0",rank="1"} ' "$W/metrics.txt" && got_metrics=0
    "$XY" status --address "127.0.0.1:$PORT" --once > "$W/status.txt" 2>&1
  fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
wait $pid; rc=$?
end=$(date +%s)
grep '^step \|done' "$W/run.log" | tail -4
echo "500 steps under load took $((end - start)) s"
check "500 steps under load exit 0 (got $rc)" $([ $rc -eq 0 ]; echo $?)
test ! -f "$W/run/stall-report.txt"; check "no stall report" $?
grep -q "^step   500" "$W/run.log"; check "all 500 steps ran" $?
check "xy-node status --json read the running job" $got_status
check "/metrics served Prometheus text" $got_metrics
cat "$W/status.txt" 2>/dev/null | head -5
grep -q "rank" "$W/status.txt"; check "xy-node status --once printed the rank table" $?
finish

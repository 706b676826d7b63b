#!/usr/bin/env bash
# The status page at / of a running job, rendered by headless Chromium: its script fetches
# /status and fills the per-rank table and the loss curve. Skipped (exit 77) when Chromium is not
# installed (`bash scripts/setup.sh test`, which scripts/test.sh runs, installs it).
# usage: status_page_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
BROWSER=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$BROWSER" ]; then
  echo "SKIPPED: chromium is not installed (bash scripts/setup.sh test installs it)"
  exit 77
fi
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
max_seq_len = 32
[data]
seq_len = 16
[train]
steps = 3000
micro_batch = 2
log_every = 1000
threads = 1
[control]
http_port = $PORT
EOF
timeout 300 "$XY" train --config "$W/job.toml" --work-dir "$W/run" > "$W/run.log" 2>&1 &
pid=$!
for i in $(seq 1 600); do
  python3 -c "import json,urllib.request,sys; s=json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/status')); sys.exit(0 if s['step'] >= 20 else 1)" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.5
done
timeout 90 "$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$W/profile" --virtual-time-budget=5000 --dump-dom "http://127.0.0.1:$PORT/" \
  > "$W/dom.html" 2> "$W/browser.log"
check "chromium rendered the page" $?
kill $pid 2>/dev/null; wait $pid 2>/dev/null
grep -o '<p id="summary">[^<]*' "$W/dom.html"
rows=$(grep -o '<tr class="rank">' "$W/dom.html" | wc -l)
check "the table has one row per rank (2, got $rows)" $([ "$rows" -eq 2 ]; echo $?)
grep -q '<p id="summary">step [0-9]* of 3000 | loss [0-9.]* | [0-9]* tok/s' "$W/dom.html"; check "the summary shows step, loss, tokens/s" $?
points=$(sed -n 's/.*data-points="\([0-9]*\)".*/\1/p' "$W/dom.html")
check "the loss curve was drawn from ${points:-0} points" $([ "${points:-0}" -ge 20 ]; echo $?)
grep -q '<h1>xy <span id="title">node 0 (127.0.0.1:0)</span>' "$W/dom.html"; check "the title names the node" $?
finish

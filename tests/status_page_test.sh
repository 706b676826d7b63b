#!/usr/bin/env bash
# The status page at / of a running job, rendered by headless Chromium: its script fetches
# /status and fills the per-rank table and the loss curve, and draws the run's charts from
# /metrics.jsonl (health/charts_js.hpp, as `xy-node report` does). Skipped (exit 77) when Chromium is not
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
# The charts of the run's metrics log (/metrics.jsonl, node 0's <work_dir>/metrics.jsonl). Until the
# trainer writes the log, a synthesized one stands in (steps, an evaluation, a restart).
if [ ! -s "$W/run/metrics.jsonl" ]; then
  python3 - "$W/run/metrics.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    f.write(json.dumps({"event": "start", "step": 0, "resumed_from": None, "time": 1795000000}) + "\n")
    for s in range(1, 31):
        if s == 16:
            f.write(json.dumps({"event": "restart", "attempt": 1, "of": 2, "reason": "stall", "time": 1795000000 + s}) + "\n")
            f.write(json.dumps({"event": "start", "step": 15, "resumed_from": "step-00000015", "time": 1795000000 + s}) + "\n")
        f.write(json.dumps({"step": s, "loss": 9.0 - 0.1 * s, "lr": 1e-3, "grad_norm": 1.0 + 1.0 / s, "tokens_per_s": 1000.0 + s,
                            "compute_s": 0.1, "wait_optimizer_s": 0.02, "exposed_comm_s": 0.01, "end_of_step_s": 0.01,
                            "wait_batch_s": 0.0, "tokens": 64 * s, "time": 1795000000 + s}) + "\n")
        if s % 10 == 0:
            f.write(json.dumps({"eval": "val", "step": s, "loss": 8.5 - 0.1 * s, "ppl": 100.0, "time": 1795000000 + s}) + "\n")
PY
fi
timeout 90 "$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$W/profile" --virtual-time-budget=5000 --dump-dom "http://127.0.0.1:$PORT/" \
  > "$W/dom.html" 2> "$W/browser.log"
check "chromium rendered the page" $?
kill $pid 2>/dev/null; wait $pid 2>/dev/null
grep -o '<p id="summary">[^<]*' "$W/dom.html"
rows=$(grep -o '<tr class="rank">' "$W/dom.html" | wc -l)
check "the table has one row per rank (2, got $rows)" $([ "$rows" -eq 2 ]; echo $?)
grep -q '<p id="summary">step [0-9]* of 3000 | loss [0-9.]* | [0-9]* tok/s' "$W/dom.html"; check "the summary shows step, loss, tokens/s" $?
grep -q '<p id="summary">step [0-9]* of 3000 .* | tokens [0-9.]*k\? of 192k, ETA [0-9hms]*' "$W/dom.html"; check "the summary shows the tokens seen of the target and an ETA" $?
points=$(sed -n 's/.*data-points="\([0-9]*\)".*/\1/p' "$W/dom.html")
check "the loss curve was drawn from ${points:-0} points" $([ "${points:-0}" -ge 20 ]; echo $?)
grep -q '<h1>xy <span id="title">node 0 (127.0.0.1:0)</span>' "$W/dom.html"; check "the title names the node" $?
python3 - "$W/run/metrics.jsonl" "$W/dom.html" <<'PY'
import html.parser, json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
class P(html.parser.HTMLParser):
    charts = {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "xy-chart" in a.get("class", ""):
            self.charts[a["id"]] = (json.loads(a["data-series"]), json.loads(a["data-markers"]))
p = P(); p.feed(open(sys.argv[2]).read())
ids = ["xy-chart-loss", "xy-chart-lr", "xy-chart-grad_norm", "xy-chart-tokens_per_s", "xy-chart-time_split"]
if sorted(p.charts) != sorted(ids): sys.exit("the page's charts are %s, not %s" % (sorted(p.charts), sorted(ids)))
# The page read the log a moment before this test did: its train loss is a prefix of the file's.
want = [[l["step"], l["loss"]] for l in lines if "event" not in l and "eval" not in l and isinstance(l.get("loss"), float)]
got = p.charts["xy-chart-loss"][0]["train"]
print("the page's loss chart has %d of the log's %d points" % (len(got), len(want)))
if len(got) < 10 or got != want[:len(got)]: sys.exit("the page's train loss differs from metrics.jsonl")
restarts = sum(1 for l in lines if l.get("event") == "restart")
if len([m for m in p.charts["xy-chart-loss"][1] if m["kind"] == "restart"]) != restarts: sys.exit("restarts not marked")
PY
check "the page's charts show metrics.jsonl (loss series equal, restarts marked)" $?
finish

#!/usr/bin/env bash
# `xy-node report`: a metrics log (synthesized like a run's: steps, two evaluation sets, a restart
# with a resume, a skipped step) -> one HTML file, loaded in headless Chromium: the charts' data
# read back from the page equals the log's values, restarts are marked, the summary is right, the
# screenshot is a real picture, nothing is fetched from the network. Also the command's errors.
# Skipped (exit 77) without Chromium (`bash scripts/setup.sh test` installs it).
# usage: report_test.sh XY_NODE WORK_DIR [SCREENSHOT_COPY]   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
COPY=${3:-}
BROWSER=$(command -v chromium || command -v chromium-browser || true)
[ -n "$BROWSER" ] || { echo "SKIPPED: chromium is not installed (bash scripts/setup.sh test installs it)"; exit 77; }
rm -rf "$W" && mkdir -p "$W/run"
source "$(dirname "$0")/lib.sh"

python3 - "$W/run/metrics.jsonl" <<'PY'
import json, math, sys
t = 1795000000.0
out = []
def step(s, attempt):
    global t
    t += 2.0
    loss = 10.4 * math.exp(-s / 45.0) + 2.1 + 0.05 * math.sin(s) + 0.01 * attempt
    comp, wopt, comm, end, batch = 1.2 + 0.01 * (s % 7), 0.3, 0.15 + 0.02 * (s % 3), 0.05, 0.02
    line = {"step": s, "loss": round(loss, 6), "grad_norm": round(1.0 + 3.0 / s, 6),
            "lr": round(3e-4 * min(1.0, s / 20.0), 9), "loss_scale": 65536.0, "skipped": 0,
            "overflow_units": 0, "tokens": 8192 * s, "tokens_target": 8192 * 120,
            "tokens_per_s": round(8192 / (comp + wopt + comm + end + batch), 3), "mfu": 0.31,
            "step_s": comp + wopt + comm + end + batch, "compute_s": comp, "wait_optimizer_s": wopt,
            "exposed_comm_s": comm, "end_of_step_s": end, "wait_batch_s": batch,
            "host_rss_gib": 3.2, "gpu_mem_gib": 0.0, "eta_s": 2.0 * (120 - s), "time": t}
    if s == 33:  # an overflowed step: skipped, its loss not finite (written as null)
        line.update(loss=None, skipped=1, overflow_units=2)
    out.append(line)
def ev(name, s, loss):
    out.append({"eval": name, "step": s, "loss": loss, "ppl": round(math.exp(loss), 4),
                "tokens": 4096, "samples": 16, "seconds": 1.5, "time": t})
out.append({"event": "start", "step": 0, "resumed_from": None, "time": t})
for s in range(1, 61):
    step(s, 0)
    if s % 20 == 0:
        ev("val", s, round(2.0 + 9.0 * math.exp(-s / 40.0), 5)); ev("code", s, round(2.5 + 8.0 * math.exp(-s / 50.0), 5))
# (the first attempt ran on to step 67 and was killed; the resume dropped 61..67)
out.append({"event": "restart", "attempt": 1, "of": 3, "reason": "killed by signal 9 </script><b>x</b>", "time": t + 30})
out.append({"event": "start", "step": 60, "resumed_from": "step-00000060", "time": t + 40})
t += 40
for s in range(61, 121):
    step(s, 1)
    if s % 20 == 0:
        ev("val", s, round(2.0 + 9.0 * math.exp(-s / 40.0), 5)); ev("code", s, round(2.5 + 8.0 * math.exp(-s / 50.0), 5))
out.append({"event": "end", "step": 120, "exit_code": 0, "time": t + 1})
with open(sys.argv[1], "w") as f:
    for l in out:
        f.write(json.dumps(l) + "\n")
PY

start=$(date +%s.%N)
"$XY" report "$W/run" > "$W/report.out" 2>&1
check "xy-node report exits 0" $?
end=$(date +%s.%N)
echo "report took $(python3 -c "print(round($end - $start, 3))") s; $(stat -c %s "$W/run/report.html") bytes"
grep -q "wrote $W/run/report.html" "$W/report.out"; check "it says what it wrote" $?
"$XY" report "$W/run" --out "$W/other.html" > /dev/null 2>&1 && [ -s "$W/other.html" ]; check "--out FILE" $?
# Self-contained: no element loads anything (the SVG namespace is a name, not a fetch).
! grep -Eqi '<(script|img|link|iframe)[^>]* (src|href)=' "$W/run/report.html"; check "no external resources" $?

timeout 90 "$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$W/profile" \
  --virtual-time-budget=5000 --dump-dom "file://$W/run/report.html" > "$W/dom.html" 2> "$W/browser.log"
check "chromium rendered the report" $?
timeout 90 "$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$W/profile" \
  --hide-scrollbars --window-size=980,1040 --screenshot="$W/report.png" "file://$W/run/report.html" >> "$W/browser.log" 2>&1
check "chromium took a screenshot" $?
[ -n "$COPY" ] && cp "$W/report.png" "$COPY"

python3 - "$W/run/metrics.jsonl" "$W/dom.html" "$W/report.png" <<'PY'
import html.parser, json, struct, sys, zlib
lines = [json.loads(l) for l in open(sys.argv[1])]
class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.charts = {}; self.summary = {}; self.key = None; self.td = False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "xy-chart" in a.get("class", ""):
            self.charts[a["id"]] = (json.loads(a["data-series"]), json.loads(a["data-markers"]))
        if tag == "tr" and "data-key" in a: self.key = a["data-key"]
        self.td = tag == "td"
    def handle_data(self, d):
        if self.td and self.key: self.summary[self.key] = d; self.td = False
p = P(); p.feed(open(sys.argv[2]).read())
fails = 0
def check(name, ok):
    global fails
    print(("ok: " if ok else "FAILED: ") + name); fails += 0 if ok else 1
steps = [l for l in lines if "step" in l and "event" not in l and "eval" not in l]
def series(rows, k): return [[r["step"], r[k]] for r in rows if isinstance(r.get(k), (int, float))]
want = {"xy-chart-loss": {"train": series(steps, "loss")},
        "xy-chart-lr": {"lr": series(steps, "lr")},
        "xy-chart-grad_norm": {"grad_norm": series(steps, "grad_norm")},
        "xy-chart-tokens_per_s": {"tokens_per_s": series(steps, "tokens_per_s")},
        "xy-chart-time_split": {k: series(steps, k) for k in
            ["compute_s", "wait_optimizer_s", "exposed_comm_s", "end_of_step_s", "wait_batch_s"]}}
for name in ["code", "val"]:
    want["xy-chart-loss"]["eval/" + name] = series([l for l in lines if l.get("eval") == name], "loss")
check("the page has the five charts (%s)" % sorted(p.charts), sorted(p.charts) == sorted(want))
for cid, w in want.items():
    got = p.charts.get(cid, ({}, []))[0]
    check("%s: the page's data equals the log's (%s)" % (cid, ", ".join("%s %d points" % (k, len(v)) for k, v in w.items())),
          got == w)
check("the train loss leaves out the skipped step's null", len(want["xy-chart-loss"]["train"]) == 119)
markers = p.charts.get("xy-chart-loss", ({}, []))[1]
check("the restart is marked at the resumed step 60 with its reason (%s)" % markers,
      len(markers) == 1 and markers[0]["step"] == 60 and markers[0]["kind"] == "restart"
      and "</script><b>x</b>" in markers[0]["label"])
s = p.summary
print("summary:", s)
check("summary: steps 120", s.get("steps") == "120")
check("summary: tokens", s.get("tokens") == str(8192 * 120))
check("summary: final loss", s.get("final loss") == "%.4g" % steps[-1]["loss"])
best = min((l for l in lines if "eval" in l), key=lambda l: l["loss"])
check("summary: best eval loss names the set and step", s.get("best eval loss", "").endswith("(%s, step %d)" % (best["eval"], best["step"])))
check("summary: 1 restart", s.get("restarts") == "1")
times = [l["time"] for l in lines]; span = int(max(times) - min(times))
check("summary: wall time", s.get("wall time") == "%d:%02d:%02d" % (span // 3600, span // 60 % 60, span % 60))
# The screenshot: a PNG of the window's size, mostly white but with many colours (charts drawn).
data = open(sys.argv[3], "rb").read()
w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
idat, off = b"", 8
while off < len(data):
    n, kind = struct.unpack(">I4s", data[off:off + 8]); off += 8
    if kind == b"IDAT": idat += data[off:off + n]
    off += n + 4
raw = zlib.decompress(idat); bpp = {2: 3, 6: 4}.get(ctype, 0); stride = w * bpp
rows, prev, pos = [], bytearray(stride), 0
for y in range(h):
    f = raw[pos]; cur = bytearray(raw[pos + 1:pos + 1 + stride]); pos += 1 + stride
    for i in range(stride):
        a = cur[i - bpp] if i >= bpp else 0; b = prev[i]; c = prev[i - bpp] if i >= bpp else 0
        if f == 1: cur[i] = (cur[i] + a) & 255
        elif f == 2: cur[i] = (cur[i] + b) & 255
        elif f == 3: cur[i] = (cur[i] + (a + b) // 2) & 255
        elif f == 4:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(cur)); prev = cur
px = [r[i:i + 3] for r in rows[::4] for i in range(0, stride, bpp * 4)]
colours = len(set(px)); ink = sum(1 for q in px if q != b"\xff\xff\xff") / len(px)
print("screenshot: %dx%d, %d bytes, %d colours, %.1f%% not white" % (w, h, len(data), colours, 100 * ink))
check("the screenshot is a %dx%d picture with charts in it" % (w, h),
      bpp and w == 980 and h == 1040 and colours >= 20 and 0.02 < ink < 0.6)
print("%d failed" % fails)
sys.exit(1 if fails else 0)
PY
check "the page shows the log's values" $?

# A long run: the page carries every step's count but draws (and exposes) at most 2,000 points a
# series, every k-th and the last, so that a 100,000-step report stays quick to open.
mkdir -p "$W/long" && python3 -c "
import json
with open('$W/long/metrics.jsonl', 'w') as f:
    for s in range(1, 5001): f.write(json.dumps({'step': s, 'loss': 3 + 1.0 / s, 'ppl': 1, 'mfu': 0.5, 'time': s}) + '\n')"
"$XY" report "$W/long" > /dev/null 2>&1
grep -q '"ppl"' "$W/long/report.html"; check "the page leaves out fields it does not draw" $([ $? -ne 0 ]; echo $?)
timeout 90 "$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$W/profile" \
  --virtual-time-budget=5000 --dump-dom "file://$W/long/report.html" > "$W/long/dom.html" 2>> "$W/browser.log"
python3 - "$W/long/dom.html" <<'PY'
import html.parser, json, sys
class P(html.parser.HTMLParser):
    got = None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "xy-chart-loss": self.got = (json.loads(a["data-series"])["train"], json.loads(a["data-points"]))
p = P(); p.feed(open(sys.argv[1]).read())
pts, counts = p.got
want = [[s, 3 + 1.0 / s] for s in range(1, 5001)]
print("5000 steps: %d points drawn, count %s" % (len(pts), counts))
sys.exit(0 if counts["train"] == 5000 and pts == want[::3] + [want[-1]] else 1)
PY
check "5000 steps: every 3rd point and the last drawn, the full count kept" $?

# Errors: one line each; no log is a usage error (2), a damaged log bad data (1).
"$XY" report "$W/nothing" > "$W/err1" 2>&1; rc=$?
check "no metrics.jsonl: exit 2 ($rc)" $([ $rc -eq 2 ]; echo $?)
grep -q "no metrics log at $W/nothing/metrics.jsonl" "$W/err1"; check "... naming the file" $?
mkdir -p "$W/bad" && printf '{"step": 1, "loss": 2}\n{"step": 2, "loss": \n{"step": 3}\n' > "$W/bad/metrics.jsonl"
"$XY" report "$W/bad" > "$W/err2" 2>&1; rc=$?
check "a damaged line: exit 1 ($rc)" $([ $rc -eq 1 ]; echo $?)
grep -q "$W/bad/metrics.jsonl:2: not JSON" "$W/err2" && [ "$(wc -l < "$W/err2")" -eq 1 ]
check "... one line naming path:line" $?
finish

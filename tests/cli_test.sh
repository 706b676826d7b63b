#!/usr/bin/env bash
# End-to-end checks of the xy-node command line: usage errors, a config error naming file:line,
# and a short real training run on the bundled sample that publishes a checkpoint.
# usage: cli_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK"
source "$(dirname "$0")/lib.sh"

"$XY" >/dev/null 2>&1; check "no command exits 2" $([ $? -eq 2 ]; echo $?)
out=$("$XY" train --help); grep -q -- "--config" <<< "$out"; check "train --help lists --config" $?
out=$("$XY" bogus 2>&1); grep -q "unknown command 'bogus'" <<< "$out"; check "unknown command named" $?

printf '[model]\npreset = "tiny"\nheads = 7\n' > "$WORK/bad.toml"
out=$("$XY" train --config "$WORK/bad.toml" 2>&1); rc=$?
echo "$out"
check "bad config exits 2" $([ $rc -eq 2 ]; echo $?)
grep -q "bad.toml:3:9: model.heads" <<< "$out"; check "bad config message names file:line:col and key" $?

# ---- bad input from the command line, the environment, the config and the network: one line,
# exit 2 (or a failed check), never a signal, an abort or a LibTorch backtrace ----
# one_line OUT: the output is a single line without a backtrace.
one_line() { [ "$(printf '%s\n' "$1" | wc -l)" -eq 1 ] && ! printf '%s' "$1" | grep -q "frame #0\|Exception raised from"; }

out=$("$XY" train --config config/tiny.toml --steps -5 --work-dir "$WORK/neg" --no-doctor 2>&1); rc=$?
echo "$out"
check "--steps -5 exits 2 with one line naming the flag" $([ $rc -eq 2 ] && one_line "$out" && grep -q -- "--steps -5: valid: an integer >= 1" <<< "$out"; echo $?)
check "--steps -5 publishes nothing" $([ ! -e "$WORK/neg/checkpoints" ]; echo $?)
for cmd_env in "doctor NODE_RANK=abc" "train SLURM_NODEID=" "doctor XY_NODE_INDEX=-1"; do
  env=${cmd_env#* }; extra=(); [ "${cmd_env%% *}" = train ] && extra=(--work-dir "$WORK/neg")
  out=$(env "$env" "$XY" ${cmd_env%% *} --config config/tiny.toml "${extra[@]}" 2>&1); rc=$?
  echo "$out"
  check "${cmd_env%% *} with $env exits 2 naming ${env%%=*}" $([ $rc -eq 2 ] && one_line "$out" && grep -q "${env%%=*} = '${env#*=}'\|${env%%=*} (environment) = ${env#*=}" <<< "$out"; echo $?)
done
out=$(XY_DOCTOR_GPU_TIMEOUT=soon "$XY" doctor --config config/tiny.toml 2>&1); rc=$?
check "doctor with XY_DOCTOR_GPU_TIMEOUT=soon exits 2 naming it" $([ $rc -eq 2 ] && one_line "$out" && grep -q "XY_DOCTOR_GPU_TIMEOUT = 'soon'" <<< "$out"; echo $?)
for args in "--restarts x|--restarts x" "--restarts -1|--restarts -1" "--restarts 1 --restart-backoff soon|--restart-backoff soon"; do
  out=$("$XY" train --config config/tiny.toml --work-dir "$WORK/neg" ${args%|*} 2>&1); rc=$?
  echo "$out"
  check "train ${args%|*} exits 2 with one line naming the flag" $([ $rc -eq 2 ] && one_line "$out" && grep -q -- "${args#*|}: valid:" <<< "$out"; echo $?)
done
printf '[eval]\nsets = ["fin=%s/absent.jsonl"]\n' "$WORK" > "$WORK/eval_absent.toml"
cat config/tiny.toml | sed '/^\[eval\]/,/^$/d' >> "$WORK/eval_absent.toml"
out=$("$XY" train --config "$WORK/eval_absent.toml" --work-dir "$WORK/neg" --no-doctor 2>&1); rc=$?
echo "$out"
check "an eval set that does not exist: exit 1 naming the set and its path" $([ $rc -eq 1 ] && grep -q "eval set 'fin' ($WORK/absent.jsonl, eval.sets in .*): does not exist" <<< "$out"; echo $?)
out=$(XY_FAULT="sleep-compute:rank=1e300" "$XY" train --config config/tiny.toml --work-dir "$WORK/neg" 2>&1); rc=$?
echo "$out"
check "XY_FAULT with rank=1e300 exits 2 naming the key" $([ $rc -eq 2 ] && one_line "$out" && grep -q "rank = 1e300" <<< "$out"; echo $?)
for args in "doctor --config config/tiny.toml --wait -1" "doctor --config config/tiny.toml --gpu-timeout 0" \
            "status --address 127.0.0.1:abc" "status --address 127.0.0.1:0" "status --address 127.0.0.1:1 --interval 0" \
            "export latest --dir $WORK --out $WORK/x --shard-gb 0" "train --config config/tiny.toml --work-dir="; do
  out=$("$XY" $args 2>&1); rc=$?
  echo "$out"
  check "$args exits 2 with one line" $([ $rc -eq 2 ] && one_line "$out"; echo $?)
done
# Config values that overflowed where they are used.
printf '[[topology.nodes]]\nhost = "127.0.0.1"\nport = 65535\n' > "$WORK/port.toml"
printf '[deadlines]\ncollective_s = 1e300\n' > "$WORK/deadline.toml"
printf '[model]\nhidden = 4611686018427387904\n' > "$WORK/hidden.toml"
for c in "port.toml:3:8: topology.nodes[0].port: 65535" "deadline.toml:2:16: deadlines.collective_s: 1e300" \
         "hidden.toml:2:10: model.hidden: 4611686018427387904"; do
  out=$("$XY" train --config "$WORK/${c%%:*}" --work-dir "$WORK/neg" --no-doctor 2>&1); rc=$?
  echo "$out"
  check "${c%%:*} exits 2 naming file:line:col and key" $([ $rc -eq 2 ] && one_line "$out" && grep -qF "$WORK/$c" <<< "$out"; echo $?)
done
out=$("$XY" doctor --config "$WORK/hidden.toml" 2>&1); rc=$?
check "doctor on hidden.toml exits 2 naming the key" $([ $rc -eq 2 ] && one_line "$out" && grep -q "model.hidden" <<< "$out"; echo $?)
# topology.device = "cuda" with the doctor off, in a CPU build: one line before any data work.
if "$XY" doctor --facts | grep -q '"cuda":"none (CPU build)"'; then
  printf '[topology]\ndevice = "cuda"\n[control]\ndoctor = false\n' > "$WORK/cuda.toml"
  out=$("$XY" train --config "$WORK/cuda.toml" --work-dir "$WORK/neg" 2>&1); rc=$?
  echo "$out"
  check "device = cuda in a CPU build exits 2 with one line" $([ $rc -eq 2 ] && one_line "$out" && grep -q 'topology.device = "cuda"' <<< "$out"; echo $?)
fi

# A doctor peer that answers `42`, and a status server that serves a malformed document: a failed
# check / one line naming the peer and what is wrong (they ended the asker with exit 134).
read -r p0 p1 p2 <<< "$(free_ports 3)"
python3 - "$p1" "$p2" <<'PY' &
import http.server, socket, sys, threading
doctor = socket.socket(); doctor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
doctor.bind(("127.0.0.1", int(sys.argv[1]))); doctor.listen(8)
def answer_42():
    while True:
        c, _ = doctor.accept(); c.sendall(b"42\n"); c.close()
threading.Thread(target=answer_42, daemon=True).start()
class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"node":"zero","ranks":[]}' if self.path == "/status" else b"{"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Status).serve_forever()
PY
fake=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p2") 2>/dev/null && break; sleep 0.1; done
printf '[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\n[[topology.nodes]]\nhost = "127.0.0.1"\nport = %s\n' "$p0" "$p1" > "$WORK/peers.toml"
out=$("$XY" doctor --config "$WORK/peers.toml" --node-index 0 --wait 5 2>&1); rc=$?
echo "$out" | grep -A1 "reach node 1"
check "a doctor peer answering 42 is a failed check (exit 1)" $([ $rc -eq 1 ]; echo $?)
grep -q "reach node 1 .*FAIL .*unreadable answer from 127.0.0.1:$p1: expected a JSON object, got number" <<< "$out"
check "the failed check names the peer and what is wrong" $?
out=$("$XY" status --address "127.0.0.1:$p2" --once 2>&1); rc=$?
echo "$out"
check "status against a malformed /status exits 1 with one line" $([ $rc -eq 1 ] && one_line "$out"; echo $?)
grep -q "unreadable /status from 127.0.0.1:$p2: 'node' is not an integer" <<< "$out"
check "the message names the server and the field" $?
out=$("$XY" status --address "127.0.0.1:$p2" --json 2>&1); rc=$?
check "status --json against it exits 1" $([ $rc -eq 1 ] && grep -q "'node' is not an integer" <<< "$out"; echo $?)
kill $fake 2>/dev/null; wait $fake 2>/dev/null

# preset = "custom" with model.init_from (documented as valid) takes the folder's shape; it was a
# SIGFPE (exit 136) in train, status and doctor. Its vocabulary has 611 tokens: the tokenizer is
# trained (320 pieces) on lower-case ASCII words, which need few pieces of their own.
python3 -c 'import json, random
random.seed(1)
for _ in range(3000):
    print(json.dumps({"text": " ".join("".join(random.choice("etaoinshrdlu") for _ in range(random.randint(2, 7))) for _ in range(30))}))' > "$WORK/ascii.jsonl"
printf '[model]\npreset = "custom"\ninit_from = "tests/fixtures/hf_tiny"\n[data]\ninputs = ["%s"]\ntokenizer_vocab = 320\nseq_len = 64\n[train]\nsteps = 1\nmicro_batch = 2\n[optimizer]\nwarmup_steps = 0\n' "$WORK/ascii.jsonl" > "$WORK/custom.toml"
out=$("$XY" doctor --config "$WORK/custom.toml" 2>&1); rc=$?
check "doctor on preset custom + init_from exits 0" $([ $rc -eq 0 ]; echo $?)
out=$("$XY" status --config "$WORK/custom.toml" 2>&1); rc=$?
echo "$out"
check "status on preset custom + init_from says it serves no status (exit 2)" $([ $rc -eq 2 ] && grep -q "control.http_port = 0" <<< "$out"; echo $?)
out=$("$XY" train --config "$WORK/custom.toml" --work-dir "$WORK/custom" --no-doctor 2>&1); rc=$?
echo "$out" | tail -3
check "train on preset custom + init_from runs a step (exit 0)" $([ $rc -eq 0 ] && grep -q "model shape from tests/fixtures/hf_tiny/config.json: vocab 611, hidden 64" <<< "$out"; echo $?)
# A model too large for this machine's memory (and far from 2^53): one line naming the size,
# before anything is allocated (it was a raw allocator trace).
printf '[model]\npreset = "custom"\nhidden = 65536\nintermediate = 65536\nheads = 64\nlayers = 1000\n[data]\ntokenizer = "%s"\nseq_len = 64\n' "$WORK/custom/tokenizer.model" > "$WORK/huge.toml"
out=$("$XY" train --config "$WORK/huge.toml" --work-dir "$WORK/huge" --no-doctor 2>&1); rc=$?
echo "$out" | tail -1
check "a model too large for memory exits 2 naming the size" $([ $rc -eq 2 ] && echo "$out" | tail -1 | grep -q "the model is too large for this machine: 3.01e+13 parameters.* needs .* GiB" && ! grep -q "frame #0" <<< "$out"; echo $?)

out=$("$XY" train --config config/tiny.toml --steps 4 --work-dir "$WORK/run" 2>&1); rc=$?
echo "$out" | tail -8
check "tiny training exits 0" $([ $rc -eq 0 ]; echo $?)
grep -q "^step     4 | loss" <<< "$out"; check "step lines printed" $?
# The placement plan: train prints it, and the doctor's host-memory row prices the same state with
# the same plan (optim/placement.hpp): the same bytes, to the printed digit.
planned=$(grep -o "^xy: placement per rank[^;]*pinned)" <<< "$out" | sed 's/^xy: placement //')
doctored=$("$XY" doctor --config config/tiny.toml 2>&1 | grep "^host memory" | grep -o "per rank[^;]*pinned)")
doctor_bytes=$("$XY" doctor --config config/tiny.toml 2>&1 | grep "^host memory" | grep -o "([0-9]* bytes" | tr -dc 0-9)
train_bytes=$(grep '"event":"start"' "$WORK/run/metrics.jsonl" | tail -1 | python3 -c 'import json,sys; p=json.load(sys.stdin)["placement"]; print(p["host_bytes"]*p["local_ranks"])')
echo "train: $planned ($train_bytes bytes); doctor: $doctored ($doctor_bytes bytes)"
check "train prints the placement plan, and the doctor's host memory row has the same bytes" $([ -n "$planned" ] && [ "$planned" = "$doctored" ] && [ -n "$train_bytes" ] && [ "$train_bytes" = "$doctor_bytes" ]; echo $?)
test -f "$WORK/run/checkpoints/step-00000004/manifest.json"; check "checkpoint manifest published" $?
test "$(cat "$WORK/run/checkpoints/latest" 2>/dev/null)" = "step-00000004"; check "latest names it" $?
ls "$WORK/run/checkpoints" | grep -q '^\.tmp' ; check "no temporary checkpoint left" $([ $? -ne 0 ]; echo $?)

out=$("$XY" verify latest --dir "$WORK/run/checkpoints" 2>&1); rc=$?
echo "$out"
check "verify latest exits 0" $([ $rc -eq 0 ]; echo $?)
out=$("$XY" export latest --dir "$WORK/run/checkpoints" --out "$WORK/hf" --dtype bf16 2>&1); rc=$?
echo "$out" | tail -2
check "export exits 0" $([ $rc -eq 0 ]; echo $?)
test -f "$WORK/hf/config.json" && test -f "$WORK/hf/model.safetensors"; check "export wrote config.json and model.safetensors" $?
grep -q '"torch_dtype": "bfloat16"' "$WORK/hf/config.json"; check "export's config.json says bfloat16" $?
out=$("$XY" export latest --dir "$WORK/run/checkpoints" --out "$WORK/hf" 2>&1); rc=$?
check "export refuses a non-empty target" $([ $rc -eq 1 ]; echo $?)

# A fresh run into a directory holding another run's checkpoints refuses to start (its retention
# and `latest` would replace them); --overwrite-checkpoints starts over there.
out=$("$XY" train --config config/tiny.toml --steps 1 --work-dir "$WORK/run" 2>&1); rc=$?
echo "$out" | tail -1
check "a fresh run over another run's checkpoints exits 2" $([ $rc -eq 2 ]; echo $?)
grep -q "already holds checkpoints of another run (step-00000004).*--resume latest" <<< "$out"; check "the refusal names what is there and the ways out" $?
test "$(cat "$WORK/run/checkpoints/latest")" = "step-00000004" && "$XY" verify latest --dir "$WORK/run/checkpoints" >/dev/null
check "the other run's newest checkpoint is untouched" $?
out=$("$XY" train --config config/tiny.toml --steps 1 --work-dir "$WORK/run" --overwrite-checkpoints 2>&1); rc=$?
echo "$out" | grep "overwrite-checkpoints"
check "--overwrite-checkpoints starts over" $([ $rc -eq 0 ]; echo $?)
test "$(cat "$WORK/run/checkpoints/latest")" = "step-00000001" && "$XY" verify latest --dir "$WORK/run/checkpoints" >/dev/null
check "its checkpoint is published and verifies" $?
test ! -e "$WORK/run/checkpoints/step-00000004"; check "the old checkpoints are gone" $?
# Files xy creates are owner-only (XY_UMASK lets others in).
modes=$(stat -c '%a' "$WORK/run/checkpoints/step-00000001" "$WORK/run/checkpoints/step-00000001/rank-00000.bin" \
  "$WORK/run/checkpoints/latest" "$WORK/run/tokens.bin" | tr '\n' ' ')
echo "modes: $modes"
test "$modes" = "700 600 600 600 "; check "checkpoint directory 700, files 600, token cache 600" $?
out=$(XY_UMASK=8 "$XY" verify latest --dir "$WORK/run/checkpoints" 2>&1); rc=$?
check "a bad XY_UMASK exits 2 naming it" $([ $rc -eq 2 ] && grep -q "XY_UMASK='8'" <<< "$out"; echo $?)

# The launcher without its engine: train cannot run and says where the engine should be; the
# commands it runs itself (--help, preprocess) still work.
mkdir -p "$WORK/alone" && cp "$XY" "$WORK/alone/xy-node"
out=$("$WORK/alone/xy-node" train --config config/tiny.toml 2>&1); rc=$?
echo "$out"
check "train without xy-node-engine exits 1" $([ $rc -eq 1 ]; echo $?)
grep -q "cannot run the engine '$WORK/alone/xy-node-engine'" <<< "$out"; check "the missing engine's path is named" $?
"$WORK/alone/xy-node" preprocess --help | grep -q -- "--tokenizer"; check "preprocess --help without the engine" $?

finish

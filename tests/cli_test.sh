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
out=$("$XY" train --help); echo "$out" | grep -q -- "--config"; check "train --help lists --config" $?
out=$("$XY" bogus 2>&1); echo "$out" | grep -q "unknown command 'bogus'"; check "unknown command named" $?

printf '[model]\npreset = "tiny"\nheads = 7\n' > "$WORK/bad.toml"
out=$("$XY" train --config "$WORK/bad.toml" 2>&1); rc=$?
echo "$out"
check "bad config exits 2" $([ $rc -eq 2 ]; echo $?)
echo "$out" | grep -q "bad.toml:3:9: model.heads"; check "bad config message names file:line:col and key" $?

out=$("$XY" train --config config/tiny.toml --steps 4 --work-dir "$WORK/run" 2>&1); rc=$?
echo "$out" | tail -8
check "tiny training exits 0" $([ $rc -eq 0 ]; echo $?)
echo "$out" | grep -q "^step     4 | loss"; check "step lines printed" $?
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

# The launcher without its engine: train cannot run and says where the engine should be; the
# commands it runs itself (--help, preprocess) still work.
mkdir -p "$WORK/alone" && cp "$XY" "$WORK/alone/xy-node"
out=$("$WORK/alone/xy-node" train --config config/tiny.toml 2>&1); rc=$?
echo "$out"
check "train without xy-node-engine exits 1" $([ $rc -eq 1 ]; echo $?)
echo "$out" | grep -q "cannot run the engine '$WORK/alone/xy-node-engine'"; check "the missing engine's path is named" $?
"$WORK/alone/xy-node" preprocess --help | grep -q -- "--tokenizer"; check "preprocess --help without the engine" $?

finish
# A fresh run into a directory holding another run's checkpoints refuses to start (its retention
# and `latest` would replace them); --overwrite-checkpoints starts over there.
out=$("$XY" train --config config/tiny.toml --steps 1 --work-dir "$WORK/run" 2>&1); rc=$?
echo "$out" | tail -1
check "a fresh run over another run's checkpoints exits 2" $([ $rc -eq 2 ]; echo $?)
echo "$out" | grep -q "already holds checkpoints of another run (step-00000004).*--resume latest"; check "the refusal names what is there and the ways out" $?
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
check "a bad XY_UMASK exits 2 naming it" $([ $rc -eq 2 ] && echo "$out" | grep -q "XY_UMASK='8'"; echo $?)


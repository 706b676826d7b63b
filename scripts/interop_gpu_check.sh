#!/usr/bin/env bash
# The interop acceptance run (docs/INTEROP.md), on a machine with transformers: for each
# transformers fixture model (tests/fixtures/hf_tiny: Llama-2-shaped; hf_llama3_tiny: tied, llama3
# RoPE scaling; hf_qwen3_tiny: q/k norms, head_dim != hidden / heads; hf_qwen2_tiny: q/k/v biases)
# start from it with model.init_from, train 3 steps on CUDA in fp32, export the checkpoint as a
# Hugging Face folder, compute xy's logits of the export, and have transformers load the export
# (the class its config.json names) and compare its logits. Needs build-cuda (scripts/gpu_run.sh).
# FIXTURES="hf_tiny ..." picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
W0=${1:-/tmp/xy-interop}
rm -rf "$W0" && mkdir -p "$W0"
for FX in ${FIXTURES:-hf_tiny hf_llama3_tiny hf_qwen3_tiny hf_qwen2_tiny}; do
W=$W0/$FX && mkdir -p "$W"
echo "== $FX"
# English text (the fixture's vocabulary is 611 pieces): the repository's docs as JSONL.
python3 - "$W/en.jsonl" <<'PY'
import json, pathlib, sys
with open(sys.argv[1], "w") as out:
    for p in sorted(pathlib.Path("docs").glob("*.md")) + [pathlib.Path("README.md")]:
        for para in p.read_text().split("\n\n"):
            if para.strip():
                out.write(json.dumps({"text": para.strip()}) + "\n")
PY
cat > "$W/interop.toml" <<EOF2
[topology]
device = "cuda"
[[topology.nodes]]
host = "127.0.0.1"
devices = 1
[model]
init_from = "tests/fixtures/$FX"
[data]
inputs = ["$W/en.jsonl"]
tokenizer_vocab = 600
work_dir = "$W/work"
seq_len = 16
[train]
steps = 3
micro_batch = 2
precision = "fp32"
log_every = 1
[optimizer]
warmup_steps = 1
[control]
doctor = false
EOF2
./build-cuda/bin/xy-node train --config "$W/interop.toml"
./build-cuda/bin/xy-node export latest --dir "$W/work/checkpoints" --out "$W/hf" --dtype fp32
./build-cuda/bin/hf_logits "$W/hf" tests/fixtures/$FX/fixture.safetensors "$W/xy_logits.safetensors"
python3 scripts/make_hf_fixture.py --check-export "$W/hf" --xy-logits "$W/xy_logits.safetensors"
done

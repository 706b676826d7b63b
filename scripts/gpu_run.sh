#!/usr/bin/env bash
# On the GPU machine (see README, "Building with CUDA"): configures and builds the CUDA engine into
# build-cuda, then runs what is asked: `tests` (ctest -L gpu), `tiny` (train_bench on the tiny
# preset), `1b` (train_bench on 1b, seq 4096), `adam` (adam_bench), `peer1b` (the FSDP2 + CPU
# offload peer, if .device/peer exists), `devadam` (adam_device_test, then adam_bench and
# adam_device_bench: the device AdamW against the CPU kernel), `modern` (train_bench on 1b, llama3.2-1b and qwen3-1.7b,
# seq 4096), `prep` (bench/preprocess_bench.sh with the CUDA build's
# xy-node, from the carried .device/bench: poems dump, tokenizer, Debian's spm_encode). Results
# also go to $OUT when it is set. Placement (docs/PLACEMENT.md): `placement` (placement_gpu_test),
# `bench:MODEL:MB:PLACEMENT:DELAYED[:CAP_GB[:PRECISION[:STEPS]]]` (train_bench with those settings),
# `peer:MODEL:MB:OFFLOAD[:STEPS]` (the FSDP2 peer), `resume-debug` (the resume case, a crash's
# addresses through addr2line).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/xy-out}
mkdir -p "$OUT"
TORCH_CMAKE=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
start=$(date +%s)
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DXY_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$CMAKE_PREFIX_PATH;$TORCH_CMAKE" > "$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; exit 1; }
cmake --build build-cuda -j 16 --target xy-node gpu_test adam_bench train_bench hf_logits adam_device_test adam_device_bench placement_gpu_test > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; exit 1; }
echo "xy: CUDA build took $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for what in "$@"; do
  case "$what" in
    tests) (cd build-cuda && ctest -L gpu --output-on-failure --timeout 300) 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "relative|Passed|Failed|tests passed|Error" ;;
    tiny) ./build-cuda/bin/train_bench --config bench/configs/tiny-gpu.toml --steps 12 2>&1 | tee "$OUT/tiny.log" | grep -E "RESULT|error" ;;
    1b) ./build-cuda/bin/train_bench --config bench/configs/1b-h100.toml --steps 8 2>&1 | tee "$OUT/1b.log" | grep -E "RESULT|error" ;;
    modern) for m in 1b llama3.2-1b qwen3-1.7b; do c=bench/configs/$m-h200.toml; [ -f "$c" ] || c=bench/configs/1b-h100.toml; ./build-cuda/bin/train_bench --config "$c" --steps 8 2>&1 | tee "$OUT/modern-$m.log" | grep -E "RESULT|error"; done ;;
    1b-dpu) ./build-cuda/bin/train_bench --config bench/configs/1b-h100-dpu.toml --steps 10 2>&1 | tee "$OUT/1b-dpu.log" | grep -E "^step|RESULT|error|xy:" ;;
    1b-dpu-off) ./build-cuda/bin/train_bench --config bench/configs/1b-h100-dpu.toml --steps 10 --offload-params 2>&1 | tee "$OUT/1b-dpu-off.log" | grep -E "RESULT|error|xy:" ;;
    7b-dpu-off) ./build-cuda/bin/train_bench --config bench/configs/7b-h100-dpu.toml --steps 6 --warmup 3 --offload-params 2>&1 | tee "$OUT/7b-dpu-off.log" | grep -E "RESULT|error|xy:" ;;
    multinode) (cd build-cuda && ctest -R multiprocess_gpu_test --output-on-failure) 2>&1 | tee "$OUT/multinode.log" | grep -E "ok:|FAILED|passed|Passed|Failed" ;;
    7b-dpu) ./build-cuda/bin/train_bench --config bench/configs/7b-h100-dpu.toml --steps 6 --warmup 3 2>&1 | tee "$OUT/7b-dpu.log" | grep -E "^step|RESULT|error|xy:" ;;
    7b-4gpu) ./build-cuda/bin/train_bench --config bench/configs/7b-4xh100-dpu.toml --steps 6 --warmup 3 2>&1 | tee "$OUT/7b-4gpu.log" | grep -E "^step|RESULT|error|xy:" ;;
    1b-ckpt) ./build-cuda/bin/train_bench --config bench/configs/1b-h100-ckpt.toml --steps 9 2>&1 | tee "$OUT/1b-ckpt.log" | grep -E "checkpoint|RESULT|error" ;;
    interop) bash scripts/interop_gpu_check.sh 2>&1 | tee "$OUT/interop.log" | grep -E "^step|exported|hf_logits|transformers|error|Error" ;;
    peer7b4) [ -d .device/peer ] && bash .device/peer/run_peer.sh 4 7b 4096 4 6 1 2>&1 | tee "$OUT/peer7b4.log" | tail -3 ;;
    adam) ./build-cuda/bin/adam_bench $((1 << 27)) 5 2>&1 | tee "$OUT/adam.log" ;;
    devadam)  # the device AdamW: its test against the CPU kernel, then the CPU and device benchmarks
      { ./build-cuda/bin/adam_device_test; ./build-cuda/bin/adam_bench $((1 << 27)) 5; ./build-cuda/bin/adam_device_bench 10; } 2>&1 \
        | tee "$OUT/devadam.log" | grep -vE "^\[ (RUN|  *OK) " ;;
    prep)
      # spm_encode from the carried sentencepiece package (.device/env.sh unpacks .device/debs into
      # /opt/deps once per machine; a machine unpacked before the package was carried gets it here).
      [ -x /opt/deps/usr/bin/spm_encode ] || for f in .device/debs/sentencepiece_*.deb .device/debs/libsentencepiece0_*.deb .device/debs/libprotobuf-lite*.deb; do dpkg -x "$f" /opt/deps; done
      POEMS=.device/bench/poems.txt.xz TOK=.device/bench/tok.model SPM_ENCODE=/opt/deps/usr/bin/spm_encode \
        LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}" \
        bash bench/preprocess_bench.sh build-cuda 2>&1 | tee "$OUT/prep.log" | grep -vE "^preprocess: .* read " ;;
    placement)  # optimizer.placement's tests on the GPU
      ./build-cuda/bin/placement_gpu_test 2>&1 | tee "$OUT/placement_test.log" | grep -E "placement|checkpoint of|OK|FAILED|PASSED|Failure|error" ;;
    resume-debug)  # placement_gpu_test's resume case; a crash's addresses resolved with addr2line
      ./build-cuda/bin/placement_gpu_test --gtest_filter='*Resume*' > "$OUT/resume.log" 2>&1; echo "rc $?"
      grep -vE "^frame|^\[E|Last error|ncclSystem" "$OUT/resume.log" | tail -80
      grep -oE "= [^ ]+ \+0x[0-9a-f]+" "$OUT/resume.log" | sort -u | while read -r _ f off; do
        echo "$f $off: $(addr2line -f -C -e "$f" "$off" 2>/dev/null | head -1)"; done ;;
    bench:*)  # bench:MODEL:MB:PLACEMENT:DELAYED[:CAP_GB[:PRECISION[:STEPS]]]: train_bench with those settings
      IFS=: read -r _ m mb pl dl cap pr st <<< "$what"
      c=bench/configs/$m-h100.toml; [ "$m" = 7b ] && c=bench/configs/7b-h100-dpu.toml
      ./build-cuda/bin/train_bench --config "$c" --steps "${st:-8}" --warmup 3 --micro-batch "$mb" --placement "$pl" --delayed "$dl" \
        ${cap:+--gpu-memory-gb "$cap"} ${pr:+--precision "$pr"} 2>&1 | tee "$OUT/$(echo "$what" | tr ':' '_').log" | grep -E "RESULT|error|xy: placement|GPU peak|out of memory" ;;
    peer:*)  # peer:MODEL:MB:OFFLOAD[:STEPS]: the FSDP2 peer
      IFS=: read -r _ m mb off st <<< "$what"
      [ -d .device/peer ] && bash .device/peer/run_peer.sh 1 "$m" 4096 "$mb" "${st:-8}" "$off" 2>&1 | tee "$OUT/$(echo "$what" | tr ':' '_').log" | tail -2 ;;
    peer1b) [ -d .device/peer ] && bash .device/peer/run_peer.sh 1 1b 4096 1 8 1 2>&1 | tee "$OUT/peer1b.log" | tail -3 ;;
  esac
done

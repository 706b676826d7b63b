#!/usr/bin/env bash
# A shell test that lacks what it needs says so and exits 77 (CTest: Skipped), never 0 (Passed)
# and never a raw error: the GPU tests on machines with too few GPUs (a fake nvidia-smi listing 0
# and 1 GPUs), the status page test without Chromium. Each case ends before any training starts.
# usage: skip_test.sh XY_NODE WORK_DIR   (run from the repository root)
set -uo pipefail
XY=$1
W=$2
rm -rf "$W" && mkdir -p "$W/one-gpu" "$W/no-gpu" "$W/no-browser"
source "$(dirname "$0")/lib.sh"
T=$(cd "$(dirname "$0")" && pwd)
TIMEOUT=$(command -v timeout)
printf '#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"\n' > "$W/one-gpu/nvidia-smi"
printf '#!/bin/sh\necho "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2\nexit 9\n' > "$W/no-gpu/nvidia-smi"
chmod +x "$W/one-gpu/nvidia-smi" "$W/no-gpu/nvidia-smi"

# expect_skip NAME WANT_TEXT PATH_PREFIX -- COMMAND...: COMMAND exits 77 and prints WANT_TEXT.
expect_skip() {
  local name=$1 want=$2 path=$3; shift 4
  local out rc
  out=$(PATH="$path" "$TIMEOUT" 60 "$@" 2>&1); rc=$?
  echo "$out" | tail -2
  check "$name: exit 77 (got $rc)" $([ $rc -eq 77 ]; echo $?)
  grep -q "^SKIPPED: $want" <<< "$out"; check "$name: says '$want'" $?
}
for g in one-gpu:1 no-gpu:0; do
  d=${g%%:*}; n=${g#*:}
  expect_skip "multiprocess_gpu_test, $n GPUs" "needs 2 or more GPUs; this machine has $n" "$W/$d:$PATH" -- \
    bash "$T/multiprocess_test.sh" "$XY" "$W/mp-$d" cuda
  for c in skip-collective cross-node-stall; do
    expect_skip "fault_gpu_$c, $n GPUs" "needs 2 or more GPUs; this machine has $n" "$W/$d:$PATH" -- \
      bash "$T/fault_test.sh" "$XY" "$W/fault-$d" "$c" cuda
  done
done
# Two GPUs in the machine, one made visible: as good as one.
mkdir -p "$W/two-gpu"
printf '#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-0)"\necho "GPU 1: NVIDIA H200 (UUID: GPU-1)"\n' > "$W/two-gpu/nvidia-smi"
chmod +x "$W/two-gpu/nvidia-smi"
expect_skip "multiprocess_gpu_test, 2 GPUs with CUDA_VISIBLE_DEVICES=0" "needs 2 or more GPUs; this machine has 1 visible" \
  "$W/two-gpu:$PATH" -- env CUDA_VISIBLE_DEVICES=0 bash "$T/multiprocess_test.sh" "$XY" "$W/mp-two" cuda
# A PATH without any browser (the test looks for one before it runs anything else).
expect_skip "status_page_test without Chromium" "chromium is not installed" "$W/no-browser" -- \
  "$BASH" "$T/status_page_test.sh" "$XY" "$W/status"
finish

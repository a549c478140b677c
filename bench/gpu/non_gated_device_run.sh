#!/usr/bin/env bash
# One device call for the non-gated (relu^2, Nemotron-H) fused MoE: build (Release, sm_90a),
# the fused-MoE GPU tests (non-gated and gated, to see nothing else moved), the CLI's device
# tests (verify --device cuda on the tiny Nemotron-H), then the relative errors in a short list.
# (The same configuration as fused_moe_device_run.sh, so a warm machine rebuilds only what changed.)
# Run on the device machine from the repository root with .devdeps carried. Logs go to $OUT.
set -uo pipefail
out=${OUT:-/tmp/non-gated-run}
mkdir -p "$out"
root=$PWD
export LD_LIBRARY_PATH=$root/.devdeps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
t0=$(date +%s)
if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$root/.devdeps" -DCMAKE_BUILD_TYPE=Release \
    -DMOEPREP_CUDA=ON -DMOEPREP_CUDA_ARCHS="90a-real;90-virtual" >"$out/configure.log" 2>&1; then
  tail -20 "$out/configure.log"; exit 1
fi
if ! cmake --build build-gpu -j "$(nproc)" --target test_gpu test_cli >"$out/build.log" 2>&1; then
  grep -E "error" "$out/build.log" | head -30; exit 1
fi
echo "build $(( $(date +%s) - t0 )) s"
echo "== GPU tests"
timeout 240 build-gpu/tests/test_gpu --gtest_filter="${GPU_FILTER:-NonGated*:FusedMoeGpu.*:FusedMoeActivation.*}" \
  >"$out/test_gpu.log" 2>&1
echo "test_gpu exit $?"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|Failure|Expected|Which is' "$out/test_gpu.log" | head -30
echo "== CLI device tests"
timeout 120 build-gpu/tests/test_cli --gtest_filter='NonGatedDevice.*' >"$out/test_cli.log" 2>&1
echo "test_cli exit $?"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|Failure|verify --device cuda' "$out/test_cli.log" | head -20
echo "== non-gated relative errors (max over kernel paths, per mode and T)"
grep -E "relu2 \(non-gated\)" "$out/test_gpu.log" | python3 -c '
import re, sys
worst = {}
for line in sys.stdin:
    m = re.search(r"non-gated\) (\S+) T=(\d+) valid=(\d+) (.*): rel err vs kernel-layout CPU (\S+), vs reference (\S+)", line)
    if not m: continue
    key = (m.group(1), int(m.group(2)))
    c, r = float(m.group(5)), float(m.group(6))
    a = worst.setdefault(key, [0.0, 0.0, 0])
    a[0] = max(a[0], c); a[1] = max(a[1], r); a[2] += 1
for (mode, T), (c, r, n) in sorted(worst.items()):
    print(f"{mode:<11} T={T:<4} paths {n:<2} vs CPU kernel layout {c:.2e}  vs reference {r:.2e}")
'

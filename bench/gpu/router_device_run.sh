#!/usr/bin/env bash
# One device call for the router: the GPU router tests, the fused-kernel timings, the PyTorch
# chain on the same device, and compute-sanitizer (memcheck, racecheck) over the tests.
# Usage, on the device machine from the repo root:
#   bash bench/gpu/router_device_run.sh BIN_DIR OUT_DIR
# BIN_DIR holds test_gpu and router_bench (prebuilt here, or from a build-gpu/ tree there).
set -uo pipefail
bin=${1:?BIN_DIR}
out=${2:?OUT_DIR}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/device.txt"

echo "== GPU router tests"
"$bin/test_gpu" --gtest_filter='GpuRouter*' >"$out/test_gpu.log" 2>&1
echo "test_gpu exit $?"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|error|weight' "$out/test_gpu.log" | head -40

echo "== fused router timings"
"$bin/router_bench" --csv "$out/fused.csv" 2>&1 | tee "$out/bench.log"

echo "== PyTorch chain timings"
PYTHONUNBUFFERED=1 python3 bench/router_torch_baseline.py --csv "$out/torch.csv" --fused-csv "$out/fused.csv" \
  --markdown "$out/table.md" >"$out/torch.log" 2>&1
echo "torch exit $?"
tail -n 45 "$out/torch.log"

echo "== compute-sanitizer"
{
  timeout 150 compute-sanitizer --tool memcheck "$bin/test_gpu" \
    --gtest_filter='GpuRouter.MatchesReference*:GpuRouter.Padded*:GpuRouter.EveryTopK*'
  echo "memcheck exit $?"
  timeout 150 compute-sanitizer --tool racecheck "$bin/test_gpu" \
    --gtest_filter='GpuRouter.MatchesReference*:GpuRouter.NegativeAndMixed*'
  echo "racecheck exit $?"
} >"$out/sanitizer.log" 2>&1
grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|exit|PASSED|FAILED' "$out/sanitizer.log" | head -20

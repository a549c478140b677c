#!/usr/bin/env bash
# One device call for the router: the GPU router tests, compute-sanitizer (memcheck, racecheck)
# over them, the fused-kernel timings, the PyTorch chain on the same device, and optionally an
# Nsight Compute profile of one large case plus the SASS of the E = 128 kernel.
# Usage, on the device machine from the repo root:
#   bash bench/gpu/router_device_run.sh BIN_DIR OUT_DIR [BASELINE_BIN_DIR[:BASELINE_BIN_DIR...]]
# BIN_DIR holds test_gpu, router_bench and optionally router.o (prebuilt here, or from a
# build-gpu/ tree there); each BASELINE_BIN_DIR an earlier router_bench timed on the same card
# (its logs are named after the directory).
# PROFILE=1 adds ncu and cuobjdump. Everything lands in OUT_DIR/router_run.tgz too.
set -uo pipefail
bin=${1:?BIN_DIR}
out=${2:?OUT_DIR}
baseline=${3:-}
logs=$(mktemp -d)
# The logs so far, packed after every stage: a run cut off by its time limit still brings them back.
save() { tar czf "$out/router_run.tgz" -C "$logs" .; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$logs/device.txt"

echo "== GPU router tests"
"$bin/test_gpu" --gtest_filter='GpuRouter*' >"$logs/test_gpu.log" 2>&1
echo "test_gpu exit $?"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|weight|error' "$logs/test_gpu.log" | head -40
save

echo "== fused router timings"
"$bin/router_bench" --csv "$logs/fused.csv" 2>&1 | tee "$logs/bench.log"
IFS=: read -r -a baselines <<<"$baseline"
for b in "${baselines[@]}"; do
  name=$(basename "$b")
  echo "== baseline build $name, same card"
  "$b/router_bench" --csv "$logs/fused_$name.csv" >"$logs/bench_$name.log" 2>&1
  grep -E " 16384 " "$logs/bench_$name.log"
done
save

echo "== PyTorch chain timings"
PYTHONUNBUFFERED=1 python3 bench/router_torch_baseline.py --csv "$logs/torch.csv" --fused-csv "$logs/fused.csv" \
  --markdown "$logs/table.md" >"$logs/torch.log" 2>&1
echo "torch exit $?"
cat "$logs/table.md"
save

echo "== compute-sanitizer"
{
  timeout "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool memcheck "$bin/test_gpu" \
    --gtest_filter='GpuRouter.MatchesReference*:GpuRouter.Padded*:GpuRouter.OddExpert*:GpuRouter.NaN*:GpuRouter.TieHeavy*'
  echo "memcheck exit $?"
  timeout "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool racecheck "$bin/test_gpu" \
    --gtest_filter='GpuRouter.MatchesReference*:GpuRouter.NegativeAndMixed*:GpuRouter.OddExpert*:GpuRouter.TieHeavy*'
  echo "racecheck exit $?"
} >"$logs/sanitizer.log" 2>&1
grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|exit|PASSED|FAILED' "$logs/sanitizer.log" | head -20
save

if [ "${PROFILE:-0}" = 1 ]; then
  echo "== ncu, softmax_after_topk T=16384 k=8"
  timeout 200 ncu --kernel-name regex:fused_router --launch-skip 60 --launch-count 1 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section SchedulerStats \
    --section WarpStateStats --section InstructionStats --section MemoryWorkloadAnalysis \
    "$bin/router_bench" --variant softmax_after_topk --tokens 16384 --k 8 >"$logs/ncu.txt" 2>&1
  echo "ncu exit $?"
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Executed Ipc A|Issue Slots Busy|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Executed Instructions  " "$logs/ncu.txt" | head -20
  if [ -f "$bin/router.o" ]; then
    cuobjdump -sass "$bin/router.o" >"$logs/router_sass.txt" 2>&1
    echo "sass lines $(wc -l <"$logs/router_sass.txt")"
  fi
fi
save
cp "$logs/table.md" "$out/" 2>/dev/null
# Last, so that it is in the reply's tail: fused time over the memory floor, every variant.
echo "== summary: fused router (this build), graph/stream us and x floor"
grep -E "^(device:|variant|softmax_after_topk|gemma4|sigmoid_grouped_biased) " "$logs/bench.log"
for b in "${baselines[@]}"; do
  echo "== summary: baseline build $(basename "$b"), T = 16384"
  grep -E " 16384 " "$logs/bench_$(basename "$b").log"
done

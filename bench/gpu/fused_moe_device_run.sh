#!/usr/bin/env bash
# One device call for the fused MoE: configure and build (Release, sm_90a), the fused-MoE GPU
# tests, the benchmark (copy rate and every T), the bf16 matmul rate (torch) on the same card,
# and a short table last. Run on the device machine from the repository root, with .devdeps
# carried (bash scripts/make-devdeps here first). Logs and JSON go to $OUT (or /tmp/moe-run).
# Usage: bash bench/gpu/fused_moe_device_run.sh [BENCHMARK_FILTER]
set -uo pipefail
out=${OUT:-/tmp/moe-run}
mkdir -p "$out"
filter=${1:-'BM_DeviceCopy|BM_FusedMoeSeparated/|BM_FusedMoeInterleave'}
root=$PWD
export LD_LIBRARY_PATH=$root/.devdeps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/device.txt"
if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$root/.devdeps" -DCMAKE_BUILD_TYPE=Release \
    -DMOEPREP_CUDA=ON -DMOEPREP_CUDA_ARCHS="90a-real;90-virtual" >"$out/configure.log" 2>&1; then
  tail -20 "$out/configure.log"; exit 1
fi
if ! cmake --build build-gpu -j "$(nproc)" --target test_gpu fused_moe_bench >"$out/build.log" 2>&1; then
  grep -E "error" "$out/build.log" | head -30; exit 1
fi
echo "== tests"
build-gpu/tests/test_gpu --gtest_filter='FusedMoe*' >"$out/test.log" 2>&1
echo "test_gpu exit $?"
grep -E '^\[  (PASSED|FAILED) |Failure|Expected|Which is|differs' "$out/test.log" | head -30
echo "== benchmark"
build-gpu/bench/fused_moe_bench --benchmark_filter="$filter" --benchmark_out="$out/bench.json" \
  --benchmark_out_format=json >"$out/bench.log" 2>&1
echo "fused_moe_bench exit $?"
grep -E "^check|^small-batch|FAILED|error" "$out/bench.log"
# SKIP_TORCH=1: no bf16 matmul ceiling (the table's TFLOP/s fraction is then nan).
if [ -z "${SKIP_TORCH:-}" ]; then
  PYTHONUNBUFFERED=1 python3 bench/moe_torch_baseline.py --ceilings-only --json "$out/ceilings.json" 2>&1 | tail -2
fi
# NCU_T1=1: Nsight Compute counters of the T = 1 decode kernels (route, gate_up, down) from
# graph replays of BM_FusedMoeSeparated/T:1, after the table's timings (never timed under ncu).
if [ -n "${NCU_T1:-}" ]; then
  MOEPREP_BENCH_SKIP_CHECK=1 ncu --clock-control none -k regex:'decode_' --launch-skip 30 --launch-count 6 \
    --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats --section LaunchStats \
    build-gpu/bench/fused_moe_bench --benchmark_filter='BM_FusedMoeSeparated/T:1/' >"$out/ncu.log" 2>&1
  echo "ncu exit $?"
fi
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
b = json.load(open(os.path.join(out, "bench.json")))["benchmarks"]
c = json.load(open(os.path.join(out, "ceilings.json"))) if os.path.exists(os.path.join(out, "ceilings.json")) else {}
mm = c.get("matmul_bf16_tflops")
print(f"matmul {mm} TFLOP/s, torch copy {c.get('copy_tbps')} TB/s")
print(f"{'case':<22}{'graph ms':>10}{'stream ms':>10}{'TB/s':>7}{'copy':>6}{'TFLOP/s':>9}{'of mm':>7}"
      f"{'route':>8}{'gate_up':>9}{'down':>8}{'comb':>7}")
for r in b:
    n = r["name"]
    if n.startswith("BM_DeviceCopy"):
        print(f"copy {r['TBps']:.2f} TB/s"); continue
    label = n[len("BM_FusedMoe"):].split("/min_time")[0].replace("Separated", "sep").replace("Interleave", "int")
    label = label.replace("/", " ")
    f = r["TFLOPs"] / mm if mm else float("nan")
    print(f"{label:<22}{r['median_ms']:>10.4f}{r.get('stream_ms', float('nan')):>10.4f}{r['TBps']:>7.2f}"
          f"{r.get('copy_frac', float('nan')):>6.2f}{r['TFLOPs']:>9.1f}{f:>7.3f}{r['route_group_ms']:>8.3f}"
          f"{r['gate_up_ms']:>9.3f}{r['down_ms']:>8.3f}{r['combine_ms']:>7.3f}")
PY
if [ -f "$out/ncu.log" ]; then
  grep -E "decode_[a-z_]+kernel|Duration|DRAM Throughput|Compute .SM.|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Registers Per" "$out/ncu.log" \
    | sed -E 's/  +/ /g' | cut -c1-100 | head -80
fi

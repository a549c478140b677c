#!/usr/bin/env bash
# One device call for the router: the GPU router tests, compute-sanitizer (memcheck, racecheck)
# over them, the fused-kernel timings, the PyTorch chain on the same device, and optionally an
# Nsight Compute profile of one large case plus the SASS of the E = 128 kernel.
# Usage, on the device machine from the repo root:
#   bash bench/gpu/router_device_run.sh BIN_DIR OUT_DIR [BASELINE_BIN_DIR[:BASELINE_BIN_DIR...]]
# BIN_DIR holds test_gpu and router_bench (prebuilt here, or from a build-gpu/ tree there); each
# BASELINE_BIN_DIR an earlier or candidate router_bench timed on the same card (its logs are
# named after the directory), with its own GPU router tests run too where it has a test_gpu.
# PROFILE=1 adds ncu (sections, executed instructions per SASS instruction, pipe utilization) and
# the SASS of the E = 128 fp32 kernel; SKIP_TORCH=1 leaves out the PyTorch chain;
# SANITIZE_BASELINES=1 runs memcheck and racecheck on every BASELINE_BIN_DIR with a test_gpu too;
# SANITIZE_BASELINES=name,name on those BASELINE_BIN_DIRs (by directory name) only.
# TORCH_PROBE_ONLY=1 runs only the PyTorch read probe (torch.amax), not the chains.
# DURATIONS=1 adds the kernel duration alone (ncu gpu__time_duration, clocks and caches left as
# they are, 20 stream launches after 10 skipped, median) at T = 16384: the fused router (k = 4, 8)
# and the read probe for BIN_DIR, the fused router at k = 8 for every BASELINE_BIN_DIR. Under ncu
# the GPU idles between profiled launches, so these run on clocks still ramping up: compare them
# with each other, not with the per-call figures.
# STALLS=1 adds, for the same cases at k = 8, ncu's issue-stall reasons per issued instruction,
# active and elapsed SM cycles, eligible warps and issue utilization (one launch each).
# Everything lands in OUT_DIR/router_run.tgz too.
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
  if [ -x "$b/test_gpu" ]; then  # a candidate build brings its own tests
    "$b/test_gpu" --gtest_filter='GpuRouter*' >"$logs/test_gpu_$name.log" 2>&1
    echo "test_gpu ($name) exit $?"
    grep -E '^\[  (PASSED|FAILED) |Failure' "$logs/test_gpu_$name.log" | head -10
  fi
  "$b/router_bench" --csv "$logs/fused_$name.csv" >"$logs/bench_$name.log" 2>&1
  grep -E " 16384 " "$logs/bench_$name.log"
done
save

# Median kernel duration, us, of one case under ncu (no replay: one metric, one pass).
duration() {
  local binary=$1 variant=$2 k=$3 log=$4
  timeout 120 ncu --csv --print-units base --clock-control none --cache-control none \
    --kernel-name regex:'fused_router|read_probe' --launch-skip 10 --launch-count 20 \
    --metrics gpu__time_duration.sum "$binary" --variant "$variant" --tokens 16384 --k "$k" >"$log" 2>&1
  python3 - "$log" <<'PY'
import csv, statistics, sys
v = []
for row in csv.reader(open(sys.argv[1])):
    if len(row) > 3 and row[-3] == "gpu__time_duration.sum":
        v.append(float(row[-1].replace(",", "")) / (1000.0 if row[-2] in ("ns", "nsecond") else 1.0))
print(f"{statistics.median(v):.2f} us (n={len(v)})" if v else "no samples")
PY
}
if [ "${DURATIONS:-0}" = 1 ]; then
  echo "== kernel duration alone (ncu gpu__time_duration, median of 20 stream launches), T = 16384"
  for b in "$bin" "${baselines[@]}"; do
    [ -n "$b" ] || continue
    name=$(basename "$b")
    cases=("softmax_after_topk 8")
    [ "$b" = "$bin" ] && cases=("softmax_after_topk 4" "softmax_after_topk 8" "read_probe 8")
    for case in "${cases[@]}"; do
      set -- $case
      echo "$name $1 k=$2: $(duration "$b/router_bench" "$1" "$2" "$logs/ncu_duration_${name}_$1_$2.csv")"
    done
  done | tee "$logs/durations.txt"
  save
fi

if [ "${STALLS:-0}" = 1 ]; then
  echo "== issue stalls (ncu, one launch, T = 16384, k = 8)"
  metrics='gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_elapsed.avg,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warps_eligible.avg.per_cycle_active,smsp__warps_active.avg.per_cycle_active,smsp__inst_executed.sum,launch__waves_per_multiprocessor,launch__occupancy_limit_blocks,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$'
  for b in "$bin" "${baselines[@]}"; do
    [ -n "$b" ] || continue
    name=$(basename "$b")
    variants=(softmax_after_topk)
    [ "$b" = "$bin" ] && variants=(softmax_after_topk read_probe)
    for v in "${variants[@]}"; do
      timeout 120 ncu --csv --print-units base --clock-control none --cache-control none \
        --kernel-name regex:'fused_router|read_probe' --launch-skip 10 --launch-count 1 --metrics "$metrics" \
        "$b/router_bench" --variant "$v" --tokens 16384 --k 8 >"$logs/ncu_stalls_${name}_$v.csv" 2>&1
      echo "$name $v: $(python3 - "$logs/ncu_stalls_${name}_$v.csv" <<'PY'
import csv, sys
m = {}
for row in csv.reader(open(sys.argv[1])):
    if len(row) > 3 and "__" in row[-3]:
        try:
            m[row[-3]] = float(row[-1].replace(",", ""))
        except ValueError:
            pass
short = lambda k: k.replace("smsp__average_warps_issue_stalled_", "").replace("_per_issue_active.ratio", "")
stalls = sorted(((v, short(k)) for k, v in m.items() if "issue_stalled" in k), reverse=True)[:7]
keys = ["gpu__time_duration.sum", "sm__cycles_active.avg", "sm__cycles_elapsed.avg",
        "smsp__issue_active.avg.pct_of_peak_sustained_active", "smsp__warps_eligible.avg.per_cycle_active",
        "smsp__warps_active.avg.per_cycle_active", "smsp__inst_executed.sum", "launch__waves_per_multiprocessor"]
print(" ".join(f"{k.split('__')[1].split('.')[0]}={m.get(k, float('nan')):.4g}" for k in keys),
      "| stalls/issue:", " ".join(f"{n}={v:.2f}" for v, n in stalls))
PY
)"
    done
  done | tee "$logs/stalls.txt"
  save
fi

if [ "${TORCH_PROBE_ONLY:-0}" = 1 ]; then
  echo "== PyTorch read probe"
  PYTHONUNBUFFERED=1 python3 bench/router_torch_baseline.py --read-probe-only >"$logs/torch_probe.log" 2>&1
  echo "torch probe exit $?"
  cat "$logs/torch_probe.log" | tail -5
  save
elif [ "${SKIP_TORCH:-0}" != 1 ]; then  # SKIP_TORCH=1: a call that compares builds only
  echo "== PyTorch chain timings"
  PYTHONUNBUFFERED=1 python3 bench/router_torch_baseline.py --csv "$logs/torch.csv" --fused-csv "$logs/fused.csv" \
    --markdown "$logs/table.md" --read-probe >"$logs/torch.log" 2>&1
  echo "torch exit $?"
  cat "$logs/table.md"
  sed -n '/^read probe/,$p' "$logs/torch.log"
  save
fi

# memcheck and racecheck over the GPU router tests of one build.
sanitize() {
  local dir=$1 log=$2
  {
    timeout "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool memcheck "$dir/test_gpu" \
      --gtest_filter='GpuRouter.MatchesReference*:GpuRouter.Padded*:GpuRouter.OddExpert*:GpuRouter.NaN*:GpuRouter.TieHeavy*:GpuRouter.TiesAmong*:GpuRouter.Programmatic*:GpuRouter.ReadProbe*'
    echo "memcheck exit $?"
    timeout "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool racecheck "$dir/test_gpu" \
      --gtest_filter='GpuRouter.MatchesReference*:GpuRouter.NegativeAndMixed*:GpuRouter.OddExpert*:GpuRouter.TieHeavy*:GpuRouter.TiesAmong*'
    echo "racecheck exit $?"
  } >"$log" 2>&1
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|exit|PASSED|FAILED' "$log" | head -20
}
echo "== compute-sanitizer"
sanitize "$bin" "$logs/sanitizer.log"
if [ "${SANITIZE_BASELINES:-0}" != 0 ]; then  # candidate builds with their own tests too
  for b in "${baselines[@]}"; do
    [ -x "$b/test_gpu" ] || continue
    [ "$SANITIZE_BASELINES" = 1 ] || [[ ",$SANITIZE_BASELINES," == *",$(basename "$b"),"* ]] || continue
    echo "== compute-sanitizer, build $(basename "$b")"
    sanitize "$b" "$logs/sanitizer_$(basename "$b").log"
  done
fi
save

if [ "${PROFILE:-0}" = 1 ]; then
  echo "== ncu, softmax_after_topk T=16384 k=8"
  timeout 200 ncu --kernel-name regex:fused_router --launch-skip 60 --launch-count 1 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section SchedulerStats \
    --section WarpStateStats --section InstructionStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    "$bin/router_bench" --variant softmax_after_topk --tokens 16384 --k 8 >"$logs/ncu.txt" 2>&1
  echo "ncu exit $?"
  # Executed instructions per SASS instruction of the same case (source counters), for the
  # instruction budget per stage of the kernel.
  timeout 200 ncu --kernel-name regex:fused_router --launch-skip 60 --launch-count 1 --section SourceCounters \
    -o "$logs/source" "$bin/router_bench" --variant softmax_after_topk --tokens 16384 --k 8 >"$logs/ncu_source.log" 2>&1
  echo "ncu source exit $?"
  timeout 120 ncu --kernel-name regex:fused_router --launch-skip 60 --launch-count 1 \
    --metrics 'regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active$,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active$' \
    "$bin/router_bench" --variant softmax_after_topk --tokens 16384 --k 8 >"$logs/ncu_pipes.txt" 2>&1
  echo "ncu pipes exit $?"
  grep -E "pipe_(alu|fma|fmaheavy|fp16|lsu|xu|uniform|shared|adu|cbu)" "$logs/ncu_pipes.txt" | head -24
  ncu --import "$logs/source.ncu-rep" --page source --csv --print-source sass >"$logs/sass_counts.csv" 2>&1
  echo "sass_counts lines $(wc -l <"$logs/sass_counts.csv")"
  rm -f "$logs/source.ncu-rep"
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Executed Ipc A|Issue Slots Busy|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Executed Instructions  " "$logs/ncu.txt" | head -20
  # The SASS of the E = 128 fp32 kernel alone (the binary holds every kernel of the library).
  cuobjdump -sass "$bin/router_bench" 2>&1 |
    awk '/Function :/ {keep = /fused_router_kernelIfLi8ELi4E/} keep' >"$logs/router_sass_f32_e128.txt"
  echo "sass lines $(wc -l <"$logs/router_sass_f32_e128.txt")"
fi
save
cp "$logs/table.md" "$out/" 2>/dev/null
# Last, so that it is in the reply's tail: fused time over the memory floor, every variant.
echo "== summary: fused router (this build), graph/stream us and x floor"
grep -E "^(device:|variant|softmax_after_topk|gemma4|sigmoid_grouped_biased|read_probe) " "$logs/bench.log"
[ -f "$logs/durations.txt" ] && cat "$logs/durations.txt"
[ -f "$logs/stalls.txt" ] && cat "$logs/stalls.txt"
for b in "${baselines[@]}"; do
  echo "== summary: baseline build $(basename "$b"), T = 16384"
  grep -E " 16384 " "$logs/bench_$(basename "$b").log"
done

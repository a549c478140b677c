#!/usr/bin/env bash
# Convert against cp on the device machine's host CPUs (a quiet machine, unlike the shared dev
# VM): builds the CLI (CPU only, Release) with the packed dependencies, then runs
# bench/convert_throughput.sh pinned to 2 cores (the CI/dev machine's size) and on all cores,
# for the gpt-oss-20b and -120b shapes; then bench/quantize_convert.sh (the quantizing path
# against the MXFP4 path, per output byte) the same two ways. Usage (device, repo root,
# .devdeps carried):
#   bash bench/convert_device_run.sh [LAYERS=2] [RUNS=5]
# PARTS=quantize runs only the quantizing comparison (the GPU check's device time is scarce).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
layers=${1:-2}
runs=${2:-5}
out=${OUT:-/tmp/moeprep-convert-out}
mkdir -p "$out"
build=build-convert-bench
cmake -S . -B $build -G Ninja -DCMAKE_PREFIX_PATH="$root/.devdeps" -DCMAKE_BUILD_TYPE=Release -DMOEPREP_CUDA=OFF \
  -DMOEPREP_BUILD_TESTS=OFF -DMOEPREP_BUILD_BENCH=OFF > "$out/convert-configure.log" 2>&1
cmake --build $build -j "$(nproc)" --target moeprep_cli > "$out/convert-build.log" 2>&1 || { tail -30 "$out/convert-build.log"; exit 1; }
export MOEPREP_BIN=$build/moeprep
df -hT /tmp | tail -1
shapes="20b 120b"
[[ ${PARTS:-all} == quantize ]] && shapes=""
for shape in $shapes; do
  echo "== $shape, pinned to cores 0-1, --threads 2"
  SHAPE=$shape CPUS=0-1 bash bench/convert_throughput.sh "$layers" 2 /tmp/moeprep-bench "$runs" | tail -7
  echo "== $shape, all $(nproc) cores, --threads $(nproc)"
  SHAPE=$shape bash bench/convert_throughput.sh "$layers" "$(nproc)" /tmp/moeprep-bench "$runs" | tail -7
done
echo "== quantizing convert vs MXFP4 path, pinned to cores 0-1, --threads 2"
CPUS=0-1 bash bench/quantize_convert.sh 1 2 /tmp/moeprep-qbench "$runs" | tail -18
echo "== quantizing convert vs MXFP4 path, all $(nproc) cores, --threads $(nproc)"
bash bench/quantize_convert.sh 1 "$(nproc)" /tmp/moeprep-qbench "$runs" | tail -18

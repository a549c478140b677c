#!/usr/bin/env bash
# The whole product on the GPU machine: build the CLI with the CUDA kernels, generate a
# gpt-oss-120b-shaped checkpoint (hidden = intermediate = 2880, 128 experts, top-4; LAYERS
# layers), convert it, and verify it with the fused MoE on the GPU (all five stages). Prints
# convert and verify times and verify's numerics table; JSON report to $OUT.
# Usage (device, repo root, .devdeps carried): bash bench/gpu/verify_end_to_end.sh [LAYERS=2]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=${OUT:-/tmp/moeprep-e2e-out}
mkdir -p "$out"
layers=${1:-2}
export LD_LIBRARY_PATH=$root/.devdeps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
build=build-e2e
cmake -S . -B $build -G Ninja -DCMAKE_PREFIX_PATH="$root/.devdeps" -DCMAKE_BUILD_TYPE=Release -DMOEPREP_CUDA=ON \
  -DMOEPREP_BUILD_TESTS=OFF -DMOEPREP_BUILD_BENCH=OFF > "$out/e2e-configure.log" 2>&1
cmake --build $build -j "$(nproc)" --target moeprep_cli > "$out/e2e-build.log" 2>&1 || { tail -30 "$out/e2e-build.log"; exit 1; }
bin=$build/moeprep
work=/tmp/moeprep-e2e
rm -rf $work
mkdir -p $work
t() {
  local start end
  start=$(date +%s%N)
  "$@"
  end=$(date +%s%N)
  echo "   $(((end - start) / 1000000)) ms wall" >&2
}
echo "== generate ($layers layers of gpt-oss-120b shape)"
t $bin generate $work/src --gpt-oss-120b-shape --layers "$layers" --max-shard-size 2GB -q
du -sh $work/src
cat $work/src/* > /dev/null
echo "== cp -r (baseline, page cache warm)"
t cp -r $work/src $work/cp-copy && sync -f $work/cp-copy && rm -rf $work/cp-copy
echo "== convert --threads 2"
t $bin convert $work/src -o $work/kr2 --threads 2 -q && rm -rf $work/kr2
echo "== convert --threads $(nproc)"
t $bin convert $work/src -o $work/kr --threads "$(nproc)" -q
echo "== verify --device cuda --tokens 1,64,512"
t $bin verify $work/kr --source $work/src --device cuda --tokens 1,64,512 --json > "$out/e2e-verify.json" || true
python3 - "$out/e2e-verify.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["stages"]:
    print(f'{s["name"]:11s} {s["status"]:7s} {s["checked"]:6d} checked {s["failed"]:4d} failed', *s["failures"][:3])
n = r["numerics"]
print("device", n["device"], "threshold", n["threshold"])
for row in n["rows"]:
    print(f'layer {row["layer"]:3d} T={row["tokens"]:4d} rel_err {row["rel_err"]:.3e} routing_diff {row["routing_mismatches"]}')
print("verify passed:", r["passed"])
PY

#!/usr/bin/env bash
# Conversion throughput against plain `cp` of the same files, on a generated checkpoint in the
# real gpt-oss-20b shape (hidden = intermediate = 2880, 32 experts, top-4), and peak RSS.
# Usage: bench/convert_throughput.sh [LAYERS=8] [THREADS=$(nproc)] [WORKDIR=/tmp/moeprep-bench]
# Both runs read from the page cache (the source is read once before timing) and write to the
# same filesystem; each is timed including its fsyncs.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-8}
threads=${2:-$(nproc)}
work=${3:-/tmp/moeprep-bench}
bin=${MOEPREP_BIN:-build/moeprep}
[[ -x "$bin" ]] || { echo "build first (scripts/build)"; exit 1; }
mkdir -p "$work"
src="$work/src-20b-$layers"
if [[ ! -d "$src" ]]; then
  "$bin" generate "$src" --gpt-oss-20b-shape --layers "$layers" --max-shard-size 2GB -q
fi
bytes=$(du -sb "$src" | cut -f1)
cat "$src"/* >/dev/null

now() { date +%s.%N; }
rm -rf "$work/cp-out"
t0=$(now); cp -r "$src" "$work/cp-out"; sync -f "$work/cp-out"; t1=$(now)
cp_s=$(echo "$t1 - $t0" | bc -l)
rm -rf "$work/cp-out"

rm -rf "$work/kr"
/usr/bin/time -v -o "$work/time.txt" "$bin" convert "$src" -o "$work/kr" --threads "$threads" --max-shard-size 2GB -q
conv_s=$(grep "Elapsed (wall clock)" "$work/time.txt" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
rss_kb=$(grep "Maximum resident set size" "$work/time.txt" | awk '{print $NF}')

/usr/bin/time -v -o "$work/time-verify.txt" "$bin" verify "$work/kr" --source "$src" --tokens 1 --layers 0 -q >/dev/null
ver_s=$(grep "Elapsed (wall clock)" "$work/time-verify.txt" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
ver_rss_kb=$(grep "Maximum resident set size" "$work/time-verify.txt" | awk '{print $NF}')
rm -rf "$work/kr"

mbps() { echo "scale=1; $bytes / 1000000 / $1" | bc -l; }
echo "source: $src ($(echo "scale=2; $bytes/1000000000" | bc -l) GB, $layers layers of gpt-oss-20b shape)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads $threads"
printf "%-28s %10s %10s %12s\n" "run" "seconds" "MB/s" "peak RSS"
printf "%-28s %10.2f %10s %12s\n" "cp -r" "$cp_s" "$(mbps "$cp_s")" "-"
printf "%-28s %10.2f %10s %9s MB\n" "moeprep convert" "$conv_s" "$(mbps "$conv_s")" "$((rss_kb / 1024))"
printf "%-28s %10.2f %10s %9s MB\n" "moeprep verify (stages 1-5)" "$ver_s" "$(mbps "$ver_s")" "$((ver_rss_kb / 1024))"
echo "ratio convert/cp speed: $(echo "scale=2; $cp_s / $conv_s" | bc -l)"

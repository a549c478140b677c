#!/usr/bin/env bash
# Conversion throughput against plain `cp` of the same files, on a generated checkpoint in the
# real gpt-oss shape, and peak RSS.
# Usage: bench/convert_throughput.sh [LAYERS=8] [THREADS=$(nproc)] [WORKDIR=/tmp/moeprep-bench] [RUNS=3]
# Env: MOEPREP_BIN (default build/moeprep), SHAPE (20b or 120b, default 20b), CPUS (a taskset
# list such as 0-1: both cp and convert run pinned to those cores).
# Both read from the page cache (the source is read once before timing) and write to the same
# filesystem; each is timed including its syncs (cp: sync -f of the copy; convert fsyncs every
# file and directory before its rename). Runs alternate cp and convert; the best of RUNS and
# the median are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-8}
threads=${2:-$(nproc)}
work=${3:-/tmp/moeprep-bench}
runs=${4:-3}
shape=${SHAPE:-20b}
bin=${MOEPREP_BIN:-build/moeprep}
[[ -x "$bin" ]] || { echo "build first (scripts/build)"; exit 1; }
pin=()
[[ -n "${CPUS:-}" ]] && pin=(taskset -c "$CPUS")
mkdir -p "$work"
src="$work/src-$shape-$layers"
if [[ ! -d "$src" ]]; then
  "$bin" generate "$src" "--gpt-oss-$shape-shape" --layers "$layers" --max-shard-size 2GB -q
fi
bytes=$(du -sb "$src" | cut -f1)
cat "$src"/* >/dev/null

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
stats() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f %.3f", v[1], v[int((NR + 1) / 2)] }'; }
cp_times="" conv_times="" rss_kb=0 user_sys=""
for ((r = 0; r < runs; ++r)); do
  rm -rf "$work/cp-out"
  sync
  t0=$(now); "${pin[@]}" cp -r "$src" "$work/cp-out"; sync -f "$work/cp-out"; t1=$(now)
  cp_times+=" $(elapsed "$t0" "$t1")"
  rm -rf "$work/cp-out" "$work/kr"
  sync
  t0=$(now)
  "${pin[@]}" /usr/bin/time -f "%M %U %S" -o "$work/time.txt" "$bin" convert "$src" -o "$work/kr" --threads "$threads" \
    --max-shard-size 2GB -q
  t1=$(now)
  conv_times+=" $(elapsed "$t0" "$t1")"
  read -r rss u s < "$work/time.txt"
  (( rss > rss_kb )) && rss_kb=$rss
  user_sys+=" ${u}u+${s}s"
done
read -r cp_best cp_med <<< "$(echo "$cp_times" | stats)"
read -r conv_best conv_med <<< "$(echo "$conv_times" | stats)"

/usr/bin/time -f "%M %e" -o "$work/time-verify.txt" "$bin" verify "$work/kr" --source "$src" --tokens 1 --layers 0 -q >/dev/null
read -r ver_rss_kb ver_s < "$work/time-verify.txt"
rm -rf "$work/kr"

mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
echo "source: $src ($(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1e9 }') GB, $layers layers of gpt-oss-$shape shape)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores${CPUS:+, pinned to $CPUS};" \
  "threads $threads; load average $(cut -d' ' -f1-3 /proc/loadavg); $runs runs"
echo "cp times:$cp_times"
echo "convert times:$conv_times (cpu:$user_sys)"
printf "%-28s %10s %10s %10s %12s\n" "run" "best s" "median s" "MB/s best" "peak RSS"
printf "%-28s %10.2f %10.2f %10s %12s\n" "cp -r" "$cp_best" "$cp_med" "$(mbps "$cp_best")" "-"
printf "%-28s %10.2f %10.2f %10s %9s MB\n" "moeprep convert" "$conv_best" "$conv_med" "$(mbps "$conv_best")" "$((rss_kb / 1024))"
printf "%-28s %10.2f %10s %10s %9s MB\n" "moeprep verify (stages 1-5)" "$ver_s" "-" "$(mbps "$ver_s")" "$((ver_rss_kb / 1024))"
echo "ratio convert/cp speed: best $(awk -v a="$cp_best" -v b="$conv_best" 'BEGIN { printf "%.2f", a / b }')," \
  "median $(awk -v a="$cp_med" -v b="$conv_med" 'BEGIN { printf "%.2f", a / b }') (goal >= 0.8)"

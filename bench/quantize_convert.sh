#!/usr/bin/env bash
# Cost of quantizing during convert: checkpoints of each quantizing family (BF16 or FP8 experts,
# quantized to MXFP4 on the way; FAMILIES, default every one) against a GPT-OSS MXFP4 checkpoint
# of the same expert shapes, whose kernel-ready output is the same size. Reports time per output byte and the ratio (goal: the
# quantizing path at most 1.5x slower per output byte), in wall time (best of RUNS, fsyncs
# included) and in CPU time (user + sys, which a shared machine disturbs less), each as the best
# and as the median of RUNS, plus peak RSS and verify's time on the quantized output. Times come
# from bench/time_command.py (microseconds; GNU time's 10 ms steps were as large as the margin).
# Usage: bench/quantize_convert.sh [LAYERS=1] [THREADS=$(nproc)] [WORKDIR=/tmp/moeprep-qbench] [RUNS=3]
# MOEPREP_BIN picks the binary; MOEPREP_SIMD=baseline|avx2|avx512 caps the vector level the
# quantizer and XXH3 use (core/simd_level.h; default: the CPU's widest).
# Shape: Qwen3-30B-A3B's experts (hidden 2048, moe_intermediate 768, 128 experts, top-8): one
# layer is 1.2 GB of BF16 experts (0.6 GB of FP8 for deepseek_v3 and 0.8 GB for the non-gated
# nemotron_h, whose generators put a dense or Mamba layer first, so they get one layer more).
# FAMILIES="qwen3_moe qwen2_moe mixtral gemma4 nemotron_h gpt_oss_bf16 deepseek_v3" by default;
# the per-family ratios are printed one line each. Sources are read once before timing (page cache), after being
# dropped from it, so that every run starts from the same state: how the kernel holds a source
# in the page cache changes the cost of mapping it (on the dev VM, files that had been cached for
# hours cost the quantizing convert ~20% more CPU, ~14k page faults on the source, i.e. small
# folios, than the same files dropped and read back or freshly written, ~1k). PAGE_CACHE=keep
# reads them without dropping them first.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-1}
threads=${2:-$(nproc)}
work=${3:-/tmp/moeprep-qbench}
runs=${4:-3}
bin=${MOEPREP_BIN:-build/moeprep}
[[ -x "$bin" ]] || { echo "build first (scripts/build)"; exit 1; }
families=(${FAMILIES:-qwen3_moe qwen2_moe mixtral gemma4 nemotron_h gpt_oss_bf16 deepseek_v3})
shape=(--experts 128 --hidden 2048 --intermediate 768 --top-k 8 --max-shard-size 2GB -q)
mkdir -p "$work"
[[ -d "$work/gpt-oss-mxfp4-$layers" ]] || "$bin" generate "$work/gpt-oss-mxfp4-$layers" --model gpt_oss --layers "$layers" "${shape[@]}"
for fam in "${families[@]}"; do
  gen_layers=$layers
  # The generators make deepseek_v3's first layer dense and nemotron_h's a Mamba one.
  [[ $fam == deepseek_v3 || $fam == nemotron_h ]] && gen_layers=$((layers + 1))
  [[ -d "$work/$fam-$layers" ]] || "$bin" generate "$work/$fam-$layers" --model "$fam" --layers "$gen_layers" "${shape[@]}"
done

# Arithmetic in awk (the GPU host has no bc).
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# The smallest and the median of a space-separated list.
best() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | head -1; }
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
pin=()
[[ -n "${CPUS:-}" ]] && pin=(taskset -c "$CPUS")  # e.g. CPUS=0-1: both converts pinned to those cores
declare -A wall cpu usr sys out_bytes rss
names=(gpt-oss-mxfp4 "${families[@]}")
page_cache=${PAGE_CACHE:-dropped-and-read}
sync
for name in "${names[@]}"; do
  for f in "$work/$name-$layers"/*.safetensors; do
    # Drops f's cached pages (advice: a dd without nocache leaves them, as PAGE_CACHE=keep would).
    [[ $page_cache == keep ]] || dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || true
    cat "$f" >/dev/null
  done
done
# Alternate them so that all see the same background load.
for ((r = 0; r < runs; ++r)); do
  for name in "${names[@]}"; do
    rm -rf "$work/kr"
    sync
    "${pin[@]}" python3 bench/time_command.py "$work/time.txt" "$bin" convert "$work/$name-$layers" -o "$work/kr" \
      --threads "$threads" --max-shard-size 2GB -q
    read -r w u sy kb <"$work/time.txt"
    wall[$name]="${wall[$name]:-} $w"
    cpu[$name]="${cpu[$name]:-} $(calc "$u + $sy")"
    usr[$name]="${usr[$name]:-} $u"
    sys[$name]="${sys[$name]:-} $sy"
    rss[$name]=$((kb / 1024))
    out_bytes[$name]=$(cat "$work/kr"/*.safetensors | wc -c)
  done
done
# Verify the last family's output (the quantized layer) through all five stages.
last=${families[${#families[@]} - 1]}
python3 bench/time_command.py "$work/time-verify.txt" "$bin" verify "$work/kr" --source "$work/$last-$layers" \
  --tokens 1,64 -q >/dev/null
ver_s=$(awk '{print $1}' "$work/time-verify.txt")
qerr=$(grep -o '"quantization_rel_error": [0-9.e-]*' "$work/kr/moeprep.json" | awk '{printf "%.4f\n", $2}' | sort -g |
  sed -n '1p;$p' | xargs)
rm -rf "$work/kr"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; SIMD ${MOEPREP_SIMD:-widest};" \
  "threads $threads; page cache $page_cache;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); best and median of $runs runs"
printf "%-28s %9s %9s %9s %9s %9s %9s %12s %12s %12s %9s\n" "convert" "wall best" "wall med" "cpu best" "cpu med" \
  "user med" "sys med" "out bytes" "wall ns/B" "cpu ns/B" "peak RSS"
for name in "${names[@]}"; do
  in_gb=$(du -sb "$work/$name-$layers" | awk '{printf "%.2f", $1/1e9}')
  wb=$(best "${wall[$name]}"); wm=$(median "${wall[$name]}"); cb=$(best "${cpu[$name]}"); cm=$(median "${cpu[$name]}")
  printf "%-28s %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %12d %12.3f %12.3f %6s MB\n" "$name ($in_gb GB in)" "$wb" "$wm" \
    "$cb" "$cm" "$(median "${usr[$name]}")" "$(median "${sys[$name]}")" \
    "${out_bytes[$name]}" "$(calc "$wb * 1000000000 / ${out_bytes[$name]}")" \
    "$(calc "$cb * 1000000000 / ${out_bytes[$name]}")" "${rss[$name]}"
done
# Per output byte, a quantizing family over MXFP4: ratio STAT QUANTIZING_LIST FAMILY MXFP4_LIST (STAT: best or median).
ratio() { calc "($($1 "$2") / ${out_bytes[$3]}) / ($($1 "$4") / ${out_bytes[gpt-oss-mxfp4]})"; }
for fam in "${families[@]}"; do
  printf "ratio %-13s / MXFP4 per output byte: wall %.2f, cpu %.2f (best of %d); wall %.2f, cpu %.2f (medians) (goal <= 1.5)\n" \
    "$fam" "$(ratio best "${wall[$fam]}" "$fam" "${wall[gpt-oss-mxfp4]}")" \
    "$(ratio best "${cpu[$fam]}" "$fam" "${cpu[gpt-oss-mxfp4]}")" "$runs" \
    "$(ratio median "${wall[$fam]}" "$fam" "${wall[gpt-oss-mxfp4]}")" \
    "$(ratio median "${cpu[$fam]}" "$fam" "${cpu[gpt-oss-mxfp4]}")"
done
printf "verify of the %s output (stages 1-5, tokens 1,64): %.2f s; quantization error per tensor: %s\n" \
  "$last" "$ver_s" "$qerr"
